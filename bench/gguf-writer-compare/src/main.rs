//! Writes one synthetic GGUF file with one of several writers, so each can be timed and
//! measured (peak RSS) as a separate process. See `run.sh` and `docs/gguf-writer.md`.
//!
//! Usage: gguf-writer-compare MODE [OUT]
//!   gen          generate the tensor bytes only (no file): the data-generation baseline
//!   recast OUT   recast_convert::gguf::writer::write (plan, then stream one tensor at a time)
//!   gguf-rs OUT  gguf-rs 0.1.8 `GGUFWriter`: write() then write_tensor_data(i, ..) per tensor
//!   gguf-rs-lib OUT  gguf-rs-lib 0.3.3 `GGUFStreamWriter`, one tensor at a time
//!   types DIR    small functional probe: which ggml types each writer sizes correctly
//!
//! Size: env TENSORS (default 100), ROWS (3001), COLS (5003): F16 tensors of row-major shape
//! [ROWS, COLS] = 30,028,006 bytes each, deliberately not a multiple of 32 so that every
//! tensor, the last one included, needs alignment padding.
//!
//! Every mode that writes a file fsyncs it before exiting (recast's AtomicFile does so
//! itself; for the crates the harness calls `File::sync_all` after their finalize), so the
//! times include getting the data to disk. On exit the process prints `wchar` and
//! `write_bytes` from /proc/self/io: bytes passed to write(2) and bytes dirtied in the page
//! cache.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const F16: u32 = 1;
const ALIGN: u64 = 32;

struct Spec {
    tensors: usize,
    rows: u64,
    cols: u64,
}

impl Spec {
    fn from_env() -> Spec {
        let get = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Spec { tensors: get("TENSORS", 100) as usize, rows: get("ROWS", 3001), cols: get("COLS", 5003) }
    }
    fn nbytes(&self) -> usize {
        (self.rows * self.cols * 2) as usize
    }
    fn name(i: usize) -> String {
        format!("blk.{i}.ffn_up.weight")
    }
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// Deterministic pseudo-random bytes for tensor `i` (splitmix64), written into `buf`.
fn fill(i: usize, n: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.reserve_exact(n);
    let mut s = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for _ in 0..n / 8 {
        buf.extend_from_slice(&next().to_le_bytes());
    }
    let tail = next().to_le_bytes();
    buf.extend_from_slice(&tail[..n % 8]);
}

/// Metadata written by every writer, in sorted key order (gguf-rs and gguf-rs-lib both
/// emit keys sorted; recast emits insertion order), so the files can be compared whole.
fn tokens() -> Vec<String> {
    (0..8).map(|i| format!("<tok{i}>")).collect()
}

fn mode_gen(spec: &Spec) -> AnyResult<()> {
    let mut buf = Vec::new();
    let mut x = 0u64;
    for i in 0..spec.tensors {
        fill(i, spec.nbytes(), &mut buf);
        x ^= u64::from_le_bytes(buf[..8].try_into().unwrap()) ^ buf.len() as u64;
    }
    eprintln!("gen: {} tensors x {} bytes, fold {x:016x}", spec.tensors, spec.nbytes());
    Ok(())
}

fn mode_recast(spec: &Spec, out: &Path) -> AnyResult<()> {
    use recast_convert::gguf::{writer, Array, GgufPlan, Metadata, Value};
    use recast_convert::GgmlType;
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set("general.file_type", Value::U32(1));
    md.set("general.name", Value::String("synthetic".into()));
    md.set("llama.block_count", Value::U32(spec.tensors as u32));
    md.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens())));
    let tensors = (0..spec.tensors).map(|i| (Spec::name(i), vec![spec.rows, spec.cols], GgmlType::F16)).collect();
    let plan = GgufPlan::new(md, tensors)?;
    writer::write(out, &plan, |i, t, buf| {
        fill(i, t.nbytes as usize, buf);
        Ok(())
    })?;
    Ok(())
}

