//! Q2_K: 256 elements in 84 bytes — 16 sub-blocks of 16 elements, each with a 4-bit scale and
//! a 4-bit min that are themselves scaled by two fp16 super-scales; 2-bit codes.
//!
//! ```text
//! byte  0..16  scales[16]  scales[s] = sc_s | mn_s << 4   (sub-block s = elements 16s..16s+15)
//! byte 16..80  qs[64]      2-bit codes c, four per byte; for half h in 0..2, l in 0..32:
//!
//!                 qs[32h + l]:   7 6    5 4    3 2    1 0
//!                               +96    +64    +32    +0    → c[128h + l + offset]
//!
//! byte 80..82  d           f16 LE, super-scale of the scales
//! byte 82..84  dmin        f16 LE, super-scale of the mins
//!
//! x[i] = dl * c[i] - ml,   dl = d * sc_s,   ml = dmin * mn_s,   s = i / 16
//! ```
//!
//! `dl` and `ml` are formed first, in ggml's operation order (`dequantize_row_q2_K`).

use super::f16_at;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 84;
const _: () = assert!(BLOCK_BYTES == QK / 16 + QK / 4 + 2 + 2);

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let (scales, qs) = (&block[0..16], &block[16..80]);
    let (d, dmin) = (f16_at(block, 80), f16_at(block, 82));
    for (s, (sub, &sc)) in out.chunks_exact_mut(16).zip(scales).enumerate() {
        let dl = d * (sc & 0xF) as f32;
        let ml = dmin * (sc >> 4) as f32;
        let (q, shift) = (&qs[32 * (s / 8) + 16 * (s % 2)..][..16], 2 * (s % 8 / 2));
        for (x, &b) in sub.iter_mut().zip(q) {
            *x = dl * ((b >> shift) & 3) as f32 - ml;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// Packs per formats.md §2.5 (the quantizer's view), independent of the decoder's loops.
    fn pack(sc: [u8; 16], mn: [u8; 16], c: &[u8; QK], d: f32, dmin: f32) -> [u8; BLOCK_BYTES] {
        let mut b = [0u8; BLOCK_BYTES];
        for s in 0..16 {
            b[s] = sc[s] | mn[s] << 4;
        }
        for h in 0..2 {
            for l in 0..32 {
                let e = 128 * h + l;
                b[16 + 32 * h + l] = c[e] | c[e + 32] << 2 | c[e + 64] << 4 | c[e + 96] << 6;
            }
        }
        b[80..82].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        b[82..84].copy_from_slice(&f16::from_f32(dmin).to_le_bytes());
        b
    }

    #[test]
    fn hand_packed_block() {
        let sc = [0, 1, 2, 3, 15, 14, 13, 12, 7, 8, 9, 10, 11, 4, 5, 6];
        let mn = [15, 0, 3, 1, 2, 9, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14];
        let c: [u8; QK] = std::array::from_fn(|i| ((i * 7 + i / 16) % 4) as u8);
        let b = pack(sc, mn, &c, 0.25, 0.125);
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        for (i, &x) in out.iter().enumerate() {
            let s = i / 16;
            let want = 0.25 * sc[s] as f32 * c[i] as f32 - 0.125 * mn[s] as f32;
            assert_eq!(x, want, "element {i}");
        }
        assert_eq!(out[0], -1.875); // sc 0, min 15
    }
}
