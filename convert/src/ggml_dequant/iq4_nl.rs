//! IQ4_NL: 32 elements in 18 bytes — one fp16 scale, 4-bit indices into a fixed
//! non-linear codebook.
//!
//! ```text
//! byte 0..2    d       f16 LE
//! byte 2..18   qs[16]  qs[j] = c[j] | c[j+16] << 4        (as Q4_0)
//!
//! x[j] = d * KVALUES[c[j]]                                (ggml dequantize_row_iq4_nl)
//! ```

use super::{f16_at, split_nibbles};

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 18;
const _: () = assert!(BLOCK_BYTES == 2 + QK / 2);

/// ggml `kvalues_iq4nl` (`ggml-common.h`).
const KVALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let d = f16_at(block, 0);
    split_nibbles(&block[2..], out, |c| d * KVALUES[c as usize] as f32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn hand_packed_block() {
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0xF8; // x[0]: index 8 (1), x[16]: index 15 (113)
        b[17] = 0x07; // x[15]: index 7 (-10), x[31]: index 0 (-127)
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        assert_eq!(out[0], 0.5);
        assert_eq!(out[16], 56.5);
        assert_eq!(out[15], -5.0);
        assert_eq!(out[31], -63.5);
    }
}
