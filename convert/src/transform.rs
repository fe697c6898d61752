//! Per-tensor operations a conversion applies, and their materialisation into bytes.
//!
//! Each output tensor is one [`Op`] over one or more input tensors. Rearrangements (row
//! permutation, expert stacking, the MLA `kv_b` split) work on raw elements, so a tensor whose
//! dtype does not change is moved bit-exactly; a dtype change decodes to f32 once and rounds
//! once (round-to-nearest-even).
//!
//! [`stream`] writes an output in bounded chunks straight from the mapped input (rows of the
//! innermost dimension, at most [`CHUNK_BYTES`] at a time, source pages released as it goes),
//! so peak memory does not grow with tensor size. Only the small MLA `kv_b` rearrangements are
//! built whole. [`materialize`] is the same stream into memory (the engine's weight loader).

use crate::atomic::Sink;
use crate::checkpoint::{decode_storage, Checkpoint};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::float;
use crate::quantized::{self, Dequant};
use crate::tensor::{Storage, TensorInfo};
use rayon::prelude::*;

/// Which half of DeepSeek's `kv_b_proj` an op produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvPart {
    /// `attn_k_b`: `[n_head, kv_lora_rank, qk_nope]` (transposed).
    K,
    /// `attn_v_b`: `[n_head, v_head, kv_lora_rank]`.
    V,
}

/// How one output tensor is made from input tensors (indices into the checkpoint's tensors).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Copy(usize),
    /// llama.cpp's `LlamaModel.permute`: per head of `2·half` rows,
    /// `new[h·D + 2j + i] = old[h·D + i·half + j]`.
    PermuteRows {
        src: usize,
        n_head: u64,
        /// Permute only the first `rows` rows (the key rows of a low-rank KV `kv_b`); the rest
        /// pass through. `None`: every row.
        rows: Option<u64>,
    },
    /// The inverse of `PermuteRows`.
    UnpermuteRows {
        src: usize,
        n_head: u64,
        rows: Option<u64>,
    },
    /// Concatenate the results of the inner ops (each `Copy` or `Fp8Block`) along a new
    /// leading dimension (MoE experts).
    Stack(Vec<Op>),
    /// Slice `index` along the leading dimension.
    Unstack {
        src: usize,
        index: u64,
    },
    /// Split `kv_b_proj` `[n_head·(nope+v), kv_lora]` into its K or V part.
    SplitKvB {
        src: usize,
        n_head: u64,
        nope: u64,
        v_head: u64,
        part: KvPart,
        /// When `src` is quantized: the op producing its float values (`Fp8Block`, `Dequant`).
        values: Option<Box<Op>>,
    },
    /// The inverse: `attn_k_b` + `attn_v_b` → `kv_b_proj`.
    MergeKvB {
        k: usize,
        v: usize,
        n_head: u64,
        nope: u64,
        v_head: u64,
    },
    /// DeepSeek FP8: `w[i,j] = f32(q[i,j]) · scale_inv[i/128, j/128]`.
    Fp8Block {
        src: usize,
        scale_inv: usize,
        block: (u64, u64),
    },
    /// A weight rebuilt from a quantized layout (compressed-tensors, msModelSlim).
    Dequant(Box<Dequant>),
    /// Values computed by the converter, not read from the input (llama3 `rope_freqs`).
    Generated(Vec<f32>),
}

impl Op {
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            Op::Copy(s) | Op::PermuteRows { src: s, .. } | Op::UnpermuteRows { src: s, .. } => vec![*s],
            Op::Unstack { src, .. } | Op::SplitKvB { src, values: None, .. } => vec![*src],
            Op::SplitKvB { src, values: Some(v), .. } => std::iter::once(*src).chain(v.inputs()).collect(),
            Op::Dequant(d) => d.inputs(),
            Op::Stack(v) => v.iter().flat_map(Op::inputs).collect(),
            Op::MergeKvB { k, v, .. } => vec![*k, *v],
            Op::Fp8Block { src, scale_inv, .. } => vec![*src, *scale_inv],
            Op::Generated(_) => Vec::new(),
        }
    }
}

/// Elements of one or more inputs in a common dense dtype.
struct Elems {
    dtype: DType,
    bytes: Vec<u8>,
}

/// Loads inputs in a common dtype: their own if they all share a dense one, else F32.
fn load(ck: &Checkpoint, inputs: &[&TensorInfo]) -> Result<Vec<Elems>> {
    let common = match inputs[0].storage {
        Storage::Dense(d) if d.size().is_some() && inputs.iter().all(|t| t.storage == Storage::Dense(d)) => Some(d),
        _ => None,
    };
    inputs
        .iter()
        .map(|t| match common {
            Some(d) => Ok(Elems { dtype: d, bytes: ck.bytes(t).to_vec() }),
            None => {
                let mut f = Vec::new();
                ck.read_f32(t, &mut f)?;
                Ok(Elems { dtype: DType::F32, bytes: bytemuck::cast_slice(&f).to_vec() })
            }
        })
        .collect()
}

