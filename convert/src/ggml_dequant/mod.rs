//! ggml block dequantizers: whole blocks of a ggml type in, f32 out.
//!
//! Boundary: pure functions over slices, single-threaded and scalar (callers parallelise over
//! rows). One codec per file, each with its block layout and tests; `decoder` is the single
//! match that maps a [`GgmlType`] to its codec, and both [`can_dequantize`] and [`dequantize`]
//! derive from it. Block sizes are checked against the ggml type table at compile time.
//!
//! Numerics mirror ggml's `dequantize_row_*` in `ggml-quants.c` (ggml @ 5136ed0, layouts in
//! `shared/research/formats.md` §2.4–2.5): the same f32 operations in the same order, no fused
//! multiply-add, so results are bit-identical to ggml's scalar reference and to gguf-py
//! 0.17.1's numpy dequantizers (checked by `convert/tests/ggml_dequant.rs`). For these types the
//! order is in fact immaterial: every product is of an fp16 scale (11 significant bits) and
//! small integers (at most 7 + 5 bits, Q6_K), so it is exact in f32, and only the final `- m`
//! or `+ m` rounds — which is also why ggml builds that contract `a*b - c` into an FMA agree.
//!
//! Dense F32/F16/BF16 go through [`crate::float::decode_to_f32`] (NaN payloads may be quieted;
//! ggml keeps them).

mod iq4_nl;
mod mxfp4;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;

use crate::dtype::DType;
use crate::float::decode_to_f32;
use crate::ggml_type::{GgmlType, GGML_TYPES};
use half::f16;

/// Decodes a run of whole blocks: `src` holds `dst.len() / block_size` blocks.
type RowDecoder = fn(&[u8], &mut [f32]);

/// The one dispatch table: the decoder for `ty`, or `None` if unsupported.
fn decoder(ty: GgmlType) -> Option<RowDecoder> {
    let decode: RowDecoder = match ty {
        GgmlType::F32 => |s, d| decode_to_f32(DType::F32, s, d),
        GgmlType::F16 => |s, d| decode_to_f32(DType::F16, s, d),
        GgmlType::BF16 => |s, d| decode_to_f32(DType::BF16, s, d),
        GgmlType::Q4_0 => |s, d| each_block(s, d, q4_0::dequantize_block),
        GgmlType::Q4_1 => |s, d| each_block(s, d, q4_1::dequantize_block),
        GgmlType::Q5_0 => |s, d| each_block(s, d, q5_0::dequantize_block),
        GgmlType::Q5_1 => |s, d| each_block(s, d, q5_1::dequantize_block),
        GgmlType::Q8_0 => |s, d| each_block(s, d, q8_0::dequantize_block),
        GgmlType::Q2_K => |s, d| each_block(s, d, q2_k::dequantize_block),
        GgmlType::Q3_K => |s, d| each_block(s, d, q3_k::dequantize_block),
        GgmlType::Q4_K => |s, d| each_block(s, d, q4_k::dequantize_block),
        GgmlType::Q5_K => |s, d| each_block(s, d, q5_k::dequantize_block),
        GgmlType::Q6_K => |s, d| each_block(s, d, q6_k::dequantize_block),
        GgmlType::IQ4_NL => |s, d| each_block(s, d, iq4_nl::dequantize_block),
        GgmlType::MXFP4 => |s, d| each_block(s, d, mxfp4::dequantize_block),
        _ => return None,
    };
    Some(decode)
}

/// True if `(qk, bytes)` is the ggml table's (block size, type size) for `ty`.
const fn matches_table(ty: GgmlType, qk: usize, bytes: usize) -> bool {
    let row = &GGML_TYPES[ty.0 as usize];
    row.block_size as usize == qk && row.type_size as usize == bytes
}

const _: () = {
    assert!(matches_table(GgmlType::Q4_0, q4_0::QK, q4_0::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q4_1, q4_1::QK, q4_1::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q5_0, q5_0::QK, q5_0::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q5_1, q5_1::QK, q5_1::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q8_0, q8_0::QK, q8_0::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q2_K, q2_k::QK, q2_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q3_K, q3_k::QK, q3_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q4_K, q4_k::QK, q4_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q5_K, q5_k::QK, q5_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q6_K, q6_k::QK, q6_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::IQ4_NL, iq4_nl::QK, iq4_nl::BLOCK_BYTES));
    assert!(matches_table(GgmlType::MXFP4, mxfp4::QK, mxfp4::BLOCK_BYTES));
};

