//! Integer weight quantization: INT8 per output channel (W8A8 / W8A16) and INT4/INT8 group-wise
//! along the input dimension, symmetric or with a zero point.
//!
//! Math (shared/research/formats.md §5.3, §7.3; checked against compressed-tensors 0.20.0 by
//! `tests/fixtures/quant_numeric/gen.py`), per group of one row, in f32:
//!
//! * `qmin = -2^(b-1)`, `qmax = 2^(b-1) - 1`; `min = min(min(x), 0)`, `max = max(max(x), 0)`.
//! * [`ScaleRule::HalfRange`] (compressed-tensors `calculate_qparams`):
//!   symmetric `s = max(|min|, max) / ((qmax - qmin) / 2)` (amax/7.5 for int4, amax/127.5 for
//!   int8), zero point 0; asymmetric `s = (max - min) / (qmax - qmin)`,
//!   `zp = round(clamp(qmin - min / s, qmin, qmax))`.
//! * [`ScaleRule::MaxQ`] (msModelSlim): symmetric `s = amax / qmax` (amax/7, amax/127);
//!   asymmetric `s = (max - min) / (2^b - 1)`, `offset = round(-min / s) + qmin` (then clamped to
//!   `[qmin, qmax]`, which only bites when scale rounding made `s` smaller than the f32 quotient).
//! * `s` is rounded to the scale dtype **before** the zero point and the codes are computed, and an
//!   exactly-zero stored scale becomes the scale dtype's epsilon (`fp8::round_scale`; all-zero
//!   groups thus get `torch.finfo(dtype).eps`, compressed-tensors 0.20 behaviour).
//! * `q = round(clamp(x / s + zp, qmin, qmax))`, `round` = half-to-even (`torch.round`), with the
//!   division and the addition done in f32 (compressed-tensors adds the zero point in the input
//!   dtype). NaN weights encode as 0.
//! * Dequantize `(q - zp) * s`: computed in f32 (exact for every scale dtype here: ≤ 9 × 11
//!   significant bits) and rounded once to the scale dtype, which is what compressed-tensors'
//!   `dequantize` computing in the scale dtype (BF16/F16 arithmetic = f32 math plus one rounding)
//!   produces.
//!
//! Difference from compressed-tensors itself: it computes scale and codes in the weight's dtype
//! (e.g. BF16 division); recast works on the f32 values (exact decodes of BF16/F16 weights) and
//! only the stored scale is rounded. The codes can differ from llm-compressor's in rare ties; the
//! written file still decompresses (compressed-tensors `decompress`) to exactly [`dequantize`].

use crate::codec::fp8::{round_scale, round_to_dtype};
use rayon::prelude::*;
use recast_convert::DType;

/// Which input columns share a scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// One scale per row (output channel).
    Channel,
    /// One scale per run of this many consecutive columns (must divide `cols`).
    Size(usize),
}

/// How the scale is derived from the group's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleRule {
    /// compressed-tensors: symmetric amax/((qmax-qmin)/2), asymmetric (max-min)/(qmax-qmin).
    HalfRange,
    /// msModelSlim: symmetric amax/qmax, asymmetric (max-min)/(2^b-1) with offset
    /// round(-min/s) + qmin.
    MaxQ,
}

/// An integer quantization scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntSpec {
    /// 2..=8.
    pub bits: u8,
    pub group: Group,
    pub symmetric: bool,
    pub rule: ScaleRule,
    /// F32, F16 or BF16.
    pub scale_dtype: DType,
}

impl IntSpec {
    /// `(qmin, qmax)` = `(-2^(b-1), 2^(b-1) - 1)`.
    pub fn range(&self) -> (i32, i32) {
        let h = 1i32 << (self.bits - 1);
        (-h, h - 1)
    }

    /// Columns per group for a matrix with `cols` columns.
    pub fn group_len(&self, cols: usize) -> usize {
        match self.group {
            Group::Channel => cols,
            Group::Size(g) => g,
        }
    }

    /// Groups per row (the scale tensor is `[rows, groups_per_row]`).
    pub fn groups_per_row(&self, cols: usize) -> usize {
        match self.group {
            Group::Channel => 1,
            Group::Size(g) => cols / g.max(1),
        }
    }
}