fn shape_err(t: &TensorInfo, detail: String) -> Error {
    Error::UnmappedTensor { tensor: t.name.clone(), detail }
}

/// Output bytes per streamed chunk.
pub const CHUNK_BYTES: usize = 4 << 20;

/// Computes the bytes of an output tensor stored as `out`, appending them to `buf`.
pub fn materialize(ck: &Checkpoint, op: &Op, out: DType, buf: &mut Vec<u8>) -> Result<()> {
    stream(ck, op, out, &mut Sink::new(buf))
}

/// The values of an output tensor as f32, after which its inputs are released (the values are
/// owned, so the mapped pages are no longer needed).
pub fn materialize_f32(ck: &Checkpoint, op: &Op) -> Result<Vec<f32>> {
    let mut bytes = Vec::new();
    materialize(ck, op, DType::F32, &mut bytes)?;
    for i in op.inputs() {
        ck.release(&ck.tensors[i]);
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
}

/// Streams the bytes of an output tensor stored as `out` into `sink`.
pub fn stream(ck: &Checkpoint, op: &Op, out: DType, sink: &mut Sink) -> Result<()> {
    match op {
        Op::Copy(i) => {
            let t = &ck.tensors[*i];
            stream_rows(ck, t, 0, rows(t), out, sink, true)
        }
        Op::PermuteRows { src, n_head, rows: prefix } | Op::UnpermuteRows { src, n_head, rows: prefix } => {
            let t = &ck.tensors[*src];
            let inverse = matches!(op, Op::UnpermuteRows { .. });
            let order = permutation(t, *n_head, inverse, *prefix)?;
            let row_len = rows(t) / order.len().max(1);
            for r in order {
                stream_rows(ck, t, r * row_len, (r + 1) * row_len, out, sink, false)?;
            }
            ck.release(t);
            Ok(())
        }
        Op::Stack(parts) => parts.iter().try_for_each(|p| stream(ck, p, out, sink)),
        Op::Unstack { src, index } => {
            let t = &ck.tensors[*src];
            let per = rows(t) / t.shape.first().copied().unwrap_or(1).max(1) as usize;
            stream_rows(ck, t, *index as usize * per, (*index as usize + 1) * per, out, sink, true)
        }
        Op::Fp8Block { src, scale_inv, block } => {
            fp8_block(ck, &ck.tensors[*src], &ck.tensors[*scale_inv], *block, out, sink)
        }
        Op::Dequant(d) => quantized::stream(ck, d, out, sink),
        Op::Generated(values) => {
            let mut buf = vec![0u8; values.len() * out.size().expect("byte-sized output dtype")];
            float::encode_into(out, values, &mut buf);
            sink.write(&buf)
        }
        Op::SplitKvB { .. } | Op::MergeKvB { .. } => {
            let mut buf = Vec::new();
            materialize_whole(ck, op, out, &mut buf)?;
            sink.write(&buf)
        }
    }
}

/// Number of innermost-dimension rows of `t`.
fn rows(t: &TensorInfo) -> usize {
    let ne0 = t.shape.last().copied().unwrap_or(1).max(1);
    (t.numel() / ne0) as usize
}

/// Output row order of a Q/K (un)permutation: `order[i]` is the source row (in units of the
/// tensor's leading dimension) written at output position `i`.
fn permutation(t: &TensorInfo, n_head: u64, inverse: bool, prefix: Option<u64>) -> Result<Vec<usize>> {
    let all = t.shape.first().copied().unwrap_or(0);
    let n = prefix.unwrap_or(all);
    if n > all {
        return Err(shape_err(t, format!("cannot permute the first {n} of {all} rows")));
    }
    let mut order = row_order(n, n_head, inverse).map_err(|d| shape_err(t, d))?;
    order.extend(n as usize..all as usize);
    Ok(order)
}

/// [`permutation`] of `rows` rows; the error says why the rows cannot be permuted.
pub fn row_order(rows: u64, n_head: u64, inverse: bool) -> std::result::Result<Vec<usize>, String> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        return Err(format!("{rows} rows cannot be permuted as {n_head} heads of 2×half rows"));
    }
    let (d, half) = ((rows / n_head) as usize, (rows / n_head / 2) as usize);
    let mut order = vec![0usize; rows as usize];
    for h in 0..n_head as usize {
        for i in 0..2 {
            for j in 0..half {
                let (new, old) = (h * d + 2 * j + i, h * d + i * half + j);
                if inverse {
                    order[old] = new;
                } else {
                    order[new] = old;
                }
            }
        }
    }
    Ok(order)
}

