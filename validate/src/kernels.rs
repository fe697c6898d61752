//! Numeric kernels of the reference forward: free functions over row-major f32 slices.
//!
//! Matrix products go through faer (parallel over output blocks with rayon; the reduction over
//! `k` is never split, so results do not depend on the thread count). Everything else is plain
//! scalar code written to mirror transformers' f32 operation order.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// `y[n, m] = x[n, k] · w[m, k]ᵀ` (a torch `Linear` without bias).
pub fn linear(x: &[f32], n: usize, k: usize, w: &[f32], m: usize, par: Par) -> Vec<f32> {
    assert_eq!(x.len(), n * k, "linear: input is not [{n}, {k}]");
    assert_eq!(w.len(), m * k, "linear: weight is not [{m}, {k}]");
    let mut y = vec![0f32; n * m];
    if n == 0 || m == 0 {
        return y;
    }
    let lhs = MatRef::from_row_major_slice(x, n, k);
    let rhs = MatRef::from_row_major_slice(w, m, k).transpose();
    let dst = MatMut::from_row_major_slice_mut(&mut y, n, m);
    faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
    y
}

/// Adds `bias[m]` to every row of `y[n, m]`.
pub fn add_bias(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

/// RMSNorm over rows of width `w.len()`: `w · x / sqrt(mean(x²) + eps)`
/// (transformers `LlamaRMSNorm`: variance in f32, `x * rsqrt(var + eps)`, then `weight *`).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks(d).zip(out.chunks_mut(d)) {
        let var = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let r = 1.0 / (var + eps).sqrt();
        for ((o, v), g) in o.iter_mut().zip(row).zip(w) {
            *o = g * (v * r);
        }
    }
    out
}

/// `silu(gate) * up`, elementwise.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect()
}

/// In-place softmax of one row.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// Logistic sigmoid `1 / (1 + exp(-x))` (torch `Tensor.sigmoid`).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Indices of the `k` largest values, best first; ties go to the lower index (torch `topk`
/// leaves their order unspecified), in `f32::total_cmp` order.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Shape and masking of one attention head.
#[derive(Clone, Copy, Debug)]
pub struct HeadSpec {
    /// Query/key width.
    pub d: usize,
    /// Value width.
    pub dv: usize,
    /// Multiplier of q·k (transformers `self.scaling`).
    pub scale: f32,
    /// Sliding-window length: keys older than `window` positions are masked.
    pub window: Option<usize>,
}

/// `y[n, m] = a[n, k] · b[k, m]` (both row-major).
pub fn matmul(a: &[f32], n: usize, k: usize, b: &[f32], m: usize, par: Par) -> Vec<f32> {
    assert_eq!((a.len(), b.len()), (n * k, k * m), "matmul: shapes do not match");
    let mut y = vec![0f32; n * m];
    if n == 0 || m == 0 {
        return y;
    }
    let dst = MatMut::from_row_major_slice_mut(&mut y, n, m);
    let (lhs, rhs) = (MatRef::from_row_major_slice(a, n, k), MatRef::from_row_major_slice(b, k, m));
    faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
    y
}

/// Causal attention for one head over a sequence: `q[seq, d]`, `k[seq, d]`, `v[seq, dv]`;
/// writes `out[seq, dv]`. As transformers' eager attention: `scores = (q·kᵀ)·scale`, masked,
/// softmax in f32, `out = p·v` (both products as matrix products).
pub fn causal_attention(q: &[f32], k: &[f32], v: &[f32], spec: HeadSpec, out: &mut [f32]) {
    let HeadSpec { d, dv, scale, window } = spec;
    let seq = q.len() / d;
    let mut p = linear(q, seq, d, k, seq, Par::Seq);
    for (i, row) in p.chunks_mut(seq).enumerate() {
        let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
        row.iter_mut().for_each(|s| *s *= scale);
        softmax(&mut row[lo..=i]);
        row[..lo].fill(0.0);
        row[i + 1..].fill(0.0);
    }
    out.copy_from_slice(&matmul(&p, seq, seq, v, dv, Par::Seq));
}

/// Copies head `head` (`hd` wide) of every row of `x[n, heads·hd]` into a contiguous `[n, hd]`.
pub fn gather_head(x: &[f32], n: usize, width: usize, head: usize, hd: usize) -> Vec<f32> {
    (0..n).flat_map(|i| x[i * width + head * hd..i * width + (head + 1) * hd].iter().copied()).collect()
}

/// Grouped-query attention over all heads: `q[n, heads·d]`, `k[n, kv_heads·d]`,
/// `v[n, kv_heads·dv]` → `[n, heads·dv]`. Query head `h` reads KV head `h / (heads/kv_heads)`
/// (transformers `repeat_kv`). Heads run in parallel; each is computed whole by one thread, so
/// the result does not depend on the thread count.
pub fn multi_head_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    (nh, nkv): (usize, usize),
    spec: HeadSpec,
) -> Vec<f32> {
    let (d, dv) = (spec.d, spec.dv);
    let per_head: Vec<Vec<f32>> = (0..nh)
        .into_par_iter()
        .map(|h| {
            let kvh = h / (nh / nkv);
            let mut o = vec![0f32; n * dv];
            let (qh, kh) = (gather_head(q, n, nh * d, h, d), gather_head(k, n, nkv * d, kvh, d));
            causal_attention(&qh, &kh, &gather_head(v, n, nkv * dv, kvh, dv), spec, &mut o);
            o
        })
        .collect();
    let mut out = vec![0f32; n * nh * dv];
    for (h, o) in per_head.iter().enumerate() {
        for i in 0..n {
            out[(i * nh + h) * dv..(i * nh + h + 1) * dv].copy_from_slice(&o[i * dv..(i + 1) * dv]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_naive_and_is_thread_count_independent() {
        let (n, k, m) = (5, 37, 11);
        let x: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let w: Vec<f32> = (0..m * k).map(|i| ((i * 104729) % 97) as f32 / 48.0 - 1.0).collect();
        let y1 = linear(&x, n, k, &w, m, Par::Seq);
        let y2 = linear(&x, n, k, &w, m, Par::rayon(2));
        assert_eq!(y1, y2);
        for r in 0..n {
            for c in 0..m {
                let naive: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[c * k + i] as f64).sum();
                assert!((y1[r * m + c] as f64 - naive).abs() < 1e-4, "{r},{c}");
            }
        }
    }

    #[test]
    fn softmax_and_norm() {
        let mut r = [1.0f32, 2.0, 3.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6 && r[2] > r[1]);
        let y = rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0);
        let rms = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / rms).abs() < 1e-6 && (y[1] - 8.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn top_k_is_best_first_with_ties_to_the_lower_index() {
        let v = [0.5, f32::NEG_INFINITY, 2.0, 0.5, -1.0];
        assert_eq!(top_k(&v, 3), [2, 0, 3]);
        assert_eq!(top_k(&v, 9), [2, 0, 3, 4, 1]);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7 && sigmoid(-100.0) >= 0.0);
    }
}
