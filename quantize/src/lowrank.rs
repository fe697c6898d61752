//! Low-rank KV: factor a layer's key and value projections jointly into a down-projection to a
//! latent of rank r (the only per-token cache) and an up-projection back to keys and values —
//! DeepSeek's joint KV compression applied after training (design: docs/low-rank-kv.md).
//!
//! With `W = [W_k; W_v]` (`m × d`, m = 2·n_kv·head_dim) and inputs `x` (`d`):
//! `k‖v = W x ≈ B (A x)`, `A` (`r × d`) the down-projection and `B` (`m × r`) the
//! up-projection. Plain: the SVD `W = U Σ Vᵀ` truncated to r (best in weight error,
//! Eckart–Young). Calibration-aware (SVD-LLM, Palu): with the input second moment
//! `C = E[x xᵀ] = L Lᵀ`, the SVD of `W L = U Σ Vᵀ` truncated to r gives `A = Σ_r V_rᵀ L⁻¹`,
//! `B = U_r`, which minimises the expected output error `E‖(W − B A) x‖²` instead. Both are exact
//! at full rank (r = min(m, d)), up to f64 → f32 rounding. Biases stay on the up side, and RoPE is
//! applied to the reconstructed keys, so positions are untouched.
//!
//! Pure functions over slices (row-major f32 weights, f64 statistics); no I/O.

