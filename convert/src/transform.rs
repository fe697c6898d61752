//! Per-tensor operations a conversion applies, and their materialisation into bytes.
//!
//! Each output tensor is one [`Op`] over one or more input tensors. Rearrangements (row
//! permutation, expert stacking, the MLA `kv_b` split) work on raw elements, so a tensor whose
//! dtype does not change is moved bit-exactly; a dtype change decodes to f32 once and rounds
//! once (round-to-nearest-even). Only the tensors of one output are in memory at a time.

use crate::checkpoint::Checkpoint;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::float;
use crate::tensor::{Storage, TensorInfo};

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
    },
    /// The inverse of `PermuteRows`.
    UnpermuteRows {
        src: usize,
        n_head: u64,
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
}

impl Op {
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            Op::Copy(s) | Op::PermuteRows { src: s, .. } | Op::UnpermuteRows { src: s, .. } => vec![*s],
            Op::Unstack { src, .. } | Op::SplitKvB { src, .. } => vec![*src],
            Op::Stack(v) => v.iter().flat_map(Op::inputs).collect(),
            Op::MergeKvB { k, v, .. } => vec![*k, *v],
            Op::Fp8Block { src, scale_inv, .. } => vec![*src, *scale_inv],
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

/// Computes the bytes of an output tensor stored as `out` into `buf`.
pub fn materialize(ck: &Checkpoint, op: &Op, out: DType, buf: &mut Vec<u8>) -> Result<()> {
    let inputs: Vec<&TensorInfo> = op.inputs().into_iter().map(|i| &ck.tensors[i]).collect();
    match op {
        Op::Fp8Block { block, .. } => return fp8_block(ck, inputs[0], inputs[1], *block, out, buf),
        Op::Stack(parts) => {
            // Each part lands in `out` directly: a plain copy when the dtype already matches.
            return parts.iter().try_for_each(|p| materialize(ck, p, out, buf));
        }
        _ => {}
    }
    let mut elems = load(ck, &inputs)?;
    let dtype = elems[0].dtype;
    let esize = dtype.size().unwrap();
    let arranged = match op {
        Op::Copy(_) => std::mem::take(&mut elems[0].bytes),
        Op::PermuteRows { n_head, .. } => permute_rows(inputs[0], &elems[0].bytes, esize, *n_head, false)?,
        Op::UnpermuteRows { n_head, .. } => permute_rows(inputs[0], &elems[0].bytes, esize, *n_head, true)?,
        Op::Unstack { index, .. } => {
            let t = inputs[0];
            let n = t.shape.first().copied().unwrap_or(1);
            let each = elems[0].bytes.len() / n.max(1) as usize;
            elems[0].bytes[*index as usize * each..(*index as usize + 1) * each].to_vec()
        }
        Op::SplitKvB { n_head, nope, v_head, part, .. } => {
            split_kv_b(inputs[0], &elems[0].bytes, esize, *n_head, *nope, *v_head, *part)?
        }
        Op::MergeKvB { n_head, nope, v_head, .. } => {
            merge_kv_b(inputs[0], &elems[0].bytes, &elems[1].bytes, esize, *n_head, *nope, *v_head)?
        }
        Op::Fp8Block { .. } | Op::Stack(_) => unreachable!("handled above"),
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

fn permute_rows(t: &TensorInfo, bytes: &[u8], esize: usize, n_head: u64, inverse: bool) -> Result<Vec<u8>> {
    let rows = t.shape.first().copied().unwrap_or(0);
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(shape_err(t, format!("{rows} rows cannot be permuted as {n_head} heads of 2×half rows")));
    }
    let row_bytes = bytes.len() / rows as usize;
    let (d, half) = ((rows / n_head) as usize, (rows / n_head / 2) as usize);
    let mut out = vec![0u8; bytes.len()];
    for h in 0..n_head as usize {
        for i in 0..2 {
            for j in 0..half {
                let (new, old) = (h * d + 2 * j + i, h * d + i * half + j);
                let (dst, src) = if inverse { (old, new) } else { (new, old) };
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    let _ = esize;
    Ok(out)
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

fn fp8_block(
    ck: &Checkpoint,
    w: &TensorInfo,
    s: &TensorInfo,
    block: (u64, u64),
    out: DType,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let (rows, cols) = match w.shape[..] {
        [r, c] => (r, c),
        _ => return Err(shape_err(w, format!("FP8 block weights must be 2-D, got {:?}", w.shape))),
    };
    let want = vec![rows.div_ceil(block.0), cols.div_ceil(block.1)];
    if s.shape != want || s.storage != Storage::Dense(DType::F32) {
        return Err(shape_err(
            s,
            format!(
                "expected F32 scale_inv of shape {want:?} for '{}' {:?}, got {} {:?}",
                w.name, w.shape, s.storage, s.shape
            ),
        ));
    }
    let (mut x, mut sc) = (Vec::new(), Vec::new());
    ck.read_f32(w, &mut x)?;
    ck.read_f32(s, &mut sc)?;
    let sc_cols = want[1] as usize;
    for (i, row) in x.chunks_mut(cols as usize).enumerate() {
        let srow = &sc[(i / block.0 as usize) * sc_cols..][..sc_cols];
        for (j, v) in row.iter_mut().enumerate() {
            *v *= srow[j / block.1 as usize];
        }
    }
    float::encode_from_f32(out, &x, buf);
    Ok(())
}
