//! Q5_K (176 B / 256 elements): `d: f16`, `dmin: f16`, `scales: u8[12]` (as Q4_K),
//! `qh: u8[32]`, `qs: u8[128]`; `x = d·sc·q − dmin·m`, q ∈ [0, 31]. Ports of ggml's
//! `quantize_row_q5_K_ref` and `quantize_row_q5_K_impl` (scale search shared with Q4_K).

use super::common::{fp16_bytes, Qkx};
use super::q4_k::{impl_scales, ref_scales, requantize};

pub(super) const QK: usize = 256;
pub(super) const BLOCK_BYTES: usize = 176;

#[inline(always)]
fn finish(x: &[f32], y: &mut [u8], l: &mut [u8; QK], d: f32, dmin: f32) {
    y[0..2].copy_from_slice(&fp16_bytes(d));
    y[2..4].copy_from_slice(&fp16_bytes(dmin));
    requantize(x, l, &y[4..16], d, dmin, 31);
    let (qh, ql) = y[16..176].split_at_mut(32);
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (c, n) in (0..QK).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * c + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    const SEARCH: Qkx = Qkx { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };
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
        let (d, dmin) = impl_scales(xb, qb, &mut l, 31, true, &mut yb[4..16]);
        finish(xb, yb, &mut l, d, dmin);
    }
}
