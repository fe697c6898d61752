//! FP8 encodings (OCP E4M3FN, OCP E5M2, AMD E4M3FNUZ): the scalar fp32→fp8 cast, decoding, and
//! per-tensor / per-channel / per-block weight quantization with a stored dequantization scale.
//!
//! Facts (shared/research/formats.md §4, §5.3, §8.1–8.2; checked against ml_dtypes 0.6.0 and
//! torch 2.15.0 by `tests/fixtures/quant_numeric/gen.py`):
//!
//! * [`cast`] is round-to-nearest-even and **not saturating**, bit for bit what
//!   `ml_dtypes` (and torch's older c10 `Float8_*.h` code, formats.md §8.2) produce:
//!   e4m3fn: |x| > 464, ±inf, NaN → `0x7F | sign` (NaN); e5m2: |x| ≥ 61440 or ±inf → `0x7C | sign`
//!   (inf), NaN → `0x7E | sign`; e4m3fnuz: |x| ≥ 248, ±inf, NaN → `0x80` (its only NaN), and
//!   results that round to zero are `+0` (fnuz has no −0).
//!   torch 2.15 differs in two places (the fixtures pin both): its e4m3fn cast saturates finite
//!   out-of-range values and ±inf to ±448 (`0x7E | sign`), and its e5m2 NaN is `0x7F | sign`.
//! * Every producer clamps to ±max before casting ([`cast_saturating`]); then ml_dtypes and
//!   torch agree on every non-NaN input.
//! * [`quantize`] computes each granularity cell's scale `s = amax / max` in f32, rounds it to the
//!   stored scale dtype (F32, F16 or BF16) first, and encodes `cast_saturating(w / s)` with that
//!   stored value, so the file's codes and scales agree. A stored scale that is exactly zero
//!   (all-zero cell, or underflow in the scale dtype) is replaced by the scale dtype's machine
//!   epsilon (`torch.finfo(dtype).eps`: F32 2^-23, BF16 2^-7, F16 2^-10), as compressed-tensors
//!   0.20 `calculate_qparams` does; scales beyond the scale dtype's finite range are clamped to its
//!   max (compressed-tensors `round_to_quantized_type_dtype`). Partial edge blocks use the amax of
//!   their real elements (= DeepSeek's zero padding).
//! * [`dequantize`] is `f32(code) * scale` as one f32 multiply (DeepSeek `weight_dequant`). For a
//!   BF16/F16 scale the product is exact in f32 (≤ 4 + 11 significant bits), so rounding it once
//!   to the scale dtype reproduces compressed-tensors' `dequantize` (computed in the scale dtype)
//!   bit for bit.
//!
//! Non-finite weights are the caller's concern (see `stats::first_non_finite`): a NaN is ignored
//! by the amax and encodes as the format's NaN pattern.

use half::{bf16, f16};
use rayon::prelude::*;
use recast_convert::DType;

/// An FP8 encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fp8Format {
    /// OCP E4M3 "FN" (torch `float8_e4m3fn`, safetensors `F8_E4M3`): bias 7, no inf, NaN S.1111.111.
    E4M3Fn,
    /// OCP E5M2 (torch `float8_e5m2`, safetensors `F8_E5M2`): bias 15, IEEE-like inf/NaN.
    E5M2,
    /// AMD E4M3 FNUZ (torch `float8_e4m3fnuz`, safetensors `F8_E4M3FNUZ`): bias 8, NaN = 0x80 only.
    E4M3Fnuz,
}

/// Every format, for tables and tests.
pub const ALL_FORMATS: [Fp8Format; 3] = [Fp8Format::E4M3Fn, Fp8Format::E5M2, Fp8Format::E4M3Fnuz];

/// Bit layout of a format.
#[derive(Clone, Copy)]
struct Layout {
    /// Mantissa bits.
    mant: u32,
    /// Exponent bias.
    bias: i32,
    /// Largest finite magnitude code (sign bit clear).
    max_code: u32,
}

