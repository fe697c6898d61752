//! Q5_1: 32 elements in 24 bytes — fp16 scale and offset, unsigned 5-bit codes.
//!
//! ```text
//! byte 0..2    d       f16 LE
//! byte 2..4    m       f16 LE
//! byte 4..8    qh      u32 LE; bit j = bit 4 of c[j]       (as Q5_0)
//! byte 8..24   qs[16]  qs[j] = (c[j] & 0xF) | (c[j+16] & 0xF) << 4
//!
//! x[j] = c[j] * d + m                                     (ggml dequantize_row_q5_1)
//! ```

use super::f16_at;
use super::q5_0::codes5;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 24;
const _: () = assert!(BLOCK_BYTES == 4 + 4 + QK / 2);

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let (d, m) = (f16_at(block, 0), f16_at(block, 2));
    let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
    for (x, c) in out.iter_mut().zip(codes5(qh, &block[8..])) {
        *x = c as f32 * d + m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn hand_packed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-2.0).to_le_bytes());
        b[6] = 0x01; // qh bit 16: high bit of x[16]
        b[8] = 0x5F; // x[0]: 15, x[16]: 5 | 16 = 21
        b[23] = 0xF0; // x[15]: 0, x[31]: 15
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 1.75);
        assert_eq!(out[16], 3.25);
        assert_eq!(out[15], -2.0);
        assert_eq!(out[31], 1.75);
    }
}
