//! ggml block and k-quant encoders: f32 rows in, ggml blocks out, byte-identical to ggml's
//! reference quantizers.
//!
//! [`quantize`] behaves as ggml's `ggml_quantize_chunk` for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
//! Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: without an importance matrix every block goes through
//! `quantize_row_X_ref`; with one, every row goes through `quantize_row_X_impl` with the same
//! per-column weights (Q8_0 ignores them, as ggml does). One type per file, each a port of
//! ggml-quants.c (llama.cpp as vendored in llama-cpp-python 0.3.36); shared search routines in
//! `common`. "Identical" means ggml built with `-ffp-contract=off` (no FMA contraction — Rust
//! never contracts); `tests/fixtures/ggml_quant/` holds golden bytes from that build, checked by
//! `quantize/tests/ggml_quant.rs`, and the cross-checks against gguf-py and the default
//! llama-cpp-python build. Float → int conversions of NaN/inf (reached only when `1/d`
//! overflows for subnormal block maxima) follow x86-64 (`cvttss2si`).
//!
//! Rows are independent, so the parallel [`quantize`] splits whole rows across rayon tasks (each
//! row through the encoder build for the best instruction set the CPU has, see `Encoder`) and
//! writes exactly the bytes of its serial twin [`quantize_serial`], whatever the thread count.

// The ports index arrays exactly as the C they mirror does; keeping the indices keeps the
// correspondence with ggml-quants.c line by line.
#![allow(clippy::needless_range_loop)]

mod common;
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

use super::stats;
use rayon::prelude::*;
use recast_convert::ggml_type::GGML_TYPES;
use recast_convert::GgmlType;

/// Encodes one row (whole blocks) without weights: ggml's `quantize_row_X_ref`.
type RowRef = fn(&[f32], &mut [u8]);
/// Encodes one row with per-column importance weights: ggml's `quantize_row_X_impl`.
type RowImpl = fn(&[f32], &mut [u8], &[f32]);

struct Encoder {
    qk: usize,
    bytes: usize,
    /// The row encoders compiled for the baseline target (x86-64: SSE2).
    row_ref: RowRef,
    row_impl: RowImpl,
    /// The same code compiled for the best instruction set the CPU has, chosen at run time
    /// (pulp: AVX2/FMA on x86-64-v3; every function of the ports is `#[inline(always)]` so the
    /// whole encoder is generated inside pulp's `target_feature` context). The ports use only
    /// IEEE-exact operations in C's order and Rust never contracts `a*b+c` into an FMA, so wider
    /// vectors change the speed, not the bytes: the golden fixtures check both builds
    /// ([`quantize`] dispatches, [`quantize_serial`] does not), and the property tests compare
    /// them. ~1.5–2.4× faster for the k-quants (Q3_K 19 → 8–10 ns/value on one core).
    fast_ref: RowRef,
    fast_impl: RowImpl,
}

/// The one dispatch table.
fn encoder(ty: GgmlType) -> Option<Encoder> {
    // `WithSimd` on a struct, not a closure: pulp inlines `with_simd` into its
    // `target_feature` function, which a closure's body is not guaranteed to be.
    macro_rules! enc {
        ($m:ident) => {{
            struct Ref<'a>(&'a [f32], &'a mut [u8]);
            impl pulp::WithSimd for Ref<'_> {
                type Output = ();
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) {
                    $m::quantize_row_ref(self.0, self.1)
                }
            }
            struct Impl<'a>(&'a [f32], &'a mut [u8], &'a [f32]);
            impl pulp::WithSimd for Impl<'_> {
                type Output = ();
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) {
                    $m::quantize_row_impl(self.0, self.1, self.2)
                }
            }
            fn fast_ref(x: &[f32], y: &mut [u8]) {
                pulp::Arch::new().dispatch(Ref(x, y))
            }
            fn fast_impl(x: &[f32], y: &mut [u8], w: &[f32]) {
                pulp::Arch::new().dispatch(Impl(x, y, w))
            }
            Encoder {
                qk: $m::QK,
                bytes: $m::BLOCK_BYTES,
                row_ref: $m::quantize_row_ref,
                row_impl: $m::quantize_row_impl,
                fast_ref,
                fast_impl,
            }
        }};
    }
    Some(match ty {
        GgmlType::Q8_0 => enc!(q8_0),
        GgmlType::Q4_0 => enc!(q4_0),
        GgmlType::Q4_1 => enc!(q4_1),
        GgmlType::Q5_0 => enc!(q5_0),
        GgmlType::Q5_1 => enc!(q5_1),
        GgmlType::Q2_K => enc!(q2_k),
        GgmlType::Q3_K => enc!(q3_k),
        GgmlType::Q4_K => enc!(q4_k),
        GgmlType::Q5_K => enc!(q5_k),
        GgmlType::Q6_K => enc!(q6_k),
        _ => return None,
    })
}

/// True if `(qk, bytes)` is the ggml table's (block size, type size) for `ty`.
const fn matches_table(ty: GgmlType, qk: usize, bytes: usize) -> bool {
    let row = &GGML_TYPES[ty.0 as usize];
    row.block_size as usize == qk && row.type_size as usize == bytes
}

const _: () = {
    assert!(matches_table(GgmlType::Q8_0, q8_0::QK, q8_0::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q4_0, q4_0::QK, q4_0::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q4_1, q4_1::QK, q4_1::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q5_0, q5_0::QK, q5_0::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q5_1, q5_1::QK, q5_1::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q2_K, q2_k::QK, q2_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q3_K, q3_k::QK, q3_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q4_K, q4_k::QK, q4_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q5_K, q5_k::QK, q5_k::BLOCK_BYTES));
    assert!(matches_table(GgmlType::Q6_K, q6_k::QK, q6_k::BLOCK_BYTES));
};

