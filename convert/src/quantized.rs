//! Quantized Hugging Face layouts read back as float: vLLM's compressed-tensors and Huawei
//! msModelSlim's (formats.md §5 and §7).
//!
//! [`detect`] finds every quantized Linear of a checkpoint (from `config.json`'s
//! `quantization_config` or `quant_model_description.json`), checks its tensors' dtypes and
//! shapes, and describes how to rebuild `P.weight` as one [`Dequant`]. The integer codes,
//! scales, zero points and activation parameters it reads are *consumed*: they never become
//! output tensors of their own. [`stream`] computes the float weight in bounded row chunks.
//!
//! Arithmetic follows the reference implementations exactly:
//! * compressed-tensors `dequantize` (0.20): `x_q.to(scale.dtype)`, `- zero_point.to(scale.dtype)`,
//!   `* scale`, each torch op computed in f32 and rounded once to the scale's dtype
//!   ([`Dequant::compute`] is that dtype);
//! * msModelSlim: `(q - weight_offset) * weight_scale` in f32.

use crate::atomic::Sink;
use crate::checkpoint::Checkpoint;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::float;
use crate::tensor::{Storage, TensorInfo};
use crate::transform::{row_order, CHUNK_BYTES};
use half::{bf16, f16};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// msModelSlim's description file, beside the weights.
pub const MODELSLIM_DESCRIPTION: &str = "quant_model_description.json";

/// What recast reads, for error messages.
pub const UNDERSTOOD: &str = "DeepSeek FP8 (F8_E4M3 weight + weight_scale_inv), compressed-tensors \
naive/int/float/pack-quantized (config.json quantization_config, quant_method \"compressed-tensors\"), \
msModelSlim W8A8_DYNAMIC/W8A16/W4A16/W8A8 with weight_scale and weight_offset (quant_model_description.json)";

/// The layout a [`Dequant`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    CompressedTensors,
    ModelSlim,
}

/// How integer/FP8 codes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// One I8 (integer) or F8_E4M3 code per element, `[rows, cols]`.
    Plain,
    /// compressed-tensors `pack_to_int32`: element `j` of a row at bit `j·bits` of the row's
    /// little-endian stream of I32 words (`[rows, ceil(cols·bits/32)]`), stored as
    /// `code + 2^(bits-1)`.
    Int32 { bits: u8 },
    /// msModelSlim int4 packed along the input dim: I8 `[rows, ceil(cols/2)]`, element `2i`
    /// in the low nibble (two's complement), `2i+1` in the high nibble.
    Int4Cols,
    /// msModelSlim int4 packed along the output dim: I8 `[ceil(rows/2), cols]`, row `2i` in
    /// the low nibble, row `2i+1` in the high nibble.
    Int4Rows,
}

/// How zero points are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroPacking {
    /// One value per scale, same shape as the scale (any integer or float dtype).
    Plain,
    /// compressed-tensors packed along dim 0: `[ceil(scale_rows·bits/32), scale_cols]` I32.
    Int32Rows { bits: u8 },
}

/// Rebuilds one float weight `[rows, cols]` from a quantized layout:
/// `w[i, j] = (q[i, j] - zero[i / br, j / bc]) · scale[i / br, j / bc]` with `(br, bc) = block`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dequant {
    pub family: Family,
    /// Tensor holding the codes.
    pub codes: usize,
    pub packing: Packing,
    pub scale: usize,
    pub zero: Option<(usize, ZeroPacking)>,
    /// compressed-tensors `weight_shape` (consumed; listed so its pages are released).
    pub shape_tensor: Option<usize>,
    pub rows: u64,
    pub cols: u64,
    /// Elements sharing one scale: `(rows, cols)` of a block. Tensor: `(rows, cols)`;
    /// channel: `(1, cols)`; group g: `(1, g)`; block: as given.
    pub block: (u64, u64),
    /// Every step is rounded to this dtype (F32, F16 or BF16).
    pub compute: DType,
    /// llama.cpp's Q/K row permutation with this many heads, applied to the output rows.
    pub permute: Option<u64>,
}

impl Dequant {
    pub fn inputs(&self) -> Vec<usize> {
        let mut v = vec![self.codes, self.scale];
        v.extend(self.zero.map(|z| z.0));
        v.extend(self.shape_tensor);
        v
    }

