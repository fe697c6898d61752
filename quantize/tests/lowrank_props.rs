//! Property tests of the low-rank KV factorization and the calibration statistics file.

use proptest::prelude::*;
use recast_quantize::lowrank::{self, RankRule};
use recast_quantize::lowrank_kv::{write_stats, Moments, Stats, StatsMeta};

/// (rows, d, w_k, w_v, inputs [n, d]) with small random shapes.
fn case() -> impl Strategy<Value = (usize, usize, Vec<f32>, Vec<f32>, Vec<f32>)> {
    (1usize..6, 2usize..12, 3usize..40).prop_flat_map(|(rows, d, n)| {
        (
            Just(rows),
            Just(d),
            prop::collection::vec(-2.0f32..2.0, rows * d),
            prop::collection::vec(-2.0f32..2.0, rows * d),
            prop::collection::vec(-3.0f32..3.0, n * d),
        )
    })
}

fn reconstruct(f: &lowrank::KvFactors, m: usize, d: usize) -> Vec<f64> {
    let r = f.rank;
    (0..m * d).map(|k| (0..r).map(|j| f.up[(k / d) * r + j] as f64 * f.down[j * d + k % d] as f64).sum()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Full rank reproduces [W_k; W_v], plain or whitened by statistics of real inputs.
    #[test]
    fn full_rank_round_trips((rows, d, k, v, x) in case()) {
        let mut m = Moments::new(1, d);
        m.add(0, &x);
        let c = m.finish().remove(0);
        let w: Vec<f64> = k.iter().chain(&v).map(|&a| a as f64).collect();
        let scale = w.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(1e-3);
        for cov in [None, Some(c.as_slice())] {
            let svd = lowrank::decompose(&k, &v, rows, d, cov).unwrap();
            let f = svd.truncate(svd.full_rank()).unwrap();
            prop_assert_eq!(f.rank, (2 * rows).min(d));
            let err = reconstruct(&f, 2 * rows, d).iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            prop_assert!(err <= 1e-4 * scale, "whitened={} max error {err} (scale {scale})", cov.is_some());
        }
    }

    /// Every rank rule gives ranks in 1..=full, and a budget is spent exactly (up to capacity).
    #[test]
    fn rank_rules_stay_in_range(spectra in prop::collection::vec(prop::collection::vec(0.0f64..10.0, 1..8), 1..6),
                                width in 1usize..10, f in 0.01f64..1.0, budget in 1usize..60) {
        let spectra: Vec<Vec<f64>> = spectra.into_iter().map(|mut s| { s.sort_by(|a, b| b.total_cmp(a)); s }).collect();
        let cap = |s: &Vec<f64>| s.len().min(width);
        for rule in [RankRule::Ratio(f), RankRule::Energy(f)] {
            let r = lowrank::select_ranks(&spectra, width, rule).unwrap();
            prop_assert!(r.iter().zip(&spectra).all(|(&r, s)| r >= 1 && r <= cap(s)), "{rule:?}: {r:?}");
        }
        if budget >= spectra.len() {
            let r = lowrank::select_ranks(&spectra, width, RankRule::Budget(budget)).unwrap();
            let total: usize = spectra.iter().map(cap).sum();
            prop_assert_eq!(r.iter().sum::<usize>(), budget.min(total));
        }
    }

    /// A statistics file reads back exactly what was written.
    #[test]
    fn stats_file_round_trips(d in 1usize..9, layers in 1usize..4, tokens in 1u64..1000, seed in any::<u64>()) {
        let mut s = seed;
        let moments: Vec<Vec<f64>> = (0..layers).map(|_| (0..d * d).map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        }).collect()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.safetensors");
        let meta = StatsMeta { model_fingerprint: "sha256:x".into(), layers, hidden_size: d, tokens,
                               regenerate: "recast calibrate m".into(), model_source: "m".into() };
        write_stats(&path, &meta, &moments).unwrap();
        let st = Stats::open(&path).unwrap();
        prop_assert_eq!(st.meta.tokens, tokens);
        prop_assert_eq!(&st.meta.model_fingerprint, "sha256:x");
        for (l, m) in moments.iter().enumerate() {
            prop_assert_eq!(&st.layer(l).unwrap(), m);
        }
    }
}
