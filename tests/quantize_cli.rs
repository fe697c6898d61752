//! End-to-end tests of `recast quantize` and `recast recipes` on the tiny fixtures.

use recast_convert::{Checkpoint, DType, Storage};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{fails, fixture, ok, recast_env_within, s};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// sha256 of every regular file under `p` (or of `p`), by relative name.
fn hashes(p: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    if p.is_file() {
        files.push(p.to_path_buf());
    } else {
        for e in std::fs::read_dir(p).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    let mut out: Vec<(String, String)> = files
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with("recast-manifest.json"))
        .map(|f| {
            let b = std::fs::read(f).unwrap();
            (f.file_name().unwrap().to_string_lossy().into_owned(), format!("{:x}", Sha256::digest(&b)))
        })
        .collect();
    out.sort();
    out
}

/// A recipe with group-32 int4 so the tiny models (width 64) quantize instead of falling back.
const INT4_G32: &str = "
extends: vllm-w4a16-g128
name: int4-g32
rules:
  - targets: [Linear]
    scheme: {type: int, bits: 4, group: 32, symmetric: false}
";

#[test]
fn recipes_list_snapshot() {
    insta::assert_snapshot!("recipes_list", stdout(&ok(&["recipes", "list"])));
}

#[test]
fn dry_run_plans_snapshot() {
    let m = fixture("smollm");
    let gguf = ok(&["quantize", s(&m), "-o", "OUT/smollm-q4_k_m.gguf", "--recipe", "cpu-gguf-q4_k_m", "--dry-run"]);
    insta::assert_snapshot!("dry_run_smollm_q4_k_m", stdout(&gguf));
    let fp8 = ok(&["quantize", s(&m), "-o", "OUT/smollm-fp8", "--recipe", "nvidia-h100-fp8-block", "--dry-run"]);
    insta::assert_snapshot!("dry_run_smollm_fp8_block", stdout(&fp8));
    let json = ok(&["quantize", s(&m), "-o", "OUT/x", "--recipe", "ascend-910b-w8a8-dynamic", "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["recipe"]["layout"], "ascend");
    assert!(v["tensors"].as_array().unwrap().iter().any(|t| t["scheme"] == "int8-channel-sym-a8dyn"));
}

#[test]
fn every_shipped_recipe_writes_its_layout_and_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let list = stdout(&ok(&["recipes", "list"]));
    let names: Vec<&str> =
        list.lines().skip(1).take_while(|l| !l.is_empty()).map(|l| l.split_whitespace().next().unwrap()).collect();
    assert!(names.len() >= 10, "{names:?}");
    for arch in ["smollm", "qwen2"] {
        for name in &names {
            let gguf = name.starts_with("cpu-gguf");
            let out = tmp.path().join(format!("{arch}-{name}{}", if gguf { ".gguf" } else { "" }));
            let model = fixture(arch);
            let mut args = vec!["quantize", s(&model), "-o", s(&out), "--recipe", name];
            // Recipes needing calibration statistics get them from the model itself.
            let stats = tmp.path().join(format!("{arch}-stats.safetensors"));
            let r = recast_quantize::Recipe::load(name).unwrap();
            if r.low_rank_kv.as_ref().is_some_and(|k| k.calibration == recast_quantize::recipe::Calibration::Required) {
                let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart-prompts.jsonl");
                if !stats.exists() {
                    ok(&["calibrate", s(&model), "--prompts", s(&prompts), "-o", s(&stats)]);
                }
                args.extend(["--calibration", s(&stats)]);
            }
            ok(&args);
            let manifest_path = if gguf {
                PathBuf::from(format!("{}.recast-manifest.json", out.display()))
            } else {
                out.join("recast-manifest.json")
            };
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
            assert_eq!(m["recipe"]["name"], *name);
            for f in m["files"].as_array().unwrap() {
                let p = if gguf { out.clone() } else { out.join(f["name"].as_str().unwrap()) };
                let b = std::fs::read(&p).unwrap();
                assert_eq!(f["sha256"].as_str().unwrap(), format!("{:x}", Sha256::digest(&b)), "{name}: {p:?}");
            }
            // The output opens as a checkpoint (format sniffed) and nothing partial is left.
            Checkpoint::open(&out).unwrap_or_else(|e| panic!("{arch} {name}: {e}"));
            let dir = if gguf { out.parent().unwrap().to_path_buf() } else { out.clone() };
            for e in std::fs::read_dir(&dir).unwrap() {
                assert!(!e.unwrap().file_name().to_string_lossy().ends_with(".partial"));
            }
            match *name {
                "deepseek-fp8-block" => {
                    let ck = Checkpoint::open(&out).unwrap();
                    let w = ck.get("model.layers.0.self_attn.q_proj.weight").unwrap();
                    assert_eq!(w.storage, Storage::Dense(DType::F8E4M3));
                    assert!(ck.get("model.layers.0.self_attn.q_proj.weight_scale_inv").is_some());
                    assert!(ck.get("lm_head.weight").map_or(true, |t| t.storage != Storage::Dense(DType::F8E4M3)));
                    let cfg: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
                    assert_eq!(cfg["quantization_config"]["quant_method"], "fp8");
                }
                "ascend-910b-w8a8-dynamic" => {
                    let d: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(out.join("quant_model_description.json")).unwrap())
                            .unwrap();
                    assert_eq!(d["model_quant_type"], "W8A8_DYNAMIC");
                    assert_eq!(d["model.layers.0.mlp.up_proj.weight"], "W8A8_DYNAMIC");
                    assert_eq!(d["model.norm.weight"], "FLOAT");
                    assert!(out.join("quant_model_weights.safetensors").is_file());
                    let cfg: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
                    assert!(cfg.get("quantization_config").is_none());
                }
                "nvidia-h100-fp8-channel" => {
                    let cfg: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
                    let q = &cfg["quantization_config"];
                    assert_eq!(q["quant_method"], "compressed-tensors");
                    assert_eq!(q["format"], "float-quantized");
                    assert_eq!(q["ignore"], serde_json::json!(["lm_head"]));
                    assert_eq!(q["config_groups"]["group_0"]["weights"]["strategy"], "channel");
                }
                _ => {}
            }
        }
    }
}