impl Fp8Format {
    /// Largest finite value: 448, 57344, 240.
    pub fn max(self) -> f32 {
        match self {
            Fp8Format::E4M3Fn => 448.0,
            Fp8Format::E5M2 => 57344.0,
            Fp8Format::E4M3Fnuz => 240.0,
        }
    }

    /// The safetensors dtype of the codes.
    pub fn dtype(self) -> DType {
        match self {
            Fp8Format::E4M3Fn => DType::F8E4M3,
            Fp8Format::E5M2 => DType::F8E5M2,
            Fp8Format::E4M3Fnuz => DType::F8E4M3Fnuz,
        }
    }

    /// Lower-case name as used in recipes and labels (`e4m3fn`, `e5m2`, `e4m3fnuz`); equal to the
    /// serde representation.
    pub fn name(self) -> &'static str {
        match self {
            Fp8Format::E4M3Fn => "e4m3fn",
            Fp8Format::E5M2 => "e5m2",
            Fp8Format::E4M3Fnuz => "e4m3fnuz",
        }
    }

    /// The format stored as `dtype`, if it is one of the three.
    pub fn from_dtype(dtype: DType) -> Option<Fp8Format> {
        ALL_FORMATS.into_iter().find(|f| f.dtype() == dtype)
    }

    fn layout(self) -> Layout {
        match self {
            Fp8Format::E4M3Fn => Layout { mant: 3, bias: 7, max_code: 0x7E },
            Fp8Format::E5M2 => Layout { mant: 2, bias: 15, max_code: 0x7B },
            Fp8Format::E4M3Fnuz => Layout { mant: 3, bias: 8, max_code: 0x7F },
        }
    }
}

/// Magnitude code of `|x|` (finite, sign cleared) rounded to nearest-even, unbounded above
/// (a result beyond `max_code` means overflow).
fn magnitude_code(abs_bits: u32, l: Layout) -> u32 {
    let exp = (abs_bits >> 23) as i32;
    if exp == 0 {
        // f32 subnormals are < 2^-126, far below half the smallest fp8 subnormal.
        return 0;
    }
    let e = exp - 127;
    let emin = 1 - l.bias;
    let mant = abs_bits & 0x7F_FFFF;
    if e >= emin {
        // Normal in fp8: keep `mant` mantissa bits; a carry out of the mantissa bumps the
        // exponent, which the integer code absorbs naturally.
        let shift = 23 - l.mant;
        let code = (((e + l.bias) as u32) << l.mant) | (mant >> shift);
        let rem = mant & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        code + u32::from(rem > half || (rem == half && code & 1 == 1))
    } else {
        // Subnormal in fp8: code = round(|x| / 2^(emin - mant)); `sig` is |x| / 2^(e - 23).
        let sig = mant | 0x80_0000;
        let shift = (23 + emin - l.mant as i32 - e) as u32; // > 23 - mant
        if shift >= 25 {
            return 0; // sig < 2^24, so |x| / unit < 1/2
        }
        let code = sig >> shift;
        let rem = sig & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        code + u32::from(rem > half || (rem == half && code & 1 == 1))
    }
}

/// fp32 → fp8, round-to-nearest-even, not saturating (ml_dtypes semantics; see the module doc for
/// the out-of-range and NaN patterns and where torch 2.15 differs).
pub fn cast(fmt: Fp8Format, x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7FFF_FFFF;
    let l = fmt.layout();
    match fmt {
        Fp8Format::E4M3Fn => {
            if abs >= 0x7F80_0000 {
                return 0x7F | sign; // ±inf and NaN → NaN
            }
            let c = magnitude_code(abs, l);
            if c > l.max_code {
                0x7F | sign
            } else {
                c as u8 | sign
            }
        }
        Fp8Format::E5M2 => {
            if abs > 0x7F80_0000 {
                return 0x7E | sign; // NaN (ml_dtypes' pattern; torch 2.15 writes 0x7F | sign)
            }
            if abs == 0x7F80_0000 {
                return 0x7C | sign;
            }
            let c = magnitude_code(abs, l);
            if c > l.max_code {
                0x7C | sign
            } else {
                c as u8 | sign
            }
        }
        Fp8Format::E4M3Fnuz => {
            if abs >= 0x7F80_0000 {
                return 0x80;
            }
            let c = magnitude_code(abs, l);
            if c > l.max_code {
                0x80
            } else if c == 0 {
                0x00
            } else {
                c as u8 | sign
            }
        }
    }
}

