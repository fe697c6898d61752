//! Validation reports: a Markdown page for people, JSON for programs, and a short summary for
//! the terminal. Pure rendering of a [`Comparison`] and its [`Verdict`]; token ids become text
//! through a caller-supplied function (the model's tokenizer), so this module does no I/O.

use crate::golden::{Form, Meta};
use crate::metrics::{Aggregate, Comparison, Position, Summary, Thresholds, Verdict};
use serde_json::{json, Value as Json};
use std::fmt::Write;

/// What identical-up-to-rounding (and a little more) looks like. The tiny-fixture rows (qwen2,
/// the two reference prompts, 24 positions) are re-measured by tests/validate_cli.rs
/// `noise_floor_matches_the_documented_numbers`; the SmolLM2 rows (249 positions) by
/// tests/fixtures/metrics/measure_smollm2.sh. docs/metrics.md explains them.
pub struct NoiseFloor {
    pub model: &'static str,
    pub what: &'static str,
    pub mean_kld: f64,
    pub max_kld: f64,
    pub top1: f64,
}

/// The model name of the rows the test suite re-measures.
pub const TINY: &str = "tiny qwen2 (f32)";
const SMOL: &str = "SmolLM2-135M Q4_1";

pub const NOISE_FLOOR: &[NoiseFloor] = &[
    NoiseFloor { model: TINY, what: "the same weights, recomputed", mean_kld: 0.0, max_kld: 0.0, top1: 1.0 },
    NoiseFloor { model: TINY, what: "transformers (golden) vs recast", mean_kld: 1.1e-12, max_kld: 3.4e-12, top1: 1.0 },
    NoiseFloor { model: TINY, what: "weights rounded to f16", mean_kld: 2.7e-6, max_kld: 5.1e-6, top1: 1.0 },
    NoiseFloor { model: TINY, what: "weights rounded to bf16", mean_kld: 2.4e-4, max_kld: 1.0e-3, top1: 23.0 / 24.0 },
    NoiseFloor {
        model: SMOL,
        what: "transformers on the dequantized weights",
        mean_kld: 2.2e-11,
        max_kld: 1.6e-10,
        top1: 1.0,
    },
    NoiseFloor {
        model: SMOL,
        what: "llama.cpp (Q8_1 activations)",
        mean_kld: 2.9e-3,
        max_kld: 4.5e-2,
        top1: 240.0 / 249.0,
    },
    NoiseFloor {
        model: SMOL,
        what: "llama.cpp, q8_0 KV cache",
        mean_kld: 3.5e-3,
        max_kld: 4.3e-2,
        top1: 239.0 / 249.0,
    },
    NoiseFloor {
        model: SMOL,
        what: "llama.cpp, q4_0 KV cache",
        mean_kld: 5.8e-2,
        max_kld: 9.0e-1,
        top1: 229.0 / 249.0,
    },
];

/// Everything a report shows.
pub struct Report<'a> {
    /// How the candidate is described, e.g. "`model-q4.gguf` (model, GGUF, F32+Q4_K)".
    pub candidate: String,
    pub golden_name: String,
    pub golden_meta: &'a Meta,
    pub golden_form: Form,
    pub vocab: usize,
    /// The golden sequences (unpadded).
    pub tokens: &'a [Vec<u32>],
    pub comparison: &'a Comparison,
    pub thresholds: Thresholds,
    pub verdict: &'a Verdict,
    /// What was checked before comparing (fingerprints, shapes), one line each.
    pub checks: Vec<String>,
    /// Token id → text, if a tokenizer is available.
    pub token_text: Option<&'a dyn Fn(u32) -> String>,
    /// How many worst positions to list.
    pub worst: usize,
}

/// A number for a table: 0 as "0", ordinary magnitudes fixed, tiny or huge ones scientific.
pub fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if !x.is_finite() {
        format!("{x}")
    } else if (1e-3..1e5).contains(&x.abs()) {
        format!("{x:.6}")
    } else {
        format!("{x:.3e}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.3} %", 100.0 * x)
}

fn signed_pct(x: f64) -> String {
    if x == 0.0 {
        "0 %".into()
    } else {
        format!("{:+.4} %", 100.0 * x)
    }
}

