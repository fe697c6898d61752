//! Q4_0 (18 B / 32 elements): `d: f16`, `qs: u8[16]` (low nibble = element j, high = j+16),
//! `x = d·(q − 8)`. Ports of ggml's `quantize_row_q4_0_ref` and `quantize_row_q4_0_impl`.

use super::common::{fp16_bytes, make_qx_quants, offset_codes, ref_row};

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 18;

/// The signed element of largest magnitude (the first one on ties), as ggml's legacy scans.
/// The input is finite (callers check), so |v| orders as its bits: the integer max finds the
/// magnitude (vectorizes) and the first element with those bits is ggml's pick; an all-zero
/// block gives 0 (ggml's initial `max`, whatever the zeros' signs).
#[inline(always)]
pub(super) fn signed_absmax(x: &[f32]) -> f32 {
    let amax = x.iter().map(|v| v.to_bits() & 0x7FFF_FFFF).max().unwrap_or(0);
    if amax == 0 {
        return 0.0;
    }
    *x.iter().find(|v| v.to_bits() & 0x7FFF_FFFF == amax).expect("the max is an element")
}

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    ref_row::<QK>(
        x,
        y,
        BLOCK_BYTES,
        |xb| signed_absmax(xb) / -8.0,
        |xb, id, out| {
            let q = offset_codes(xb, id, 8.5, 15);
            for j in 0..QK / 2 {
                out[j] = q[j] | (q[QK / 2 + j] << 4);
            }
        },
    );
}

/// Row-wide `sigma2 = Σx²/n_per_row` and weights `qw·sqrt(sigma2 + x²)` (Q4_0 / Q5_0 impl).
#[inline(always)]
pub(super) fn legacy_weights(x: &[f32], qw: &[f32], sigma2: f32, w: &mut [f32; 32]) {
    for j in 0..32 {
        w[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
    }
}

/// `sum_x2 / n_per_row` over the whole row, summed in order.
#[inline(always)]
pub(super) fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// The imatrix path of Q4_0 / Q5_0: per block `make_qx_quants(32, nmax, x, L, 1, w)` with
/// weights `qw·sqrt(sigma2 + x²)` (row-wide sigma2), blocks searched 8 at a time (each exactly
/// as ggml's scalar loop); `emit(block, d, codes)` packs one block.
#[inline(always)]
pub(super) fn legacy_qx_row(
    x: &[f32],
    y: &mut [u8],
    qw: &[f32],
    nmax: i32,
    block_bytes: usize,
    emit: impl Fn(&mut [u8], f32, &[i8]),
) {
    const G: usize = 8;
    let sigma2 = row_sigma2(x);
    let mut w = [0.0f32; QK * G];
    let mut l = [0i8; QK * G];
    let mut wb = [0.0f32; QK];
    let groups = x.chunks(QK * G).zip(y.chunks_mut(block_bytes * G)).zip(qw.chunks(QK * G));
    for ((xg, yg), qg) in groups {
        let nb = xg.len() / QK;
        for b in 0..nb {
            legacy_weights(&xg[QK * b..], &qg[QK * b..], sigma2, &mut wb);
            w[QK * b..QK * b + QK].copy_from_slice(&wb);
        }
        if nb == G {
            let d = make_qx_quants::<QK, G>(xg, nmax, &mut l, &w);
            for b in 0..G {
                emit(&mut yg[block_bytes * b..block_bytes * (b + 1)], d[b], &l[QK * b..QK * b + QK]);
            }
        } else {
            for b in 0..nb {
                let [d] = make_qx_quants::<QK, 1>(&xg[QK * b..], nmax, &mut l, &w[QK * b..]);
                emit(&mut yg[block_bytes * b..block_bytes * (b + 1)], d, &l[..QK]);
            }
        }
    }
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    legacy_qx_row(x, y, qw, 8, BLOCK_BYTES, |yb, d, l| {
        yb[0..2].copy_from_slice(&fp16_bytes(d));
        for j in 0..16 {
            yb[2 + j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
        }
    });
}
