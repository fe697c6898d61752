//! Low-rank KV (docs/low-rank-kv.md) end to end on the tiny fixtures: `recast calibrate`,
//! the `low_rank_kv` recipe step through `recast quantize` in the hf and gguf layouts, the
//! reference engine on the latent layout, and the errors a user meets.

use recast_convert::{Checkpoint, DType, Storage};
use recast_validate::Engine;
use std::path::{Path, PathBuf};

mod common;
use common::{fails, fixture, ok, recast_env, s};

const LLAMA_FAMILY: [&str; 5] = ["llama", "mistral", "qwen2", "qwen3", "smollm"];

fn prompts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart-prompts.jsonl")
}

fn write_recipe(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    let text = format!("name: {name}\ntarget: {{hardware: reference, runtime: recast reference engine}}\n{body}\n");
    std::fs::write(&p, text).unwrap();
    p
}

/// low-rank-kv-full in the GGUF layout with F32 weights.
fn full_rank_gguf_recipe(dir: &Path) -> PathBuf {
    write_recipe(
        dir,
        "full-gguf",
        "extends: low-rank-kv-full\nlayout: gguf\nrules:\n  - targets: [Linear]\n    scheme: {type: float, dtype: f32}",
    )
}

/// `recast validate CANDIDATE --golden G --json`: (mean KLD, top-1 agreement).
fn validate(candidate: &Path, golden: &Path) -> (f64, f64) {
    let out = ok(&["validate", s(candidate), "--golden", s(golden), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &j["overall"];
    (m["kld"]["mean"].as_f64().expect("kld.mean"), m["top1"].as_f64().expect("top1"))
}

fn tensor_bytes(ck: &Checkpoint, name: &str) -> Vec<u8> {
    ck.bytes(ck.get(name).unwrap_or_else(|| panic!("{name} in {}", ck.path.display()))).to_vec()
}

#[test]
fn full_rank_reproduces_every_llama_family_fixture_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let gguf_recipe = full_rank_gguf_recipe(dir.path());
    for arch in LLAMA_FAMILY {
        let golden = dir.path().join(format!("{arch}-golden.safetensors"));
        ok(&["golden", s(&fixture(arch)), "-o", s(&golden), "--prompts", s(&prompts())]);
        let hf = dir.path().join(format!("{arch}-full"));
        ok(&["quantize", s(&fixture(arch)), "-o", s(&hf), "--recipe", "low-rank-kv-full"]);
        let gguf = dir.path().join(format!("{arch}-full.gguf"));
        ok(&["quantize", s(&fixture(arch)), "-o", s(&gguf), "--recipe", s(&gguf_recipe)]);

        let (orig, lr) = (Checkpoint::open(fixture(arch)).unwrap(), Checkpoint::open(&hf).unwrap());
        assert!(lr.get("model.layers.0.self_attn.k_proj.weight").is_none(), "{arch}: k_proj replaced");
        let cfg = Engine::new(&orig, 1).unwrap().config;
        let (width, layers) = (2 * cfg.num_key_value_heads * cfg.head_dim, cfg.num_hidden_layers as usize);
        let rank = width.min(cfg.hidden_size);
        assert_eq!(Engine::new(&lr, 1).unwrap().kv_values_per_token(), vec![rank; layers], "{arch}");
        let conf: serde_json::Value = serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
        assert_eq!(conf["low_rank_kv"]["ranks"], serde_json::json!(vec![rank; layers]), "{arch}");
        assert_eq!(conf["low_rank_kv"]["method"], "joint-svd");

        for candidate in [&hf, &gguf] {
            let (kld, top1) = validate(candidate, &golden);
            assert!(kld <= 1e-8, "{arch} {}: mean KLD {kld:e}", candidate.display());
            assert_eq!(top1, 1.0, "{arch} {}: top-1 agreement", candidate.display());
        }
    }
}

/// The GGUF layout permutes the key rows of `attn_kv_b` as llama.cpp permutes `attn_k`. Two
/// independent paths must agree: quantize's GGUF writer (permuting the factors it computed)
/// and `recast convert` of the hf-layout output (convert's row-permutation op), and reading
/// either back must give the hf tensors.
#[test]
fn gguf_key_rows_are_permuted_like_attn_k_by_both_writers() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = full_rank_gguf_recipe(dir.path());
    for arch in ["llama", "qwen2"] {
        let hf = dir.path().join(format!("{arch}-hf"));
        let direct = dir.path().join(format!("{arch}-direct.gguf"));
        let converted = dir.path().join(format!("{arch}-converted.gguf"));
        let back = dir.path().join(format!("{arch}-back"));
        ok(&["quantize", s(&fixture(arch)), "-o", s(&hf), "--recipe", "low-rank-kv-full"]);
        ok(&["quantize", s(&fixture(arch)), "-o", s(&direct), "--recipe", s(&recipe)]);
        ok(&["convert", s(&hf), "-o", s(&converted), "--dtype", "f32"]);
        ok(&["convert", s(&direct), "-o", s(&back), "--dtype", "f32"]);
        let (h, d, c, b) = (
            Checkpoint::open(&hf).unwrap(),
            Checkpoint::open(&direct).unwrap(),
            Checkpoint::open(&converted).unwrap(),
            Checkpoint::open(&back).unwrap(),
        );
        for (g, n) in [("attn_kv_a.weight", "kv_a_proj.weight"), ("attn_kv_b.weight", "kv_b_proj.weight")] {
            let (gn, hn) = (format!("blk.1.{g}"), format!("model.layers.1.self_attn.{n}"));
            assert_eq!(tensor_bytes(&d, &gn), tensor_bytes(&c, &gn), "{arch} {gn}: quantize vs convert");
            assert_eq!(tensor_bytes(&b, &hn), tensor_bytes(&h, &hn), "{arch} {hn}: GGUF read back");
            let permutes = arch == "llama" && g == "attn_kv_b.weight";
            assert_eq!(tensor_bytes(&d, &gn) != tensor_bytes(&h, &hn), permutes, "{arch} {gn} permuted: {permutes}");
        }
        let meta = &d.gguf.as_ref().unwrap().metadata;
        let ext = meta.get("recast.low_rank_kv").expect("GGUF records the extension");
        assert!(format!("{ext:?}").contains("joint-svd"), "{ext:?}");
    }
}

