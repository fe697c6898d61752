//! Q4_K: 256 elements in 144 bytes — 8 sub-blocks of 32 elements, each with a 6-bit scale and
//! a 6-bit min scaled by two fp16 super-scales; 4-bit codes.
//!
//! ```text
//! byte  0..2    d           f16 LE, super-scale of the scales
//! byte  2..4    dmin        f16 LE, super-scale of the mins
//! byte  4..16   scales[12]  eight 6-bit scales sc_j and mins m_j (j = sub-block):
//!
//!                 byte    7 6               5 4 3 2 1 0
//!                 0..4    sc_{4+k} bits 5-4  sc_k                       (k = byte)
//!                 4..8    m_{4+k}  bits 5-4  m_k                        (k = byte - 4)
//!                 8..12   7-4: m_{4+k} bits 3-0   3-0: sc_{4+k} bits 3-0 (k = byte - 8)
//!
//! byte 16..144  qs[128]     for chunk c in 0..4, l in 0..32:
//!                           qs[32c + l] = q[64c + l] | q[64c + 32 + l] << 4
//!
//! x[i] = d1 * q[i] - m1,   d1 = d * sc_j,   m1 = dmin * m_j,   j = i / 32
//! ```
//!
//! `d1` and `m1` are formed first, as in ggml's `dequantize_row_q4_K` (all products here are
//! exact in f32, so only the subtraction rounds; see the module note in `mod.rs`).

use super::f16_at;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 144;
const _: () = assert!(BLOCK_BYTES == 2 + 2 + 12 + QK / 2);

/// Scale and min codes of sub-block `j`: ggml's `get_scale_min_k4`, shared with Q5_K.
pub(super) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let (scales, qs) = (&block[4..16], &block[16..144]);
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        let (q, shift) = (&qs[32 * (j / 2)..][..32], 4 * (j % 2));
        for (x, &b) in sub.iter_mut().zip(q) {
            *x = d1 * ((b >> shift) & 0xF) as f32 - m1;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use half::f16;

    /// Packs 6-bit scales and mins per formats.md §2.5 (the quantizer's view).
    pub(in super::super) fn pack_scales(ls: [u8; 8], lm: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = ls[j];
                s[j + 4] = lm[j];
            } else {
                s[j + 4] = (ls[j] & 0xF) | (lm[j] & 0xF) << 4;
                s[j - 4] |= (ls[j] >> 4) << 6;
                s[j] |= (lm[j] >> 4) << 6;
            }
        }
        s
    }

    #[test]
    fn hand_packed_block() {
        let ls = [1, 17, 33, 63, 2, 18, 40, 63];
        let lm = [0, 63, 5, 31, 48, 3, 16, 62];
        let q: [u8; QK] = std::array::from_fn(|i| ((i * 7 + i / 32) % 16) as u8);
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.0625).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(0.125).to_le_bytes());
        b[4..16].copy_from_slice(&pack_scales(ls, lm));
        for c in 0..4 {
            for l in 0..32 {
                b[16 + 32 * c + l] = q[64 * c + l] | q[64 * c + 32 + l] << 4;
            }
        }
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        for (i, &x) in out.iter().enumerate() {
            let j = i / 32;
            let want = 0.0625 * ls[j] as f32 * q[i] as f32 - 0.125 * lm[j] as f32;
            assert_eq!(x, want, "element {i}");
        }
    }
}