    /// A short description for plans (`--dry-run`).
    pub fn label(&self) -> String {
        let fam = match self.family {
            Family::CompressedTensors => "compressed-tensors",
            Family::ModelSlim => "msModelSlim",
        };
        let codes = match self.packing {
            Packing::Plain => "8-bit",
            Packing::Int32 { bits: 4 } | Packing::Int4Cols | Packing::Int4Rows => "int4",
            Packing::Int32 { .. } => "packed int",
        };
        let (br, bc) = self.block;
        let grain = if br >= self.rows.max(1) && bc >= self.cols.max(1) {
            "per tensor".to_string()
        } else if br == 1 && bc >= self.cols.max(1) {
            "per channel".to_string()
        } else if br == 1 {
            format!("groups of {bc}")
        } else {
            format!("{br}x{bc} blocks")
        };
        let zp = if self.zero.is_some() { ", zero points" } else { "" };
        format!("{fam} {codes} dequant ({grain}{zp})")
    }

    fn scale_dims(&self) -> (u64, u64) {
        let (br, bc) = (self.block.0.max(1), self.block.1.max(1));
        (self.rows.div_ceil(br), self.cols.div_ceil(bc))
    }

    /// Checks every input's dtype and shape against the layout (done when planning and again
    /// before streaming, so a hand-built op cannot index out of bounds).
    pub fn check(&self, ck: &Checkpoint) -> Result<()> {
        let n = ck.tensors.len();
        if self.inputs().iter().any(|&i| i >= n) {
            return Err(Error::Unsupported("dequant op refers to a tensor the checkpoint does not have".into()));
        }
        let q = &ck.tensors[self.codes];
        let bad = |t: &TensorInfo, what: String| Error::QuantLayout { tensor: t.name.clone(), detail: what };
        if self.block.0 == 0 || self.block.1 == 0 {
            return Err(bad(q, "zero-sized quantization block".into()));
        }
        if !matches!(self.compute, DType::F32 | DType::F16 | DType::BF16) {
            return Err(bad(q, format!("cannot compute in {}", self.compute)));
        }
        let (rows, cols) = (self.rows, self.cols);
        let (want_dtype, want_shape): (&[DType], Vec<u64>) = match self.packing {
            Packing::Plain => (&[DType::I8, DType::F8E4M3], vec![rows, cols]),
            Packing::Int32 { bits } => {
                if !(1..=8).contains(&bits) {
                    return Err(bad(q, format!("packed codes of {bits} bits (compressed-tensors packs 1 to 8)")));
                }
                (&[DType::I32], vec![rows, packed_len(cols, bits)?])
            }
            Packing::Int4Cols => (&[DType::I8], vec![rows, cols.div_ceil(2)]),
            Packing::Int4Rows => (&[DType::I8], vec![rows.div_ceil(2), cols]),
        };
        if !want_dtype.iter().any(|d| q.storage == Storage::Dense(*d)) || q.shape != want_shape {
            let names: Vec<&str> = want_dtype.iter().map(|d| d.name()).collect();
            return Err(bad(
                q,
                format!(
                    "codes for a [{rows}, {cols}] weight must be {} of shape {want_shape:?}, found {} {:?}",
                    names.join(" or "),
                    q.storage,
                    q.shape
                ),
            ));
        }
        let (sr, sc) = self.scale_dims();
        let s = &ck.tensors[self.scale];
        if !is_float(s) || Some(s.numel()) != sr.checked_mul(sc) || !shape_fits(&s.shape, sr, sc) {
            return Err(bad(
                s,
                format!(
                    "scale of '{}' must be F32, F16 or BF16 with {sr}x{sc} values (blocks of {:?}), found {} {:?}",
                    q.name, self.block, s.storage, s.shape
                ),
            ));
        }
        if let Some((z, zp)) = self.zero {
            let z = &ck.tensors[z];
            let ok = match zp {
                ZeroPacking::Plain => {
                    matches!(z.storage, Storage::Dense(d) if float::is_decodable(d) && d != DType::Bool)
                        && Some(z.numel()) == sr.checked_mul(sc)
                        && shape_fits(&z.shape, sr, sc)
                }
                ZeroPacking::Int32Rows { bits } => {
                    (1..=8).contains(&bits)
                        && z.storage == Storage::Dense(DType::I32)
                        && z.shape == [packed_len(sr, bits)?, sc]
                }
            };
            if !ok {
                return Err(bad(
                    z,
                    format!(
                        "zero point of '{}' does not fit {sr}x{sc} scales ({zp:?}): found {} {:?}",
                        q.name, z.storage, z.shape
                    ),
                ));
            }
        }
        if let Some(p) = self.permute {
            row_order(rows, p, false).map_err(|d| bad(q, d))?;
        }
        Ok(())
    }
}

