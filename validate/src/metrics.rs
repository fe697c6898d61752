//! Accuracy metrics: how far a candidate's next-token distributions are from a golden's.
//!
//! Pure functions over slices, no I/O. One position is one row of logits `[vocab]`; the golden
//! side is either full logits or the compact top-k form ([`Reference`]). Everything is
//! computed in f64 from the f32 inputs. Definitions follow llama.cpp's
//! `llama-perplexity --kl-divergence` (`tools/perplexity/perplexity.cpp`, llama.cpp as
//! vendored by llama-cpp-python 0.3.36) where they overlap — KLD, "same top p", Δp, the PPL
//! ratio, percentiles and the ± of a mean — without its 16-bit storage of the base
//! log-probabilities. The formulas, with the differences spelled out, are in docs/metrics.md.

use rayon::prelude::*;
use serde::Serialize;

/// How many top tokens the overlap metric compares.
pub const TOP_N: usize = 5;

/// The golden side of one position.
#[derive(Clone, Copy, Debug)]
pub enum Reference<'a> {
    /// Full logits, `[vocab]`.
    Logits(&'a [f32]),
    /// The compact form: the `k` most probable token ids (descending probability, ties by lower
    /// id), their natural-log probabilities, the log of the mass of every other token, and the
    /// log-probability of the next golden token (meaningful only where there is one).
    TopK { ids: &'a [u32], logprobs: &'a [f64], rest_logprob: f64, next_logprob: f64 },
}

/// Next-token scores at a position that has a following golden token.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Next {
    pub token: u32,
    /// −log p_golden(token).
    pub nll_golden: f64,
    /// −log p_candidate(token).
    pub nll_candidate: f64,
}

impl Next {
    /// llama.cpp's Δp: p_candidate(next) − p_golden(next).
    pub fn dp(&self) -> f64 {
        (-self.nll_candidate).exp() - (-self.nll_golden).exp()
    }
}

/// Metrics of one position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Position {
    /// KL(golden ‖ candidate) in nats; with a top-k golden, over the k tokens plus one
    /// "rest" bucket (a lower bound of the full KLD).
    pub kld: f64,
    /// Argmax of the golden and of the candidate (first index on ties, as llama.cpp).
    pub golden_top: u32,
    pub candidate_top: u32,
    /// |top-5 golden ∩ top-5 candidate| / 5; `None` when a top-k golden has k < 5.
    pub top5_overlap: Option<f64>,
    /// p_golden(golden_top).
    pub p_golden_top: f64,
    /// p_candidate(golden_top) − p_golden(golden_top).
    pub dp_top: f64,
    /// Cosine similarity of the raw logit vectors (full golden only).
    pub cosine: Option<f64>,
    /// max_i |golden_i − candidate_i| over the raw logits (full golden only).
    pub max_abs_dlogit: Option<f64>,
    /// Scores of the next golden token; `None` at the last position of a sequence.
    pub next: Option<Next>,
}

/// Index of the largest value, first on ties.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate().skip(1) {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// `ln Σ exp(x_i)` in f64, shifted by the maximum.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// The `k` largest entries' indices, in descending value order, lower index first on ties.
pub fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(row.len());
    let mut top: Vec<u32> = Vec::with_capacity(k + 1);
    for (i, &v) in row.iter().enumerate() {
        if top.len() == k && k > 0 && v <= row[top[k - 1] as usize] {
            continue;
        }
        // Entries with a value >= v stay ahead, so an earlier index wins a tie.
        let at = top.partition_point(|&j| row[j as usize] >= v);
        top.insert(at, i as u32);
        top.truncate(k);
    }
    top
}

/// Number of NaN or infinite values in a row.
pub fn non_finite(row: &[f32]) -> usize {
    row.iter().filter(|v| !v.is_finite()).count()
}