fn mode_gguf_rs(spec: &Spec, out: &Path) -> AnyResult<()> {
    use gguf_rs::writer::{GGUFWriter, MetadataValue, TensorInfo};
    let mut w = GGUFWriter::new(out, 3)?;
    w.add_metadata("general.architecture", "llama");
    w.add_metadata_u32("general.file_type", 1);
    w.add_metadata("general.name", "synthetic");
    w.add_metadata_u32("llama.block_count", spec.tensors as u32);
    w.add_metadata_array("tokenizer.ggml.tokens", tokens().into_iter().map(MetadataValue::String).collect());
    for i in 0..spec.tensors {
        // gguf-rs writes `shape` verbatim: the caller must pass ggml order (ne[0] first).
        w.add_tensor(TensorInfo { name: Spec::name(i), shape: vec![spec.cols, spec.rows], dtype: F16 });
    }
    let t0 = Instant::now();
    w.write()?; // header + infos + zero-fill of the whole data region, byte by byte
    eprintln!("gguf-rs: write() (header + zero-fill) took {:.2?}", t0.elapsed());
    let mut buf = Vec::new();
    for i in 0..spec.tensors {
        fill(i, spec.nbytes(), &mut buf);
        w.write_tensor_data(i, &buf)?; // seek to the tensor's offset, overwrite the zeros
    }
    w.finalize()?; // flush only
    drop(w);
    File::options().write(true).open(out)?.sync_all()?;
    Ok(())
}

