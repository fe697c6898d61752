//! Scalar float conversions between storage dtypes and f32.
//!
//! f16 and bf16 go through the `half` crate (IEEE round-to-nearest-even; bf16 NaN is quieted
//! as ggml and gguf-py do). FP8 decoding is exact and table-driven; FP8 *encoding* is a
//! quantizer concern and lives in recast-quantize.

use crate::dtype::DType;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Decodes one FP8 byte. `bias` is the exponent bias, `mant` the mantissa width.
fn fp8_to_f32(b: u8, dtype: DType) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    match dtype {
        // e4m3fn: no infinities, S.1111.111 is NaN.
        DType::F8E4M3 => {
            if b & 0x7F == 0x7F {
                return f32::NAN;
            }
            decode_minifloat(b & 0x7F, 3, 7) * sign
        }
        // e5m2: IEEE-like, exponent 31 is inf/NaN.
        DType::F8E5M2 => {
            let e = (b >> 2) & 0x1F;
            let m = b & 0x3;
            if e == 0x1F {
                return if m == 0 { sign * f32::INFINITY } else { f32::NAN };
            }
            decode_minifloat(b & 0x7F, 2, 15) * sign
        }
        // fnuz: 0x80 is the only NaN; no negative zero, no infinities.
        DType::F8E4M3Fnuz => {
            if b == 0x80 {
                return f32::NAN;
            }
            decode_minifloat(b & 0x7F, 3, 8) * sign
        }
        DType::F8E5M2Fnuz => {
            if b == 0x80 {
                return f32::NAN;
            }
            decode_minifloat(b & 0x7F, 2, 16) * sign
        }
        // e8m0: unsigned power of two, 0xFF is NaN.
        DType::F8E8M0 => {
            if b == 0xFF {
                f32::NAN
            } else {
                2f32.powi(b as i32 - 127)
            }
        }
        _ => unreachable!("not an fp8 dtype: {dtype}"),
    }
}

/// Value of an unsigned minifloat with `mant` mantissa bits and exponent `bias`.
fn decode_minifloat(bits: u8, mant: u32, bias: i32) -> f32 {
    let e = (bits >> mant) as i32;
    let m = (bits & ((1 << mant) - 1)) as f32 / (1 << mant) as f32;
    if e == 0 {
        m * 2f32.powi(1 - bias)
    } else {
        (1.0 + m) * 2f32.powi(e - bias)
    }
}

/// True if [`decode_to_f32`] supports `dtype`.
pub fn is_decodable(dtype: DType) -> bool {
    dtype.is_float() || matches!(dtype, DType::I8 | DType::U8 | DType::I16 | DType::I32 | DType::Bool)
}