use faer::{Mat, Side};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LowRankError {
    #[error("{what}: expected {expected} values, found {found}")]
    Size { what: &'static str, expected: usize, found: usize },
    #[error("rank {rank} is larger than the KV width {width} (min of 2·n_kv·head_dim = {m} and hidden size {d})")]
    RankTooLarge { rank: usize, width: usize, m: usize, d: usize },
    #[error("rank must be at least 1")]
    RankZero,
    #[error("the SVD did not converge")]
    Svd,
    #[error("the input covariance is not positive definite even after ridge {ridge:e}")]
    NotPositiveDefinite { ridge: f64 },
    #[error("non-finite value in {0}")]
    NonFinite(&'static str),
}

pub type Result<T, E = LowRankError> = std::result::Result<T, E>;

/// The full decomposition of one layer's joint KV projection, truncated on demand.
pub struct KvSvd {
    m: usize,
    d: usize,
    /// `m × k` left singular vectors, k = min(m, d).
    u: Mat<f64>,
    /// Singular values (of `W` or of `W L`), non-increasing.
    pub s: Vec<f64>,
    /// `k × d`: `Vᵀ L⁻¹` (or `Vᵀ` without whitening).
    vt: Mat<f64>,
}

/// Factors for one layer at rank r.
#[derive(Clone, Debug)]
pub struct KvFactors {
    pub rank: usize,
    /// `r × d`, row-major: the latent is `c = A x`.
    pub down: Vec<f32>,
    /// `m × r`, row-major: keys (first half of the rows) and values (second half) are `B c`.
    pub up: Vec<f32>,
}

fn check(what: &'static str, v: &[f32], expected: usize) -> Result<()> {
    if v.len() != expected {
        return Err(LowRankError::Size { what, expected, found: v.len() });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(LowRankError::NonFinite(what));
    }
    Ok(())
}

/// Decomposes `[w_k; w_v]` (each `rows × d`, row-major). `second_moment`, if given, is the
/// `d × d` input matrix `E[x xᵀ]` (row-major) from calibration.
pub fn decompose(w_k: &[f32], w_v: &[f32], rows: usize, d: usize, second_moment: Option<&[f64]>) -> Result<KvSvd> {
    check("k_proj weight", w_k, rows * d)?;
    check("v_proj weight", w_v, rows * d)?;
    let m = 2 * rows;
    let w =
        Mat::<f64>::from_fn(m, d, |i, j| if i < rows { w_k[i * d + j] as f64 } else { w_v[(i - rows) * d + j] as f64 });
    let Some(c) = second_moment else {
        let svd = w.thin_svd().map_err(|_| LowRankError::Svd)?;
        let k = m.min(d);
        let s: Vec<f64> = (0..k).map(|i| svd.S().column_vector()[i]).collect();
        return Ok(KvSvd { m, d, u: svd.U().to_owned(), s, vt: svd.V().transpose().to_owned() });
    };
    if c.len() != d * d {
        return Err(LowRankError::Size { what: "input second moment", expected: d * d, found: c.len() });
    }
    if c.iter().any(|x| !x.is_finite()) {
        return Err(LowRankError::NonFinite("input second moment"));
    }
    // A ridge keeps rank-deficient statistics (few calibration tokens, dead channels)
    // positive definite; it is tiny next to the average input energy.
    let mean_diag = (0..d).map(|i| c[i * d + i]).sum::<f64>() / d as f64;
    let mut ridge = 1e-6 * mean_diag.max(f64::MIN_POSITIVE);
    let llt = loop {
        let cm =
            Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (c[i * d + j] + c[j * d + i]) + if i == j { ridge } else { 0.0 });
        match cm.llt(Side::Lower) {
            Ok(l) => break l,
            Err(_) if ridge < 1e-2 * mean_diag.max(f64::MIN_POSITIVE) => ridge *= 10.0,
            Err(_) => return Err(LowRankError::NotPositiveDefinite { ridge }),
        }
    };
    let l = llt.L().to_owned();
    let wl = &w * &l;
    let svd = wl.thin_svd().map_err(|_| LowRankError::Svd)?;
    let k = m.min(d);
    let s: Vec<f64> = (0..k).map(|i| svd.S().column_vector()[i]).collect();
    // Vᵀ L⁻¹ = (L⁻ᵀ V)ᵀ: solve Lᵀ Y = V for Y (triangular), then transpose.
    let v = svd.V().to_owned();
    let y = solve_upper_lt(&l, &v);
    Ok(KvSvd { m, d, u: svd.U().to_owned(), s, vt: y.transpose().to_owned() })
}

/// Solves `Lᵀ Y = V` for Y with L lower triangular (back substitution, column by column).
fn solve_upper_lt(l: &Mat<f64>, v: &Mat<f64>) -> Mat<f64> {
    let d = l.nrows();
    let mut y = v.clone();
    for col in 0..v.ncols() {
        for i in (0..d).rev() {
            let mut acc = y[(i, col)];
            for k in i + 1..d {
                acc -= l[(k, i)] * y[(k, col)];
            }
            y[(i, col)] = acc / l[(i, i)];
        }
    }
    y
}

impl KvSvd {
    /// Largest possible rank: min(2·n_kv·head_dim, hidden size).
    pub fn full_rank(&self) -> usize {
        self.m.min(self.d)
    }

    /// The factors at rank `r`.
    pub fn truncate(&self, r: usize) -> Result<KvFactors> {
        if r == 0 {
            return Err(LowRankError::RankZero);
        }
        if r > self.full_rank() {
            return Err(LowRankError::RankTooLarge { rank: r, width: self.full_rank(), m: self.m, d: self.d });
        }
        let mut down = Vec::with_capacity(r * self.d);
        for i in 0..r {
            for j in 0..self.d {
                down.push((self.s[i] * self.vt[(i, j)]) as f32);
            }
        }
        let mut up = Vec::with_capacity(self.m * r);
        for i in 0..self.m {
            for j in 0..r {
                up.push(self.u[(i, j)] as f32);
            }
        }
        Ok(KvFactors { rank: r, down, up })
    }
}

/// How many latent dimensions each layer keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RankRule {
    /// The same rank in every layer.
    Rank(usize),
    /// A fraction of the original KV width 2·n_kv·head_dim (1.0: exact).
    Ratio(f64),
    /// The smallest rank keeping this fraction of the spectrum's energy (Σσ²), per layer.
    Energy(f64),
    /// A total number of latent dimensions over all layers (the KV-bytes budget divided by the
    /// bytes of one cached value), given to the layers whose spectra lose most without them.
    Budget(usize),
}

