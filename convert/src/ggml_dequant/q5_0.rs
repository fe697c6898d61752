//! Q5_0: 32 elements in 22 bytes — one fp16 scale, 5-bit codes offset by 16.
//!
//! ```text
//! byte 0..2    d       f16 LE
//! byte 2..6    qh      u32 LE; bit j = bit 4 of c[j]       (j in 0..32)
//! byte 6..22   qs[16]  qs[j] = (c[j] & 0xF) | (c[j+16] & 0xF) << 4
//!
//! x[j] = (c[j] - 16) * d                                  (ggml dequantize_row_q5_0)
//! ```

use super::f16_at;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 22;
const _: () = assert!(BLOCK_BYTES == 2 + 4 + QK / 2);

/// The 5-bit codes of a Q5_0/Q5_1 block from its `qh` word and 16 `qs` bytes.
pub(super) fn codes5(qh: u32, qs: &[u8]) -> [u8; QK] {
    let mut c = [0u8; QK];
    for (j, &q) in qs.iter().enumerate() {
        c[j] = (q & 0x0F) | (((qh >> j) & 1) << 4) as u8;
        c[j + 16] = (q >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
    }
    c
}

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_at(block, 0);
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    for (x, c) in out.iter_mut().zip(codes5(qh, &block[6..])) {
        *x = (c as i32 - 16) as f32 * d;
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
        // qh bit 0 (x[0]) and bit 31 (x[31]) set; qh byte 2 bit 0 = bit 16 (x[16]) clear.
        b[2] = 0x01;
        b[5] = 0x80;
        b[6] = 0x3F; // x[0]: 0xF | 16 = 31, x[16]: 3
        b[21] = 0x20; // x[15]: 0, x[31]: 2 | 16 = 18
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 7.5);
        assert_eq!(out[16], -6.5);
        assert_eq!(out[15], -8.0);
        assert_eq!(out[31], 1.0);
    }
}