/// Streams rows `[r0, r1)` of `t` (innermost-dimension rows) as `out`: passed through when the
/// storage already is `out`, else decoded and re-encoded in parallel pieces (each element is
/// converted independently, so the bytes do not depend on the thread count).
fn stream_rows(
    ck: &Checkpoint,
    t: &TensorInfo,
    r0: usize,
    r1: usize,
    out: DType,
    sink: &mut Sink,
    release: bool,
) -> Result<()> {
    let ne0 = t.shape.last().copied().unwrap_or(1) as usize;
    let row_in = (t.nbytes as usize).checked_div(rows(t)).unwrap_or(0);
    let row_out = ne0 * out.size().expect("byte-sized output dtype");
    let per_chunk = (CHUNK_BYTES / row_in.max(row_out).max(1)).max(1);
    let bytes = ck.bytes(t);
    let mut scratch = Vec::new();
    let mut r = r0;
    while r < r1 {
        let end = (r + per_chunk).min(r1);
        let src = &bytes[r * row_in..end * row_in];
        if t.storage == Storage::Dense(out) {
            sink.write(src)?;
        } else {
            scratch.resize((end - r) * row_out, 0);
            convert_rows(t, src, ne0, row_in, out, &mut scratch)?;
            sink.write(&scratch)?;
        }
        if release {
            ck.sources[t.source].release(t.offset + (r * row_in) as u64, src.len() as u64);
        }
        r = end;
    }
    Ok(())
}

/// Decodes whole rows of `t`'s storage and encodes them as `out` into `dst`, in parallel.
fn convert_rows(t: &TensorInfo, src: &[u8], ne0: usize, row_in: usize, out: DType, dst: &mut [u8]) -> Result<()> {
    let rows_per_task = (65536 / ne0.max(1)).max(1);
    let row_out = ne0 * out.size().unwrap();
    dst.par_chunks_mut(rows_per_task * row_out).zip(src.par_chunks(rows_per_task * row_in)).try_for_each(|(d, s)| {
        let mut f = vec![0f32; d.len() / out.size().unwrap()];
        decode_storage(t.storage, &t.name, s, &mut f)?;
        float::encode_into(out, &f, d);
        Ok(())
    })
}

/// Builds a whole output in memory (used for the small MLA `kv_b` rearrangements).
fn materialize_whole(ck: &Checkpoint, op: &Op, out: DType, buf: &mut Vec<u8>) -> Result<()> {
    let mut inputs: Vec<&TensorInfo> = op.inputs().into_iter().map(|i| &ck.tensors[i]).collect();
    let rebuilt;
    let elems = match op {
        Op::SplitKvB { values: Some(v), .. } => {
            // The float values of a quantized kv_b_proj, with its logical shape.
            let mut bytes = Vec::new();
            materialize(ck, v, DType::F32, &mut bytes)?;
            if let Op::Dequant(d) = v.as_ref() {
                rebuilt = TensorInfo { shape: vec![d.rows, d.cols], ..inputs[0].clone() };
                inputs[0] = &rebuilt;
            }
            vec![Elems { dtype: DType::F32, bytes }]
        }
        _ => load(ck, &inputs)?,
    };
    let dtype = elems[0].dtype;
    let esize = dtype.size().unwrap();
    let arranged = match op {
        Op::SplitKvB { n_head, nope, v_head, part, .. } => {
            split_kv_b(inputs[0], &elems[0].bytes, esize, *n_head, *nope, *v_head, *part)?
        }
        Op::MergeKvB { n_head, nope, v_head, .. } => {
            merge_kv_b(inputs[0], &elems[0].bytes, &elems[1].bytes, esize, *n_head, *nope, *v_head)?
        }
        _ => unreachable!("streamed by `stream`"),
    };
    cast(dtype, &arranged, out, buf);
    Ok(())
}

/// Re-encodes elements from `from` to `to` (a plain copy when they match).
fn cast(from: DType, bytes: &[u8], to: DType, buf: &mut Vec<u8>) {
    if from == to {
        buf.extend_from_slice(bytes);
        return;
    }
    let mut f = vec![0f32; bytes.len() / from.size().unwrap()];
    float::decode_to_f32(from, bytes, &mut f);
    float::encode_from_f32(to, &f, buf);
}