#[test]
fn calibration_statistics_are_deterministic_checked_and_change_the_factors() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixture("qwen2");
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    for (out, threads) in [(&a, "1"), (&b, "2")] {
        let o = recast_env(
            &["calibrate", s(&m), "--prompts", s(&prompts()), "-o", s(out)],
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let st = Checkpoint::open(&a).unwrap();
    let st_b = Checkpoint::open(&b).unwrap();
    for l in 0..2 {
        let name = format!("layers.{l}.second_moment");
        assert!(
            tensor_bytes(&st, &name) == tensor_bytes(&st_b, &name),
            "{name}: statistics depend on the thread count"
        );
    }
    assert_eq!(st.st_metadata["format"], "recast-kv-calibration");
    let t = st.get("layers.1.second_moment").unwrap();
    assert_eq!((t.storage, t.shape.clone()), (Storage::Dense(DType::F64), vec![64, 64]));
    // A second moment is symmetric with a positive diagonal.
    let v: Vec<f64> = bytemuck::pod_collect_to_vec(st.bytes(t));
    assert!((0..64).all(|i| v[i * 64 + i] > 0.0 && (0..64).all(|j| v[i * 64 + j] == v[j * 64 + i])));

    // The same recipe, plain and calibrated: different factors, same shapes; deterministic
    // whatever the thread count.
    let plain = dir.path().join("plain");
    let recipe = write_recipe(dir.path(), "half-plain", "layout: hf\nlow_rank_kv: {ratio: 0.5}");
    ok(&["quantize", s(&m), "-o", s(&plain), "--recipe", s(&recipe)]);
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("cal-{threads}"));
        let o = recast_env(
            &["quantize", s(&m), "-o", s(&out), "--recipe", "low-rank-kv-50", "--calibration", s(&a)],
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        outs.push(std::fs::read(out.join("model.safetensors")).unwrap());
    }
    assert!(outs[0] == outs[1], "low-rank output depends on the thread count");
    let (p, c) = (Checkpoint::open(&plain).unwrap(), Checkpoint::open(dir.path().join("cal-1")).unwrap());
    let name = "model.layers.0.self_attn.kv_a_proj.weight";
    assert_eq!(p.get(name).unwrap().shape, vec![32, 64]);
    assert_eq!(c.get(name).unwrap().shape, vec![32, 64]);
    assert_ne!(tensor_bytes(&p, name), tensor_bytes(&c, name));
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cal-1/config.json")).unwrap()).unwrap();
    assert_eq!(conf["low_rank_kv"]["method"], "calibrated-joint-svd");
    assert_eq!(conf["low_rank_kv"]["calibration"]["model_fingerprint"], st.st_metadata["model_fingerprint"].as_str());

    // Statistics of another model, or of a model with another shape, are refused.
    let other = dir.path().join("llama.safetensors");
    ok(&["calibrate", s(&fixture("llama")), "--prompts", s(&prompts()), "-o", s(&other)]);
    let x = dir.path().join("x");
    let half =
        |extra: &[&str]| fails(&[&["quantize", s(&m), "-o", s(&x), "--recipe", "low-rank-kv-50"], extra].concat());
    let err = half(&["--calibration", s(&other)]);
    assert!(err.contains("collected on another model") && err.contains("recast calibrate"), "{err}");
    let err = half(&[]);
    assert!(err.contains("needs calibration statistics") && err.contains("--calibration"), "{err}");
    let err = half(&["--calibration", s(&prompts())]);
    assert!(err.contains("not a calibration statistics file"), "{err}");
    assert!(!dir.path().join("x").exists(), "nothing written on error");
}

