//! Q3_K: 256 elements in 110 bytes — 16 sub-blocks of 16 elements, each with a signed 6-bit
//! scale times one fp16 super-scale; 3-bit codes split into 2 low bits and a high-bit mask.
//!
//! ```text
//! byte   0..32   hmask[32]  bit k of hmask[l] = high bit of code c[32k + l]
//! byte  32..96   qs[64]     low 2 bits of c, packed exactly as Q2_K's qs
//! byte  96..108  scales[12] sixteen 6-bit u_s (scale = u_s - 32):
//!
//!                 byte       7 6 5 4            3 2 1 0
//!                 0..8       u_{8+k} bits 3..0  u_k bits 3..0          (k = byte)
//!                 8..12      7-6: u_{12+k}>>4   5-4: u_{8+k}>>4
//!                            3-2: u_{4+k}>>4    1-0: u_k>>4            (k = byte - 8)
//!
//! byte 108..110  d          f16 LE
//!
//! x[i] = dl * q,   dl = d * (u_s - 32),   s = i / 16,
//!        q = (c & 3) - (high bit set ? 0 : 4)          ∈ [-4, 3]
//! ```
//!
//! Note the inverted mask: a *set* high bit means no offset (ggml `dequantize_row_q3_K`).

use super::f16_at;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 110;
const _: () = assert!(BLOCK_BYTES == QK / 8 + QK / 4 + 12 + 2);

/// The signed scale `u_s - 32` of sub-block `s` from the 12 packed scale bytes.
fn scale(scales: &[u8], s: usize) -> i32 {
    let low = if s < 8 { scales[s] & 0xF } else { scales[s - 8] >> 4 };
    let high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
    (low | high << 4) as i32 - 32
}

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let (hmask, qs, scales) = (&block[0..32], &block[32..96], &block[96..108]);
    let d = f16_at(block, 108);
    for (s, sub) in out.chunks_exact_mut(16).enumerate() {
        let dl = d * scale(scales, s) as f32;
        let (q, shift) = (&qs[32 * (s / 8) + 16 * (s % 2)..][..16], 2 * (s % 8 / 2));
        let hm = &hmask[16 * (s % 2)..][..16];
        for ((x, &b), &h) in sub.iter_mut().zip(q).zip(hm) {
            let offset = if (h >> (s / 2)) & 1 == 1 { 0 } else { 4 };
            *x = dl * (((b >> shift) & 3) as i32 - offset) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// Packs per formats.md §2.5 (the quantizer's view), independent of the decoder's loops.
    fn pack(scales: [i32; 16], codes: &[u8; QK], d: f32) -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        for (i, &c) in codes.iter().enumerate() {
            b[i % 32] |= (c >> 2) << (i / 32);
        }
        for h in 0..2 {
            for l in 0..32 {
                let e = 128 * h + l;
                let c = |k: usize| codes[e + k] & 3;
                b[32 + 32 * h + l] = c(0) | c(32) << 2 | c(64) << 4 | c(96) << 6;
            }
        }
        for (j, &s) in scales.iter().enumerate() {
            let u = (s + 32) as u8;
            b[96 + j % 8] |= (u & 0xF) << (4 * (j / 8));
            b[96 + 8 + j % 4] |= (u >> 4) << (2 * (j / 4));
        }
        b[108..110].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        b
    }

    #[test]
    fn hand_packed_block() {
        let scales = [-32, -1, 0, 1, 31, 17, -17, 5, -5, 16, -16, 30, -30, 9, 12, -20];
        let codes: [u8; QK] = std::array::from_fn(|i| ((i * 5 + i / 32) % 8) as u8);
        let b = pack(scales, &codes, 0.5);
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        for (i, &x) in out.iter().enumerate() {
            let want = 0.5 * scales[i / 16] as f32 * (codes[i] as i32 - 4) as f32;
            assert_eq!(x, want, "element {i}");
        }
        assert_eq!(out[0], 64.0); // scale -32, code 0 → q = -4
    }
}
