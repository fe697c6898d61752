//! Q5_1 (24 B / 32 elements): `d: f16`, `m: f16`, `qh: u8[4]`, `qs: u8[16]` (bits as Q5_0),
//! `x = d·q + m`. Ports of ggml's `quantize_row_q5_1_ref` (note: no clamp to 31 there) and
//! `quantize_row_q5_1_impl`.

use super::common::{c_f32_to_i32, fp16_bytes};
use super::q4_1::{legacy_impl_row, min_max};
use super::q5_0::pack_q5;

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 24;

#[inline(always)]
fn quantize_block_ref(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[0..2].copy_from_slice(&fp16_bytes(d));
    y[2..4].copy_from_slice(&fp16_bytes(min));
    // (uint8_t)(x0 + 0.5f), no clamp
    let code = |j: usize| c_f32_to_i32((x[j] - min) * id + 0.5) as u8;
    let (qh, qs) = y[4..].split_at_mut(4);
    pack_q5(code, qh, qs);
}

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block_ref(xb, yb);
    }
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    legacy_impl_row(x, y, qw, 31, BLOCK_BYTES, |yb, d, m, l| {
        yb[0..2].copy_from_slice(&fp16_bytes(d));
        yb[2..4].copy_from_slice(&fp16_bytes(m));
        let (qh, qs) = yb[4..].split_at_mut(4);
        pack_q5(|j| l[j], qh, qs);
    });
}