#[test]
fn output_bytes_do_not_depend_on_thread_count_or_write_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("int4-g32.yaml");
    std::fs::write(&recipe, INT4_G32).unwrap();
    for (r, ext) in [("cpu-gguf-q4_k_m", ".gguf"), ("nvidia-h100-fp8-block", ""), (s(&recipe), "")] {
        let mut runs = Vec::new();
        // The last two runs also shrink the encoder's budget of unwritten bytes: to nothing
        // (every weight waits until the previous one is written) and to about one weight.
        for (threads, budget) in [("1", None), ("2", None), ("3", None), ("2", Some("1")), ("2", Some("20000"))] {
            let dir = tmp.path().join(format!("t{threads}-{budget:?}"));
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join(format!("model{ext}"));
            let mut env = vec![("RAYON_NUM_THREADS", threads)];
            env.extend(budget.map(|b| ("RECAST_QUANTIZE_IN_FLIGHT", b)));
            let o = recast_env_within(&["quantize", s(&fixture("smollm")), "-o", s(&out), "--recipe", r], &env, 120);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            runs.push(hashes(&out));
            if out.is_dir() {
                std::fs::remove_dir_all(&out).unwrap();
            } else {
                std::fs::remove_file(&out).unwrap();
            }
        }
        for run in &runs[1..] {
            assert_eq!(&runs[0], run, "{r}");
        }
    }
}

/// Copies a fixture and writes `value` into element `index` of tensor `name` (F32).
fn poisoned(tmp: &Path, name: &str, index: usize, value: f32) -> PathBuf {
    let dst = tmp.join("poisoned");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture("smollm")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let (offset, dtype) = {
        let ck = Checkpoint::open(&dst).unwrap();
        let t = ck.get(name).unwrap();
        (t.offset, t.storage)
    };
    assert_eq!(dtype, Storage::Dense(DType::F32));
    let file = dst.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = offset as usize + 4 * index;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&file, bytes).unwrap();
    dst
}

