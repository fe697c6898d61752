//! Q8_0: 32 elements in 34 bytes — one fp16 scale, signed 8-bit codes.
//!
//! ```text
//! byte 0..2    d       f16 LE
//! byte 2..34   qs[32]  i8, qs[j] is element j
//!
//! x[j] = qs[j] * d                                        (ggml dequantize_row_q8_0)
//! ```

use super::f16_at;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 34;
const _: () = assert!(BLOCK_BYTES == 2 + QK);

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_at(block, 0);
    for (x, &q) in out.iter_mut().zip(&block[2..]) {
        *x = q as i8 as f32 * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn hand_packed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0x7F; // +127
        b[3] = 0x80; // -128
        b[33] = 0xFF; // -1
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 63.5);
        assert_eq!(out[1], -64.0);
        assert_eq!(out[2], 0.0);
        assert_eq!(out[31], -0.5);
    }
}
