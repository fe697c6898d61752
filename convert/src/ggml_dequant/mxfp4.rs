//! MXFP4: 32 elements in 17 bytes — one E8M0 exponent, 4-bit E2M1 codes.
//!
//! ```text
//! byte 0       e       u8, E8M0 biased exponent
//! byte 1..17   qs[16]  qs[j] = c[j] | c[j+16] << 4        (as Q4_0)
//!
//! x[j] = KVALUES[c[j]] * 2^(e-128)                        (ggml dequantize_row_mxfp4)
//! ```
//!
//! `KVALUES` are the E2M1 values doubled (so integers), and the scale is halved to match:
//! ggml's `GGML_E8M0_TO_FP32_HALF`. Unlike the OCP spec, ggml gives `e = 0xFF` no NaN
//! meaning: it decodes to 2^127.

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 17;
const _: () = assert!(BLOCK_BYTES == 1 + QK / 2);

/// ggml `kvalues_mxfp4`: sign bit 3, magnitude {0, 0.5, 1, 1.5, 2, 3, 4, 6} × 2.
const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `2^(e - 128)` built from bits, as ggml's `ggml_e8m0_to_fp32_half` (e < 2 is subnormal).
fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { ((e - 1) as u32) << 23 };
    f32::from_bits(bits)
}

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = e8m0_half(block[0]);
    super::split_nibbles(&block[1..], out, |c| KVALUES[c as usize] as f32 * d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_packed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0] = 127; // scale 2^-1: x = e2m1 value
        b[1] = 0xF7; // x[0]: code 7 (6.0), x[16]: code 15 (-6.0)
        b[16] = 0x91; // x[15]: code 1 (0.5), x[31]: code 9 (-0.5)
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 6.0);
        assert_eq!(out[16], -6.0);
        assert_eq!(out[15], 0.5);
        assert_eq!(out[31], -0.5);
    }

    #[test]
    fn exponent_extremes() {
        assert_eq!(e8m0_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_half(2), 2f32.powi(-126));
        assert_eq!(e8m0_half(128), 1.0);
        assert_eq!(e8m0_half(255), 2f32.powi(127));
    }
}
