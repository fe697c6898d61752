//! Shared helpers of ggml's quantizers (`ggml-quants.c`): rounding primitives, fp16 scale
//! storage and the scale-search routines `make_qx_quants`, `make_q3_quants`,
//! `make_qkx2_quants` / `make_qkx3_quants` and `make_qp_quants`.
//!
//! Every function is a line-by-line port: the same f32 operations in the same order (C's
//! `a*b*c` is `(a*b)*c`, `int` operands are converted to f32 at the operation), sums accumulated
//! sequentially in f32, and ggml's integer truncations (`int` → `uint8_t` / `int8_t` stores)
//! reproduced with wrapping `as` casts. Rust never contracts `a*b + c` into an FMA, which is
//! ggml compiled with `-ffp-contract=off`: the definition of "exact" here.
//!
//! Where ggml only ever calls a routine with one `rmse_type` / weight mode, only that mode is
//! ported (noted per function).

use half::f16;
use half::slice::HalfFloatSliceExt;

/// ggml's `GROUP_MAX_EPS`: groups with max |x| below this are treated as all zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: adds 1.5·2²³ and reads the low mantissa bits, i.e. round to nearest,
/// ties to even, for |f| ≤ 4194303. ggml `assert`s that range, but release builds (NDEBUG)
/// return whatever the bit trick gives outside it; so does this (inf → −4194304, NaN → 0).
#[inline(always)]
pub(super) fn nearest_int(f: f32) -> i32 {
    let val = f + 12582912.0;
    ((val.to_bits() as i32) & 0x007f_ffff) - 0x0040_0000
}

/// `(int)(v)` for `v` in `[0, 2²²)`: truncation (= floor) from the [`nearest_int`] bit trick,
/// one lower where that rounded up. Exact, and vectorizes (a float → int `as` does not).
#[inline(always)]
pub(super) fn trunc_nonneg(v: f32) -> i32 {
    let t = nearest_int(v);
    t - ((t as f32) > v) as i32
}

/// Blocks whose fp16 scales [`ref_row`] converts in one call.
const SCALE_GROUP: usize = 64;

/// The row loop of the legacy reference encoders (Q8_0, Q4_0, Q5_0), arranged to vectorize:
/// each block's scale `d = scale(block)`, the fp16 `d` of up to 64 blocks converted together
/// (same rounding as one at a time), then per block the fp16 bytes and
/// `emit(values, id = 1/d or 0, rest of the block)`.
#[inline(always)]
pub(super) fn ref_row<const QK: usize>(
    x: &[f32],
    y: &mut [u8],
    block_bytes: usize,
    scale: impl Fn(&[f32]) -> f32,
    emit: impl Fn(&[f32; QK], f32, &mut [u8]),
) {
    let mut d = [0f32; SCALE_GROUP];
    let mut d16 = [f16::ZERO; SCALE_GROUP];
    for (xg, yg) in x.chunks(SCALE_GROUP * QK).zip(y.chunks_mut(SCALE_GROUP * block_bytes)) {
        let nb = xg.len() / QK;
        for (d, xb) in d.iter_mut().zip(xg.chunks_exact(QK)) {
            *d = scale(xb);
        }
        d16[..nb].convert_from_f32_slice(&d[..nb]);
        for (b, (xb, yb)) in xg.chunks_exact(QK).zip(yg.chunks_exact_mut(block_bytes)).enumerate() {
            let id = if d[b] != 0.0 { 1.0 / d[b] } else { 0.0 };
            yb[0..2].copy_from_slice(&d16[b].to_le_bytes());
            emit(xb.try_into().expect("QK values"), id, &mut yb[2..]);
        }
    }
}

/// The legacy offset codes `MIN(max, (int8_t)(x·id + offset))` of one block (Q4_0: 8.5 and
/// 15, Q5_0: 16.5 and 31). With a finite `id`, `x·id + offset` is in `[0.5, 2·offset - 0.5]`,
/// so the int8 cast keeps the value and [`trunc_nonneg`] is the conversion.
#[inline(always)]
pub(super) fn offset_codes<const QK: usize>(x: &[f32; QK], id: f32, offset: f32, max: i32) -> [u8; QK] {
    let mut q = [0u8; QK];
    if id.is_finite() {
        for j in 0..QK {
            q[j] = trunc_nonneg(x[j] * id + offset).min(max) as u8;
        }
    } else {
        // 1/d overflowed (subnormal max): C's conversion of ±inf / NaN.
        for j in 0..QK {
            q[j] = (c_f32_to_i32(x[j] * id + offset) as i8 as i32).min(max) as u8;
        }
    }
    q
}

