//! Q5_0 (22 B / 32 elements): `d: f16`, `qh: u8[4]` (bit j = 5th bit of element j),
//! `qs: u8[16]` (nibbles as Q4_0), `x = d·(q − 16)`. Ports of ggml's `quantize_row_q5_0_ref`
//! and `quantize_row_q5_0_impl`.

use super::common::{c_f32_to_i32, fp16_bytes, trunc_nonneg};
use super::q4_0::{legacy_qx_row, signed_absmax};
use half::f16;
use half::slice::HalfFloatSliceExt;

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 22;

/// Writes 32 five-bit codes: low nibbles into `qs`, 5th bits into the little-endian `qh`.
#[inline(always)]
pub(super) fn pack_q5(codes: impl Fn(usize) -> u8, qh_out: &mut [u8], qs: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (xi0, xi1) = (codes(j), codes(j + 16));
        qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
    }
    qh_out[..4].copy_from_slice(&qh.to_le_bytes());
}

/// Codes of one block: ggml's `MIN(31, (int8_t)(x·id + 16.5f))`.
#[inline(always)]
fn block_codes(x: &[f32; QK], id: f32) -> [u8; QK] {
    let mut q = [0u8; QK];
    if id.is_finite() {
        // |x·id| ≤ 16, so x·id + 16.5 is in [0.5, 32.5]: the int8 cast keeps the value.
        for j in 0..QK {
            q[j] = trunc_nonneg(x[j] * id + 16.5).min(31) as u8;
        }
    } else {
        // 1/d overflowed (subnormal max): C's conversion of ±inf / NaN.
        for j in 0..QK {
            q[j] = (c_f32_to_i32(x[j] * id + 16.5) as i8 as i32).min(31) as u8;
        }
    }
    q
}

/// Blocks whose fp16 scales are converted in one call.
const GROUP: usize = 64;

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    let mut d = [0f32; GROUP];
    let mut d16 = [f16::ZERO; GROUP];
    for (xg, yg) in x.chunks(GROUP * QK).zip(y.chunks_mut(GROUP * BLOCK_BYTES)) {
        let nb = xg.len() / QK;
        for (d, xb) in d.iter_mut().zip(xg.chunks_exact(QK)) {
            *d = signed_absmax(xb) / -16.0;
        }
        d16[..nb].convert_from_f32_slice(&d[..nb]);
        for (b, (xb, yb)) in xg.chunks_exact(QK).zip(yg.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
            let id = if d[b] != 0.0 { 1.0 / d[b] } else { 0.0 };
            yb[0..2].copy_from_slice(&d16[b].to_le_bytes());
            let q = block_codes(xb.try_into().expect("QK values"), id);
            let (qh, qs) = yb[2..].split_at_mut(4);
            pack_q5(|j| q[j], qh, qs);
        }
    }
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    legacy_qx_row(x, y, qw, 16, BLOCK_BYTES, |yb, d, l| {
        yb[0..2].copy_from_slice(&fp16_bytes(d));
        let (qh, qs) = yb[2..].split_at_mut(4);
        pack_q5(|j| l[j] as u8, qh, qs);
    });
}
