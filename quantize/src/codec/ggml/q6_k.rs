//! Q6_K (210 B / 256 elements): `ql: u8[128]`, `qh: u8[64]`, `scales: i8[16]`, `d: f16`;
//! `x = d·scales[i/16]·(q − 32)`. Ports of ggml's `quantize_row_q6_K_ref` and
//! `quantize_row_q6_K_impl` (which weighs by the raw imatrix, without the sigma2 term).

use super::common::{fp16_bytes, fp16_round, make_qx_quants, nearest_int, GROUP_MAX_EPS};

pub(super) const QK: usize = 256;
pub(super) const BLOCK_BYTES: usize = 210;

/// `qw = None`: the ref path (weights x²); `Some`: the imatrix slice of this block.
#[inline(always)]
fn quantize_block(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0i8; QK];
    let mut w = [0.0f32; QK];
    let weights: &[f32] = match qw {
        Some(q) => q,
        None => {
            for k in 0..QK {
                w[k] = x[k] * x[k];
            }
            &w
        }
    };
    let scales = make_qx_quants::<16, 16>(x, 32, &mut l, weights);
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for &scale in &scales {
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        y[208..210].copy_from_slice(&fp16_bytes(0.0));
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = 1.0 / iscale;
    y[208..210].copy_from_slice(&fp16_bytes(d));
    let dq = fp16_round(d);
    let mut sc = [0i8; 16];
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        y[192 + ib] = sc[ib] as u8;
    }
    for j in 0..16 {
        let dd = dq * sc[j] as f32;
        if dd == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dd).clamp(-32, 31) + 32) as i8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for (h, j) in (0..QK).step_by(128).enumerate() {
        let (ql, qh) = (&mut ql[64 * h..64 * h + 64], &mut qh[32 * h..32 * h + 32]);
        for k in 0..32 {
            let (l1, l2, l3, l4) = (l[j + k] as u8, l[j + k + 32] as u8, l[j + k + 64] as u8, l[j + k + 96] as u8);
            ql[k] = (l1 & 0xF) | ((l3 & 0xF) << 4);
            ql[k + 32] = (l2 & 0xF) | ((l4 & 0xF) << 4);
            qh[k] = (l1 >> 4) | ((l2 >> 4) << 2) | ((l3 >> 4) << 4) | ((l4 >> 4) << 6);
        }
    }
}

#[inline(always)]
pub(super) fn quantize_row_ref(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)) {
        quantize_block(xb, yb, None);
    }
}

#[inline(always)]
pub(super) fn quantize_row_impl(x: &[f32], y: &mut [u8], qw: &[f32]) {
    for ((xb, yb), qb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_BYTES)).zip(qw.chunks_exact(QK)) {
        quantize_block(xb, yb, Some(qb));
    }
}
