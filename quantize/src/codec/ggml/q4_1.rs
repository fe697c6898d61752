//! Q4_1 (20 B / 32 elements): `d: f16`, `m: f16`, `qs: u8[16]` (nibbles as Q4_0),
//! `x = d·q + m`. Ports of ggml's `quantize_row_q4_1_ref` and `quantize_row_q4_1_impl`.

use super::common::{c_f32_to_i32, fp16_bytes, make_qkx_quants, Qkx};
use super::q4_0::{legacy_weights, row_sigma2};

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 20;

/// `make_qkx3_quants(32, nmax, …, -0.9f, 0.05f, 36, false)` as ggml's Q4_1 / Q5_1 impl call it.
pub(super) const fn legacy_qkx3(nmax: i32) -> Qkx {
    Qkx { nmax, rmin: -0.9, rdelta: 0.05, nstep: 36, use_mad: false }
}

/// Block min and max, scanned as ggml does (FLT_MAX / −FLT_MAX start).
#[inline(always)]
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline(always)]
fn quantize_block_ref(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[0..2].copy_from_slice(&fp16_bytes(d));
    y[2..4].copy_from_slice(&fp16_bytes(min));
    for j in 0..QK / 2 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[QK / 2 + j] - min) * id;
        let xi0 = (c_f32_to_i32(x0 + 0.5) as i8 as i32).min(15) as u8;
        let xi1 = (c_f32_to_i32(x1 + 0.5) as i8 as i32).min(15) as u8;
        y[4 + j] = xi0 | (xi1 << 4);
    }
}

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block_ref(xb, yb);
    }
}

/// The imatrix path of Q4_1 / Q5_1: per block `make_qkx3_quants(32, nmax, …)` with weights
/// `qw·sqrt(sigma2 + x²)` (row-wide sigma2), blocks searched 8 at a time (each exactly as
/// ggml's scalar loop); `emit(block, d, m, codes)` packs one block.
#[inline(always)]
pub(super) fn legacy_impl_row(
    x: &[f32],
    y: &mut [u8],
    qw: &[f32],
    nmax: i32,
    block_bytes: usize,
    emit: impl Fn(&mut [u8], f32, f32, &[u8]),
) {
    const G: usize = 8;
    let sigma2 = row_sigma2(x);
    let mut w = [0.0f32; QK * G];
    let mut l = [0u8; QK * G];
    let mut wb = [0.0f32; QK];
    let search = legacy_qkx3(nmax);
    let groups = x.chunks(QK * G).zip(y.chunks_mut(block_bytes * G)).zip(qw.chunks(QK * G));
    for ((xg, yg), qg) in groups {
        let nb = xg.len() / QK;
        for b in 0..nb {
            legacy_weights(&xg[QK * b..], &qg[QK * b..], sigma2, &mut wb);
            w[QK * b..QK * b + QK].copy_from_slice(&wb);
        }
        let mut out = |b: usize, d: f32, min: f32, codes: &[u8]| {
            emit(&mut yg[block_bytes * b..block_bytes * (b + 1)], d, -min, codes);
        };
        if nb == G {
            let (d, m) = make_qkx_quants::<QK, G>(xg, &w, &mut l, search);
            for b in 0..G {
                out(b, d[b], m[b], &l[QK * b..QK * b + QK]);
            }
        } else {
            for b in 0..nb {
                let (d, m) = make_qkx_quants::<QK, 1>(&xg[QK * b..], &w[QK * b..], &mut l, search);
                out(b, d[0], m[0], &l[..QK]);
            }
        }
    }
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    legacy_impl_row(x, y, qw, 15, BLOCK_BYTES, |yb, d, m, l| {
        yb[0..2].copy_from_slice(&fp16_bytes(d));
        yb[2..4].copy_from_slice(&fp16_bytes(m));
        for j in 0..16 {
            yb[4 + j] = l[j] | (l[j + 16] << 4);
        }
    });
}