/// Integer codes of a `[rows, cols]` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct IntQuantized {
    /// Signed codes in `[qmin, qmax]`, `[rows, cols]` row-major.
    pub codes: Vec<i8>,
    /// Stored scale values (rounded to the scale dtype, exact as f32), `[rows, groups_per_row]`.
    pub scales: Vec<f32>,
    /// Zero points (compressed-tensors `weight_zero_point`, msModelSlim `weight_offset`), same
    /// shape as `scales`; `None` when symmetric.
    pub zeros: Option<Vec<i8>>,
    pub groups_per_row: usize,
}

/// Checks that `spec` can quantize a `[rows, cols]` matrix without padding: bits in 2..=8, scale
/// dtype F32/F16/BF16, group size non-zero and dividing `cols`. The message says what to do.
pub fn check_shape(rows: usize, cols: usize, spec: &IntSpec) -> Result<(), String> {
    let _ = rows;
    if !(2..=8).contains(&spec.bits) {
        return Err(format!("integer quantization supports 2..=8 bits, not {}", spec.bits));
    }
    if !matches!(spec.scale_dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(format!("scale dtype must be F32, F16 or BF16, not {}", spec.scale_dtype.name()));
    }
    if let Group::Size(g) = spec.group {
        if g == 0 {
            return Err("group size must be non-zero".into());
        }
        if !cols.is_multiple_of(g) {
            return Err(format!("{cols} input columns are not a multiple of the group size {g}"));
        }
    }
    Ok(())
}

/// Scale and zero point of one group.
fn group_params(x: &[f32], spec: &IntSpec, qmin: i32, qmax: i32) -> (f32, i32) {
    let (mut mn, mut mx) = (0.0f32, 0.0f32);
    for &v in x {
        mn = mn.min(v);
        mx = mx.max(v);
    }
    let levels = (qmax - qmin) as f32; // 2^b - 1
    if spec.symmetric {
        let amax = mn.abs().max(mx);
        let s = match spec.rule {
            ScaleRule::HalfRange => amax / (levels / 2.0),
            ScaleRule::MaxQ => amax / qmax as f32,
        };
        (round_scale(s, spec.scale_dtype), 0)
    } else {
        let s = round_scale((mx - mn) / levels, spec.scale_dtype);
        let zp = match spec.rule {
            ScaleRule::HalfRange => (qmin as f32 - mn / s).clamp(qmin as f32, qmax as f32).round_ties_even(),
            ScaleRule::MaxQ => ((-mn / s).round_ties_even() + qmin as f32).clamp(qmin as f32, qmax as f32),
        };
        (s, zp as i32)
    }
}

/// One row: scales, zero points (`zeros` is empty when symmetric) and codes.
fn quantize_row(row: &[f32], spec: &IntSpec, glen: usize, codes: &mut [i8], scales: &mut [f32], zeros: &mut [i8]) {
    let (qmin, qmax) = spec.range();
    let (lo, hi) = (qmin as f32, qmax as f32);
    for (gi, scale) in scales.iter_mut().enumerate() {
        let span = gi * glen..(gi + 1) * glen;
        let xg = &row[span.clone()];
        let (s, zp) = group_params(xg, spec, qmin, qmax);
        *scale = s;
        if let Some(z) = zeros.get_mut(gi) {
            *z = zp as i8;
        }
        let zpf = zp as f32;
        for (c, &v) in codes[span].iter_mut().zip(xg) {
            *c = (v / s + zpf).clamp(lo, hi).round_ties_even() as i8;
        }
    }
}

