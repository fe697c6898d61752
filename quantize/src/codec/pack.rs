//! Bit packing of signed integer codes.
//!
//! * compressed-tensors `pack_to_int32` / `unpack_from_int32` (formats.md §5.4; checked against
//!   compressed-tensors 0.20.0 `compressors/pack_quantized/helpers.py`): codes are stored unsigned
//!   (`q + 2^(b-1)`) and packed densely along one dimension: element `i` of a run occupies global
//!   bits `[i·b, i·b + b)`, least-significant first, 32 bits per `i32` word. A row of `n` codes
//!   takes `ceil(n·b / 32)` words; the unused high bits of the last word are zero. For b = 1, 2, 4,
//!   8 (32 % b == 0) this is exactly the older "`32/b` codes per word, `k·b` shift" layout;
//!   for other widths compressed-tensors ≥ 0.20 lets a code straddle two words (older versions
//!   wasted the leftover bits — recast follows 0.20).
//! * msModelSlim's legacy W4A16 int4 packing (`_w4a16_pack_int4` / `_pack_int4`, formats.md §7.3):
//!   two codes per int8 byte, element `2i` in the low nibble (two's complement `& 0xF`), `2i+1`
//!   in the high nibble; the packed dimension must have even length.
//!
//! Codes outside `[-2^(b-1), 2^(b-1))` are a caller bug: they are masked to `b` bits
//! (debug builds assert).

use rayon::prelude::*;

fn check_bits(bits: u8) {
    assert!((1..=8).contains(&bits), "int32 packing supports 1..=8 bits, not {bits}");
}

/// Words needed for `n` codes of `bits` bits: `ceil(n·bits / 32)`.
pub fn packed_len(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(32)
}

#[inline]
fn to_unsigned(q: i8, bits: u8) -> u32 {
    let offset = 1i32 << (bits - 1);
    debug_assert!((-offset..offset).contains(&i32::from(q)), "code {q} does not fit in {bits} bits");
    ((i32::from(q) + offset) as u32) & ((1u32 << bits) - 1)
}

/// Packs a strided run of codes (`get(i)` for `i < n`) into `out` (`packed_len(n, bits)` words).
#[inline]
fn pack_run(n: usize, bits: u8, get: impl Fn(usize) -> i8, out: &mut [u32]) {
    out.fill(0);
    let b = bits as usize;
    for i in 0..n {
        let u = to_unsigned(get(i), bits);
        let pos = i * b;
        let (w, off) = (pos / 32, pos % 32);
        out[w] |= u << off;
        if off + b > 32 {
            out[w + 1] |= u >> (32 - off);
        }
    }
}

#[inline]
fn unpack_one(words: impl Fn(usize) -> u32, i: usize, bits: u8) -> i8 {
    let b = bits as usize;
    let pos = i * b;
    let (w, off) = (pos / 32, pos % 32);
    let mut u = words(w) >> off;
    if off + b > 32 {
        u |= words(w + 1) << (32 - off);
    }
    let u = (u & ((1u32 << bits) - 1)) as i32;
    (u - (1i32 << (bits - 1))) as i8
}

/// compressed-tensors `pack_to_int32(codes, bits, packed_dim=1)` of a `[rows, cols]` matrix:
/// `[rows, ceil(cols·bits/32)]` i32 (the `weight_packed` tensor).
pub fn pack_int32_rows(codes: &[i8], rows: usize, cols: usize, bits: u8) -> Vec<i32> {
    check_bits(bits);
    assert_eq!(codes.len(), rows * cols, "pack: {} codes for a [{rows}, {cols}] matrix", codes.len());
    let wpr = packed_len(cols, bits);
    let mut out = vec![0u32; rows * wpr];
    if wpr > 0 {
        out.par_chunks_mut(wpr).zip(codes.par_chunks(cols)).for_each(|(o, row)| pack_run(cols, bits, |i| row[i], o));
    }
    out.into_iter().map(|w| w as i32).collect()
}

/// Inverse of [`pack_int32_rows`] (`unpack_from_int32(packed, bits, [rows, cols])`): `[rows, cols]`.
pub fn unpack_int32_rows(packed: &[i32], rows: usize, cols: usize, bits: u8) -> Vec<i8> {
    check_bits(bits);
    let wpr = packed_len(cols, bits);
    assert_eq!(packed.len(), rows * wpr, "unpack: {} words for [{rows}, {cols}] at {bits} bits", packed.len());
    let mut out = vec![0i8; rows * cols];
    if cols > 0 {
        out.par_chunks_mut(cols).zip(packed.par_chunks(wpr)).for_each(|(o, p)| {
            for (i, v) in o.iter_mut().enumerate() {
                *v = unpack_one(|w| p[w] as u32, i, bits);
            }
        });
    }
    out
}

