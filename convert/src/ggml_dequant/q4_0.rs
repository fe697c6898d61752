//! Q4_0: 32 elements in 18 bytes — one fp16 scale, 4-bit codes offset by 8.
//!
//! ```text
//! byte 0..2    d       f16 LE
//! byte 2..18   qs[16]  qs[j] = c[j] | c[j+16] << 4        (c = 4-bit code)
//!
//! x[j] = (c[j] - 8) * d                                   (ggml dequantize_row_q4_0)
//! ```

use super::{f16_at, split_nibbles};

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 18;
const _: () = assert!(BLOCK_BYTES == 2 + QK / 2);

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_at(block, 0);
    split_nibbles(&block[2..], out, |c| (c as i32 - 8) as f32 * d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn hand_packed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0x9F; // x[0]: code 15, x[16]: code 9
        b[17] = 0x08; // x[15]: code 8, x[31]: code 0
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 3.5);
        assert_eq!(out[16], 0.5);
        assert_eq!(out[15], 0.0);
        assert_eq!(out[31], -4.0);
        assert_eq!(out[1], -4.0); // code 0
    }
}