fn split_kv_b(
    t: &TensorInfo,
    bytes: &[u8],
    esize: usize,
    n_head: u64,
    nope: u64,
    v_head: u64,
    part: KvPart,
) -> Result<Vec<u8>> {
    let (rows, lora) = match t.shape[..] {
        [r, c] => (r, c as usize),
        _ => return Err(shape_err(t, format!("expected a 2-D kv_b_proj, got shape {:?}", t.shape))),
    };
    if rows != n_head * (nope + v_head) {
        return Err(shape_err(
            t,
            format!("{rows} rows, expected n_head·(qk_nope+v_head) = {}", n_head * (nope + v_head)),
        ));
    }
    let (nope, per) = (nope as usize, (nope + v_head) as usize);
    let row = lora * esize;
    let mut out = Vec::with_capacity(bytes.len());
    for h in 0..n_head as usize {
        let head = &bytes[h * per * row..(h + 1) * per * row];
        match part {
            // [nope, lora] → transposed [lora, nope]
            KvPart::K => {
                for c in 0..lora {
                    for r in 0..nope {
                        out.extend_from_slice(&head[r * row + c * esize..r * row + (c + 1) * esize]);
                    }
                }
            }
            KvPart::V => out.extend_from_slice(&head[nope * row..]),
        }
    }
    Ok(out)
}

fn merge_kv_b(
    k: &TensorInfo,
    kb: &[u8],
    vb: &[u8],
    esize: usize,
    n_head: u64,
    nope: u64,
    v_head: u64,
) -> Result<Vec<u8>> {
    // k: [n_head, lora, nope]; v: [n_head, v_head, lora]
    let lora = match k.shape[..] {
        [h, l, n] if h == n_head && n == nope => l as usize,
        _ => {
            return Err(shape_err(
                k,
                format!("expected attn_k_b of shape [{n_head}, kv_lora_rank, {nope}], got {:?}", k.shape),
            ))
        }
    };
    let (nope, v_head) = (nope as usize, v_head as usize);
    if vb.len() != n_head as usize * v_head * lora * esize {
        return Err(shape_err(k, "attn_v_b does not match attn_k_b's kv_lora_rank and head count".into()));
    }
    let mut out = Vec::with_capacity(kb.len() + vb.len());
    for h in 0..n_head as usize {
        let kh = &kb[h * lora * nope * esize..(h + 1) * lora * nope * esize];
        for r in 0..nope {
            for c in 0..lora {
                let at = (c * nope + r) * esize;
                out.extend_from_slice(&kh[at..at + esize]);
            }
        }
        out.extend_from_slice(&vb[h * v_head * lora * esize..(h + 1) * v_head * lora * esize]);
    }
    Ok(out)
}

/// DeepSeek FP8 weights, one band of `block.0` rows at a time:
/// `w[i, j] = f32(q[i, j]) · scale_inv[i / bn, j / bk]`, rounded once to `out`.
fn fp8_block(
    ck: &Checkpoint,
    w: &TensorInfo,
    s: &TensorInfo,
    block: (u64, u64),
    out: DType,
    sink: &mut Sink,
) -> Result<()> {
    let (rows, cols) = match w.shape[..] {
        [r, c] => (r as usize, c as usize),
        _ => return Err(shape_err(w, format!("FP8 block weights must be 2-D, got {:?}", w.shape))),
    };
    let (bn, bk) = (block.0 as usize, block.1 as usize);
    let want = vec![rows.div_ceil(bn) as u64, cols.div_ceil(bk) as u64];
    let Storage::Dense(qtype) = w.storage else {
        return Err(shape_err(w, "FP8 weights must be a dense fp8 dtype".into()));
    };
    if s.shape != want || s.storage != Storage::Dense(DType::F32) || qtype.size() != Some(1) {
        let detail = format!(
            "expected F32 scale_inv of shape {want:?} for '{}' {} {:?}, got {} {:?}",
            w.name, w.storage, w.shape, s.storage, s.shape
        );
        return Err(shape_err(s, detail));
    }
    let mut sc = Vec::new();
    ck.read_f32(s, &mut sc)?;
    let bytes = ck.bytes(w);
    let (mut x, mut enc) = (Vec::new(), Vec::new());
    for (b, srow) in sc.chunks(want[1] as usize).enumerate() {
        let (r0, r1) = (b * bn, ((b + 1) * bn).min(rows));
        x.resize((r1 - r0) * cols, 0.0);
        float::decode_to_f32(qtype, &bytes[r0 * cols..r1 * cols], &mut x);
        for row in x.chunks_mut(cols) {
            for (j, v) in row.iter_mut().enumerate() {
                *v *= srow[j / bk];
            }
        }
        enc.resize(x.len() * out.size().unwrap(), 0);
        float::encode_into(out, &x, &mut enc);
        sink.write(&enc)?;
    }
    ck.release(w);
    Ok(())
}