/// True if `quantize` can encode this type.
pub fn can_encode(ty: GgmlType) -> bool {
    encoder(ty).is_some()
}

/// Checks the caller's lengths; returns the encoder and the bytes of one row.
fn check(ty: GgmlType, src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &[u8]) -> (Encoder, usize) {
    let enc = encoder(ty).unwrap_or_else(|| panic!("{ty}: no ggml encoder"));
    assert!(n_per_row.is_multiple_of(enc.qk), "{ty}: row of {n_per_row} is not whole blocks of {}", enc.qk);
    let row_bytes = n_per_row / enc.qk * enc.bytes;
    let nrows = src.len().checked_div(n_per_row).unwrap_or(0);
    assert_eq!(nrows * n_per_row, src.len(), "{ty}: {} values are not whole rows of {n_per_row}", src.len());
    assert_eq!(dst.len(), nrows * row_bytes, "{ty}: dst must hold {nrows} rows of {row_bytes} bytes");
    if let Some(w) = imatrix {
        assert_eq!(w.len(), n_per_row, "{ty}: imatrix needs one weight per column");
    }
    (enc, row_bytes)
}

/// Encodes whole rows (`src` = k rows, `dst` = k rows of bytes); `fast` picks the dispatched
/// build.
fn encode_rows(
    enc: &Encoder,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
    row_bytes: usize,
    fast: bool,
) {
    let (row_ref, row_impl) = if fast { (enc.fast_ref, enc.fast_impl) } else { (enc.row_ref, enc.row_impl) };
    for (x, y) in src.chunks_exact(n_per_row).zip(dst.chunks_exact_mut(row_bytes)) {
        match imatrix {
            None => row_ref(x, y),
            Some(w) => row_impl(x, y, w),
        }
    }
}

/// Whole rows per parallel task, about 64 Ki values each, so short rows don't drown in
/// scheduling. Depends only on the shape.
fn rows_per_task(n_per_row: usize) -> usize {
    (65536 / n_per_row).max(1)
}

/// Quantizes `src` (nrows × n_per_row f32, row-major) into `dst` (exactly nrows × row bytes of `ty`),
/// as ggml's `ggml_quantize_chunk` does: `imatrix = None` → the `quantize_row_X_ref` path;
/// `Some(w)` (len n_per_row, one weight per column) → ggml's `quantize_row_X_impl` path with those
/// importance weights (for types that use them; Q8_0 ignores them as ggml does). Rows run in parallel
/// (rayon); the output bytes do not depend on the thread count.
///
/// The input is assumed finite (callers check). Panics only on caller bugs: an unsupported type
/// (see [`can_encode`]), `n_per_row` not a multiple of the block size, `src` not whole rows,
/// `dst` or `imatrix` of the wrong length.
pub fn quantize(ty: GgmlType, src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    let (enc, row_bytes) = check(ty, src, n_per_row, imatrix, dst);
    if src.is_empty() {
        return;
    }
    let rows_per_task = rows_per_task(n_per_row);
    src.par_chunks(rows_per_task * n_per_row)
        .zip(dst.par_chunks_mut(rows_per_task * row_bytes))
        .for_each(|(s, d)| encode_rows(&enc, s, n_per_row, imatrix, d, row_bytes, true));
}

/// [`quantize`] without an importance matrix for input that may hold NaN or infinity, fused
/// with a pass over each task's result. Each task first checks its rows (a task with a
/// non-finite value encodes nothing), then encodes them, then runs `after(rows, encoded)`
/// while they are still in cache. Returns `after`'s results in task order, or the index and
/// value of the first non-finite input. Tasks are whole rows, about 64 Ki values each, fixed
/// by the shape (not the thread count), so a reduction over the results in order is
/// deterministic.
pub fn quantize_then<R, F>(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    dst: &mut [u8],
    after: F,
) -> Result<Vec<R>, (usize, f32)>
where
    R: Send,
    F: Fn(&[f32], &[u8]) -> R + Sync,
{
    let (enc, row_bytes) = check(ty, src, n_per_row, None, dst);
    if src.is_empty() {
        return Ok(Vec::new());
    }
    let rows_per_task = rows_per_task(n_per_row);
    let per_task = rows_per_task * n_per_row;
    let results: Vec<Result<R, usize>> = src
        .par_chunks(per_task)
        .zip(dst.par_chunks_mut(rows_per_task * row_bytes))
        .enumerate()
        .map(|(i, (s, d))| {
            if let Some(j) = stats::first_non_finite_in(s) {
                return Err(i * per_task + j);
            }
            encode_rows(&enc, s, n_per_row, None, d, row_bytes, true);
            Ok(after(s, d))
        })
        .collect();
    // Tasks are in order, so the first failing task holds the first non-finite value.
    results.into_iter().collect::<Result<Vec<R>, usize>>().map_err(|at| (at, src[at]))
}

/// The single-threaded twin of [`quantize`] (same bytes) with the baseline-target build of
/// every encoder (no SIMD dispatch), used by tests to check both builds.
pub fn quantize_serial(ty: GgmlType, src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) {
    let (enc, row_bytes) = check(ty, src, n_per_row, imatrix, dst);
    if src.is_empty() {
        return;
    }
    encode_rows(&enc, src, n_per_row, imatrix, dst, row_bytes, false);
}