/// Token text for a Markdown table cell (a code span; pipes, backticks and control
/// characters made visible).
fn cell_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\n' => out.push('⏎'),
            '\t' => out.push('⇥'),
            '|' => out.push_str("\\|"),
            '`' => out.push('ˋ'),
            c if c.is_control() => write!(out, "\\x{:02x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    let trimmed = out.trim_matches(' ');
    if trimmed.len() != out.len() || out.is_empty() {
        out = out.replace(' ', "␣");
    }
    format!("`{out}`")
}

impl Report<'_> {
    fn token(&self, id: u32) -> String {
        match self.token_text {
            Some(f) => format!("{} ({id})", cell_text(&f(id))),
            None => format!("#{id}"),
        }
    }

    fn positions(&self) -> usize {
        self.tokens.iter().map(Vec::len).sum()
    }

    fn form_text(&self) -> String {
        match self.golden_form {
            Form::Full => "full logits".into(),
            Form::TopK(k) => format!("compact top-{k}"),
        }
    }

    fn verdict_line(&self) -> String {
        let v = self.verdict;
        let mut parts: Vec<String> = v
            .checks
            .iter()
            .map(|c| {
                let (value, limit) = if c.metric == "top-1 agreement" {
                    (pct(c.value), pct(c.limit))
                } else {
                    (num(c.value), num(c.limit))
                };
                let op = if c.pass {
                    c.op
                } else if c.op == "<=" {
                    ">"
                } else {
                    "<"
                };
                format!("{} {value} {op} {limit}", c.metric)
            })
            .collect();
        if v.non_finite_positions > 0 {
            parts.push(format!("{} position(s) with NaN/inf candidate logits", v.non_finite_positions));
        }
        if parts.is_empty() {
            parts.push("no thresholds given".into());
        }
        format!("**{}** — {}", if v.pass { "PASS" } else { "FAIL" }, parts.join("; "))
    }

    /// The full Markdown report.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        writeln!(o, "# recast validate: {}\n", if self.verdict.pass { "PASS" } else { "FAIL" }).unwrap();
        self.header_table(&mut o);
        match &self.comparison.overall {
            Some(a) => {
                writeln!(o, "\n## Overall\n").unwrap();
                aggregate_table(&mut o, a);
            }
            None => writeln!(o, "\nNo position could be compared.").unwrap(),
        }
        self.prompt_table(&mut o);
        self.worst_table(&mut o);
        self.non_finite_table(&mut o);
        noise_floor(&mut o);
        writeln!(o, "\nDefinitions and formulas: docs/metrics.md (KLD, Δp and \"same top\" as llama.cpp's `llama-perplexity --kl-divergence`, computed in f64).").unwrap();
        o
    }

    fn header_table(&self, o: &mut String) {
        let m = self.golden_meta;
        writeln!(o, "| | |\n|---|---|").unwrap();
        writeln!(o, "| verdict | {} |", self.verdict_line()).unwrap();
        writeln!(o, "| candidate | {} |", self.candidate).unwrap();
        writeln!(
            o,
            "| golden | `{}`: {}, {} prompt(s), {} positions, vocabulary {} |",
            self.golden_name,
            self.form_text(),
            self.tokens.len(),
            self.positions(),
            self.vocab
        )
        .unwrap();
        let model = match (&m.model_source, &m.weights_dtype) {
            (Some(s), Some(d)) => format!("`{s}` ({d})"),
            (Some(s), None) => format!("`{s}`"),
            _ => "unknown (no recast metadata)".into(),
        };
        writeln!(o, "| golden model | {model} |").unwrap();
        if let Some(e) = &m.engine {
            writeln!(o, "| golden engine | {e} |").unwrap();
        }
        for c in &self.checks {
            writeln!(o, "| check | {c} |").unwrap();
        }
    }

    fn prompt_table(&self, o: &mut String) {
        writeln!(o, "\n## Per prompt\n").unwrap();
        writeln!(o, "| # | prompt | tokens | mean KLD | max KLD | top-1 | top-5 | RMS Δp | PPL golden | PPL candidate | PPL ratio |").unwrap();
        writeln!(o, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
        for (p, r) in self.comparison.prompts.iter().enumerate() {
            let text = self.golden_meta.prompts.get(p).cloned().flatten().unwrap_or_else(|| match self.token_text {
                Some(f) => self.tokens[p].iter().map(|&t| f(t)).collect(),
                None => format!("{} token ids", r.length),
            });
            let short: String = text.chars().take(40).collect();
            let ell = if text.chars().count() > 40 { "…" } else { "" };
            let cells = match &r.summary {
                None => "— | — | — | — | — | — | — | —".into(),
                Some(a) => {
                    let (pg, pc, pr) = match &a.perplexity {
                        Some(x) => (num(x.golden), num(x.candidate), num(x.ratio)),
                        None => ("—".into(), "—".into(), "—".into()),
                    };
                    format!(
                        "{} | {} | {} | {} | {} | {pg} | {pc} | {pr}",
                        num(a.kld.mean),
                        num(a.kld.max),
                        pct(a.top1),
                        a.top5_overlap.map_or("—".into(), |x| format!("{x:.3}")),
                        pct(a.dp_top.rms)
                    )
                }
            };
            writeln!(o, "| {p} | {}{ell} | {} | {cells} |", cell_text(short.trim()), r.length).unwrap();
        }
    }

    /// The positions with the largest KLD, with their context.
    fn worst_table(&self, o: &mut String) {
        let mut all: Vec<(usize, usize, &Position)> = Vec::new();
        for (p, r) in self.comparison.prompts.iter().enumerate() {
            for (i, pos) in r.positions.iter().enumerate() {
                if let Some(pos) = pos {
                    all.push((p, i, pos));
                }
            }
        }
        all.retain(|x| x.2.kld != 0.0 || x.2.golden_top != x.2.candidate_top);
        all.sort_by(|a, b| b.2.kld.total_cmp(&a.2.kld).then((a.0, a.1).cmp(&(b.0, b.1))));
        all.truncate(self.worst);
        if self.worst == 0 || self.comparison.overall.is_none() {
            return;
        }
        writeln!(o, "\n## Worst positions (by KLD)\n").unwrap();
        if all.is_empty() {
            writeln!(o, "Every position has KLD 0 and the same top token.").unwrap();
            return;
        }
        writeln!(o, "| prompt | pos | input token | golden top (p) | candidate top | KLD | Δp golden top |").unwrap();
        writeln!(o, "|---:|---:|---|---|---|---:|---:|").unwrap();
        for (p, i, pos) in all {
            writeln!(
                o,
                "| {p} | {i} | {} | {} ({:.4}) | {} | {} | {} |",
                self.token(self.tokens[p][i]),
                self.token(pos.golden_top),
                pos.p_golden_top,
                if pos.golden_top == pos.candidate_top { "same".into() } else { self.token(pos.candidate_top) },
                num(pos.kld),
                signed_pct(pos.dp_top)
            )
            .unwrap();
        }
    }

    fn non_finite_table(&self, o: &mut String) {
        let nf = &self.comparison.non_finite;
        if nf.is_empty() {
            return;
        }
        writeln!(o, "\n## Non-finite candidate logits\n").unwrap();
        writeln!(
            o,
            "{} position(s) hold NaN or ±inf; they are excluded from the metrics above and fail the run.\n",
            nf.len()
        )
        .unwrap();
        writeln!(o, "| prompt | pos | non-finite values | first at vocab index |\n|---:|---:|---:|---:|").unwrap();
        for x in nf.iter().take(50) {
            writeln!(o, "| {} | {} | {} | {} |", x.prompt, x.position, x.count, x.first_index).unwrap();
        }
        if nf.len() > 50 {
            writeln!(o, "\n… and {} more (see --json).", nf.len() - 50).unwrap();
        }
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        writeln!(o, "{}", self.verdict_line().replace("**", "")).unwrap();
        if let Some(a) = &self.comparison.overall {
            writeln!(
                o,
                "positions {}  mean KLD {}  max KLD {}  top-1 {}  RMS Δp {}",
                a.positions,
                num(a.kld.mean),
                num(a.kld.max),
                pct(a.top1),
                pct(a.dp_top.rms)
            )
            .unwrap();
            if let Some(p) = &a.perplexity {
                writeln!(o, "PPL golden {}  candidate {}  ratio {}", num(p.golden), num(p.candidate), num(p.ratio))
                    .unwrap();
            }
        }
        o
    }

    /// The machine-readable report.
    pub fn json(&self) -> Json {
        json!({
            "verdict": self.verdict,
            "thresholds": self.thresholds,
            "candidate": self.candidate,
            "golden": {
                "path": self.golden_name,
                "form": match self.golden_form { Form::Full => "full".to_string(), Form::TopK(k) => format!("topk={k}") },
                "vocab_size": self.vocab,
                "lengths": self.tokens.iter().map(Vec::len).collect::<Vec<_>>(),
                "metadata": self.golden_meta,
            },
            "checks": self.checks,
            "overall": self.comparison.overall,
            "prompts": self.comparison.prompts,
            "non_finite": self.comparison.non_finite,
        })
    }
}