/// Compares one position. `candidate` must be finite (see [`non_finite`]) and as long as the
/// golden's vocabulary; `next` is the following golden token, if any.
pub fn compare_position(reference: Reference, candidate: &[f32], next: Option<u32>) -> Position {
    let lse_c = log_sum_exp(candidate);
    let lq = |i: u32| candidate[i as usize] as f64 - lse_c;
    let candidate_top = argmax(candidate) as u32;
    let top_c = top_k(candidate, TOP_N);
    let overlap = |top_g: &[u32]| {
        let n = TOP_N.min(candidate.len());
        top_g.iter().take(n).filter(|g| top_c.contains(g)).count() as f64 / n as f64
    };
    match reference {
        Reference::Logits(golden) => {
            let lse_g = log_sum_exp(golden);
            let (mut kld, mut dot, mut gg, mut cc, mut max_d) = (0.0, 0.0, 0.0, 0.0, 0f64);
            for (&g, &c) in golden.iter().zip(candidate) {
                let (g, c) = (g as f64, c as f64);
                let lp = g - lse_g;
                kld += lp.exp() * (lp - (c - lse_c));
                dot += g * c;
                gg += g * g;
                cc += c * c;
                max_d = max_d.max((g - c).abs());
            }
            let golden_top = argmax(golden) as u32;
            let p_top = (golden[golden_top as usize] as f64 - lse_g).exp();
            Position {
                kld,
                golden_top,
                candidate_top,
                top5_overlap: Some(overlap(&top_k(golden, TOP_N))),
                p_golden_top: p_top,
                dp_top: lq(golden_top).exp() - p_top,
                cosine: Some(cosine(dot, gg, cc)),
                max_abs_dlogit: Some(max_d),
                next: next.map(|t| Next {
                    token: t,
                    nll_golden: lse_g - golden[t as usize] as f64,
                    nll_candidate: -lq(t),
                }),
            }
        }
        Reference::TopK { ids, logprobs, rest_logprob, next_logprob } => {
            let mut kld = 0.0;
            for (&id, &lp) in ids.iter().zip(logprobs) {
                kld += lp.exp() * (lp - lq(id));
            }
            let rest = rest_logprob;
            if rest > f64::NEG_INFINITY {
                kld += rest.exp() * (rest - (log_sum_exp_except(candidate, ids) - lse_c));
            }
            let p_top = logprobs[0].exp();
            let full_top = ids.len() >= TOP_N.min(candidate.len());
            Position {
                kld,
                golden_top: ids[0],
                candidate_top,
                top5_overlap: full_top.then(|| overlap(ids)),
                p_golden_top: p_top,
                dp_top: lq(ids[0]).exp() - p_top,
                cosine: None,
                max_abs_dlogit: None,
                next: next.map(|t| Next { token: t, nll_golden: -next_logprob, nll_candidate: -lq(t) }),
            }
        }
    }
}

/// Cosine from the dot product and squared norms; 1 for two zero vectors, 0 for one.
fn cosine(dot: f64, aa: f64, bb: f64) -> f64 {
    match (aa > 0.0, bb > 0.0) {
        (true, true) => dot / (aa.sqrt() * bb.sqrt()),
        (false, false) => 1.0,
        _ => 0.0,
    }
}

/// `ln Σ_{i ∉ except} exp(row_i)`; −∞ when every index is excluded.
pub fn log_sum_exp_except(row: &[f32], except: &[u32]) -> f64 {
    let mut skip = except.to_vec();
    skip.sort_unstable();
    let keep = |i: &usize| skip.binary_search(&(*i as u32)).is_err();
    let max = (0..row.len()).filter(keep).fold(f64::NEG_INFINITY, |m, i| m.max(row[i] as f64));
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + (0..row.len()).filter(keep).map(|i| (row[i] as f64 - max).exp()).sum::<f64>().ln()
}