fn is_float(t: &TensorInfo) -> bool {
    matches!(t.storage, Storage::Dense(DType::F32 | DType::F16 | DType::BF16))
}

/// A scale-like tensor of `r·c` values may be stored `[r, c]`, or `[r]` / `[1]` / `[]` when
/// one of the dimensions is 1.
fn shape_fits(shape: &[u64], r: u64, c: u64) -> bool {
    match shape {
        [a, b] => (*a, *b) == (r, c),
        [a] => (c == 1 && *a == r) || (r == 1 && *a == c),
        [] => r == 1 && c == 1,
        _ => false,
    }
}

/// I32 words holding `n` codes of `bits` bits.
fn packed_len(n: u64, bits: u8) -> Result<u64> {
    n.checked_mul(bits as u64)
        .map(|b| b.div_ceil(32))
        .ok_or_else(|| Error::Unsupported(format!("{n} packed codes overflow")))
}

/// Rounds `x` to `d` (F32: unchanged), as a torch op producing a `d` tensor does.
#[inline]
fn round_to(d: DType, x: f32) -> f32 {
    match d {
        DType::BF16 => bf16::from_f32(x).to_f32(),
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Field `k` (of `bits` bits) of a little-endian stream of I32 words, read through `word`.
#[inline]
fn field(word: impl Fn(usize) -> Option<u32>, k: usize, bits: u8) -> u32 {
    let p = k * bits as usize;
    let (w, o) = (p / 32, p % 32);
    let lo = word(w).unwrap_or(0) as u64;
    let hi = word(w + 1).unwrap_or(0) as u64;
    (((hi << 32) | lo) >> o) as u32 & ((1u32 << bits) - 1)
}

#[inline]
fn nibble(b: u8, high: bool) -> f32 {
    let v = if high { b >> 4 } else { b & 0xF };
    ((v << 4) as i8 >> 4) as f32
}

/// Decodes the codes of source row `r` (`out.len()` = cols).
fn decode_row(d: &Dequant, qtype: DType, bytes: &[u8], r: usize, out: &mut [f32]) {
    let cols = out.len();
    match d.packing {
        Packing::Plain => float::decode_to_f32(qtype, &bytes[r * cols..(r + 1) * cols], out),
        Packing::Int32 { bits } => {
            let wpr = (cols * bits as usize).div_ceil(32);
            let row = &bytes[r * wpr * 4..(r + 1) * wpr * 4];
            let word = |w: usize| (w < wpr).then(|| u32::from_le_bytes(row[w * 4..w * 4 + 4].try_into().unwrap()));
            let off = 1i32 << (bits - 1);
            for (j, v) in out.iter_mut().enumerate() {
                *v = (field(word, j, bits) as i32 - off) as f32;
            }
        }
        Packing::Int4Cols => {
            let row = &bytes[r * cols.div_ceil(2)..(r + 1) * cols.div_ceil(2)];
            for (j, v) in out.iter_mut().enumerate() {
                *v = nibble(row[j / 2], j % 2 == 1);
            }
        }
        Packing::Int4Rows => {
            let row = &bytes[(r / 2) * cols..(r / 2 + 1) * cols];
            for (v, &b) in out.iter_mut().zip(row) {
                *v = nibble(b, r % 2 == 1);
            }
        }
    }
}

/// Zero points as `compute` values, one per scale (row-major `[sr, sc]`).
fn zeros(ck: &Checkpoint, d: &Dequant, sr: usize, sc: usize) -> Result<Option<Vec<f32>>> {
    let Some((zi, zp)) = d.zero else { return Ok(None) };
    let z = &ck.tensors[zi];
    let mut v = Vec::new();
    match zp {
        ZeroPacking::Plain => ck.read_f32(z, &mut v)?,
        ZeroPacking::Int32Rows { bits } => {
            let bytes = ck.bytes(z);
            let words = packed_len(sr as u64, bits)? as usize;
            let off = 1i32 << (bits - 1);
            v.resize(sr * sc, 0.0);
            for g in 0..sc {
                let word = |w: usize| {
                    (w < words).then(|| {
                        let at = (w * sc + g) * 4;
                        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
                    })
                };
                for r in 0..sr {
                    v[r * sc + g] = (field(word, r, bits) as i32 - off) as f32;
                }
            }
        }
    }
    v.iter_mut().for_each(|x| *x = round_to(d.compute, *x));
    Ok(Some(v))
}

/// Streams the float weight as `out` in chunks of whole rows. Each element is computed
/// independently, so the bytes do not depend on the thread count.
pub fn stream(ck: &Checkpoint, d: &Dequant, out: DType, sink: &mut Sink) -> Result<()> {
    d.check(ck)?;
    let osize = out
        .size()
        .filter(|_| matches!(out, DType::F32 | DType::F16 | DType::BF16))
        .ok_or_else(|| Error::Unsupported(format!("dequantized weights are written as F32, F16 or BF16, not {out}")))?;
    let (rows, cols) = (d.rows as usize, d.cols as usize);
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let (br, bc) = (d.block.0 as usize, d.block.1 as usize);
    let (sr, sc) = d.scale_dims();
    let (sr, sc) = (sr as usize, sc as usize);
    let mut scales = Vec::new();
    ck.read_f32(&ck.tensors[d.scale], &mut scales)?;
    scales.iter_mut().for_each(|x| *x = round_to(d.compute, *x));
    let zeros = zeros(ck, d, sr, sc)?;
    let order = match d.permute {
        Some(n_head) => Some(row_order(d.rows, n_head, false).map_err(Error::Unsupported)?),
        None => None,
    };
    let qt = &ck.tensors[d.codes];
    let Storage::Dense(qtype) = qt.storage else { unreachable!("checked") };
    let bytes = ck.bytes(qt);
    let compute = d.compute;
    let row_out = cols * osize;
    let per_chunk = (CHUNK_BYTES / row_out.max(1)).max(1);
    let rows_per_task = (65536 / cols.max(1)).max(1);
    let mut buf = Vec::new();
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per_chunk).min(rows);
        buf.resize((r1 - r0) * row_out, 0);
        buf.par_chunks_mut(rows_per_task * row_out).enumerate().for_each(|(t, dst)| {
            let mut q = vec![0f32; cols];
            let mut x = vec![0f32; dst.len() / osize];
            for (k, xr) in x.chunks_mut(cols.max(1)).enumerate() {
                let r = r0 + t * rows_per_task + k;
                let src = order.as_ref().map_or(r, |o| o[r]);
                decode_row(d, qtype, bytes, src, &mut q);
                let srow = (src / br) * sc;
                for (j, (v, &c)) in xr.iter_mut().zip(&q).enumerate() {
                    let at = srow + j / bc;
                    let mut a = round_to(compute, c);
                    if let Some(z) = &zeros {
                        a = round_to(compute, a - z[at]);
                    }
                    *v = round_to(compute, a * scales[at]);
                }
            }
            float::encode_into(out, &x, dst);
        });
        sink.write(&buf)?;
        r0 = r1;
    }
    ck.release(qt);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------------------------

/// A float weight rebuilt from a quantized layout.
#[derive(Clone, Debug)]
pub struct Rebuilt {
    /// Output name (`P.weight`).
    pub name: String,
    pub shape: Vec<u64>,
    pub dequant: Dequant,
}

/// Every quantized weight of a checkpoint and the input tensors they consume.
#[derive(Debug, Default)]
pub struct Layouts {
    pub weights: Vec<Rebuilt>,
    /// Inputs that are not output on their own (codes, scales, zero points, shapes,
    /// activation and KV-cache quantization parameters).
    pub consumed: HashSet<usize>,
}

impl Layouts {
    fn add(&mut self, ck: &Checkpoint, r: Rebuilt) -> Result<()> {
        r.dequant.check(ck)?;
        self.consumed.extend(r.dequant.inputs());
        self.weights.push(r);
        Ok(())
    }

    fn consume(&mut self, ck: &Checkpoint, name: &str) {
        if let Some(i) = index(ck, name) {
            self.consumed.insert(i);
        }
    }
}

fn index(ck: &Checkpoint, name: &str) -> Option<usize> {
    ck.index_of(name)
}

/// Finds the quantized layout of an HF checkpoint: compressed-tensors when `config.json` has
/// `quantization_config.quant_method == "compressed-tensors"`, msModelSlim when
/// `quant_model_description.json` sits beside the weights; otherwise nothing.
pub fn detect(ck: &Checkpoint, raw_config: Option<&Value>) -> Result<Layouts> {
    let qc = raw_config.and_then(|c| c.get("quantization_config"));
    if qc.and_then(|q| q.get("quant_method")).and_then(Value::as_str) == Some("compressed-tensors") {
        let path = ck.config_path().unwrap_or_else(|| PathBuf::from("config.json"));
        return compressed_tensors(ck, &path, qc.unwrap());
    }
    if let Some(desc) = ck.model_dir.as_ref().map(|d| d.join(MODELSLIM_DESCRIPTION)).filter(|p| p.is_file()) {
        return modelslim(ck, &desc);
    }
    Ok(Layouts::default())
}

// ---- compressed-tensors ------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Strategy {
    Tensor,
    Channel,
    Group(u64),
    Block(u64, u64),
}