/// Ranks per layer from the layers' singular values. `width` is 2·n_kv·head_dim; every rank is
/// in `1..=min(width, len(spectrum))`.
pub fn select_ranks(spectra: &[Vec<f64>], width: usize, rule: RankRule) -> Result<Vec<usize>> {
    let max_of = |s: &Vec<f64>| s.len().min(width);
    match rule {
        RankRule::Rank(r) => spectra
            .iter()
            .map(|s| match r {
                0 => Err(LowRankError::RankZero),
                r if r > max_of(s) => {
                    Err(LowRankError::RankTooLarge { rank: r, width: max_of(s), m: width, d: s.len() })
                }
                r => Ok(r),
            })
            .collect(),
        // A fraction of the KV width, capped at the full rank min(m, d), which is already exact
        // (when m > d, ratio 1.0 caches d values per token, fewer than the keys and values).
        RankRule::Ratio(f) => {
            let r = ((f * width as f64).round() as usize).max(1);
            Ok(spectra.iter().map(|s| r.min(max_of(s))).collect())
        }
        RankRule::Energy(e) => Ok(spectra
            .iter()
            .map(|s| {
                let total: f64 = s.iter().map(|x| x * x).sum();
                let mut acc = 0.0;
                for (i, x) in s.iter().enumerate() {
                    acc += x * x;
                    if acc >= e * total * (1.0 - 1e-12) {
                        return (i + 1).min(max_of(s));
                    }
                }
                max_of(s)
            })
            .collect()),
        RankRule::Budget(total) => {
            if total < spectra.len() {
                return Err(LowRankError::RankZero);
            }
            // Every layer gets one dimension; the rest go one at a time to the layer whose next
            // singular value carries the most energy (ties to the lower layer), which minimises
            // the total truncated energy for the budget.
            let mut ranks = vec![1usize; spectra.len()];
            let cap: usize = spectra.iter().map(max_of).sum();
            let mut left = total.min(cap) - spectra.len();
            while left > 0 {
                let best = (0..spectra.len())
                    .filter(|&l| ranks[l] < max_of(&spectra[l]))
                    .max_by(|&a, &b| spectra[a][ranks[a]].total_cmp(&spectra[b][ranks[b]]).then(b.cmp(&a)))
                    .expect("budget below capacity");
                ranks[best] += 1;
                left -= 1;
            }
            Ok(ranks)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    fn weights(rows: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut r = rng(seed);
        let k = (0..rows * d).map(|_| r() as f32).collect();
        let v = (0..rows * d).map(|_| r() as f32).collect();
        (k, v)
    }

    /// Correlated inputs from one distribution: x = M z with a fixed mixing matrix M and
    /// decaying scales; `seed` picks the samples.
    fn inputs(n: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut m = rng(99);
        let mix: Vec<f64> = (0..d * d).map(|_| m()).collect();
        let mut r = rng(seed);
        (0..n)
            .map(|_| {
                let z: Vec<f64> = (0..d).map(|j| r() * (1.0 / (1.0 + j as f64))).collect();
                (0..d).map(|i| (0..d).map(|j| mix[i * d + j] * z[j]).sum()).collect()
            })
            .collect()
    }

    fn second_moment(xs: &[Vec<f64>], d: usize) -> Vec<f64> {
        let mut c = vec![0.0; d * d];
        for x in xs {
            for i in 0..d {
                for j in 0..d {
                    c[i * d + j] += x[i] * x[j];
                }
            }
        }
        c.iter().map(|v| v / xs.len() as f64).collect()
    }

    fn reconstruct(f: &KvFactors, m: usize, d: usize) -> Vec<f64> {
        let r = f.rank;
        let mut w = vec![0.0; m * d];
        for i in 0..m {
            for j in 0..d {
                w[i * d + j] = (0..r).map(|k| f.up[i * r + k] as f64 * f.down[k * d + j] as f64).sum();
            }
        }
        w
    }

    fn joint(k: &[f32], v: &[f32]) -> Vec<f64> {
        k.iter().chain(v).map(|&x| x as f64).collect()
    }

    fn output_error(w: &[f64], w_hat: &[f64], xs: &[Vec<f64>], m: usize, d: usize) -> f64 {
        xs.iter()
            .map(|x| {
                (0..m)
                    .map(|i| {
                        let e: f64 = (0..d).map(|j| (w[i * d + j] - w_hat[i * d + j]) * x[j]).sum();
                        e * e
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn full_rank_is_exact_with_and_without_whitening() {
        for (rows, d) in [(8, 24), (16, 24), (12, 12)] {
            let (k, v) = weights(rows, d, 1);
            let w = joint(&k, &v);
            let c = second_moment(&inputs(200, d, 2), d);
            for cov in [None, Some(c.as_slice())] {
                let svd = decompose(&k, &v, rows, d, cov).unwrap();
                let f = svd.truncate(svd.full_rank()).unwrap();
                let err = reconstruct(&f, 2 * rows, d).iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                // Exact up to f32 storage of the factors, whether the latent is narrower than the
                // KV width (2·rows > d) or not.
                assert!(err < 1e-5, "{rows}x{d} whitened={}: max error {err}", cov.is_some());
            }
        }
    }

    #[test]
    fn whitening_beats_plain_svd_on_output_error_and_loses_on_weight_error() {
        let (rows, d) = (8, 24);
        let (k, v) = weights(rows, d, 3);
        let w = joint(&k, &v);
        let calib = inputs(400, d, 4);
        let eval = inputs(400, d, 5); // disjoint from calibration
        let c = second_moment(&calib, d);
        let plain = decompose(&k, &v, rows, d, None).unwrap();
        let white = decompose(&k, &v, rows, d, Some(&c)).unwrap();
        for r in [2, 4, 8, 12] {
            let wp = reconstruct(&plain.truncate(r).unwrap(), 2 * rows, d);
            let ww = reconstruct(&white.truncate(r).unwrap(), 2 * rows, d);
            let (ep, ew) = (output_error(&w, &wp, &eval, 2 * rows, d), output_error(&w, &ww, &eval, 2 * rows, d));
            assert!(ew < ep, "rank {r}: whitened output error {ew} ≥ plain {ep}");
            let fro = |a: &[f64]| a.iter().zip(&w).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
            assert!(fro(&wp) <= fro(&ww) * (1.0 + 1e-9), "rank {r}: plain SVD is optimal in weight error");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let (k, v) = weights(4, 8, 6);
        assert!(matches!(decompose(&k[1..], &v, 4, 8, None), Err(LowRankError::Size { .. })));
        let svd = decompose(&k, &v, 4, 8, None).unwrap();
        assert_eq!(svd.full_rank(), 8);
        assert!(matches!(svd.truncate(9), Err(LowRankError::RankTooLarge { .. })));
        assert_eq!(svd.truncate(0).unwrap_err(), LowRankError::RankZero);
        let mut bad = k.clone();
        bad[3] = f32::NAN;
        assert!(matches!(decompose(&bad, &v, 4, 8, None), Err(LowRankError::NonFinite(_))));
        // A rank-deficient second moment (one calibration token) still factors, thanks to the ridge.
        let x = inputs(1, 8, 7);
        assert!(decompose(&k, &v, 4, 8, Some(&second_moment(&x, 8))).is_ok());
    }

    #[test]
    fn rank_rules() {
        let spectra = vec![vec![10.0, 1.0, 0.1, 0.01], vec![5.0, 4.0, 3.0, 2.0]];
        assert_eq!(select_ranks(&spectra, 4, RankRule::Rank(2)).unwrap(), vec![2, 2]);
        assert_eq!(select_ranks(&spectra, 4, RankRule::Ratio(0.5)).unwrap(), vec![2, 2]);
        assert_eq!(select_ranks(&spectra, 4, RankRule::Ratio(1.0)).unwrap(), vec![4, 4]);
        // Width 8 over 4 input dimensions: full rank is 4, so ratio 1.0 and 0.5 are both exact.
        assert_eq!(select_ranks(&spectra, 8, RankRule::Ratio(1.0)).unwrap(), vec![4, 4]);
        assert_eq!(select_ranks(&spectra, 8, RankRule::Ratio(0.25)).unwrap(), vec![2, 2]);
        assert!(select_ranks(&spectra, 4, RankRule::Rank(5)).is_err());
        // σ² = 100 of 101.01 is 99.0 % of layer 0's energy; layer 1 needs all four.
        assert_eq!(select_ranks(&spectra, 4, RankRule::Energy(0.99)).unwrap(), vec![1, 4]);
        assert_eq!(select_ranks(&spectra, 4, RankRule::Energy(0.999)).unwrap(), vec![2, 4]);
        // Budget 4: layer 0 keeps its dominant direction; the flat layer 1 takes the rest.
        assert_eq!(select_ranks(&spectra, 4, RankRule::Budget(4)).unwrap(), vec![1, 3]);
        assert_eq!(select_ranks(&spectra, 4, RankRule::Budget(100)).unwrap(), vec![4, 4]);
        assert!(select_ranks(&spectra, 4, RankRule::Budget(1)).is_err());
    }
}
