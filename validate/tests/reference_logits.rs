//! The reference engine against transformers (float32, eager attention) on the tiny fixtures:
//! max |Δlogit| ≤ 1e-4 · max|logit| and identical top-1 at every position. The expected logits
//! were computed by tests/fixtures/gen_tiny_models.py (and, for the FP8 checkpoint, by
//! tests/fixtures/gen_fp8_fixture.py) and are stored beside each model.

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

/// Converts fixture `arch` to an F32 GGUF with recast itself, under `dir`.
fn f32_gguf(arch: &str, dir: &Path) -> PathBuf {
    let gguf = dir.join(format!("{arch}.gguf"));
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
    gguf
}

#[test]
fn runs_the_gguf_a_target_would_run() {
    // The same weights through recast's own F32 GGUF: names mapped back, Q/K un-permuted.
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen3"] {
        check(arch, &f32_gguf(arch, tmp.path()), 1e-4);
    }
}

#[test]
fn deepseek_matches_transformers() {
    for arch in ["deepseek_v3", "deepseek_v2"] {
        let worst = check(arch, &fixture(arch), 1e-4);
        eprintln!("{arch}: max rel Δlogit {worst:e}");
    }
}

#[test]
fn deepseek_gguf_matches_transformers() {
    // kv_b_proj rebuilt from attn_k_b/attn_v_b, routed experts unstacked from ffn_*_exps,
    // e_score_correction_bias from exp_probs_b, YaRN mscale from yarn_log_multiplier.
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["deepseek_v3", "deepseek_v2"] {
        let worst = check(arch, &f32_gguf(arch, tmp.path()), 1e-4);
        eprintln!("{arch} via GGUF: max rel Δlogit {worst:e}");
    }
}

#[test]
fn deepseek_v3_fp8_matches_transformers() {
    // The FP8 release layout (e4m3 weights with 16×16 block scale_inv, BF16 embeddings/norms/
    // router/lm_head, F32 e_score_correction_bias) against transformers run on the weights that
    // checkpoint means: every FP8 weight dequantized the DeepSeek way in float32
    // (reference_f32.safetensors), every BF16/F32 tensor upcast exactly. Computed by
    // tests/fixtures/gen_fp8_fixture.py on the deepseek_v3 fixture's tokens.
    assert_eq!(reference("deepseek_v3_fp8").0, reference("deepseek_v3").0, "same prompts as the float fixture");
    let worst = check("deepseek_v3_fp8", &fixture("deepseek_v3_fp8"), 1e-4);
    eprintln!("deepseek_v3_fp8: max rel Δlogit {worst:e}");
}

#[test]
fn output_does_not_depend_on_thread_count() {
    for arch in ["qwen2", "deepseek_v3"] {
        let (tokens, _) = reference(arch);
        let ck = Checkpoint::open(fixture(arch)).unwrap();
        let a = Engine::new(&ck, 1).unwrap().forward(&tokens).unwrap();
        let b = Engine::new(&ck, 2).unwrap().forward(&tokens).unwrap();
        assert!(a == b, "{arch}: logits must be bit-identical for 1 and 2 threads");
    }
}