/// Clamp to ±`fmt.max()` then [`cast`]: what every producer does. ±inf saturate; NaN stays NaN
/// (encoded as in [`cast`]).
pub fn cast_saturating(fmt: Fp8Format, x: f32) -> u8 {
    let m = fmt.max();
    cast(fmt, x.clamp(-m, m))
}

/// 2^k as f32 for -149 < k < 128 (exact).
fn pow2(k: i32) -> f32 {
    debug_assert!((-126..128).contains(&k));
    f32::from_bits(((k + 127) as u32) << 23)
}

/// fp8 → f32 (exact). NaN codes give `f32::NAN`; e5m2 infinities give ±inf.
pub fn decode(fmt: Fp8Format, code: u8) -> f32 {
    let l = fmt.layout();
    match fmt {
        Fp8Format::E4M3Fn if code & 0x7F == 0x7F => return f32::NAN,
        Fp8Format::E5M2 if code & 0x7C == 0x7C => {
            if code & 0x03 != 0 {
                return f32::NAN;
            }
            return if code & 0x80 != 0 { f32::NEG_INFINITY } else { f32::INFINITY };
        }
        Fp8Format::E4M3Fnuz if code == 0x80 => return f32::NAN,
        _ => {}
    }
    let mag = u32::from(code & 0x7F);
    let e = (mag >> l.mant) as i32;
    let m = mag & ((1 << l.mant) - 1);
    let v = if e == 0 {
        m as f32 * pow2(1 - l.bias - l.mant as i32)
    } else {
        ((1 << l.mant) | m) as f32 * pow2(e - l.bias - l.mant as i32)
    };
    if code & 0x80 != 0 {
        -v
    } else {
        v
    }
}

/// The 256 decoded values of a format.
pub fn decode_table(fmt: Fp8Format) -> [f32; 256] {
    let mut t = [0.0f32; 256];
    for (c, v) in t.iter_mut().enumerate() {
        *v = decode(fmt, c as u8);
    }
    t
}

/// Machine epsilon of a scale dtype (`torch.finfo(dtype).eps`): the value an exactly-zero scale
/// is replaced with. Panics for dtypes other than F32, F16, BF16.
pub fn scale_eps(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => f32::EPSILON,
        DType::BF16 => bf16::EPSILON.to_f32(),
        DType::F16 => f16::EPSILON.to_f32(),
        d => panic!("scale dtype must be F32, F16 or BF16, not {}", d.name()),
    }
}

/// Rounds a scale computed in f32 to the stored scale dtype (clamped to the dtype's finite range,
/// round-to-nearest-even) and replaces an exact zero by [`scale_eps`]. Returns the stored value as
/// f32 (exact). Panics for dtypes other than F32, F16, BF16.
pub fn round_scale(s: f32, dtype: DType) -> f32 {
    let r = match dtype {
        DType::F32 => s,
        DType::BF16 => {
            let m = bf16::MAX.to_f32();
            bf16::from_f32(s.clamp(-m, m)).to_f32()
        }
        DType::F16 => {
            let m = f16::MAX.to_f32();
            f16::from_f32(s.clamp(-m, m)).to_f32()
        }
        d => panic!("scale dtype must be F32, F16 or BF16, not {}", d.name()),
    };
    if r == 0.0 {
        scale_eps(dtype)
    } else {
        r
    }
}