#[derive(Clone, Debug)]
struct CtGroup {
    name: String,
    targets: Vec<String>,
    bits: u8,
    float: bool,
    symmetric: bool,
    strategy: Strategy,
    /// The group's format, or the model-level one.
    format: Option<String>,
}

const CT_FORMATS: &[&str] = &["naive-quantized", "int-quantized", "float-quantized", "pack-quantized"];

fn ct_args(path: &Path, key: &str, w: &Value) -> Result<(u8, bool, bool, Strategy)> {
    let err = |k: &str, expected: &str| Error::ConfigKey {
        path: path.to_path_buf(),
        key: format!("{key}.{k}"),
        expected: expected.into(),
    };
    let bits = match w.get("num_bits") {
        None | Some(Value::Null) => 8,
        Some(v) => v.as_u64().filter(|b| (1..=8).contains(b)).ok_or_else(|| err("num_bits", "an integer 1..=8"))?,
    } as u8;
    let float = match w.get("type").and_then(Value::as_str) {
        Some("int") | None => false,
        Some("float") => true,
        Some(_) => return Err(err("type", "\"int\" or \"float\"")),
    };
    if float && bits != 8 {
        return Err(err("num_bits", "8 for float weights (FP4 layouts are not read)"));
    }
    let symmetric = w.get("symmetric").map_or(Some(true), Value::as_bool).ok_or_else(|| err("symmetric", "a bool"))?;
    let group_size = match w.get("group_size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| err("group_size", "an integer"))?),
    };
    let strategy = match w.get("strategy").and_then(Value::as_str) {
        Some("tensor") => Strategy::Tensor,
        Some("channel") => Strategy::Channel,
        Some("group") => match group_size {
            Some(g) if g > 0 => Strategy::Group(g as u64),
            _ => return Err(err("group_size", "a positive integer with strategy \"group\"")),
        },
        Some("block") => {
            let b: Option<Vec<u64>> = w
                .get("block_structure")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect());
            match b.as_deref() {
                Some([r, c]) if *r > 0 && *c > 0 => Strategy::Block(*r, *c),
                _ => return Err(err("block_structure", "[rows, cols] of positive integers with strategy \"block\"")),
            }
        }
        Some(s) => {
            return Err(err("strategy", &format!("tensor, channel, group or block for weights (\"{s}\" is not read)")))
        }
        None => match group_size {
            None => Strategy::Tensor,
            Some(g) if g > 0 => Strategy::Group(g as u64),
            Some(-1) => Strategy::Channel,
            Some(_) => return Err(err("group_size", "a positive integer or -1")),
        },
    };
    if !matches!(w.get("actorder"), None | Some(Value::Null)) {
        return Err(err("actorder", "null (activation-ordered weights with weight_g_idx are not read)"));
    }
    Ok((bits, float, symmetric, strategy))
}