/// Decodes little-endian elements of `dtype` in `src` into `dst` (`dst.len()` elements).
///
/// Panics if `src.len()` is not `dst.len()` elements of `dtype` or the dtype is not
/// decodable; callers check both with [`is_decodable`] and the tensor's byte count.
pub fn decode_to_f32(dtype: DType, src: &[u8], dst: &mut [f32]) {
    let size = dtype.size().expect("sub-byte dtypes are not decodable");
    assert_eq!(src.len(), dst.len() * size, "{dtype}: byte length does not match");
    let chunks = src.chunks_exact(size);
    match dtype {
        // Constant chunk sizes so these loops vectorize; F16 goes through half's F16C slice
        // conversion when the bytes are aligned (same values as the scalar conversion).
        DType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => match native_f16(src) {
            Some(h) => h.convert_to_f32_slice(dst),
            None => {
                for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        },
        DType::BF16 => {
            // bf16 → f32 is exact: the bits become the high half.
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        DType::F64 => {
            for (d, c) in dst.iter_mut().zip(chunks) {
                *d = f64::from_le_bytes(c.try_into().unwrap()) as f32;
            }
        }
        DType::F8E4M3 | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz | DType::F8E8M0 => {
            let mut lut = [0f32; 256];
            for (b, v) in lut.iter_mut().enumerate() {
                *v = fp8_to_f32(b as u8, dtype);
            }
            for (d, &b) in dst.iter_mut().zip(src) {
                *d = lut[b as usize];
            }
        }
        DType::I8 => {
            for (d, &b) in dst.iter_mut().zip(src) {
                *d = b as i8 as f32;
            }
        }
        DType::U8 | DType::Bool => {
            for (d, &b) in dst.iter_mut().zip(src) {
                *d = b as f32;
            }
        }
        DType::I16 => {
            for (d, c) in dst.iter_mut().zip(chunks) {
                *d = i16::from_le_bytes(c.try_into().unwrap()) as f32;
            }
        }
        DType::I32 => {
            for (d, c) in dst.iter_mut().zip(chunks) {
                *d = i32::from_le_bytes(c.try_into().unwrap()) as f32;
            }
        }
        _ => panic!("{dtype} is not decodable to f32"),
    }
}

/// Encodes f32 values as `dtype` (F32, F16 or BF16; round-to-nearest-even) into `dst`
/// (exactly `src.len()` elements of `dtype`).
/// `bytes` as f16 values in place, when they are aligned and the machine is little-endian.
fn native_f16(bytes: &[u8]) -> Option<&[f16]> {
    if cfg!(target_endian = "little") {
        bytemuck::try_cast_slice(bytes).ok()
    } else {
        None
    }
}

fn native_f16_mut(bytes: &mut [u8]) -> Option<&mut [f16]> {
    if cfg!(target_endian = "little") {
        bytemuck::try_cast_slice_mut(bytes).ok()
    } else {
        None
    }
}

pub fn encode_into(dtype: DType, src: &[f32], dst: &mut [u8]) {
    let size = dtype.size().expect("byte-sized dtype");
    assert_eq!(dst.len(), src.len() * size, "{dtype}: destination length does not match");
    // Chunk sizes are constants in each arm so every store compiles to a plain 2- or 4-byte
    // write (a runtime-sized chunk costs a memcpy call per element).
    match dtype {
        DType::F32 => dst.chunks_exact_mut(4).zip(src).for_each(|(d, v)| d.copy_from_slice(&v.to_le_bytes())),
        DType::F16 => match native_f16_mut(dst) {
            Some(h) => h.convert_from_f32_slice(src),
            None => {
                dst.chunks_exact_mut(2).zip(src).for_each(|(d, v)| d.copy_from_slice(&f16::from_f32(*v).to_le_bytes()))
            }
        },
        DType::BF16 => {
            dst.chunks_exact_mut(2).zip(src).for_each(|(d, v)| d.copy_from_slice(&bf16::from_f32(*v).to_le_bytes()))
        }
        _ => panic!("encode_into supports F32, F16, BF16, not {dtype}"),
    }
}

/// Encodes f32 values as `dtype` (F32, F16 or BF16; round-to-nearest-even), appending to `out`.
pub fn encode_from_f32(dtype: DType, src: &[f32], out: &mut Vec<u8>) {
    match dtype {
        DType::F32 => {
            out.reserve(src.len() * 4);
            for v in src {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            out.reserve(src.len() * 2);
            for &v in src {
                out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        DType::BF16 => {
            out.reserve(src.len() * 2);
            for &v in src {
                out.extend_from_slice(&bf16::from_f32(v).to_le_bytes());
            }
        }
        _ => panic!("encode_from_f32 supports F32, F16, BF16, not {dtype}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(dtype: DType, b: u8) -> f32 {
        let mut out = [0f32];
        decode_to_f32(dtype, &[b], &mut out);
        out[0]
    }

    #[test]
    fn fp8_known_values() {
        // Extremes and specials from the OCP spec / formats.md §8.1.
        assert_eq!(dec(DType::F8E4M3, 0x7E), 448.0);
        assert!(dec(DType::F8E4M3, 0x7F).is_nan());
        assert_eq!(dec(DType::F8E4M3, 0x01), 2f32.powi(-9));
        assert_eq!(dec(DType::F8E4M3, 0x08), 2f32.powi(-6));
        assert_eq!(dec(DType::F8E4M3, 0xBE), -1.75);
        assert_eq!(dec(DType::F8E5M2, 0x7B), 57344.0);
        assert_eq!(dec(DType::F8E5M2, 0x7C), f32::INFINITY);
        assert_eq!(dec(DType::F8E5M2, 0x01), 2f32.powi(-16));
        assert_eq!(dec(DType::F8E4M3Fnuz, 0x7F), 240.0);
        assert!(dec(DType::F8E4M3Fnuz, 0x80).is_nan());
        assert_eq!(dec(DType::F8E4M3Fnuz, 0x01), 2f32.powi(-10));
        assert_eq!(dec(DType::F8E8M0, 127), 1.0);
    }

    #[test]
    fn fnuz_is_half_of_fn_for_ordinary_bytes() {
        for b in 0u8..=0xFF {
            let (a, z) = (dec(DType::F8E4M3, b), dec(DType::F8E4M3Fnuz, b));
            if a.is_nan() || z.is_nan() || b == 0x80 {
                continue;
            }
            assert_eq!(z, a / 2.0, "byte {b:#x}");
        }
    }

    #[test]
    fn half_round_trip() {
        let v = [1.0f32, -2.5, 65504.0, 1e-8, 3.140625];
        let mut bytes = Vec::new();
        encode_from_f32(DType::BF16, &v, &mut bytes);
        let mut back = [0f32; 5];
        decode_to_f32(DType::BF16, &bytes, &mut back);
        assert_eq!(back[0], 1.0);
        assert_eq!(back[1], -2.5);
        assert_eq!(back[4], 3.140625);
    }
}