/// C's float → integer conversion as compiled for x86-64 (`cvttss2si`): truncation toward
/// zero, and the "integer indefinite" `i32::MIN` for NaN or out-of-range values. ggml's
/// `(int8_t)(v)` / `(uint8_t)(v)` then keep the low byte (`as i8` / `as u8` of this). Only
/// reached with NaN/inf when 1/d overflows (subnormal block maxima).
#[inline(always)]
pub(super) fn c_f32_to_i32(v: f32) -> i32 {
    if (-2147483648.0..2147483648.0).contains(&v) {
        v as i32
    } else {
        i32::MIN
    }
}

/// `GGML_FP32_TO_FP16`: IEEE round-to-nearest-even, little-endian bytes.
#[inline(always)]
pub(super) fn fp16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// `GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))`: the value a stored fp16 scale reads back as.
#[inline(always)]
pub(super) fn fp16_round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// Max |x| and the signed value attaining it (the first on ties), per group, as ggml's
/// `make_qx_quants` / `make_q3_quants` scan.
#[inline(always)]
fn signed_absmax_lanes<const N: usize, const G: usize>(xt: &[[f32; G]; N]) -> ([f32; G], [f32; G]) {
    let mut max = [0.0f32; G];
    let mut amax = [0.0f32; G];
    for row in xt {
        for g in 0..G {
            let ax = row[g].abs();
            if ax > amax[g] {
                amax[g] = ax;
                max[g] = row[g];
            }
        }
    }
    (max, amax)
}

/// Transposes `G` consecutive groups of `N` values: `t[i][g] = v[g*N + i]`.
#[inline(always)]
fn transpose<const N: usize, const G: usize>(v: &[f32]) -> [[f32; G]; N] {
    let v = &v[..N * G];
    let mut t = [[0.0f32; G]; N];
    for g in 0..G {
        for i in 0..N {
            t[i][g] = v[g * N + i];
        }
    }
    t
}

