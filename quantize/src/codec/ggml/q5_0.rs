//! Q5_0 (22 B / 32 elements): `d: f16`, `qh: u8[4]` (bit j = 5th bit of element j),
//! `qs: u8[16]` (nibbles as Q4_0), `x = d·(q − 16)`. Ports of ggml's `quantize_row_q5_0_ref`
//! and `quantize_row_q5_0_impl`.

use super::common::{fp16_bytes, offset_codes, ref_row};
use super::q4_0::{legacy_qx_row, signed_absmax};

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

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    ref_row::<QK>(
        x,
        y,
        BLOCK_BYTES,
        |xb| signed_absmax(xb) / -16.0,
        |xb, id, out| {
            let q = offset_codes(xb, id, 16.5, 31);
            let (qh, qs) = out.split_at_mut(4);
            pack_q5(|j| q[j], qh, qs);
        },
    );
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    legacy_qx_row(x, y, qw, 16, BLOCK_BYTES, |yb, d, l| {
        yb[0..2].copy_from_slice(&fp16_bytes(d));
        let (qh, qs) = yb[2..].split_at_mut(4);
        pack_q5(|j| l[j] as u8, qh, qs);
    });
}