/// Summary statistics of a set of values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    /// llama.cpp's uncertainty of the mean: √((mean(x²) − mean²)/(n − 1)), 0 for n ≤ 10.
    pub mean_stderr: f64,
    /// √mean(x²).
    pub rms: f64,
    pub min: f64,
    pub p01: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Linear interpolation between sorted values at `fraction·(n − 1)` (llama.cpp's `percentile`,
/// numpy's default); `sorted` must be non-empty and ascending.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let p = fraction.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let i = p.floor() as usize;
    let f = p - i as f64;
    let hi = sorted[(i + 1).min(sorted.len() - 1)];
    if f == 0.0 {
        sorted[i]
    } else {
        (1.0 - f) * sorted[i] + f * hi
    }
}

impl Summary {
    /// `None` for an empty set.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let mean2 = v.iter().map(|x| x * x).sum::<f64>() / n;
        let var = mean2 - mean * mean;
        let mean_stderr = if var > 0.0 && v.len() > 10 { (var / (n - 1.0)).sqrt() } else { 0.0 };
        Some(Summary {
            count: v.len(),
            mean,
            mean_stderr,
            rms: mean2.sqrt(),
            min: v[0],
            p01: percentile(&v, 0.01),
            median: percentile(&v, 0.5),
            p90: percentile(&v, 0.9),
            p99: percentile(&v, 0.99),
            max: v[v.len() - 1],
        })
    }
}

/// Perplexities of the golden continuation (next-token NLL of the golden tokens).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Perplexity {
    /// Scored tokens (positions that have a next token).
    pub tokens: usize,
    pub golden: f64,
    pub candidate: f64,
    /// PPL(candidate)/PPL(golden) = exp(mean NLL_candidate − mean NLL_golden).
    pub ratio: f64,
}

/// Aggregates over a set of positions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Aggregate {
    pub positions: usize,
    pub kld: Summary,
    /// Fraction of positions whose argmax agrees (llama.cpp's "same top p").
    pub top1: f64,
    pub top1_stderr: f64,
    /// Mean top-5 overlap, if every position has one.
    pub top5_overlap: Option<f64>,
    pub dp_top: Summary,
    /// llama.cpp's Δp (probability of the next golden token), over scored positions.
    pub dp_next: Option<Summary>,
    pub cosine: Option<Summary>,
    pub max_abs_dlogit: Option<f64>,
    pub perplexity: Option<Perplexity>,
}

impl Aggregate {
    /// `None` when there is no position.
    pub fn of(positions: &[&Position]) -> Option<Aggregate> {
        let kld = Summary::of(positions.iter().map(|p| p.kld))?;
        let n = positions.len() as f64;
        let top1 = positions.iter().filter(|p| p.golden_top == p.candidate_top).count() as f64 / n;
        let top1_stderr = if positions.len() > 1 { (top1 * (1.0 - top1) / (n - 1.0)).sqrt() } else { 0.0 };
        let top5: Option<Vec<f64>> = positions.iter().map(|p| p.top5_overlap).collect();
        let cos: Option<Vec<f64>> = positions.iter().map(|p| p.cosine).collect();
        let dl: Option<Vec<f64>> = positions.iter().map(|p| p.max_abs_dlogit).collect();
        let next: Vec<&Next> = positions.iter().filter_map(|p| p.next.as_ref()).collect();
        Some(Aggregate {
            positions: positions.len(),
            kld,
            top1,
            top1_stderr,
            top5_overlap: top5.map(|v| v.iter().sum::<f64>() / n),
            dp_top: Summary::of(positions.iter().map(|p| p.dp_top))?,
            dp_next: Summary::of(next.iter().map(|x| x.dp())),
            cosine: cos.and_then(Summary::of),
            max_abs_dlogit: dl.map(|v| v.into_iter().fold(0.0, f64::max)),
            perplexity: perplexity(&next),
        })
    }
}

