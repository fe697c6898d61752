//! Q8_0 (34 B / 32 elements): `d: f16`, `qs: i8[32]`; ggml's `quantize_row_q8_0_ref`.
//! ggml's `quantize_q8_0` ignores the importance matrix, so both paths are this one.
//!
//! The arithmetic is ggml's, arranged so it vectorizes: the scales of up to 64 blocks are
//! computed first and converted to fp16 together (`common::ref_row`), and `roundf` is computed
//! without a float → int conversion per element (see [`round_half_away`]).

use super::common::{c_f32_to_i32, nearest_int, ref_row};

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 34;

/// ggml's running `MAX(amax, fabsf(v))` over a block. The input is finite (callers check), and
/// finite |v| order as their bit patterns do, so the integer max is the same value, and
/// vectorizes.
#[inline(always)]
fn amax(x: &[f32]) -> f32 {
    f32::from_bits(x.iter().map(|v| v.to_bits() & 0x7fff_ffff).max().unwrap_or(0))
}

/// C's `roundf` (half away from zero) for |x| ≤ 2²²: the nearest-even integer from ggml's
/// `nearest_int` bit trick, moved one step away from zero where `x` was a tie that went
/// toward zero. `x - t` is exact here, so the tie test is exact.
#[inline(always)]
fn round_half_away(x: f32) -> i32 {
    let t = nearest_int(x);
    let diff = x - t as f32;
    t + (diff == 0.5 && x > 0.0) as i32 - (diff == -0.5 && x < 0.0) as i32
}

/// Codes of one block: `roundf(x · id)` as int8 (`|x · id| ≤ ~127` when `id` is finite).
#[inline(always)]
fn encode_block(x: &[f32; QK], id: f32, qs: &mut [u8]) {
    let mut q = [0u8; QK];
    if id.is_finite() {
        for i in 0..QK {
            q[i] = round_half_away(x[i] * id) as u8;
        }
    } else {
        // 1/d overflowed (subnormal amax): C's implicit float -> int8_t of roundf(±inf / NaN).
        for i in 0..QK {
            q[i] = c_f32_to_i32((x[i] * id).round()) as u8;
        }
    }
    qs.copy_from_slice(&q);
}

/// `d = amax/127` per block, stored as fp16; codes `roundf(x / d)` computed as `x * (1/d)`.
#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    ref_row::<QK>(x, y, BLOCK_BYTES, |xb| amax(xb) / 127.0, encode_block);
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], _qw: &[f32]) {
    quantize_row_ref(x, y);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tie handling against `f32::round` (C's `roundf`) on every half-integer and its
    /// neighbours in the Q8_0 range.
    #[test]
    fn round_half_away_is_roundf() {
        for k in -300..=300 {
            let h = k as f32 * 0.5;
            for x in [h, f32::from_bits(h.to_bits() + 1), f32::from_bits(h.to_bits().wrapping_sub(1)), -h] {
                if x.is_finite() && x.abs() <= 160.0 {
                    assert_eq!(round_half_away(x), x.round() as i32, "{x}");
                }
            }
        }
    }
}
