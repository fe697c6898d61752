//! Q3_K (110 B / 256 elements): `hmask: u8[32]`, `qs: u8[64]`, `scales: u8[12]` (16 signed
//! 6-bit sub-block scales + 32), `d: f16`; `x = d·(s − 32)·(q − 4)`. Ports of ggml's
//! `quantize_row_q3_K_ref` and `quantize_row_q3_K_impl`.

use super::common::{fp16_bytes, fp16_round, make_q3_quants, make_qx_quants, nearest_int};

pub(super) const QK: usize = 256;
pub(super) const BLOCK_BYTES: usize = 110;

const SCALES: usize = 96;

/// Packs the 6-bit code `l` (0..63) of sub-block `j` into the 12 scale bytes (zeroed first).
#[inline(always)]
fn pack_scale(sc: &mut [u8], j: usize, l: i32) {
    if j < 8 {
        sc[j] = (l & 0xF) as u8;
    } else {
        sc[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let l = l >> 4;
    sc[j % 4 + 8] |= (l << (2 * (j / 4))) as u8;
}

/// Requantizes with the stored scales and fp16 `d`, then packs `hmask`, `qs` and `d`.
#[inline(always)]
fn finish(x: &[f32], y: &mut [u8], l: &mut [i8; QK], d: f32) {
    let d16 = fp16_bytes(d);
    let dq = fp16_round(d);
    for j in 0..16 {
        let sc = &y[SCALES..SCALES + 12];
        let lo = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
        let s = (lo | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
        let dd = dq * s as f32;
        if dd == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dd).clamp(-4, 3) + 4) as i8;
        }
    }
    let (hmask, rest) = y.split_at_mut(32);
    hmask.fill(0);
    for b in 0..8 {
        for m in 0..32 {
            // if (L[j] > 3) { hmask[j % 32] |= 1 << (j / 32); L[j] -= 4; }, without branches
            let j = 32 * b + m;
            let hi = (l[j] > 3) as u8;
            hmask[m] |= hi << b;
            l[j] -= 4 * hi as i8;
        }
    }
    let qs = &mut rest[..64];
    for j in (0..QK).step_by(128) {
        for k in 0..32 {
            let v = l[j + k] as i32
                | ((l[j + k + 32] as i32) << 2)
                | ((l[j + k + 64] as i32) << 4)
                | ((l[j + k + 96] as i32) << 6);
            qs[j / 4 + k] = v as u8;
        }
    }
    y[108..110].copy_from_slice(&d16);
}

#[inline(always)]
fn quantize_block_ref(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK];
    let scales = make_q3_quants::<16, 16>(x, 4, &mut l);
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..16 {
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    y[SCALES..SCALES + 12].fill(0);
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..16 {
            // int8_t l = nearest_int(...); l = MAX(-32, MIN(31, l)) + 32;
            let q = (nearest_int(iscale * scales[j]) as i8 as i32).clamp(-32, 31) + 32;
            pack_scale(&mut y[SCALES..SCALES + 12], j, q as i8 as i32);
        }
        1.0 / iscale
    } else {
        0.0
    };
    finish(x, y, &mut l, d);
}

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block_ref(xb, yb);
    }
}

#[inline(always)]
fn quantize_block_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    let mut l = [0i8; QK];
    let mut weight = [0.0f32; QK];
    let mut sw = [0.0f32; 16];
    let mut ls = [0i8; 16];
    let mut sumx2 = 0.0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK as f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let q = &qw[16 * j..16 * j + 16];
        let wj = &mut weight[16 * j..16 * j + 16];
        for k in 0..16 {
            wj[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        let mut sumw = 0.0f32;
        for &w in wj.iter() {
            sumw += w;
        }
        sw[j] = sumw;
    }
    let scales = make_qx_quants::<16, 16>(x, 4, &mut l, &weight);
    y[SCALES..SCALES + 12].fill(0);
    let [d_block] = make_qx_quants::<16, 1>(&scales, 32, &mut ls, &sw);
    for j in 0..16 {
        pack_scale(&mut y[SCALES..SCALES + 12], j, ls[j] as i32);
    }
    finish(x, y, &mut l, d_block);
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    for ((xb, yb), qb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)).zip(qw.chunks_exact(QK)) {
        quantize_block_impl(xb, yb, qb);
    }
}
