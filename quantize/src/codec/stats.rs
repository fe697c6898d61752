//! Quantization error statistics and a non-finite scan.
//!
//! Sums are accumulated in f64 over fixed chunks of [`CHUNK`] elements; the per-chunk partial
//! sums are added in chunk order, so the result is the same for any thread count and equal to
//! [`error_stats_serial`].

use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Elements per partial sum.
pub const CHUNK: usize = 4096;

/// Error of a reconstruction `x̂` against the original `x`.
///
/// Non-finite values serialize as JSON `null` (and deserialize back from `null` as `+inf`):
/// `sqnr_db` is `+inf` when the reconstruction is exact (`Σ(x-x̂)² = 0`, also for an all-zero
/// `x`) and `-inf` when `x` is all zero but `x̂` is not (then `rel_rmse` is `+inf`). In JSON the two
/// are told apart by `max_abs` (0 exactly when exact). [`ErrorStats::is_exact`] says it directly.
/// A NaN in either input (or inf − inf) makes all three fields NaN (also `null`); check inputs with
/// [`first_non_finite`] first.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorStats {
    /// `10·log10(Σx² / Σ(x-x̂)²)`.
    #[serde(serialize_with = "finite_or_null", deserialize_with = "null_is_inf")]
    pub sqnr_db: f64,
    /// `sqrt(Σ(x-x̂)² / Σx²)`; 0 when exact.
    #[serde(serialize_with = "finite_or_null", deserialize_with = "null_is_inf")]
    pub rel_rmse: f64,
    /// `max |x - x̂|`.
    #[serde(serialize_with = "finite_or_null", deserialize_with = "null_is_inf")]
    pub max_abs: f64,
}

impl ErrorStats {
    /// True when every element was reproduced exactly.
    pub fn is_exact(&self) -> bool {
        self.max_abs == 0.0
    }
}

fn finite_or_null<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn null_is_inf<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// `(Σx², Σ(x-x̂)², max|x-x̂|)` of one chunk (a NaN difference shows up in `Σ(x-x̂)²`).
/// Element `i` goes to lane `i % LANES`; the lanes are added in order at the end, so the
/// loop vectorizes and the result is still one fixed order of additions.
fn chunk_sums(x: &[f32], y: &[f32]) -> (f64, f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return simd.vectorize(SumsV3 { simd, x, y });
    }
    // Compiled for the best instruction set the CPU has (same operations, same results; see
    // `codec::ggml`'s `Encoder`).
    struct Sums<'a>(&'a [f32], &'a [f32]);
    impl pulp::WithSimd for Sums<'_> {
        type Output = (f64, f64, f64);
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
            chunk_sums_lanes(self.0, self.1)
        }
    }
    pulp::Arch::new().dispatch(Sums(x, y))
}

const LANES: usize = 8;

/// [`chunk_sums_lanes`] written with AVX2 vectors: lanes 0–3 and 4–7 are two f64x4 registers
/// per sum, with the same operations in the same order (so the same results; a test compares
/// them). The compiler does not find this form by itself (it pairs the sums in 128-bit halves
/// with shuffles): 0.45 → 0.21 ns/value.
#[cfg(target_arch = "x86_64")]
struct SumsV3<'a> {
    simd: pulp::x86::V3,
    x: &'a [f32],
    y: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for SumsV3<'_> {
    type Output = (f64, f64, f64);
    #[inline(always)]
    fn call(self) -> Self::Output {
        let s = self.simd;
        let z = s.splat_f64x4(0.0);
        let (mut sx, mut se, mut mx) = ([z; 2], [z; 2], [z; 2]);
        let (xs, ys) = (self.x.chunks_exact(LANES), self.y.chunks_exact(LANES));
        let (xr, yr) = (xs.remainder(), ys.remainder());
        let load = |v: &[f32]| s.convert_f32x4_to_f64x4(pulp::cast(<[f32; 4]>::try_from(v).expect("4 values")));
        for (a, b) in xs.zip(ys) {
            for h in 0..2 {
                let (a, b) = (load(&a[4 * h..4 * h + 4]), load(&b[4 * h..4 * h + 4]));
                let d = s.sub_f64x4(a, b);
                sx[h] = s.add_f64x4(sx[h], s.mul_f64x4(a, a));
                se[h] = s.add_f64x4(se[h], s.mul_f64x4(d, d));
                // maxpd(a, b) is `a > b ? a : b`, as the portable loop's comparison.
                mx[h] = s.max_f64x4(s.abs_f64x4(d), mx[h]);
            }
        }
        let lanes = |v: [pulp::f64x4; 2]| -> [f64; LANES] { pulp::cast(v) };
        let (mut sx, mut se, mut mx) = (lanes(sx), lanes(se), lanes(mx));
        step(&mut sx, &mut se, &mut mx, xr, yr);
        total(&sx, &se, &mx)
    }
}

