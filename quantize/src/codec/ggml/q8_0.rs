//! Q8_0 (34 B / 32 elements): `d: f16`, `qs: i8[32]`; ggml's `quantize_row_q8_0_ref`.
//! ggml's `quantize_q8_0` ignores the importance matrix, so both paths are this one.

use super::common::{c_f32_to_i32, fp16_bytes};

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 34;

/// `amax/127` scale; codes `roundf(x / d)` (half away from zero, computed as `x * (1/d)`).
fn quantize_block(x: &[f32], y: &mut [u8]) {
    let mut amax = 0.0f32;
    for &v in x {
        // ggml's MAX(amax, fabsf(v)) = amax > |v| ? amax : |v|
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[0..2].copy_from_slice(&fp16_bytes(d));
    let qs = &mut y[2..2 + QK];
    if id.is_finite() {
        // |x·id| ≤ ~127: roundf (half away from zero) from the exact truncation and the exact
        // remainder x0 − trunc(x0), without a libm call.
        for (q, &v) in qs.iter_mut().zip(x) {
            let x0 = v * id;
            let t = x0 as i32;
            let frac = x0 - t as f32;
            let r = t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32;
            *q = r as u8;
        }
    } else {
        // 1/d overflowed (subnormal amax): C's implicit float -> int8_t of roundf(±inf / NaN).
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = c_f32_to_i32((v * id).round()) as u8;
        }
    }
}

pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block(xb, yb);
    }
}

pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], _qw: &[f32]) {
    quantize_row_ref(x, y);
}
