//! Candidates: the logits compared with a golden — the engine's output for a model, or a dump
//! from another engine (`.npy` or safetensors) — and the checks that they fit the golden.

use super::{read_ints, tensor, tensor_err, Golden, GoldenError, Result};
use crate::metrics::CandidateRows;
use recast_convert::{float, Checkpoint, DType};
use std::path::Path;

/// Logits to compare with a golden.
pub enum Candidate<'a> {
    /// The engine's output: per prompt `[len · vocab]`.
    Rows { rows: Vec<Vec<f32>>, vocab: usize },
    /// A dump `[n, seq, vocab]` of F32, F16 or BF16, borrowed.
    Dense { data: &'a [u8], dtype: DType, n: usize, seq: usize, vocab: usize },
}

impl<'a> Candidate<'a> {
    /// A dump of `shape` `[seq, vocab]` (one sequence) or `[n, seq, vocab]`.
    pub fn dense(what: &Path, data: &'a [u8], dtype: DType, shape: &[usize]) -> Result<Candidate<'a>> {
        let (n, seq, vocab) = match *shape {
            [s, v] => (1, s, v),
            [n, s, v] => (n, s, v),
            _ => {
                return Err(GoldenError::Tensor {
                    path: what.into(),
                    tensor: tensor::LOGITS.into(),
                    expected: "shape [seq, vocab] or [n, seq, vocab]".into(),
                    found: format!("{shape:?}"),
                })
            }
        };
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(GoldenError::Tensor {
                path: what.into(),
                tensor: tensor::LOGITS.into(),
                expected: "dtype F32, F16 or BF16".into(),
                found: dtype.name().into(),
            });
        }
        let need = [n, seq, vocab, dtype.size().unwrap_or(0)].iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if need != Some(data.len()) {
            return Err(GoldenError::Tensor {
                path: what.into(),
                tensor: tensor::LOGITS.into(),
                expected: format!(
                    "{} bytes for {dtype} {shape:?}",
                    need.map_or("an overflowing number of".into(), |b| b.to_string())
                ),
                found: format!("{} bytes", data.len()),
            });
        }
        Ok(Candidate::Dense { data, dtype, n, seq, vocab })
    }

    /// A safetensors dump: its `logits` tensor, and its `tokens` (`[seq]` or `[n, seq]`) if it
    /// has them.
    pub fn from_safetensors(ck: &'a Checkpoint) -> Result<(Candidate<'a>, Option<Vec<Vec<u32>>>)> {
        let t = ck.require(tensor::LOGITS, "a logits dump")?;
        let dtype = match t.storage {
            recast_convert::Storage::Dense(d) => d,
            s => return Err(tensor_err(&ck.path, t, &format!("a dense float dtype, not {s}"))),
        };
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let c = Candidate::dense(&ck.path, ck.bytes(t), dtype, &shape)?;
        let tokens = match ck.get(tensor::TOKENS) {
            None => None,
            Some(tt) => {
                let ids = read_ints(&ck.path, ck, tt, &[DType::I64, DType::I32])?;
                let seq = *tt.shape.last().unwrap_or(&1) as usize;
                Some(ids.chunks(seq.max(1)).map(|r| r.iter().map(|&v| v as u32).collect()).collect())
            }
        };
        Ok((c, tokens))
    }
}

impl CandidateRows for Candidate<'_> {
    fn row<'a>(&'a self, prompt: usize, pos: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        match self {
            Candidate::Rows { rows, vocab } => &rows[prompt][pos * vocab..(pos + 1) * vocab],
            Candidate::Dense { data, dtype, seq, vocab, .. } => {
                let size = dtype.size().expect("byte-sized");
                let r = prompt * seq + pos;
                buf.resize(*vocab, 0.0);
                float::decode_to_f32(*dtype, &data[r * vocab * size..(r + 1) * vocab * size], buf);
                buf
            }
        }
    }
}

impl Golden {
    /// Checks that a candidate has this golden's prompts, positions and vocabulary.
    pub fn check_candidate(&self, c: &Candidate) -> Result<()> {
        let mismatch = |what, golden: String, candidate: String| GoldenError::Mismatch {
            what,
            golden,
            candidate,
            hint: String::new(),
        };
        let (n, vocab) = match c {
            Candidate::Rows { rows, vocab } => (rows.len(), *vocab),
            Candidate::Dense { n, vocab, .. } => (*n, *vocab),
        };
        if vocab != self.vocab {
            return Err(mismatch("vocabulary size", self.vocab.to_string(), vocab.to_string()));
        }
        if n != self.tokens.len() {
            return Err(mismatch("number of sequences", self.tokens.len().to_string(), n.to_string()));
        }
        match c {
            Candidate::Dense { seq, .. } if *seq != self.seq => Err(mismatch(
                "positions per sequence",
                format!("{} (tokens [{}, {}])", self.seq, n, self.seq),
                seq.to_string(),
            )),
            Candidate::Rows { rows, .. } => {
                match rows.iter().zip(&self.tokens).position(|(r, t)| r.len() != t.len() * vocab) {
                    Some(p) => Err(mismatch(
                        "logits of a sequence",
                        format!("prompt {p}: {} positions", self.tokens[p].len()),
                        format!("{} values", rows[p].len()),
                    )),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Checks the token ids a candidate dump carries (if any) against the golden's.
    pub fn check_tokens(&self, dump: &[Vec<u32>]) -> Result<()> {
        for (p, (d, g)) in dump.iter().zip(&self.tokens).enumerate() {
            if let Some(i) = g.iter().zip(d).position(|(a, b)| a != b) {
                return Err(GoldenError::Mismatch {
                    what: "token id",
                    golden: format!("{} at prompt {p}, position {i}", g[i]),
                    candidate: d[i].to_string(),
                    hint: " — the dump was made from other tokens".into(),
                });
            }
        }
        Ok(())
    }
}