/// Rounds a value to `dtype` (F32: unchanged; BF16/F16: round-to-nearest-even, as torch's `.to()`).
pub fn round_to_dtype(x: f32, dtype: DType) -> f32 {
    match dtype {
        DType::F32 => x,
        DType::BF16 => bf16::from_f32(x).to_f32(),
        DType::F16 => f16::from_f32(x).to_f32(),
        d => panic!("dtype must be F32, F16 or BF16, not {}", d.name()),
    }
}

/// What one scale covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// One scale for the whole matrix: scale shape `[1, 1]`.
    Tensor,
    /// One scale per row (output channel): `[rows, 1]`.
    Channel,
    /// One scale per `rows × cols` block: `[ceil(rows/br), ceil(cols/bc)]`.
    Block { rows: usize, cols: usize },
}

impl Granularity {
    /// `[block rows, block cols]` of one scale cell for a `[rows, cols]` matrix (never zero).
    fn cell(self, rows: usize, cols: usize) -> [usize; 2] {
        match self {
            Granularity::Tensor => [rows.max(1), cols.max(1)],
            Granularity::Channel => [1, cols.max(1)],
            Granularity::Block { rows: br, cols: bc } => {
                assert!(br > 0 && bc > 0, "FP8 block size must be non-zero, got {br}x{bc}");
                [br, bc]
            }
        }
    }

    /// Shape of the scale tensor for a `[rows, cols]` matrix.
    pub fn scale_shape(self, rows: usize, cols: usize) -> [usize; 2] {
        match self {
            Granularity::Tensor => [1, 1],
            Granularity::Channel => [rows, 1],
            Granularity::Block { .. } => {
                let [br, bc] = self.cell(rows, cols);
                [rows.div_ceil(br), cols.div_ceil(bc)]
            }
        }
    }
}

/// FP8 codes of a `[rows, cols]` matrix with their dequantization scales.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    /// `[rows, cols]` row-major fp8 bytes.
    pub codes: Vec<u8>,
    /// Stored scale values (already rounded to the scale dtype; exact as f32), row-major
    /// `scale_shape`. Multiply to dequantize (DeepSeek's `weight_scale_inv`, compressed-tensors'
    /// `weight_scale`).
    pub scales: Vec<f32>,
    pub scale_shape: [usize; 2],
}

/// Per-row amax of each column block: `out[c / bc] = max |w[c]|` (NaN ignored).
fn row_block_amax(row: &[f32], bc: usize, out: &mut [f32]) {
    for (o, chunk) in out.iter_mut().zip(row.chunks(bc)) {
        *o = chunk.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    }
}

/// The stored scales: amax per cell (max over its rows' per-row amaxes), divided by `max`,
/// rounded to the scale dtype.
fn scales_from_row_amax(
    row_amax: &[f32],
    rows: usize,
    nbc: usize,
    br: usize,
    fmax: f32,
    scale_dtype: DType,
    nbr: usize,
) -> Vec<f32> {
    let mut amax = vec![0.0f32; nbr * nbc];
    for r in 0..rows {
        let cell_row = &mut amax[(r / br) * nbc..(r / br + 1) * nbc];
        for (a, &v) in cell_row.iter_mut().zip(&row_amax[r * nbc..(r + 1) * nbc]) {
            *a = a.max(v);
        }
    }
    amax.iter().map(|&a| round_scale(a / fmax, scale_dtype)).collect()
}