/// compressed-tensors `pack_to_int32(codes, bits, packed_dim=0)` of a `[rows, cols]` matrix
/// (asymmetric zero points): `[ceil(rows·bits/32), cols]` i32.
pub fn pack_int32_cols(codes: &[i8], rows: usize, cols: usize, bits: u8) -> Vec<i32> {
    check_bits(bits);
    assert_eq!(codes.len(), rows * cols, "pack: {} codes for a [{rows}, {cols}] matrix", codes.len());
    let prows = packed_len(rows, bits);
    let mut out = vec![0i32; prows * cols];
    let mut run = vec![0u32; prows];
    for c in 0..cols {
        pack_run(rows, bits, |r| codes[r * cols + c], &mut run);
        for (pr, &w) in run.iter().enumerate() {
            out[pr * cols + c] = w as i32;
        }
    }
    out
}

/// Inverse of [`pack_int32_cols`] (`unpack_from_int32(packed, bits, [rows, cols], packed_dim=0)`).
pub fn unpack_int32_cols(packed: &[i32], rows: usize, cols: usize, bits: u8) -> Vec<i8> {
    check_bits(bits);
    let prows = packed_len(rows, bits);
    assert_eq!(packed.len(), prows * cols, "unpack: {} words for [{rows}, {cols}] at {bits} bits", packed.len());
    let mut out = vec![0i8; rows * cols];
    for c in 0..cols {
        for r in 0..rows {
            out[r * cols + c] = unpack_one(|w| packed[w * cols + c] as u32, r, bits);
        }
    }
    out
}

#[inline]
fn nibbles(lo: i8, hi: i8) -> i8 {
    debug_assert!((-8..8).contains(&lo) && (-8..8).contains(&hi), "int4 codes out of range: {lo}, {hi}");
    ((lo as u8 & 0x0F) | ((hi as u8) << 4)) as i8
}

/// msModelSlim legacy W4A16 int4 packing of a `[rows, cols]` matrix of int4 codes, two per byte
/// (element 2i low nibble, 2i+1 high nibble).
/// `along_rows == false` (per-channel scales): packs along `cols` → `[rows, cols/2]`;
/// `along_rows == true` (per-group scales): packs along `rows` → `[rows/2, cols]`.
/// Panics if the packed dimension is odd (msModelSlim raises as well).
pub fn pack_int4_ascend(codes: &[i8], rows: usize, cols: usize, along_rows: bool) -> Vec<i8> {
    assert_eq!(codes.len(), rows * cols, "pack: {} codes for a [{rows}, {cols}] matrix", codes.len());
    if along_rows {
        assert!(rows.is_multiple_of(2), "int4 packing along rows needs an even row count, got {rows}");
        let mut out = vec![0i8; rows / 2 * cols];
        for i in 0..rows / 2 {
            for c in 0..cols {
                out[i * cols + c] = nibbles(codes[2 * i * cols + c], codes[(2 * i + 1) * cols + c]);
            }
        }
        out
    } else {
        assert!(cols.is_multiple_of(2), "int4 packing along columns needs an even column count, got {cols}");
        codes.chunks_exact(2).map(|p| nibbles(p[0], p[1])).collect()
    }
}

/// Inverse of [`pack_int4_ascend`]: returns the `[rows, cols]` codes (sign-extended nibbles).
pub fn unpack_int4_ascend(packed: &[i8], rows: usize, cols: usize, along_rows: bool) -> Vec<i8> {
    let sx = |n: u8| ((n << 4) as i8) >> 4;
    let mut out = vec![0i8; rows * cols];
    if along_rows {
        assert!(rows.is_multiple_of(2) && packed.len() == rows / 2 * cols, "unpack int4: size mismatch");
        for i in 0..rows / 2 {
            for c in 0..cols {
                let b = packed[i * cols + c] as u8;
                out[2 * i * cols + c] = sx(b & 0x0F);
                out[(2 * i + 1) * cols + c] = sx(b >> 4);
            }
        }
    } else {
        assert!(cols.is_multiple_of(2) && packed.len() == rows * cols / 2, "unpack int4: size mismatch");
        for (o, &b) in out.chunks_exact_mut(2).zip(packed) {
            o[0] = sx(b as u8 & 0x0F);
            o[1] = sx(b as u8 >> 4);
        }
    }
    out
}