/// True if [`dequantize`] supports `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    decoder(ty).is_some()
}

/// Decodes `src` (whole blocks of `ty`) into `dst` (`dst.len()` elements).
///
/// Panics if `ty` is unsupported (see [`can_dequantize`]), if `dst.len()` is not a whole number
/// of blocks, or if `src.len()` is not that many blocks' bytes; callers check first.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let decode = decoder(ty).unwrap_or_else(|| panic!("{ty}: no dequantizer"));
    let (qk, bytes) = (ty.block_size() as usize, ty.type_size() as usize);
    assert_eq!(dst.len() % qk, 0, "{ty}: {} elements is not whole blocks of {qk}", dst.len());
    assert_eq!(src.len(), dst.len() / qk * bytes, "{ty}: byte length does not match");
    decode(src, dst);
}

/// Applies a block codec to each of the blocks in `src`, writing `Q` elements per block.
fn each_block<const B: usize, const Q: usize>(src: &[u8], dst: &mut [f32], block: fn(&[u8; B], &mut [f32; Q])) {
    for (b, out) in src.chunks_exact(B).zip(dst.chunks_exact_mut(Q)) {
        block(b.try_into().expect("chunk of B bytes"), out.try_into().expect("chunk of Q"));
    }
}

/// The IEEE half at `b[at..at + 2]` (little-endian) as f32: ggml's `GGML_FP16_TO_FP32`.
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 32-element "split halves" nibble layout of Q4_0, Q4_1, IQ4_NL and MXFP4:
/// `qs[j]` low nibble → element `j`, high nibble → element `j + 16`.
fn split_nibbles(qs: &[u8], out: &mut [f32; 32], value: impl Fn(u8) -> f32) {
    let (lo, hi) = out.split_at_mut(16);
    for ((q, l), h) in qs.iter().zip(lo).zip(hi) {
        *l = value(q & 0x0F);
        *h = value(q >> 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_types_from_the_table() {
        let names: Vec<&str> =
            GGML_TYPES.iter().map(|t| GgmlType(t.id)).filter(|&t| can_dequantize(t)).map(GgmlType::name).collect();
        let want = [
            "F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
            "BF16", "MXFP4",
        ];
        assert_eq!(names, want);
        assert!(!can_dequantize(GgmlType(4)), "removed Q4_2");
        assert!(!can_dequantize(GgmlType(9999)), "id past the table");
    }

    #[test]
    fn each_block_uses_its_own_scale() {
        // Two Q8_0 blocks, codes all 2, scales 1.0 and -0.5.
        let mut src = [2u8; 68];
        src[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        src[34..36].copy_from_slice(&f16::from_f32(-0.5).to_le_bytes());
        let mut dst = [0f32; 64];
        dequantize(GgmlType::Q8_0, &src, &mut dst);
        assert!(dst[..32].iter().all(|&x| x == 2.0));
        assert!(dst[32..].iter().all(|&x| x == -1.0));
    }

    #[test]
    fn dense_types_decode() {
        let mut dst = [0f32; 2];
        dequantize(GgmlType::BF16, &[0x80, 0x3F, 0x00, 0xC0], &mut dst);
        assert_eq!(dst, [1.0, -2.0]);
        dequantize(GgmlType::F16, &[0x00, 0x3C, 0x01, 0x00], &mut dst);
        assert_eq!(dst, [1.0, 2f32.powi(-24)]);
    }

    #[test]
    #[should_panic(expected = "byte length")]
    fn rejects_short_source() {
        dequantize(GgmlType::Q4_K, &[0u8; 143], &mut [0f32; 256]);
    }

    #[test]
    #[should_panic(expected = "whole blocks")]
    fn rejects_partial_block() {
        dequantize(GgmlType::Q4_0, &[0u8; 18], &mut [0f32; 31]);
    }

    #[test]
    #[should_panic(expected = "no dequantizer")]
    fn rejects_unsupported_type() {
        dequantize(GgmlType::from_name("IQ2_XXS").unwrap(), &[0u8; 66], &mut [0f32; 256]);
    }
}