/// One step of every lane: element `i` of `a`/`b` into lane `i`.
#[inline(always)]
fn step(sx: &mut [f64; LANES], se: &mut [f64; LANES], mx: &mut [f64; LANES], a: &[f32], b: &[f32]) {
    let (mut xa, mut d) = ([0f64; LANES], [0f64; LANES]);
    for i in 0..a.len() {
        xa[i] = f64::from(a[i]);
        d[i] = xa[i] - f64::from(b[i]);
    }
    for i in 0..a.len() {
        sx[i] += xa[i] * xa[i];
        se[i] += d[i] * d[i];
        let ad = d[i].abs();
        mx[i] = if ad > mx[i] { ad } else { mx[i] };
    }
}

/// The lanes added in order.
#[inline(always)]
fn total(sx: &[f64; LANES], se: &[f64; LANES], mx: &[f64; LANES]) -> (f64, f64, f64) {
    let (mut tx, mut te, mut tm) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..LANES {
        tx += sx[i];
        te += se[i];
        tm = tm.max(mx[i]);
    }
    (tx, te, tm)
}

/// The portable form of the sums.
#[inline(always)]
fn chunk_sums_lanes(x: &[f32], y: &[f32]) -> (f64, f64, f64) {
    let (mut sx, mut se, mut mx) = ([0f64; LANES], [0f64; LANES], [0f64; LANES]);
    let (xs, ys) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xr, yr) = (xs.remainder(), ys.remainder());
    for (a, b) in xs.zip(ys) {
        step(&mut sx, &mut se, &mut mx, a, b);
    }
    step(&mut sx, &mut se, &mut mx, xr, yr);
    total(&sx, &se, &mx)
}

/// Sums of one piece of a tensor: `(Σx², Σ(x-x̂)², max|x-x̂|)`; [`combine_partials`] of the
/// pieces in a fixed order gives the tensor's [`ErrorStats`].
pub type Partial = (f64, f64, f64);

/// The pieces' sums added in the order given.
fn add(parts: impl IntoIterator<Item = Partial>) -> Partial {
    let (mut sx, mut se, mut mx) = (0.0f64, 0.0f64, 0.0f64);
    for (a, b, m) in parts {
        sx += a;
        se += b;
        mx = mx.max(m);
    }
    (sx, se, mx)
}

/// [`ErrorStats`] from pieces' sums, added in the given order.
pub fn combine_partials(parts: &[Partial]) -> ErrorStats {
    let (sx, se, mx) = add(parts.iter().copied());
    if sx.is_nan() || se.is_nan() {
        return ErrorStats { sqnr_db: f64::NAN, rel_rmse: f64::NAN, max_abs: f64::NAN };
    }
    let (sqnr_db, rel_rmse) = if se == 0.0 {
        (f64::INFINITY, 0.0)
    } else if sx == 0.0 {
        (f64::NEG_INFINITY, f64::INFINITY)
    } else {
        (10.0 * (sx / se).log10(), (se / sx).sqrt())
    };
    ErrorStats { sqnr_db, rel_rmse, max_abs: mx }
}

fn check(orig: &[f32], deq: &[f32]) {
    assert_eq!(orig.len(), deq.len(), "error_stats: {} originals vs {} reconstructions", orig.len(), deq.len());
}

