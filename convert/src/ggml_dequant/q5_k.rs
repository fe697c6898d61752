//! Q5_K: 256 elements in 176 bytes — Q4_K's scales plus a fifth code bit per element.
//!
//! ```text
//! byte  0..2    d           f16 LE
//! byte  2..4    dmin        f16 LE
//! byte  4..16   scales[12]  sc_j, m_j packed exactly as Q4_K
//! byte 16..48   qh[32]      bit j of qh[l] = bit 4 of q[32j + l]
//! byte 48..176  qs[128]     low 4 bits, nibbles laid out exactly as Q4_K
//!
//! x[i] = d1 * q[i] - m1,   d1 = d * sc_j,   m1 = dmin * m_j,   j = i / 32
//! ```
//!
//! As in Q4_K, `d1` and `m1` are formed first (ggml `dequantize_row_q5_K`).

use super::f16_at;
use super::q4_k::scale_min_k4;

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 176;
const _: () = assert!(BLOCK_BYTES == 2 + 2 + 12 + QK / 8 + QK / 2);

pub fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; QK]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let (scales, qh, qs) = (&block[4..16], &block[16..48], &block[48..176]);
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        let (q, shift) = (&qs[32 * (j / 2)..][..32], 4 * (j % 2));
        for ((x, &b), &h) in sub.iter_mut().zip(q).zip(qh) {
            let code = ((b >> shift) & 0xF) | (((h >> j) & 1) << 4);
            *x = d1 * code as f32 - m1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_dequant::q4_k::tests::pack_scales;
    use half::f16;

    #[test]
    fn hand_packed_block() {
        let ls = [63, 1, 17, 33, 2, 63, 18, 40];
        let lm = [62, 0, 63, 5, 31, 48, 3, 16];
        let q: [u8; QK] = std::array::from_fn(|i| ((i * 11 + i / 32) % 32) as u8);
        let mut b = [0u8; BLOCK_BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(0.03125).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b[4..16].copy_from_slice(&pack_scales(ls, lm));
        for (i, &c) in q.iter().enumerate() {
            b[16 + i % 32] |= (c >> 4) << (i / 32);
            let (chunk, l, hi) = (i / 64, i % 32, i % 64 >= 32);
            b[48 + 32 * chunk + l] |= (c & 0xF) << if hi { 4 } else { 0 };
        }
        let mut out = [f32::NAN; QK];
        dequantize_block(&b, &mut out);
        for (i, &x) in out.iter().enumerate() {
            let j = i / 32;
            let want = 0.03125 * ls[j] as f32 * q[i] as f32 - 0.25 * lm[j] as f32;
            assert_eq!(x, want, "element {i}");
        }
    }
}
