//! Q4_K (144 B / 256 elements): `d: f16`, `dmin: f16`, `scales: u8[12]` (8 six-bit scale and
//! min codes), `qs: u8[128]`; `x = d·sc·q − dmin·m` per 32-element sub-block. Ports of ggml's
//! `quantize_row_q4_K_ref` and `quantize_row_q4_K_impl`; Q5_K shares the scale search.

use super::common::{
    fp16_bytes, fp16_round, get_scale_min_k4, make_qkx_quants, make_qp_quants, nearest_int, pack_scale_min_k4, Qkx,
};

pub(super) const QK: usize = 256;
pub(super) const BLOCK_BYTES: usize = 144;

/// Sub-block scales/mins of the ref path (Q4_K: nmax 15, rmin −1; Q5_K: nmax 31, rmin −0.5):
/// weights `sqrt(Σx²/32) + |x|`, `make_qkx2_quants`, then 6-bit codes against the largest
/// scale and min. Writes the 12 scale bytes and returns `(d, dmin)` before fp16 rounding.
#[inline(always)]
pub(super) fn ref_scales(x: &[f32], l: &mut [u8; QK], search: Qkx, scales_out: &mut [u8]) -> (f32, f32) {
    let mut weights = [0.0f32; QK];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for k in 0..32 {
            weights[32 * j + k] = av_x + xs[k].abs();
        }
    }
    let (scales, mins) = make_qkx_quants::<32, 8>(x, &weights, l, search);
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    pack_scale_min_k4(&ls, &lm, scales_out);
    (max_scale / 63.0, max_min / 63.0)
}

/// Sub-block scales/mins of the imatrix path (Q4_K and Q5_K; `clamp63` is Q5_K's extra
/// `MIN(63, ·)`): weights `qw·sqrt(sigma2 + x²)`, `make_qkx3_quants(…, −0.9, 0.05, 36)`, codes
/// by `make_qp_quants(8, 63, ·, ·, sw)`. Returns `(d, dmin)` before fp16 rounding.
#[inline(always)]
pub(super) fn impl_scales(
    x: &[f32],
    qw: &[f32],
    l: &mut [u8; QK],
    nmax: i32,
    clamp63: bool,
    scales_out: &mut [u8],
) -> (f32, f32) {
    let mut weights = [0.0f32; QK];
    let mut sw = [0.0f32; 8];
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / QK as f32;
    let search = Qkx { nmax, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let q = &qw[32 * j..32 * j + 32];
        let wj = &mut weights[32 * j..32 * j + 32];
        for k in 0..32 {
            wj[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        let mut sumw = 0.0f32;
        for &w in wj.iter() {
            sumw += w;
        }
        sw[j] = sumw;
    }
    let (scales, mins) = make_qkx_quants::<32, 8>(x, &weights, l, search);
    let d_block = make_qp_quants(&scales, 63, &mut ls, &sw);
    let m_block = make_qp_quants(&mins, 63, &mut lm, &sw);
    if clamp63 {
        for j in 0..8 {
            ls[j] = ls[j].min(63);
            lm[j] = lm[j].min(63);
        }
    }
    pack_scale_min_k4(&ls, &lm, scales_out);
    (d_block, m_block)
}

/// Requantizes every sub-block whose stored scale is non-zero to `[0, nmax]` with the
/// fp16-rounded `d`/`dmin`; other sub-blocks keep the codes of the search.
#[inline(always)]
pub(super) fn requantize(x: &[f32], l: &mut [u8; QK], scales: &[u8], d: f32, dmin: f32, nmax: i32) {
    let (dq, mq) = (fp16_round(d), fp16_round(dmin));
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let dd = dq * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = mq * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax) as u8;
        }
    }
}

#[inline(always)]
fn finish(x: &[f32], y: &mut [u8], l: &mut [u8; QK], d: f32, dmin: f32) {
    y[0..2].copy_from_slice(&fp16_bytes(d));
    y[2..4].copy_from_slice(&fp16_bytes(dmin));
    requantize(x, l, &y[4..16], d, dmin, 15);
    let qs = &mut y[16..144];
    for (c, j) in (0..QK).step_by(64).enumerate() {
        for k in 0..32 {
            qs[32 * c + k] = l[j + k] | (l[j + k + 32] << 4);
        }
    }
}

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    const SEARCH: Qkx = Qkx { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
    let mut l = [0u8; QK];
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)) {
        let (d, dmin) = ref_scales(xb, &mut l, SEARCH, &mut yb[4..16]);
        finish(xb, yb, &mut l, d, dmin);
    }
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    let mut l = [0u8; QK];
    for ((xb, yb), qb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)).zip(qw.chunks_exact(QK)) {
        let (d, dmin) = impl_scales(xb, qb, &mut l, 15, false, &mut yb[4..16]);
        finish(xb, yb, &mut l, d, dmin);
    }
}