#[test]
fn rank_rules_budget_and_energy_in_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixture("llama");
    let plan = |body: &str| -> serde_json::Value {
        let r = write_recipe(dir.path(), "r", body);
        let out = ok(&["quantize", s(&m), "-o", s(&dir.path().join("o")), "--recipe", s(&r), "--dry-run", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["low_rank_kv"].clone()
    };
    let ranks = |j: &serde_json::Value| -> Vec<u64> {
        j["ranks"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
    };
    // llama fixture: 2 layers, KV width 2·n_kv·head_dim = 64 (see config.json).
    assert_eq!(ranks(&plan("layout: hf\nlow_rank_kv: {rank: 24}")), vec![24, 24]);
    let b = plan("layout: hf\nlow_rank_kv: {budget: 0.375}");
    assert_eq!(ranks(&b).iter().sum::<u64>(), 48, "budget: 37.5 % of 2 × 64 values");
    assert_eq!(b["kv_bytes_per_token"]["after"], 96);
    assert_eq!(b["kv_bytes_per_token"]["before"], 256);
    let e = ranks(&plan("layout: hf\nlow_rank_kv: {energy: 0.9}"));
    assert!(e.iter().all(|&r| (1..=64).contains(&r)), "{e:?}");
    // The human plan shows rank and bytes per layer (snapshot).
    let r = write_recipe(dir.path(), "half", "layout: hf\nlow_rank_kv: {ratio: 0.5}");
    let out = ok(&["quantize", s(&m), "-o", "out", "--recipe", s(&r), "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let table = &text[text.find("low-rank KV").unwrap()..];
    insta::assert_snapshot!("low_rank_kv_dry_run_table", table);
}

#[test]
fn bad_inputs_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("o");
    let too_big = write_recipe(dir.path(), "big", "layout: hf\nlow_rank_kv: {rank: 65}");
    let err = fails(&["quantize", s(&fixture("llama")), "-o", s(&o), "--recipe", s(&too_big)]);
    assert!(err.contains("rank 65 is larger than") && err.contains("at most rank 64"), "{err}");
    let err = fails(&["quantize", s(&fixture("deepseek_v2")), "-o", s(&o), "--recipe", "low-rank-kv-full"]);
    assert!(err.contains("multi-head latent attention"), "{err}");
    let err =
        fails(&["calibrate", s(&fixture("deepseek_v3")), "--prompts", s(&prompts()), "-o", s(&dir.path().join("st"))]);
    assert!(err.contains("multi-head latent attention"), "{err}");
    // Factoring an already factored model.
    let lr = dir.path().join("lr");
    ok(&["quantize", s(&fixture("llama")), "-o", s(&lr), "--recipe", "low-rank-kv-full"]);
    let err = fails(&["quantize", s(&lr), "-o", s(&o), "--recipe", "low-rank-kv-full"]);
    assert!(err.contains("already low-rank"), "{err}");
    // A runtime target cannot take low-rank layers yet; fractions are checked.
    let h100 = dir.path().join("h100.yaml");
    std::fs::write(&h100, "name: h\nextends: nvidia-h100-fp8-block\nlow_rank_kv: {ratio: 0.5}\n").unwrap();
    let err = fails(&["quantize", s(&fixture("llama")), "-o", s(&o), "--recipe", s(&h100)]);
    assert!(err.contains("hardware: reference"), "{err}");
    let bad = write_recipe(dir.path(), "bad", "layout: hf\nlow_rank_kv: {ratio: 1.5}");
    let err = fails(&["quantize", s(&fixture("llama")), "-o", s(&o), "--recipe", s(&bad)]);
    assert!(err.contains("1.5 is not a fraction"), "{err}");
    let two = write_recipe(dir.path(), "two", "layout: hf\nlow_rank_kv: {ratio: 0.5, rank: 3}");
    fails(&["quantize", s(&fixture("llama")), "-o", s(&o), "--recipe", s(&two)]);
    assert!(!o.exists());
}

/// Low-rank KV then a weight scheme: the new matrices are quantized like any Linear weight.
#[test]
fn composes_with_q8_0_and_fp8() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixture("smollm");
    let stats = dir.path().join("stats.safetensors");
    ok(&["calibrate", s(&m), "--prompts", s(&prompts()), "-o", s(&stats)]);
    let golden = dir.path().join("golden.safetensors");
    ok(&["golden", s(&m), "-o", s(&golden), "--prompts", s(&prompts())]);
    let q8 = write_recipe(dir.path(), "q8", "extends: low-rank-kv-50\nlayout: gguf\npreset: Q8_0");
    let fp8 = write_recipe(
        dir.path(),
        "fp8",
        "extends: low-rank-kv-50\nlayout: compressed-tensors\nrules:\n  - targets: [Linear]\n    scheme: {type: fp8, format: e4m3fn, strategy: channel}",
    );
    let half = dir.path().join("half");
    ok(&["quantize", s(&m), "-o", s(&half), "--recipe", "low-rank-kv-50", "--calibration", s(&stats)]);
    let (kld_half, _) = validate(&half, &golden);
    for (recipe, out, quantized) in [(&q8, "q8.gguf", "Q8_0"), (&fp8, "fp8", "F8_E4M3")] {
        let out = dir.path().join(out);
        ok(&["quantize", s(&m), "-o", s(&out), "--recipe", s(recipe), "--calibration", s(&stats)]);
        let manifest = if out.is_dir() {
            out.join("recast-manifest.json")
        } else {
            PathBuf::from(format!("{}.recast-manifest.json", out.display()))
        };
        let man: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
        let kv_b =
            man["tensors"].as_array().unwrap().iter().find(|t| t["name"].as_str().unwrap().contains("kv_b")).unwrap();
        assert!(kv_b["outputs"][0]["dtype"] == quantized, "{kv_b}");
        assert_eq!(man["low_rank_kv"]["method"], "calibrated-joint-svd");
        let (kld, top1) = validate(&out, &golden);
        // Quantizing on top of the factorization adds error, but not much at 8 bits.
        assert!(
            kld >= kld_half * 0.9 && kld < kld_half * 1.5 + 1e-3,
            "{out:?}: KLD {kld:e} vs low-rank alone {kld_half:e}"
        );
        assert!(top1 > 0.5, "{top1}");
    }
}

#[test]
fn kv_cache_size_of_mla_models() {
    for arch in ["deepseek_v2", "deepseek_v3"] {
        let ck = Checkpoint::open(fixture(arch)).unwrap();
        let e = Engine::new(&ck, 1).unwrap();
        let m = e.config.mla.as_ref().unwrap();
        let per = m.kv_lora_rank + m.qk_rope_head_dim;
        assert_eq!(e.kv_values_per_token(), vec![per; e.config.num_hidden_layers as usize], "{arch}");
    }
}

/// A BF16 model: the factors are written in F32 (unless the recipe names a dtype), so full
/// rank stays exact; the rest of the model keeps the source's BF16.
#[test]
fn full_rank_of_a_bf16_model_keeps_f32_factors_and_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let bf16 = dir.path().join("bf16");
    ok(&["convert", s(&fixture("qwen2")), "-o", s(&bf16), "--dtype", "bf16"]);
    let golden = dir.path().join("golden.safetensors");
    ok(&["golden", s(&bf16), "-o", s(&golden), "--prompts", s(&prompts())]);
    let full = dir.path().join("full");
    ok(&["quantize", s(&bf16), "-o", s(&full), "--recipe", "low-rank-kv-full"]);
    let ck = Checkpoint::open(&full).unwrap();
    let dtype = |n: &str| ck.get(n).unwrap().storage;
    assert_eq!(dtype("model.layers.0.self_attn.kv_b_proj.weight"), Storage::Dense(DType::F32));
    assert_eq!(dtype("model.layers.0.self_attn.kv_b_proj.bias"), Storage::Dense(DType::F32));
    assert_eq!(dtype("model.layers.0.self_attn.q_proj.weight"), Storage::Dense(DType::BF16));
    let (kld, top1) = validate(&full, &golden);
    assert!(kld <= 1e-8 && top1 == 1.0, "KLD {kld:e}, top-1 {top1}");
}