/// Error statistics of `deq` against `orig` (same length; panics otherwise).
pub fn error_stats(orig: &[f32], deq: &[f32]) -> ErrorStats {
    check(orig, deq);
    let parts: Vec<_> = orig.par_chunks(CHUNK).zip(deq.par_chunks(CHUNK)).map(|(x, y)| chunk_sums(x, y)).collect();
    combine_partials(&parts)
}

/// Single-threaded twin of [`error_stats`] (identical result).
pub fn error_stats_serial(orig: &[f32], deq: &[f32]) -> ErrorStats {
    check(orig, deq);
    let parts: Vec<_> = orig.chunks(CHUNK).zip(deq.chunks(CHUNK)).map(|(x, y)| chunk_sums(x, y)).collect();
    combine_partials(&parts)
}

/// [`error_stats`] without a reconstruction buffer: `reconstruct(start, out)` fills `out` with
/// the reconstruction of `orig[start..start + out.len()]`; it is called once per [`CHUNK`]
/// (chunks start at multiples of `CHUNK`), in parallel. Same result as [`error_stats`].
pub fn error_stats_by_chunk<F>(orig: &[f32], reconstruct: F) -> ErrorStats
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let parts: Vec<_> = orig
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(i, x)| {
            let mut buf = [0f32; CHUNK];
            let y = &mut buf[..x.len()];
            reconstruct(i * CHUNK, y);
            chunk_sums(x, y)
        })
        .collect();
    combine_partials(&parts)
}

/// The serial sums of `orig` against its reconstruction, [`CHUNK`] values at a time without a
/// reconstruction buffer (`reconstruct(start, out)` as in [`error_stats_by_chunk`], `start`
/// relative to `orig`). For callers that already split a tensor into deterministic pieces
/// (the GGUF encoder sums each task's rows right after encoding them).
pub fn partial_by_chunk<F>(orig: &[f32], reconstruct: F) -> Partial
where
    F: Fn(usize, &mut [f32]),
{
    let mut buf = [0f32; CHUNK];
    add(orig.chunks(CHUNK).enumerate().map(|(i, x)| {
        let y = &mut buf[..x.len()];
        reconstruct(i * CHUNK, y);
        chunk_sums(x, y)
    }))
}

/// The first NaN or infinite value: `(index, value)`.
pub fn first_non_finite(x: &[f32]) -> Option<(usize, f32)> {
    let chunk = x.par_chunks(CHUNK).position_first(|c| first_non_finite_in(c).is_some())?;
    let at = chunk * CHUNK + first_non_finite_in(&x[chunk * CHUNK..]).expect("chunk has one");
    Some((at, x[at]))
}

/// Index of the first NaN or infinity in `x`, serially: a branch-free scan (it vectorizes),
/// then a search only when there is one.
pub fn first_non_finite_in(x: &[f32]) -> Option<usize> {
    if !x.iter().fold(false, |bad, v| bad | !v.is_finite()) {
        return None;
    }
    x.iter().position(|v| !v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn special() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -1e3f32..1e3,
            1 => Just(f32::NAN),
            1 => prop_oneof![Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(0.0), Just(-0.0), Just(1e-40)],
        ]
    }

    fn same(a: (f64, f64, f64), b: (f64, f64, f64)) -> bool {
        let eq = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        eq(a.0, b.0) && eq(a.1, b.1) && eq(a.2, b.2)
    }

    proptest! {
        /// The AVX2 form and the portable form give the same bits (lengths around the lane
        /// count, NaN, infinities, signed zeros, subnormals).
        #[test]
        fn vector_sums_are_the_portable_sums(xy in prop::collection::vec((special(), special()), 0..70)) {
            let (x, y): (Vec<f32>, Vec<f32>) = xy.into_iter().unzip();
            let portable = chunk_sums_lanes(&x, &y);
            #[cfg(target_arch = "x86_64")]
            if let Some(simd) = pulp::x86::V3::try_new() {
                let v = simd.vectorize(SumsV3 { simd, x: &x, y: &y });
                prop_assert!(same(v, portable), "{v:?} vs {portable:?}");
            }
            prop_assert!(same(chunk_sums(&x, &y), portable));
        }
    }
}