fn quantize_impl(w: &[f32], rows: usize, cols: usize, spec: &IntSpec, parallel: bool) -> IntQuantized {
    if let Err(e) = check_shape(rows, cols, spec) {
        panic!("integer quantize: {e}");
    }
    assert_eq!(w.len(), rows * cols, "integer quantize: {} values for a [{rows}, {cols}] matrix", w.len());
    let glen = spec.group_len(cols);
    let gpr = spec.groups_per_row(cols);
    let zpr = if spec.symmetric { 0 } else { gpr };
    let mut codes = vec![0i8; rows * cols];
    let mut scales = vec![0.0f32; rows * gpr];
    let mut zeros = vec![0i8; rows * zpr];
    if cols == 0 || gpr == 0 {
        // Nothing to chunk by; only a channel scale per row over zero columns (epsilon).
        for r in 0..rows {
            let (sc, zs) = (&mut scales[r * gpr..(r + 1) * gpr], &mut zeros[r * zpr..(r + 1) * zpr]);
            quantize_row(&[], spec, glen, &mut [], sc, zs);
        }
    } else if spec.symmetric {
        let f = |((row, cd), sc): ((&[f32], &mut [i8]), &mut [f32])| quantize_row(row, spec, glen, cd, sc, &mut []);
        if parallel {
            w.par_chunks(cols).zip(codes.par_chunks_mut(cols)).zip(scales.par_chunks_mut(gpr)).for_each(f);
        } else {
            w.chunks(cols).zip(codes.chunks_mut(cols)).zip(scales.chunks_mut(gpr)).for_each(f);
        }
    } else {
        type Row<'a> = (((&'a [f32], &'a mut [i8]), &'a mut [f32]), &'a mut [i8]);
        let f = |(((row, cd), sc), zs): Row| quantize_row(row, spec, glen, cd, sc, zs);
        if parallel {
            let it = w.par_chunks(cols).zip(codes.par_chunks_mut(cols)).zip(scales.par_chunks_mut(gpr));
            it.zip(zeros.par_chunks_mut(gpr)).for_each(f);
        } else {
            let it = w.chunks(cols).zip(codes.chunks_mut(cols)).zip(scales.chunks_mut(gpr));
            it.zip(zeros.chunks_mut(gpr)).for_each(f);
        }
    }
    IntQuantized { codes, scales, zeros: (!spec.symmetric).then_some(zeros), groups_per_row: gpr }
}

/// Quantizes a `[rows, cols]` row-major matrix (see the module doc). Parallel over rows, equal to
/// [`quantize_serial`]. Panics when [`check_shape`] fails (callers check first and decide to pad,
/// keep the tensor unquantized or fail) or `w.len() != rows * cols`.
pub fn quantize(w: &[f32], rows: usize, cols: usize, spec: &IntSpec) -> IntQuantized {
    quantize_impl(w, rows, cols, spec, true)
}

/// Single-threaded twin of [`quantize`] (identical output).
pub fn quantize_serial(w: &[f32], rows: usize, cols: usize, spec: &IntSpec) -> IntQuantized {
    quantize_impl(w, rows, cols, spec, false)
}

/// `(q - zp) * s` per element, computed in f32 and rounded once to the scale dtype
/// (compressed-tensors `dequantize`, bit for bit). Panics if the sizes disagree.
pub fn dequantize(q: &IntQuantized, rows: usize, cols: usize, spec: &IntSpec) -> Vec<f32> {
    assert_eq!(q.codes.len(), rows * cols, "integer dequantize: code count");
    let gpr = spec.groups_per_row(cols);
    assert_eq!(q.groups_per_row, gpr, "integer dequantize: groups per row");
    assert_eq!(q.scales.len(), rows * gpr, "integer dequantize: scale count");
    if let Some(z) = &q.zeros {
        assert_eq!(z.len(), rows * gpr, "integer dequantize: zero-point count");
    }
    let mut out = vec![0.0f32; rows * cols];
    if rows == 0 || cols == 0 || gpr == 0 {
        return out;
    }
    let glen = spec.group_len(cols);
    let dt = spec.scale_dtype;
    out.par_chunks_mut(cols).zip(q.codes.par_chunks(cols)).enumerate().for_each(|(r, (o, c))| {
        for (gi, (og, cg)) in o.chunks_mut(glen).zip(c.chunks(glen)).enumerate() {
            let s = q.scales[r * gpr + gi];
            let zp = q.zeros.as_ref().map_or(0, |z| i32::from(z[r * gpr + gi]));
            for (v, &code) in og.iter_mut().zip(cg) {
                *v = round_to_dtype((i32::from(code) - zp) as f32 * s, dt);
            }
        }
    });
    out
}
