//! Q6_K: 256 elements in 210 bytes — 16 sub-blocks of 16 elements, each with a signed 8-bit
//! scale times one fp16 super-scale; 6-bit codes L (q = L - 32) in two bit planes.
//!
//! ```text
//! byte   0..128  ql[128]    low 4 bits; for half h in 0..2, l in 0..32:
//!                           ql[64h + l]      = L[128h + l]      & 0xF | (L[128h + l + 64] & 0xF) << 4
//!                           ql[64h + l + 32] = L[128h + l + 32] & 0xF | (L[128h + l + 96] & 0xF) << 4
//! byte 128..192  qh[64]     high 2 bits:
//!
//!                 qh[32h + l]:   7 6    5 4    3 2    1 0
//!                               +96    +64    +32    +0    → L[128h + l + offset] >> 4
//!
//! byte 192..208  scales[16] i8, one per sub-block s = i / 16
//! byte 208..210  d          f16 LE
//!
//! x[i] = (d * scales[s]) * (L[i] - 32)                    (ggml dequantize_row_q6_K)
//! ```

use super::f16_at;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 210;
const _: () = assert!(BLOCK_BYTES == QK / 2 + QK / 4 + QK / 16 + 2);

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let (ql, qh, scales) = (&block[0..128], &block[128..192], &block[192..208]);
    let d = f16_at(block, 208);
    for (s, (sub, &sc)) in out.chunks_exact_mut(16).zip(scales).enumerate() {
        let dl = d * sc as i8 as f32;
        // Sub-block s lies in half h = s / 8, quarter k = s % 8 / 2, lanes 16 * (s % 2)...
        let (h, k, lane) = (s / 8, s % 8 / 2, 16 * (s % 2));
        let lo = &ql[64 * h + 32 * (k % 2) + lane..][..16];
        let hi = &qh[32 * h + lane..][..16];
        for ((x, &l), &hb) in sub.iter_mut().zip(lo).zip(hi) {
            let code = ((l >> (4 * (k / 2))) & 0xF) | (((hb >> (2 * k)) & 3) << 4);
            *x = dl * (code as i32 - 32) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// Packs per formats.md §2.5 (the quantizer's view), independent of the decoder's loops.
    fn pack(scales: [i8; 16], codes: &[u8; QK], d: f32) -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        for h in 0..2 {
            for l in 0..32 {
                let c = |k: usize| codes[128 * h + l + k];
                b[64 * h + l] = c(0) & 0xF | (c(64) & 0xF) << 4;
                b[64 * h + l + 32] = c(32) & 0xF | (c(96) & 0xF) << 4;
                b[128 + 32 * h + l] = c(0) >> 4 | (c(32) >> 4) << 2 | (c(64) >> 4) << 4 | (c(96) >> 4) << 6;
            }
        }
        for (s, &v) in scales.iter().enumerate() {
            b[192 + s] = v as u8;
        }
        b[208..210].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        b
    }

    #[test]
    fn hand_packed_block() {
        let scales = [-128, 127, 0, 1, -1, 64, -64, 3, 5, -7, 100, -100, 33, -33, 12, 77];
        let codes: [u8; QK] = std::array::from_fn(|i| ((i * 13 + i / 16) % 64) as u8);
        let b = pack(scales, &codes, 0.0078125);
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        for (i, &x) in out.iter().enumerate() {
            let want = 0.0078125 * scales[i / 16] as f32 * (codes[i] as i32 - 32) as f32;
            assert_eq!(x, want, "element {i}");
        }
        assert_eq!(out[0], 32.0); // scale -128, code 0 → q = -32
    }
}