fn mode_gguf_rs_lib(spec: &Spec, out: &Path) -> AnyResult<()> {
    use gguf_rs_lib::format::{GGUFHeader, GGUFValueType, Metadata, MetadataArray, MetadataValue};
    use gguf_rs_lib::tensor::{TensorData, TensorInfo, TensorShape, TensorType};
    use gguf_rs_lib::writer::GGUFStreamWriter;
    let mut md = Metadata::new();
    md.insert("general.architecture".into(), MetadataValue::String("llama".into()));
    md.insert("general.file_type".into(), MetadataValue::U32(1));
    md.insert("general.name".into(), MetadataValue::String("synthetic".into()));
    md.insert("llama.block_count".into(), MetadataValue::U32(spec.tensors as u32));
    let toks = tokens().into_iter().map(MetadataValue::String).collect();
    md.insert(
        "tokenizer.ggml.tokens".into(),
        MetadataValue::Array(Box::new(MetadataArray::new(GGUFValueType::String, toks)?)),
    );
    // The low-level API takes descriptors with caller-computed offsets.
    let mut infos = Vec::with_capacity(spec.tensors);
    let mut off = 0u64;
    for i in 0..spec.tensors {
        let shape = TensorShape::new(vec![spec.cols, spec.rows])?; // ggml order
        infos.push(TensorInfo::new(Spec::name(i), shape, TensorType::F16, off));
        off = align(off + spec.nbytes() as u64);
    }
    let file = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let mut w = GGUFStreamWriter::new(file);
    w.write_header(&GGUFHeader::new(spec.tensors as u64, md.len() as u64))?;
    w.write_metadata(&md)?;
    w.write_tensor_infos(&infos)?;
    w.align_for_tensor_data()?;
    let mut buf = Vec::new();
    for (i, info) in infos.iter().enumerate() {
        fill(i, spec.nbytes(), &mut buf);
        let data = TensorData::new_owned(std::mem::take(&mut buf));
        w.write_tensor_data(info, &data)?;
        if let TensorData::Owned(v) = data {
            buf = v;
        }
    }
    w.finalize()?;
    let file = w.into_inner().into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// Writes, with each writer, a two-tensor file per ggml type: `a` of that type (bytes 0x11)
/// then `b`, F32 [1, 2] (8 bytes of 0x22, so the last tensor needs padding); a mis-sized `a` shows up in `b`'s offset. Files are
/// left in DIR as `types-<writer>-<TYPE>.gguf` for verify.py; errors are printed.
fn mode_types(dir: &Path) -> AnyResult<()> {
    use recast_convert::gguf::{writer, GgufPlan, Metadata, Value};
    use recast_convert::GgmlType;
    // (ggml id, name, row-major shape, correct nbytes per ggml type_traits)
    let cases: &[(u32, &str, [u64; 2], u64)] = &[
        (0, "F32", [2, 64], 2 * 64 * 4),
        (1, "F16", [2, 64], 2 * 64 * 2),
        (8, "Q8_0", [2, 64], 2 * 2 * 34),
        (12, "Q4_K", [2, 256], 2 * 144),
        (14, "Q6_K", [2, 256], 2 * 210),
        (20, "IQ4_NL", [2, 64], 2 * 2 * 18),
        (30, "BF16", [2, 64], 2 * 64 * 2),
        (39, "MXFP4", [2, 64], 2 * 2 * 17),
    ];
    let b_data = vec![0x22u8; 8];
    println!("type\tnbytes\trecast\tgguf-rs-0.1.8\tgguf-rs-lib-0.3.3");
    for &(id, name, shape, nbytes) in cases {
        let a_data = vec![0x11u8; nbytes as usize];
        let file = |w: &str| dir.join(format!("types-{w}-{name}.gguf"));
        // recast
        let p = file("recast");
        let r = (|| -> AnyResult<String> {
            let mut md = Metadata::new();
            md.set("general.architecture", Value::String("llama".into()));
            let ts = vec![("a".into(), shape.to_vec(), GgmlType(id)), ("b".into(), vec![1, 2], GgmlType::F32)];
            let plan = GgufPlan::new(md, ts)?;
            writer::write(&p, &plan, |i, _, buf| {
                buf.extend_from_slice(if i == 0 { &a_data } else { &b_data });
                Ok(())
            })?;
            Ok(format!("wrote {} B", std::fs::metadata(&p)?.len()))
        })();
        // gguf-rs 0.1.8
        let p = file("gguf-rs");
        let g = (|| -> AnyResult<String> {
            use gguf_rs::writer::{calculate_tensor_size, GGUFWriter, TensorInfo};
            let a = TensorInfo { name: "a".into(), shape: vec![shape[1], shape[0]], dtype: id };
            let b = TensorInfo { name: "b".into(), shape: vec![2, 1], dtype: 0 /* F32 */ };
            let sized = calculate_tensor_size(&a)?;
            let note = if sized != nbytes { format!(" [sizes `a` as {sized} B]") } else { String::new() };
            let mut w = GGUFWriter::new(&p, 3)?;
            w.add_metadata("general.architecture", "llama");
            w.add_tensor(a);
            w.add_tensor(b);
            w.write()?;
            w.write_tensor_data(0, &a_data).map_err(|e| format!("{e}{note}"))?;
            w.write_tensor_data(1, &b_data)?;
            w.finalize()?;
            drop(w);
            Ok(format!("wrote {} B{note}", std::fs::metadata(&p)?.len()))
        })();
        // gguf-rs-lib 0.3.3
        let p = file("gguf-rs-lib");
        let l = (|| -> AnyResult<String> {
            use gguf_rs_lib::format::{GGUFHeader, Metadata, MetadataValue};
            use gguf_rs_lib::tensor::{TensorData, TensorInfo, TensorShape, TensorType};
            use gguf_rs_lib::writer::GGUFStreamWriter;
            let ty = TensorType::from_u32(id)?;
            let a = TensorInfo::new("a".into(), TensorShape::new(vec![shape[1], shape[0]])?, ty, 0);
            let b = TensorInfo::new("b".into(), TensorShape::new(vec![2, 1])?, TensorType::F32, align(nbytes));
            let mut md = Metadata::new();
            md.insert("general.architecture".into(), MetadataValue::String("llama".into()));
            let mut w = GGUFStreamWriter::new(BufWriter::new(File::create(&p)?));
            w.write_header(&GGUFHeader::new(2, 1))?;
            w.write_metadata(&md)?;
            w.write_tensor_infos(&[a.clone(), b.clone()])?;
            w.align_for_tensor_data()?;
            w.write_tensor_data(&a, &TensorData::new_owned(a_data.clone()))?;
            w.write_tensor_data(&b, &TensorData::new_owned(b_data.clone()))?;
            w.finalize()?;
            drop(w);
            Ok(format!("wrote {} B", std::fs::metadata(&p)?.len()))
        })();
        let show = |r: AnyResult<String>| match r {
            Ok(s) => s,
            Err(e) => format!("ERROR: {e}"),
        };
        println!("{name}\t{nbytes}\t{}\t{}\t{}", show(r), show(g), show(l));
    }
    Ok(())
}

fn proc_io() -> String {
    let s = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get =
        |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_else(|| "?".into());
    format!("wchar={} write_bytes={}", get("wchar:"), get("write_bytes:"))
}

fn main() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let out = args.get(2).map(PathBuf::from);
    let spec = Spec::from_env();
    let need_out = || out.clone().ok_or("missing OUT path");
    let t0 = Instant::now();
    match mode {
        "gen" => mode_gen(&spec)?,
        "recast" => mode_recast(&spec, &need_out()?)?,
        "gguf-rs" => mode_gguf_rs(&spec, &need_out()?)?,
        "gguf-rs-lib" => mode_gguf_rs_lib(&spec, &need_out()?)?,
        "types" => return mode_types(&need_out()?),
        _ => {
            eprintln!("usage: gguf-writer-compare gen|recast|gguf-rs|gguf-rs-lib|types [OUT]");
            std::process::exit(2);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if let Some(p) = &out {
        let len = std::fs::metadata(p)?.len();
        let expect_data = spec.tensors as u64 * align(spec.nbytes() as u64);
        eprintln!("{mode}: {len} bytes (padded data region {expect_data}) in {secs:.2}s");
    }
    // One machine-readable line for run.sh.
    println!("RESULT mode={mode} secs={secs:.3} {}", proc_io());
    Ok(())
}