#[test]
fn non_finite_weights_are_an_error_naming_tensor_and_index_and_leave_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = poisoned(tmp.path(), "model.layers.1.mlp.up_proj.weight", 70, f32::NAN);
    for (recipe, out) in [("cpu-gguf-q8_0", "o.gguf"), ("nvidia-h100-fp8-channel", "o-dir")] {
        let out = tmp.path().join(out);
        let e = fails(&["quantize", s(&src), "-o", s(&out), "--recipe", recipe]);
        assert!(e.contains("up_proj") || e.contains("blk.1.ffn_up"), "{e}");
        assert!(e.contains("index 70") && e.contains("row 1, column 6"), "{e}");
        assert!(!out.join("model.safetensors").exists() && !out.is_file(), "no final file");
        let partial = PathBuf::from(format!("{}.partial", out.display()));
        assert!(!partial.exists() && !out.join("model.safetensors.partial").exists(), "no partial file");
    }
}

#[test]
fn indivisible_shapes_fail_or_keep_as_the_recipe_says() {
    let tmp = tempfile::tempdir().unwrap();
    let strict = tmp.path().join("strict.yaml");
    std::fs::write(&strict, "extends: vllm-w4a16-g128\nname: strict\non_indivisible: fail\n").unwrap();
    let e = fails(&["quantize", s(&fixture("smollm")), "-o", s(&tmp.path().join("x")), "--recipe", s(&strict)]);
    assert!(e.contains("model.layers.0.") && e.contains("group size 128") && e.contains("on_indivisible"), "{e}");
    // The shipped recipe keeps such tensors (and says so in the plan).
    let plan = stdout(&ok(&[
        "quantize",
        s(&fixture("smollm")),
        "-o",
        s(&tmp.path().join("y")),
        "--recipe",
        "vllm-w4a16-g128",
        "--dry-run",
    ]));
    assert!(plan.contains("kept unquantized: row length 64 is not a multiple of the group size 128"), "{plan}");
    assert!(plan.contains("warning: no tensor is quantized"), "{plan}");
}

#[test]
fn a_rule_matching_nothing_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r.yaml");
    std::fs::write(
        &r,
        "extends: nvidia-h100-fp8-channel\nname: r\nrules:\n  - targets: ['re:.*nonexistent_proj']\n    scheme: {type: keep}\n",
    )
    .unwrap();
    let plan = stdout(&ok(&["quantize", s(&fixture("smollm")), "-o", "x", "--recipe", s(&r), "--dry-run"]));
    assert!(plan.contains("warning: rule 1 (targets re:.*nonexistent_proj) matched no tensor"), "{plan}");
}

#[test]
fn quantized_gguf_and_deepseek_fp8_validate_against_the_f32_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"text\": \"The quick brown fox jumps over the lazy dog.\"}\n{\"text\": \"Once upon a time\"}\n",
    )
    .unwrap();
    let golden = tmp.path().join("g.safetensors");
    let m = fixture("smollm");
    ok(&["golden", s(&m), "-o", s(&golden), "--prompts", s(&prompts)]);
    for (recipe, ext, max_kld) in [("cpu-gguf-q8_0", ".gguf", "0.01"), ("deepseek-fp8-block", "", "0.1")] {
        let out = tmp.path().join(format!("{recipe}{ext}"));
        ok(&["quantize", s(&m), "-o", s(&out), "--recipe", recipe]);
        let v = ok(&["validate", s(&out), "--golden", s(&golden), "--max-kld", max_kld, "--json"]);
        let j: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
        let kld = j["overall"]["kld"]["mean"].as_f64().unwrap();
        assert!(kld > 0.0, "{recipe}: quantization changes the logits a little ({kld})");
    }
}