fn perplexity(next: &[&Next]) -> Option<Perplexity> {
    if next.is_empty() {
        return None;
    }
    let n = next.len() as f64;
    let g = next.iter().map(|x| x.nll_golden).sum::<f64>() / n;
    let c = next.iter().map(|x| x.nll_candidate).sum::<f64>() / n;
    Some(Perplexity { tokens: next.len(), golden: g.exp(), candidate: c.exp(), ratio: (c - g).exp() })
}

/// A candidate position holding NaN or infinite logits (a failure, not an error).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NonFinite {
    pub prompt: usize,
    pub position: usize,
    /// How many of the row's values are NaN or ±inf.
    pub count: usize,
    /// The first offending vocabulary index.
    pub first_index: usize,
}

/// One prompt's positions (`None` where the candidate row was not finite) and summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptResult {
    pub length: usize,
    pub positions: Vec<Option<Position>>,
    pub summary: Option<Aggregate>,
}

/// Everything a report needs: per prompt, overall, and the non-finite candidate positions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub prompts: Vec<PromptResult>,
    pub overall: Option<Aggregate>,
    pub non_finite: Vec<NonFinite>,
}

/// The golden rows, by prompt and position (`buf` is scratch space the source may fill).
pub trait GoldenRows: Sync {
    fn reference<'a>(&'a self, prompt: usize, pos: usize, buf: &'a mut Vec<f32>) -> Reference<'a>;
}

/// The candidate rows `[vocab]`, by prompt and position.
pub trait CandidateRows: Sync {
    fn row<'a>(&'a self, prompt: usize, pos: usize, buf: &'a mut Vec<f32>) -> &'a [f32];
}

/// Compares every position of every prompt (`tokens`: the golden sequences, unpadded).
/// Positions run in parallel; the result does not depend on the thread count.
pub fn compare(tokens: &[Vec<u32>], golden: &impl GoldenRows, candidate: &impl CandidateRows) -> Comparison {
    let mut prompts = Vec::with_capacity(tokens.len());
    let mut non_finite_all = Vec::new();
    for (p, seq) in tokens.iter().enumerate() {
        let results: Vec<Result<Position, NonFinite>> = (0..seq.len())
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(gb, cb), i| {
                    let row = candidate.row(p, i, cb);
                    let bad = non_finite(row);
                    if bad > 0 {
                        let first_index = row.iter().position(|v| !v.is_finite()).unwrap_or(0);
                        return Err(NonFinite { prompt: p, position: i, count: bad, first_index });
                    }
                    Ok(compare_position(golden.reference(p, i, gb), row, seq.get(i + 1).copied()))
                },
            )
            .collect();
        let mut positions = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(pos) => positions.push(Some(pos)),
                Err(nf) => {
                    non_finite_all.push(nf);
                    positions.push(None);
                }
            }
        }
        let ok: Vec<&Position> = positions.iter().flatten().collect();
        prompts.push(PromptResult { length: seq.len(), summary: Aggregate::of(&ok), positions });
    }
    let all: Vec<&Position> = prompts.iter().flat_map(|p| p.positions.iter().flatten()).collect();
    Comparison { overall: Aggregate::of(&all), prompts, non_finite: non_finite_all }
}

/// Pass/fail thresholds (from the command line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Thresholds {
    /// Largest allowed mean KLD (nats).
    pub max_kld: Option<f64>,
    /// Smallest allowed top-1 agreement, a fraction in [0, 1].
    pub min_top1: Option<f64>,
}

/// One threshold check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub metric: &'static str,
    /// `"<="` or `">="`.
    pub op: &'static str,
    pub limit: f64,
    pub value: f64,
    pub pass: bool,
}

/// The outcome: every check, and whether the candidate passed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub pass: bool,
    pub checks: Vec<Check>,
    /// Candidate positions with NaN/inf logits; any makes the verdict a failure.
    pub non_finite_positions: usize,
}