/// [`cast_saturating`] for e4m3fn (`MANT` 3, `BIAS` 7) and e5m2 (2, 15) without branches, so
/// a row of them vectorizes. Clamping is done on the magnitude's bits (finite magnitudes order
/// as their bits); a normal result is the f32 bits rounded to `MANT` mantissa bits
/// (nearest-even, a carry moves into the exponent) with the exponent rebased; a subnormal one
/// is `|x| / 2^(1 - BIAS - MANT)` rounded to nearest-even by the 1.5·2²³ trick (exact: the
/// scaling is by a power of two and the result is at most 2^MANT). Equal to
/// [`cast_saturating`] for every input (tested on every 2¹⁶th f32 bit pattern and around every
/// code boundary).
#[inline(always)]
fn cast_saturating_ocp<const MANT: u32, const BIAS: u32>(x: f32, max_bits: u32, nan: u32) -> u8 {
    let bits = x.to_bits();
    let sign = (bits >> 24) & 0x80;
    let abs = bits & 0x7FFF_FFFF;
    let is_nan = abs > 0x7F80_0000;
    let a = abs.min(max_bits);
    let shift = 23 - MANT;
    // Computed for every input and discarded for subnormals, where it wraps.
    let normal = ((a + (1 << (shift - 1)) - 1 + ((a >> shift) & 1)) >> shift).wrapping_sub((127 - BIAS) << MANT);
    let unit_inv = f32::from_bits((127 + BIAS - 1 + MANT) << 23);
    let scaled = f32::from_bits(a) * unit_inv + 12582912.0;
    let sub = (scaled.to_bits() & 0x7F_FFFF).wrapping_sub(0x40_0000);
    let c = if a >= (128 - BIAS) << 23 { normal } else { sub };
    ((if is_nan { nan } else { c }) | sign) as u8
}

fn encode_row(fmt: Fp8Format, row: &[f32], scales: &[f32], bc: usize, out: &mut [u8]) {
    for ((oc, wc), &s) in out.chunks_mut(bc).zip(row.chunks(bc)).zip(scales) {
        match fmt {
            Fp8Format::E4M3Fn => {
                let max = fmt.max().to_bits();
                for (o, &w) in oc.iter_mut().zip(wc) {
                    *o = cast_saturating_ocp::<3, 7>(w / s, max, 0x7F);
                }
            }
            Fp8Format::E5M2 => {
                let max = fmt.max().to_bits();
                for (o, &w) in oc.iter_mut().zip(wc) {
                    *o = cast_saturating_ocp::<2, 15>(w / s, max, 0x7E);
                }
            }
            Fp8Format::E4M3Fnuz => {
                for (o, &w) in oc.iter_mut().zip(wc) {
                    *o = cast_saturating(fmt, w / s);
                }
            }
        }
    }
}

fn check_dims(w_len: usize, rows: usize, cols: usize, scale_dtype: DType) {
    assert_eq!(w_len, rows * cols, "FP8 quantize: {} values for a [{rows}, {cols}] matrix", w_len);
    assert!(
        matches!(scale_dtype, DType::F32 | DType::F16 | DType::BF16),
        "scale dtype must be F32, F16 or BF16, not {}",
        scale_dtype.name()
    );
}

fn quantize_impl(
    fmt: Fp8Format,
    w: &[f32],
    rows: usize,
    cols: usize,
    g: Granularity,
    scale_dtype: DType,
    parallel: bool,
) -> Quantized {
    check_dims(w.len(), rows, cols, scale_dtype);
    let [br, bc] = g.cell(rows, cols);
    let scale_shape = g.scale_shape(rows, cols);
    let [nbr, nbc] = scale_shape;
    let mut codes = vec![0u8; rows * cols];
    if cols == 0 || rows == 0 {
        let scales = vec![round_scale(0.0, scale_dtype); nbr * nbc];
        return Quantized { codes, scales, scale_shape };
    }
    let mut row_amax = vec![0.0f32; rows * nbc];
    if parallel {
        row_amax.par_chunks_mut(nbc).zip(w.par_chunks(cols)).for_each(|(o, row)| row_block_amax(row, bc, o));
    } else {
        row_amax.chunks_mut(nbc).zip(w.chunks(cols)).for_each(|(o, row)| row_block_amax(row, bc, o));
    }
    let scales = scales_from_row_amax(&row_amax, rows, nbc, br, fmt.max(), scale_dtype, nbr);
    let enc = |(r, (out, row)): (usize, (&mut [u8], &[f32]))| {
        encode_row(fmt, row, &scales[(r / br) * nbc..(r / br + 1) * nbc], bc, out)
    };
    if parallel {
        codes.par_chunks_mut(cols).zip(w.par_chunks(cols)).enumerate().for_each(enc);
    } else {
        codes.chunks_mut(cols).zip(w.chunks(cols)).enumerate().for_each(enc);
    }
    Quantized { codes, scales, scale_shape }
}

