//! The reference engine against transformers (float32, eager attention) on the tiny fixtures:
//! max |Δlogit| ≤ 1e-4 · max|logit| and identical top-1 at every position. The expected logits
//! were computed by tests/fixtures/gen_tiny_models.py and are stored beside each model.

use recast_convert::Checkpoint;
use recast_validate::Engine;
use std::path::{Path, PathBuf};

fn fixture(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny").join(arch)
}

/// (tokens per prompt, logits [prompts][seq·vocab]) from reference.safetensors.
fn reference(arch: &str) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let ck = Checkpoint::open(fixture(arch).join("reference.safetensors")).unwrap();
    let (tok, lg) = (ck.get("tokens").unwrap(), ck.get("logits").unwrap());
    let (n, seq) = (tok.shape[0] as usize, tok.shape[1] as usize);
    let ids: Vec<u32> =
        ck.bytes(tok).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
    let mut logits = Vec::new();
    ck.read_f32(lg, &mut logits).unwrap();
    let per = logits.len() / n;
    (ids.chunks(seq).map(<[u32]>::to_vec).collect(), logits.chunks(per).map(<[f32]>::to_vec).collect())
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |b, (i, v)| if *v > row[b] { i } else { b })
}

/// Checks `path` (any format) against the transformers logits of fixture `arch`; returns the
/// worst relative error.
fn check(arch: &str, path: &Path, tol: f32) -> f32 {
    let (tokens, want) = reference(arch);
    let ck = Checkpoint::open(path).unwrap();
    let engine = Engine::new(&ck, 2).unwrap();
    let got = engine.forward(&tokens).unwrap();
    let vocab = engine.config.vocab_size as usize;
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(&want) {
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        worst = worst.max(err / scale);
        for (pos, (gr, wr)) in g.chunks(vocab).zip(w.chunks(vocab)).enumerate() {
            assert_eq!(argmax(gr), argmax(wr), "{arch}: top-1 differs at position {pos}");
        }
    }
    assert!(worst <= tol, "{arch}: max |Δlogit| / max|logit| = {worst:e} > {tol:e}");
    worst
}

#[test]
fn llama_family_matches_transformers() {
    for arch in ["llama", "mistral", "qwen2", "qwen3", "smollm"] {
        let worst = check(arch, &fixture(arch), 1e-4);
        eprintln!("{arch}: max rel Δlogit {worst:e}");
    }
}

#[test]
fn runs_the_gguf_a_target_would_run() {
    // The same weights through recast's own F32 GGUF: names mapped back, Q/K un-permuted.
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen3"] {
        let gguf = tmp.path().join(format!("{arch}.gguf"));
        let ck = Checkpoint::open(fixture(arch)).unwrap();
        let plan = recast_convert::job::plan(
            &ck,
            &gguf,
            &recast_convert::job::Options {
                to: recast_convert::job::OutFormat::Gguf,
                dtype: Some(recast_convert::DType::F32),
                max_shard_size: None,
            },
        )
        .unwrap();
        recast_convert::job::execute(&ck, &plan, &mut |_, _| {}).unwrap();
        check(arch, &gguf, 1e-4);
    }
}

#[test]
fn output_does_not_depend_on_thread_count() {
    let (tokens, _) = reference("qwen2");
    let ck = Checkpoint::open(fixture("qwen2")).unwrap();
    let a = Engine::new(&ck, 1).unwrap().forward(&tokens).unwrap();
    let b = Engine::new(&ck, 2).unwrap().forward(&tokens).unwrap();
    assert!(a == b, "logits must be bit-identical for 1 and 2 threads");
}