fn ct_groups(path: &Path, qc: &Value) -> Result<Vec<CtGroup>> {
    let key_err = |key: &str, expected: &str| Error::ConfigKey {
        path: path.to_path_buf(),
        key: format!("quantization_config.{key}"),
        expected: expected.into(),
    };
    let model_format = qc.get("format").and_then(Value::as_str).map(str::to_string);
    let supported = |f: &str| CT_FORMATS.contains(&f) || f == "dense";
    if let Some(f) = &model_format {
        if !supported(f) && f != "mixed-precision" {
            return Err(key_err(
                "format",
                &format!("one of {} (\"{f}\" is not read)", CT_FORMATS.join(", ") + ", mixed-precision, dense"),
            ));
        }
    }
    for (k, what) in [("sparsity_config", "sparse layouts"), ("transform_config", "transforms (rotations)")] {
        let v = qc.get(k);
        let empty = match v {
            None | Some(Value::Null) => true,
            Some(Value::Object(o)) => {
                o.is_empty() || (k == "sparsity_config" && o.get("format").and_then(Value::as_str) == Some("dense"))
            }
            _ => false,
        };
        if !empty {
            return Err(key_err(k, &format!("empty ({what} are not read)")));
        }
    }
    let groups = qc
        .get("config_groups")
        .and_then(Value::as_object)
        .ok_or_else(|| key_err("config_groups", "an object of quantization schemes"))?;
    let mut out = Vec::new();
    for (name, scheme) in groups {
        let key = format!("config_groups.{name}");
        let Some(scheme) = scheme.as_object() else {
            return Err(key_err(&key, "a scheme object (preset lists of targets are not read)"));
        };
        let format = match scheme.get("format").and_then(Value::as_str) {
            Some(f) if !supported(f) => {
                return Err(key_err(
                    &format!("{key}.format"),
                    &format!("one of {} (\"{f}\" is not read)", CT_FORMATS.join(", ")),
                ))
            }
            Some(f) => Some(f.to_string()),
            None => model_format.clone().filter(|f| f != "mixed-precision"),
        };
        let Some(w) = scheme.get("weights").filter(|w| !w.is_null()) else { continue };
        let (bits, float, symmetric, strategy) = ct_args(path, &format!("quantization_config.{key}.weights"), w)?;
        let targets = scheme
            .get("targets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        out.push(CtGroup { name: name.clone(), targets, bits, float, symmetric, strategy, format });
    }
    Ok(out)
}

/// Blocks of a strategy for a `[rows, cols]` weight.
fn ct_block(s: &Strategy, rows: u64, cols: u64) -> (u64, u64) {
    match *s {
        Strategy::Tensor => (rows.max(1), cols.max(1)),
        Strategy::Channel => (1, cols.max(1)),
        Strategy::Group(g) => (1, g),
        Strategy::Block(r, c) => (r, c),
    }
}

/// Whether a non-regex target names module `m` (exact name or trailing path).
fn target_names(t: &str, m: &str) -> bool {
    !t.starts_with("re:") && (m == t || m.ends_with(&format!(".{t}")))
}

fn read_weight_shape(ck: &Checkpoint, t: &TensorInfo) -> Result<(u64, u64)> {
    let v: Vec<i64> = match (t.storage, t.numel()) {
        (Storage::Dense(DType::I64), 2) => {
            ck.bytes(t).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
        }
        (Storage::Dense(DType::I32), 2) => {
            ck.bytes(t).chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect()
        }
        _ => {
            return Err(Error::QuantLayout {
                tensor: t.name.clone(),
                detail: format!("weight_shape must be 2 I64 or I32 values, found {} {:?}", t.storage, t.shape),
            })
        }
    };
    if v.iter().any(|&x| x < 0) {
        return Err(Error::QuantLayout { tensor: t.name.clone(), detail: format!("negative weight_shape {v:?}") });
    }
    Ok((v[0] as u64, v[1] as u64))
}

fn compressed_tensors(ck: &Checkpoint, path: &Path, qc: &Value) -> Result<Layouts> {
    let groups = ct_groups(path, qc)?;
    let mut lay = Layouts::default();
    for (i, t) in ck.tensors.iter().enumerate() {
        let (m, packed) = if let Some(m) = t.name.strip_suffix(".weight_packed") {
            (m, true)
        } else if let Some(m) = t.name.strip_suffix(".weight") {
            let quantized = matches!(t.storage, Storage::Dense(d) if is_code_dtype(d));
            if !quantized || ck.get(&format!("{m}.weight_scale")).is_none() {
                continue;
            }
            (m, false)
        } else {
            continue;
        };
        let err = |detail: String| Error::QuantLayout { tensor: t.name.clone(), detail };
        if ck.get(&format!("{m}.weight_g_idx")).is_some() {
            return Err(err("activation-ordered weights (weight_g_idx) are not read".into()));
        }
        let scale_name = format!("{m}.weight_scale");
        let scale = index(ck, &scale_name).ok_or_else(|| Error::MissingTensor {
            tensor: scale_name.clone(),
            why: format!("dequantizing compressed-tensors weight '{}'", t.name),
        })?;
        let zero = index(ck, &format!("{m}.weight_zero_point"));
        let (rows, cols, shape_tensor) = if packed {
            let sn = format!("{m}.weight_shape");
            let si = index(ck, &sn).ok_or_else(|| Error::MissingTensor {
                tensor: sn.clone(),
                why: format!("unpacking compressed-tensors weight '{}'", t.name),
            })?;
            let (r, c) = read_weight_shape(ck, &ck.tensors[si])?;
            (r, c, Some(si))
        } else {
            match t.shape[..] {
                [r, c] => (r, c, None),
                _ => return Err(err(format!("quantized weights must be 2-D, found shape {:?}", t.shape))),
            }
        };
        let code_dtype = match t.storage {
            Storage::Dense(d) => d,
            _ => unreachable!("safetensors"),
        };
        let s = &ck.tensors[scale];
        // Candidate schemes: groups whose args fit these tensors.
        let mut fits: Vec<(&CtGroup, Dequant)> = Vec::new();
        for g in &groups {
            let format_ok = match g.format.as_deref() {
                None => true,
                Some("pack-quantized") => packed,
                Some("dense") => false,
                Some(_) => !packed,
            };
            let type_ok = if packed {
                !g.float && code_dtype == DType::I32
            } else {
                (g.float && code_dtype == DType::F8E4M3) || (!g.float && code_dtype == DType::I8)
            };
            if !format_ok || !type_ok {
                continue;
            }
            let packing = if packed { Packing::Int32 { bits: g.bits } } else { Packing::Plain };
            let zero = match (zero, packed) {
                (None, true) if !g.symmetric => continue, // the library asserts a zero point here
                (Some(_), true) if g.symmetric => continue,
                (Some(z), true) if matches!(g.strategy, Strategy::Group(_) | Strategy::Channel) => {
                    Some((z, ZeroPacking::Int32Rows { bits: g.bits }))
                }
                (z, _) => z.map(|z| (z, ZeroPacking::Plain)),
            };
            let d = Dequant {
                family: Family::CompressedTensors,
                codes: i,
                packing,
                scale,
                zero,
                shape_tensor,
                rows,
                cols,
                block: ct_block(&g.strategy, rows, cols),
                compute: match s.storage {
                    Storage::Dense(d) => d,
                    _ => DType::F32,
                },
                permute: None,
            };
            if d.check(ck).is_ok() && !fits.iter().any(|(_, x)| *x == d) {
                fits.push((g, d));
            }
        }
        if fits.len() > 1 {
            let named: Vec<_> =
                fits.iter().filter(|(g, _)| g.targets.iter().any(|tg| target_names(tg, m))).cloned().collect();
            if named.len() == 1 {
                fits = named;
            }
        }
        let d = match fits.len() {
            1 => fits.pop().unwrap().1,
            0 => {
                let zp = zero.map_or(String::new(), |z| {
                    format!(", zero point {} {:?}", ck.tensors[z].storage, ck.tensors[z].shape)
                });
                return Err(err(format!(
                    "no scheme in quantization_config.config_groups fits these tensors ({} {:?} for a [{rows}, {cols}] \
                     weight, scale {} {:?}{zp}); groups: {}",
                    t.storage,
                    t.shape,
                    s.storage,
                    s.shape,
                    groups.iter().map(|g| format!("{} {:?}", g.name, g)).collect::<Vec<_>>().join("; ")
                )));
            }
            _ => {
                let names: Vec<&str> = fits.iter().map(|(g, _)| g.name.as_str()).collect();
                return Err(err(format!(
                    "config groups {} all fit this weight with different dequantization; recast does not match \
                     regex targets",
                    names.join(", ")
                )));
            }
        };
        lay.add(ck, Rebuilt { name: format!("{m}.weight"), shape: vec![rows, cols], dequant: d })?;
        for p in ["input_scale", "input_zero_point", "input_global_scale", "output_scale", "output_zero_point"] {
            lay.consume(ck, &format!("{m}.{p}"));
        }
    }
    if qc.get("kv_cache_scheme").is_some_and(|v| !v.is_null()) {
        for (i, t) in ck.tensors.iter().enumerate() {
            let n = &t.name;
            if ["k_scale", "v_scale", "k_zero_point", "v_zero_point", "q_scale", "q_zero_point"]
                .iter()
                .any(|s| n.ends_with(&format!(".{s}")))
            {
                lay.consumed.insert(i);
            }
        }
    }
    Ok(lay)
}

/// Integer and FP8 dtypes: stored codes, never weights by themselves.
pub fn is_code_dtype(d: DType) -> bool {
    matches!(
        d,
        DType::I8
            | DType::U8
            | DType::I16
            | DType::U16
            | DType::I32
            | DType::U32
            | DType::I64
            | DType::U64
            | DType::F8E4M3
            | DType::F8E5M2
            | DType::F8E4M3Fnuz
            | DType::F8E5M2Fnuz
            | DType::F8E8M0
            | DType::F4
            | DType::F6E2M3
            | DType::F6E3M2
    )
}

// ---- msModelSlim -------------------------------------------------------------------------

/// Types whose weights are I8 codes with `weight_scale` / `weight_offset`.
const MS_INT8: &[&str] = &["W8A8_DYNAMIC", "W8A16", "W8A8", "W8A8_MIX"];

fn modelslim(ck: &Checkpoint, desc_path: &Path) -> Result<Layouts> {
    let text = std::fs::read(desc_path).map_err(|e| Error::io(desc_path, e))?;
    let desc: Value = serde_json::from_slice(&text)
        .map_err(|e| Error::Json { path: desc_path.to_path_buf(), detail: e.to_string() })?;
    let obj = desc.as_object().ok_or_else(|| Error::Json {
        path: desc_path.to_path_buf(),
        detail: "expected an object of tensor name → type".into(),
    })?;
    let group_size = desc.get("group_size").and_then(Value::as_u64).unwrap_or(0);
    let mut lay = Layouts::default();
    for (name, ty) in obj {
        let Some(ty) = ty.as_str() else { continue };
        let Some(i) = index(ck, name) else { continue };
        if matches!(ty, "C8" | "FAQuant") {
            lay.consumed.insert(i); // KV-cache / attention quantization parameters
            continue;
        }
        let Some(m) = name.strip_suffix(".weight") else { continue };
        if ty == "FLOAT" {
            continue;
        }
        let t = &ck.tensors[i];
        let err = |detail: String| Error::QuantLayout { tensor: name.clone(), detail };
        let bits = if ty == "W4A16" {
            4
        } else if MS_INT8.contains(&ty) {
            8
        } else {
            return Err(err(format!(
                "msModelSlim type \"{ty}\" (in {}) is not read (recast reads {}, W4A16)",
                desc_path.display(),
                MS_INT8.join(", ")
            )));
        };
        let (sn, on) = (format!("{m}.weight_scale"), format!("{m}.weight_offset"));
        let (Some(scale), Some(offset)) = (index(ck, &sn), index(ck, &on)) else {
            if ty == "W8A8" {
                return Err(Error::Unsupported(format!(
                    "tensor '{name}': static W8A8 without {m}.weight_scale / weight_offset (only deq_scale and \
                     quant_bias) cannot be dequantized to float weights"
                )));
            }
            return Err(Error::MissingTensor {
                tensor: if index(ck, &sn).is_none() { sn } else { on },
                why: format!("dequantizing msModelSlim {ty} weight '{name}'"),
            });
        };
        let s = &ck.tensors[scale];
        let (n, g) = match s.shape[..] {
            [n, g] if g > 0 => (n, g),
            _ => return Err(err(format!("weight_scale must be [n, 1] or [n, k/G], found {:?}", s.shape))),
        };
        let (rows, cols, packing) = match (bits, g, &t.shape[..]) {
            (8, _, [r, c]) => (*r, *c, Packing::Plain),
            (4, 1, [r, c]) => (*r, c * 2, Packing::Int4Cols),
            (4, _, [_, c]) => (n, *c, Packing::Int4Rows),
            _ => return Err(err(format!("quantized weights must be 2-D, found shape {:?}", t.shape))),
        };
        let bc = if g == 1 {
            cols.max(1)
        } else if group_size > 0 && cols.div_ceil(group_size) == g {
            group_size
        } else if cols % g == 0 {
            cols / g
        } else {
            return Err(err(format!("{g} scale groups do not divide {cols} input columns")));
        };
        let d = Dequant {
            family: Family::ModelSlim,
            codes: i,
            packing,
            scale,
            zero: Some((offset, ZeroPacking::Plain)),
            shape_tensor: None,
            rows,
            cols,
            block: (1, bc),
            compute: DType::F32,
            permute: None,
        };
        let o = &ck.tensors[offset];
        if o.shape != s.shape || !is_float(o) {
            return Err(Error::QuantLayout {
                tensor: o.name.clone(),
                detail: format!(
                    "weight_offset must be a float tensor of shape {:?}, found {} {:?}",
                    s.shape, o.storage, o.shape
                ),
            });
        }
        lay.add(ck, Rebuilt { name: name.clone(), shape: vec![rows, cols], dequant: d })?;
        for p in ["input_scale", "input_offset", "deq_scale", "quant_bias"] {
            lay.consume(ck, &format!("{m}.{p}"));
        }
    }
    Ok(lay)
}