/// `nearest_int(v)` clamped to `[lo, hi]`, as an exact f32 integer (clamping the i32 in f32 is
/// exact: |nearest_int| ≤ 2²²).
#[inline(always)]
fn code_f32(v: f32, lo: f32, hi: f32) -> f32 {
    let l = nearest_int(v) as f32;
    let l = if l < lo { lo } else { l };
    if l > hi {
        hi
    } else {
        l
    }
}

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)` on `G` independent groups of `N` values
/// (group `g` = `x[g*N..]`, weights `w[g*N..]`), with the weights already resolved: `w = qw`
/// when ggml is given `qw`, else `w[i] = x[i]*x[i]` (rmse_type 1's default; every caller in
/// ggml's quantizers of our types uses rmse_type 1). Writes codes `L = l + nmax` (all 0 for an
/// all-zero group) to `l_out[g*N..]` and returns each group's scale. The groups run in lockstep
/// (see [`make_qkx_quants`]); each follows ggml's scalar operations exactly.
#[inline(always)]
pub(super) fn make_qx_quants<const N: usize, const G: usize>(
    x: &[f32],
    nmax: i32,
    l_out: &mut [i8],
    w: &[f32],
) -> [f32; G] {
    let xt = transpose::<N, G>(x);
    let wt = transpose::<N, G>(w);
    let l_out = &mut l_out[..N * G];
    let (max, amax) = signed_absmax_lanes(&xt);
    let nmaxf = nmax as f32;
    let (lo, hi) = (-nmaxf, nmaxf - 1.0);
    let mut lbest = [[0.0f32; G]; N];
    let mut lcand = [[0.0f32; G]; N];
    let mut iscale = [0.0f32; G];
    for g in 0..G {
        iscale[g] = -nmaxf / max[g];
    }
    let mut sumlx = [0.0f32; G];
    let mut suml2 = [0.0f32; G];
    for i in 0..N {
        for g in 0..G {
            let l = code_f32(iscale[g] * xt[i][g], lo, hi);
            lbest[i][g] = l;
            sumlx[g] += wt[i][g] * xt[i][g] * l;
            suml2[g] += wt[i][g] * l * l;
        }
    }
    let mut scale = [0.0f32; G];
    let mut best = [0.0f32; G];
    for g in 0..G {
        scale[g] = if suml2[g] != 0.0 { sumlx[g] / suml2[g] } else { 0.0 };
        best[g] = scale[g] * sumlx[g];
    }
    for is in -9..=9i32 {
        if is == 0 {
            continue;
        }
        let num = nmaxf + 0.1f32 * is as f32;
        for g in 0..G {
            iscale[g] = -num / max[g];
        }
        let mut sumlx = [0.0f32; G];
        let mut suml2 = [0.0f32; G];
        for i in 0..N {
            for g in 0..G {
                let l = code_f32(iscale[g] * xt[i][g], lo, hi);
                lcand[i][g] = l;
                sumlx[g] += wt[i][g] * xt[i][g] * l;
                suml2[g] += wt[i][g] * l * l;
            }
        }
        let mut accept = [false; G];
        for g in 0..G {
            accept[g] = suml2[g] > 0.0 && sumlx[g] * sumlx[g] > best[g] * suml2[g];
            if accept[g] {
                scale[g] = sumlx[g] / suml2[g];
                best[g] = scale[g] * sumlx[g];
            }
        }
        if accept.iter().any(|&a| a) {
            for i in 0..N {
                for g in 0..G {
                    if accept[g] {
                        lbest[i][g] = lcand[i][g];
                    }
                }
            }
        }
    }
    for g in 0..G {
        let out = &mut l_out[g * N..g * N + N];
        if amax[g] < GROUP_MAX_EPS {
            out.fill(0);
            scale[g] = 0.0;
        } else {
            for i in 0..N {
                out[i] = (lbest[i][g] as i32 + nmax) as i8;
            }
        }
    }
    scale
}

/// `make_q3_quants(n, nmax, x, L, do_rmse = true)` (the only mode ggml's Q3_K uses) on `G`
/// independent groups of `N` values: weights `x²`, then up to 5 passes of coordinate descent.
/// Writes `L = l + nmax` (all 0 for an all-zero group, without the offset) and returns each
/// group's scale. Lockstep as [`make_qkx_quants`]; a group whose pass changed nothing stops in
/// ggml, and here keeps running passes that provably change nothing (same state, same
/// decisions).
#[inline(always)]
pub(super) fn make_q3_quants<const N: usize, const G: usize>(x: &[f32], nmax: i32, l_out: &mut [i8]) -> [f32; G] {
    let xt = transpose::<N, G>(x);
    let l_out = &mut l_out[..N * G];
    let (max, amax) = signed_absmax_lanes(&xt);
    let nmaxf = nmax as f32;
    let (lo, hi) = (-nmaxf, nmaxf - 1.0);
    let mut iscale = [0.0f32; G];
    for g in 0..G {
        iscale[g] = -nmaxf / max[g];
    }
    let mut lt = [[0.0f32; G]; N];
    let mut sumlx = [0.0f32; G];
    let mut suml2 = [0.0f32; G];
    for i in 0..N {
        for g in 0..G {
            let l = code_f32(iscale[g] * xt[i][g], lo, hi);
            lt[i][g] = l;
            let w = xt[i][g] * xt[i][g];
            sumlx[g] += w * xt[i][g] * l;
            suml2[g] += w * l * l;
        }
    }
    for _ in 0..5 {
        let mut changed = [false; G];
        for i in 0..N {
            for g in 0..G {
                let xi = xt[i][g];
                let w = xi * xi;
                let li = lt[i][g];
                let slx = sumlx[g] - w * xi * li;
                let sl2 = suml2[g] - w * li * li;
                let new_l = code_f32(xi * sl2 / slx, lo, hi);
                let slx2 = slx + w * xi * new_l;
                let sl22 = sl2 + w * new_l * new_l;
                // ggml's nested ifs, evaluated without branches (all operands are computed
                // anyway; only the selection depends on them).
                let take =
                    (slx > 0.0) & (new_l != li) & (sl22 > 0.0) & (slx2 * slx2 * suml2[g] > sumlx[g] * sumlx[g] * sl22);
                lt[i][g] = if take { new_l } else { li };
                sumlx[g] = if take { slx2 } else { sumlx[g] };
                suml2[g] = if take { sl22 } else { suml2[g] };
                changed[g] |= take;
            }
        }
        if !changed.iter().any(|&c| c) {
            break;
        }
    }
    let mut scale = [0.0f32; G];
    for g in 0..G {
        let out = &mut l_out[g * N..g * N + N];
        if amax[g] < GROUP_MAX_EPS {
            out.fill(0);
        } else {
            for i in 0..N {
                out[i] = (lt[i][g] as i32 + nmax) as i8;
            }
            scale[g] = if suml2[g] > 0.0 { sumlx[g] / suml2[g] } else { 0.0 };
        }
    }
    scale
}

/// The search parameters of `make_qkx2_quants` / `make_qkx3_quants`.
#[derive(Clone, Copy)]
pub(super) struct Qkx {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// `make_qkx2_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad)`,
/// which is also `make_qkx3_quants` whenever weights are given (ggml's only use of qkx3 here;
/// the degenerate tests `max == min` and `max <= min` agree because `min ≤ max` always), run
/// on `G` independent groups of `N` values at once.
///
/// Group `g` is `x[g*N..(g+1)*N]` with weights `w[g*N..]`; its unsigned codes `L ∈ [0, nmax]`
/// go to `l_out[g*N..]`, and `(scale[g], the_min[g])` is returned with `x ≈ scale·L − the_min`.
/// Each group follows ggml's scalar algorithm exactly — every f32 operation of group `g` is the
/// one ggml performs, in ggml's order (its sums stay sequential over the group's elements); the
/// groups merely run in lockstep so their dependency chains overlap (and vectorize across
/// groups). Per-group branches become selects; values computed for a lane that ggml would not
/// compute (a degenerate group, a candidate with D ≤ 0) are discarded.
#[inline(always)]
pub(super) fn make_qkx_quants<const N: usize, const G: usize>(
    x: &[f32],
    w: &[f32],
    l_out: &mut [u8],
    p: Qkx,
) -> ([f32; G], [f32; G]) {
    let (x, w, l_out) = (&x[..N * G], &w[..N * G], &mut l_out[..N * G]);
    // Transposed copies: xt[i][g] = element i of group g.
    let mut xt = [[0.0f32; G]; N];
    let mut wt = [[0.0f32; G]; N];
    for g in 0..G {
        for i in 0..N {
            xt[i][g] = x[g * N + i];
            wt[i][g] = w[g * N + i];
        }
    }
    let mut min = xt[0];
    let mut max = xt[0];
    let mut sum_w = wt[0];
    let mut sum_x = [0.0f32; G];
    for g in 0..G {
        sum_x[g] = sum_w[g] * xt[0][g];
    }
    for i in 1..N {
        for g in 0..G {
            let v = xt[i][g];
            if v < min[g] {
                min[g] = v;
            }
            if v > max[g] {
                max[g] = v;
            }
            sum_w[g] += wt[i][g];
            sum_x[g] += wt[i][g] * v;
        }
    }
    let nmax = p.nmax as f32;
    let mut degenerate = [false; G];
    let mut iscale = [0.0f32; G];
    let mut scale = [0.0f32; G];
    for g in 0..G {
        if min[g] > 0.0 {
            min[g] = 0.0;
        }
        degenerate[g] = max[g] == min[g];
        iscale[g] = nmax / (max[g] - min[g]);
        scale[g] = 1.0 / iscale[g];
    }
    // Codes as exact small f32 integers; clamping the i32 of nearest_int in f32 is exact.
    let code = |v: f32| {
        let l = nearest_int(v) as f32;
        let l = if l < 0.0 { 0.0 } else { l };
        if l > nmax {
            nmax
        } else {
            l
        }
    };
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    let mut lbest = [[0.0f32; G]; N];
    let mut best_error = [0.0f32; G];
    for i in 0..N {
        for g in 0..G {
            let l = code(iscale[g] * (xt[i][g] - min[g]));
            lbest[i][g] = l;
            let diff = scale[g] * l + min[g] - xt[i][g];
            best_error[g] += wt[i][g] * err(diff);
        }
    }
    if p.nstep >= 1 {
        let mut laux = [[0.0f32; G]; N];
        for is in 0..=p.nstep {
            let num = p.rmin + p.rdelta * is as f32 + nmax;
            for g in 0..G {
                iscale[g] = num / (max[g] - min[g]);
            }
            let mut sum_l = [0.0f32; G];
            let mut sum_l2 = [0.0f32; G];
            let mut sum_xl = [0.0f32; G];
            for i in 0..N {
                for g in 0..G {
                    let l = code(iscale[g] * (xt[i][g] - min[g]));
                    laux[i][g] = l;
                    let wl = wt[i][g] * l;
                    sum_l[g] += wl;
                    sum_l2[g] += wl * l;
                    sum_xl[g] += wl * xt[i][g];
                }
            }
            let mut valid = [false; G];
            let mut this_scale = [0.0f32; G];
            let mut this_min = [0.0f32; G];
            for g in 0..G {
                let d = sum_w[g] * sum_l2[g] - sum_l[g] * sum_l[g];
                valid[g] = d > 0.0;
                this_scale[g] = (sum_w[g] * sum_xl[g] - sum_x[g] * sum_l[g]) / d;
                this_min[g] = (sum_l2[g] * sum_x[g] - sum_l[g] * sum_xl[g]) / d;
                if this_min[g] > 0.0 {
                    this_min[g] = 0.0;
                    this_scale[g] = sum_xl[g] / sum_l2[g];
                }
            }
            if !valid.iter().any(|&v| v) {
                continue;
            }
            let mut cur_error = [0.0f32; G];
            for i in 0..N {
                for g in 0..G {
                    let diff = this_scale[g] * laux[i][g] + this_min[g] - xt[i][g];
                    cur_error[g] += wt[i][g] * err(diff);
                }
            }
            let mut adopt = [false; G];
            for g in 0..G {
                adopt[g] = valid[g] && cur_error[g] < best_error[g];
                if adopt[g] {
                    best_error[g] = cur_error[g];
                    scale[g] = this_scale[g];
                    min[g] = this_min[g];
                }
            }
            if adopt.iter().any(|&a| a) {
                for i in 0..N {
                    for g in 0..G {
                        if adopt[g] {
                            lbest[i][g] = laux[i][g];
                        }
                    }
                }
            }
        }
    }
    let mut the_min = [0.0f32; G];
    for g in 0..G {
        the_min[g] = -min[g];
        if degenerate[g] {
            scale[g] = 0.0;
            l_out[g * N..g * N + N].fill(0);
        } else {
            for i in 0..N {
                l_out[g * N + i] = lbest[i][g] as u8;
            }
        }
    }
    (scale, the_min)
}

/// `make_qp_quants(n, nmax, x, L, quant_weights)`: quantizes non-negative sub-block scales to
/// `[0, nmax]` codes, with ggml's `uint8_t` stores of `int` codes (wrapping) kept.
#[inline(always)]
pub(super) fn make_qp_quants(x: &[f32], nmax: i32, l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let (l_out, qw) = (&mut l_out[..n], &qw[..n]);
    let mut max = 0.0f32;
    for &xi in x {
        max = if max > xi { max } else { xi };
    }
    if max < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4i32 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let lf = l as f32;
        sumlx += qw[i] * x[i] * lf;
        suml2 += qw[i] * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min codes of sub-block `j` of Q4_K / Q5_K.
#[inline(always)]
pub(super) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Packs 8 six-bit scale codes and 8 min codes into Q4_K / Q5_K's 12 scale bytes, as ggml's
/// quantizers do (with `u8` arithmetic: bits of codes > 63 spill as in ggml).
#[inline(always)]
pub(super) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], scales: &mut [u8]) {
    for j in 0..8 {
        if j < 4 {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            scales[j - 4] |= (ls[j] >> 4) << 6;
            scales[j] |= (lm[j] >> 4) << 6;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunc_nonneg_is_truncation() {
        let top = 40f32.to_bits();
        for b in (0..top).step_by(4099) {
            let v = f32::from_bits(b);
            assert_eq!(trunc_nonneg(v), v as i32, "{v:e}");
        }
        for k in 0..=40 {
            let v = k as f32;
            for x in [v, f32::from_bits(v.to_bits() + 1), f32::from_bits(v.to_bits().saturating_sub(1)), v + 0.5] {
                assert_eq!(trunc_nonneg(x), x as i32, "{x:e}");
            }
        }
    }
}
