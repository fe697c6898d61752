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

/// `e^x` in f32 without a libm call, so loops over it vectorize: Cody–Waite reduction
/// `x = n·ln2 + r` (|r| ≤ ln2/2), Cephes' degree-6 polynomial for `e^r`, then `2^n` by the
/// exponent bits. Within 2 ulp of the correctly rounded value on the normal range (tested
/// against f64); torch's CPU kernels use a vectorized approximation of the same accuracy (Sleef,
/// 1 ulp). Underflows to 0 below −87.3 (no subnormals), overflows to +inf above 88.37, NaN stays
/// NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [1.987_569_1e-4, 1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];
    let xc = x.clamp(-87.336_55, 88.376_26);
    // n = round(x·log2 e) by the 1.5·2²³ trick (no float → int conversion; vectorizes).
    let t = xc * LOG2E + 12_582_912.0;
    let n = t - 12_582_912.0;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let e = p * (r * r) + r + 1.0;
    let k = (t.to_bits() as i32 & 0x7F_FFFF) - 0x40_0000;
    let v = e * f32::from_bits(((k + 127) as u32) << 23);
    if x > 88.376_26 {
        f32::INFINITY
    } else if x < -87.336_55 {
        0.0
    } else {
        v
    }
}

/// `silu(gate) * up`, elementwise.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(g, u)| g / (1.0 + exp(-g)) * u).collect()
}

/// In-place softmax of one row.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let sum: f32 = row.iter().sum();
    row.iter_mut().for_each(|v| *v /= sum);
}

/// Logistic sigmoid `1 / (1 + exp(-x))` (torch `Tensor.sigmoid`).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
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

/// Query rows per attention task: a block reads only the keys up to its last row, which skips
/// about half of the masked scores of a long sequence.
const QUERY_BLOCK: usize = 64;

/// Causal attention for one head over a sequence: `q[seq, d]`, `k[seq, d]`, `v[seq, dv]`;
/// writes `out[seq, dv]`. As transformers' eager attention: `scores = (q·kᵀ)·scale`, masked,
/// softmax in f32, `out = p·v` (both products as matrix products).
pub fn causal_attention(q: &[f32], k: &[f32], v: &[f32], spec: HeadSpec, out: &mut [f32]) {
    let seq = q.len() / spec.d;
    for i0 in (0..seq).step_by(QUERY_BLOCK) {
        let i1 = (i0 + QUERY_BLOCK).min(seq);
        attention_block(q, k, v, spec, i0..i1, &mut out[i0 * spec.dv..i1 * spec.dv]);
    }
}

/// [`causal_attention`] for the query rows `rows` only, against keys `0..rows.end` (the later
/// keys are masked for every row of the block): writes `out[rows.len(), dv]`.
fn attention_block(q: &[f32], k: &[f32], v: &[f32], spec: HeadSpec, rows: std::ops::Range<usize>, out: &mut [f32]) {
    let HeadSpec { d, dv, scale, window } = spec;
    let (b, keys) = (rows.len(), rows.end);
    let mut p = linear(&q[rows.start * d..rows.end * d], b, d, &k[..keys * d], keys, Par::Seq);
    for (r, row) in p.chunks_mut(keys).enumerate() {
        let i = rows.start + r;
        let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
        row.iter_mut().for_each(|s| *s *= scale);
        softmax(&mut row[lo..=i]);
        row[..lo].fill(0.0);
        row[i + 1..].fill(0.0);
    }
    out.copy_from_slice(&matmul(&p, b, keys, &v[..keys * dv], dv, Par::Seq));
}

/// Copies head `head` (`hd` wide) of every row of `x[n, heads·hd]` into a contiguous `[n, hd]`.
pub fn gather_head(x: &[f32], n: usize, width: usize, head: usize, hd: usize) -> Vec<f32> {
    (0..n).flat_map(|i| x[i * width + head * hd..i * width + (head + 1) * hd].iter().copied()).collect()
}

/// Grouped-query attention over all heads: `q[n, heads·d]`, `k[n, kv_heads·d]`,
/// `v[n, kv_heads·dv]` → `[n, heads·dv]`. Query head `h` reads KV head `h / (heads/kv_heads)`
/// (transformers `repeat_kv`). Tasks are (head, block of query rows), run in parallel; each is
/// computed whole by one thread, so the result does not depend on the thread count.
pub fn multi_head_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    (nh, nkv): (usize, usize),
    spec: HeadSpec,
) -> Vec<f32> {
    let (d, dv) = (spec.d, spec.dv);
    let heads = |x: &[f32], count: usize, w: usize| -> Vec<Vec<f32>> {
        (0..count).into_par_iter().map(|h| gather_head(x, n, count * w, h, w)).collect()
    };
    let (qh, kh, vh) = (heads(q, nh, d), heads(k, nkv, d), heads(v, nkv, dv));
    let blocks = n.div_ceil(QUERY_BLOCK);
    // Longest blocks (the last rows see the most keys) first, for balance.
    let tasks: Vec<(usize, usize)> = (0..blocks).rev().flat_map(|b| (0..nh).map(move |h| (h, b))).collect();
    let parts: Vec<(usize, usize, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(h, b)| {
            let kv = h / (nh / nkv);
            let rows = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(n);
            let mut o = vec![0f32; rows.len() * dv];
            attention_block(&qh[h], &kh[kv], &vh[kv], spec, rows, &mut o);
            (h, b, o)
        })
        .collect();
    let mut out = vec![0f32; n * nh * dv];
    for (h, b, o) in parts {
        for (r, row) in o.chunks(dv).enumerate() {
            let i = b * QUERY_BLOCK + r;
            out[(i * nh + h) * dv..(i * nh + h + 1) * dv].copy_from_slice(row);
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
    fn exp_is_within_two_ulp() {
        let mut worst = 0u32;
        for i in 0..=2_000_000u32 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
            let want = (x as f64).exp() as f32;
            let got = exp(x);
            worst = worst.max(got.to_bits().abs_diff(want.to_bits()));
        }
        assert!(worst <= 2, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(1000.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
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
