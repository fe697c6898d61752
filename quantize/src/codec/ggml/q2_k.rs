//! Q2_K (84 B / 256 elements): `scales: u8[16]` (low nibble scale code, high nibble min code
//! per 16-element sub-block), `qs: u8[64]`, `d: f16`, `dmin: f16`;
//! `x = d·(sc & 0xF)·q − dmin·(sc >> 4)`. Ports of ggml's `quantize_row_q2_K_ref` and
//! `quantize_row_q2_K_impl`.

use super::common::{fp16_bytes, make_qkx_quants, make_qp_quants, nearest_int, Qkx};

pub(super) const QK: usize = 256;
pub(super) const BLOCK_BYTES: usize = 84;

const REF_SEARCH: Qkx = Qkx { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
const IMPL_SEARCH: Qkx = Qkx { nmax: 3, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false };

/// Requantizes with the stored (fp16-rounded) super-scales and packs `qs`, `d`, `dmin`
/// (the common tail of ref and impl). `scales` is already in `y[0..16]`.
#[inline(always)]
fn finish(x: &[f32], y: &mut [u8], l: &mut [u8; QK], d16: [u8; 2], dmin16: [u8; 2]) {
    let dm = half::f16::from_le_bytes(d16).to_f32();
    let mm = half::f16::from_le_bytes(dmin16).to_f32();
    for j in 0..16 {
        let sc = y[j];
        let d = dm * (sc & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (sc >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + m) / d).clamp(0, 3) as u8;
        }
    }
    for j in (0..QK).step_by(128) {
        for k in 0..32 {
            y[16 + j / 4 + k] = l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
    y[80..82].copy_from_slice(&d16);
    y[82..84].copy_from_slice(&dmin16);
}

#[inline(always)]
fn quantize_block_ref(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK];
    let mut weights = [0.0f32; QK];
    for k in 0..QK {
        weights[k] = x[k].abs();
    }
    let (scales, mins) = make_qkx_quants::<16, 16>(x, &weights, &mut l, REF_SEARCH);
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let d16 = if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            y[j] = nearest_int(iscale * scales[j]) as u8;
        }
        fp16_bytes(max_scale / 15.0)
    } else {
        y[..16].fill(0);
        fp16_bytes(0.0)
    };
    let dmin16 = if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            y[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        fp16_bytes(max_min / 15.0)
    } else {
        fp16_bytes(0.0)
    };
    finish(x, y, &mut l, d16, dmin16);
}

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block_ref(xb, yb);
    }
}

#[inline(always)]
fn quantize_block_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    let mut l = [0u8; QK];
    let mut weight = [0.0f32; QK];
    let mut sw = [0.0f32; 16];
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let mut sumx2 = 0.0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = sumx2 / QK as f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let q = &qw[16 * j..16 * j + 16];
        let wj = &mut weight[16 * j..16 * j + 16];
        for k in 0..16 {
            wj[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        for &w in wj.iter() {
            sw[j] += w;
        }
    }
    let (scales, mins) = make_qkx_quants::<16, 16>(x, &weight, &mut l, IMPL_SEARCH);
    let dm = make_qp_quants(&scales, 15, &mut ls, &sw);
    let mm = make_qp_quants(&mins, 15, &mut lm, &sw);
    for j in 0..16 {
        y[j] = ls[j] | (lm[j] << 4);
    }
    finish(x, y, &mut l, fp16_bytes(dm), fp16_bytes(mm));
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    for ((xb, yb), qb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)).zip(qw.chunks_exact(QK)) {
        quantize_block_impl(xb, yb, qb);
    }
}