/// Applies `t` to the overall aggregate. Non-finite candidate rows always fail.
pub fn verdict(c: &Comparison, t: &Thresholds) -> Verdict {
    let mut checks = Vec::new();
    let (kld, top1) = match &c.overall {
        Some(o) => (o.kld.mean, o.top1),
        None => (f64::INFINITY, 0.0),
    };
    if let Some(limit) = t.max_kld {
        checks.push(Check { metric: "mean KLD", op: "<=", limit, value: kld, pass: kld <= limit });
    }
    if let Some(limit) = t.min_top1 {
        checks.push(Check { metric: "top-1 agreement", op: ">=", limit, value: top1, pass: top1 >= limit });
    }
    let non_finite_positions = c.non_finite.len();
    Verdict { pass: non_finite_positions == 0 && checks.iter().all(|k| k.pass), checks, non_finite_positions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_have_zero_divergence() {
        let row = [1.0f32, -2.0, 3.5, 0.25, 3.5, -7.0];
        let p = compare_position(Reference::Logits(&row), &row, Some(2));
        assert_eq!(p.kld, 0.0);
        assert_eq!((p.golden_top, p.candidate_top), (2, 2), "first index wins a tie");
        assert_eq!(p.dp_top, 0.0);
        assert_eq!(p.max_abs_dlogit, Some(0.0));
        assert_eq!(p.top5_overlap, Some(1.0));
        let n = p.next.unwrap();
        assert_eq!(n.nll_golden, n.nll_candidate);
    }

    #[test]
    fn shifted_logits_are_the_same_distribution() {
        let g = [0.5f32, 1.5, -1.0, 2.0];
        let c: Vec<f32> = g.iter().map(|v| v + 4.0).collect();
        let p = compare_position(Reference::Logits(&g), &c, None);
        assert!(p.kld.abs() < 1e-12, "{}", p.kld);
        assert_eq!(p.max_abs_dlogit, Some(4.0));
        assert!(p.cosine.unwrap() < 1.0);
    }

    #[test]
    fn top_k_orders_by_value_then_index() {
        let row = [1.0f32, 3.0, 3.0, -1.0, 2.0, 3.0];
        assert_eq!(top_k(&row, 4), vec![1, 2, 5, 4]);
        assert_eq!(top_k(&row, 10).len(), 6);
        assert!(top_k(&row, 0).is_empty());
    }

    #[test]
    fn topk_with_every_token_equals_full() {
        let g = [0.3f32, -1.2, 2.2, 0.9, -0.4, 1.7];
        let c = [0.1f32, -1.0, 2.5, 0.4, -0.9, 1.9];
        let lse = log_sum_exp(&g);
        let ids = top_k(&g, g.len());
        let lps: Vec<f64> = ids.iter().map(|&i| g[i as usize] as f64 - lse).collect();
        let full = compare_position(Reference::Logits(&g), &c, None);
        let topk = Reference::TopK { ids: &ids, logprobs: &lps, rest_logprob: f64::NEG_INFINITY, next_logprob: 0.0 };
        let compact = compare_position(topk, &c, None);
        assert!((full.kld - compact.kld).abs() < 1e-15, "{} vs {}", full.kld, compact.kld);
        let same = compare_position(topk, &g, None);
        assert_eq!(same.kld, 0.0, "f64 log-probs make an identical candidate exactly 0");
        assert_eq!(full.top5_overlap, compact.top5_overlap);
        assert_eq!(full.golden_top, compact.golden_top);
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 8.0);
        assert!((percentile(&v, 0.9) - 6.8).abs() < 1e-12);
        assert!(Summary::of([]).is_none());
    }

    #[test]
    fn non_finite_candidates_fail_the_verdict() {
        let c = Comparison {
            prompts: vec![],
            overall: None,
            non_finite: vec![NonFinite { prompt: 0, position: 3, count: 1, first_index: 7 }],
        };
        let v = verdict(&c, &Thresholds::default());
        assert!(!v.pass);
        assert_eq!(v.non_finite_positions, 1);
    }
}