/// Quantizes a `[rows, cols]` row-major matrix (see the module doc for the exact rule).
/// Parallel over rows; the result does not depend on the thread count (equal to
/// [`quantize_serial`]). Panics if `w.len() != rows * cols`, a block size is zero, or the scale
/// dtype is not F32/F16/BF16.
pub fn quantize(fmt: Fp8Format, w: &[f32], rows: usize, cols: usize, g: Granularity, scale_dtype: DType) -> Quantized {
    quantize_impl(fmt, w, rows, cols, g, scale_dtype, true)
}

/// Single-threaded twin of [`quantize`] (identical output).
pub fn quantize_serial(
    fmt: Fp8Format,
    w: &[f32],
    rows: usize,
    cols: usize,
    g: Granularity,
    scale_dtype: DType,
) -> Quantized {
    quantize_impl(fmt, w, rows, cols, g, scale_dtype, false)
}

/// Dequantizes as the consuming runtime does: `f32(code) * scale`, one f32 multiply (DeepSeek
/// `weight_dequant` before its BF16 store). Round the result with [`round_to_dtype`] to the scale
/// dtype to get compressed-tensors' `dequantize` output (exact, see the module doc).
/// Panics if the sizes disagree with `rows`, `cols` and `g`.
pub fn dequantize(fmt: Fp8Format, q: &Quantized, rows: usize, cols: usize, g: Granularity) -> Vec<f32> {
    assert_eq!(q.codes.len(), rows * cols, "FP8 dequantize: {} codes for a [{rows}, {cols}] matrix", q.codes.len());
    let scale_shape = g.scale_shape(rows, cols);
    assert_eq!(q.scale_shape, scale_shape, "FP8 dequantize: scale shape does not match the granularity");
    assert_eq!(q.scales.len(), scale_shape[0] * scale_shape[1], "FP8 dequantize: scale count");
    let mut out = vec![0.0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return out;
    }
    let table = decode_table(fmt);
    out.par_chunks_mut(cols).enumerate().for_each(|(r, o)| dequantize_range(&table, q, cols, g, r * cols, o));
    out
}

/// [`dequantize`] of the elements `start..start + out.len()` (row-major order) into `out`,
/// with `table = decode_table(fmt)`: the same values, without a whole-matrix buffer (the
/// error statistics reconstruct chunk by chunk).
pub fn dequantize_range(table: &[f32; 256], q: &Quantized, cols: usize, g: Granularity, start: usize, out: &mut [f32]) {
    let rows = q.codes.len().checked_div(cols).unwrap_or(0);
    let [br, bc] = g.cell(rows, cols);
    let nbc = q.scale_shape[1];
    let (mut e, mut done) = (start, 0);
    while done < out.len() {
        let (r, c0) = (e / cols, e % cols);
        let n = (cols - c0).min(out.len() - done);
        let srow = &q.scales[(r / br) * nbc..(r / br + 1) * nbc];
        // One scale cell at a time along the row.
        let mut c = c0;
        while c < c0 + n {
            let k = (bc - c % bc).min(c0 + n - c);
            let s = srow[c / bc];
            let (o, codes) = (&mut out[done + c - c0..done + c - c0 + k], &q.codes[e + c - c0..e + c - c0 + k]);
            for (v, &code) in o.iter_mut().zip(codes) {
                *v = table[code as usize] * s;
            }
            c += k;
        }
        e += n;
        done += n;
    }
}

#[cfg(test)]
mod tests {
    use super::Fp8Format::*;
    use super::*;

