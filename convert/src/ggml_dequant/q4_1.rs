//! Q4_1: 32 elements in 20 bytes — fp16 scale and offset, unsigned 4-bit codes.
//!
//! ```text
//! byte 0..2    d       f16 LE
//! byte 2..4    m       f16 LE
//! byte 4..20   qs[16]  qs[j] = c[j] | c[j+16] << 4
//!
//! x[j] = c[j] * d + m                                     (ggml dequantize_row_q4_1)
//! ```

use super::{f16_at, split_nibbles};

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 20;
const _: () = assert!(BLOCK_BYTES == 4 + QK / 2);

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let (d, m) = (f16_at(block, 0), f16_at(block, 2));
    split_nibbles(&block[4..], out, |c| c as f32 * d + m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn hand_packed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b[4] = 0xF3; // x[0]: code 3, x[16]: code 15
        b[19] = 0x40; // x[15]: code 0, x[31]: code 4
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], -0.25);
        assert_eq!(out[16], 2.75);
        assert_eq!(out[15], -1.0);
        assert_eq!(out[31], 0.0);
    }
}