fn summary_cells(s: &Summary) -> String {
    format!("{} / {} / {} / {}", num(s.median), num(s.p90), num(s.p99), num(s.max))
}

fn aggregate_table(o: &mut String, a: &Aggregate) {
    writeln!(o, "| metric | value |\n|---|---|").unwrap();
    writeln!(o, "| positions | {} |", a.positions).unwrap();
    writeln!(o, "| KLD mean ± σ (nats) | {} ± {} |", num(a.kld.mean), num(a.kld.mean_stderr)).unwrap();
    writeln!(o, "| KLD median / p90 / p99 / max | {} |", summary_cells(&a.kld)).unwrap();
    writeln!(o, "| top-1 agreement (same top) | {} ± {} |", pct(a.top1), pct(a.top1_stderr)).unwrap();
    if let Some(t) = a.top5_overlap {
        writeln!(o, "| top-5 overlap | {t:.4} |").unwrap();
    }
    let d = &a.dp_top;
    writeln!(o, "| Δp of golden top: mean / RMS | {} / {} |", signed_pct(d.mean), pct(d.rms)).unwrap();
    writeln!(
        o,
        "| Δp of golden top: min / p1 / median / p99 / max | {} / {} / {} / {} / {} |",
        signed_pct(d.min),
        signed_pct(d.p01),
        signed_pct(d.median),
        signed_pct(d.p99),
        signed_pct(d.max)
    )
    .unwrap();
    if let Some(d) = &a.dp_next {
        writeln!(o, "| Δp of next token (llama.cpp Δp): mean / RMS | {} / {} |", signed_pct(d.mean), pct(d.rms))
            .unwrap();
    }
    if let Some(c) = &a.cosine {
        writeln!(o, "| cosine similarity: min / mean | {:.8} / {:.8} |", c.min, c.mean).unwrap();
    }
    if let Some(m) = a.max_abs_dlogit {
        writeln!(o, "| max \\|Δlogit\\| | {} |", num(m)).unwrap();
    }
    if let Some(p) = &a.perplexity {
        writeln!(o, "| PPL golden / candidate ({} tokens) | {} / {} |", p.tokens, num(p.golden), num(p.candidate))
            .unwrap();
        writeln!(o, "| PPL ratio candidate/golden | {} |", num(p.ratio)).unwrap();
    }
}

fn noise_floor(o: &mut String) {
    writeln!(o, "\n## Noise floor\n").unwrap();
    writeln!(o, "Reference points measured with recast's engine as the golden (docs/metrics.md): identical-up-to-rounding is below 1e-9; engines that quantize activations or the KV cache sit at 1e-3 and above.\n").unwrap();
    writeln!(o, "| model | candidate | mean KLD | max KLD | top-1 |\n|---|---|---:|---:|---:|").unwrap();
    for n in NOISE_FLOOR {
        let e = |x: f64| if x == 0.0 { "0".to_string() } else { format!("{x:.1e}") };
        writeln!(o, "| {} | {} | {} | {} | {:.1} % |", n.model, n.what, e(n.mean_kld), e(n.max_kld), 100.0 * n.top1)
            .unwrap();
    }
}