    #[test]
    fn documented_patterns() {
        assert_eq!(cast(E4M3Fn, 464.0), 0x7E); // tie, 448's mantissa is even
        assert_eq!(cast(E4M3Fn, 464.00003), 0x7F); // rounds past 448: NaN
        assert_eq!(cast(E4M3Fn, f32::NEG_INFINITY), 0xFF);
        assert_eq!(cast(E4M3Fn, -0.0), 0x80);
        assert_eq!(cast_saturating(E4M3Fn, 1e9), 0x7E);
        assert_eq!(cast_saturating(E4M3Fn, f32::NEG_INFINITY), 0xFE);
        assert_eq!(cast(E5M2, 61440.0), 0x7C); // tie, 57344's mantissa is odd: up to inf
        assert_eq!(cast(E5M2, 61439.996), 0x7B);
        assert_eq!(cast(E5M2, -f32::NAN), 0xFE);
        assert_eq!(cast(E4M3Fnuz, -1e-10), 0x00); // no negative zero
        assert_eq!(cast(E4M3Fnuz, 248.0), 0x80);
        assert_eq!(cast(E4M3Fnuz, 247.99998), 0x7F);
        assert_eq!(decode(E4M3Fn, 0x01), 2f32.powi(-9));
        assert_eq!(decode(E4M3Fnuz, 0x01), 2f32.powi(-10));
        assert_eq!(decode(E5M2, 0x01), 2f32.powi(-16));
        assert_eq!(decode(E5M2, 0xFC), f32::NEG_INFINITY);
        assert_eq!(ALL_FORMATS.map(|f| decode(f, f.layout().max_code as u8)), ALL_FORMATS.map(|f| f.max()));
        // subnormal ties: half the smallest subnormal rounds to zero, just above rounds up
        assert_eq!(cast(E4M3Fn, 2f32.powi(-10)), 0x00);
        assert_eq!(cast(E4M3Fn, 2f32.powi(-10) * 1.0001), 0x01);
        assert_eq!(cast(E4M3Fn, 3.0 * 2f32.powi(-10)), 0x02);
    }

    #[test]
    fn scale_rounding() {
        assert_eq!(round_scale(0.0, DType::F32), f32::EPSILON);
        assert_eq!(round_scale(1e-30, DType::F16), 2f32.powi(-10)); // underflows to 0 in f16
        assert_eq!(round_scale(1e9, DType::F16), 65504.0);
        assert_eq!(round_scale(1.0 + 2f32.powi(-9), DType::BF16), 1.0); // tie to even
    }
}

#[cfg(test)]
mod fast_cast_tests {
    use super::*;

    fn check(x: f32) {
        assert_eq!(
            cast_saturating_ocp::<3, 7>(x, 448f32.to_bits(), 0x7F),
            cast_saturating(Fp8Format::E4M3Fn, x),
            "e4m3fn {x:e} ({:#x})",
            x.to_bits()
        );
        assert_eq!(
            cast_saturating_ocp::<2, 15>(x, 57344f32.to_bits(), 0x7E),
            cast_saturating(Fp8Format::E5M2, x),
            "e5m2 {x:e} ({:#x})",
            x.to_bits()
        );
    }

    #[test]
    fn branch_free_cast_equals_the_reference() {
        // Every 2^16th bit pattern (both signs, all exponents incl. subnormals, inf, NaN).
        for hi in 0..=0xFFFFu32 {
            check(f32::from_bits(hi << 16));
            check(f32::from_bits((hi << 16) | 0x8001));
        }
        // Around every fp8 value and every midpoint between neighbours, in both formats.
        for fmt in [Fp8Format::E4M3Fn, Fp8Format::E5M2] {
            for c in 0..=0xFFu8 {
                let v = decode(fmt, c);
                let w = decode(fmt, c.wrapping_add(1));
                for p in [v, (v + w) / 2.0] {
                    if p.is_finite() {
                        for d in -3i32..=3 {
                            check(f32::from_bits(p.to_bits().wrapping_add_signed(d)));
                        }
                    }
                }
            }
        }
    }
}
