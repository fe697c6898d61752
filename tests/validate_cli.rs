//! End-to-end tests of `recast golden` and `recast validate` on the tiny fixtures
//! (tests/fixtures/tiny) and the metric fixture (tests/fixtures/metrics, gen_metrics_fixture.py).

use recast_convert::safetensors::{writer::write_shard, SafetensorsPlan};
use recast_convert::{Checkpoint, DType, Storage};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{fixture, ok, recast, s};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn metrics_fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/metrics").join(name)
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", stderr(out)))
}

/// Writes the two prompts of a fixture's reference.safetensors (12 tokens each) as JSONL.
fn reference_prompts(arch: &str, path: &Path) {
    let ck = Checkpoint::open(fixture(arch).join("reference.safetensors")).unwrap();
    let t = ck.get("tokens").unwrap();
    let seq = t.shape[1] as usize;
    let ids: Vec<i64> = ck.bytes(t).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let lines: Vec<String> = ids.chunks(seq).map(|r| serde_json::json!({ "tokens": r }).to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

const TEXT_PROMPTS: &str = r#"{"text": "The quick brown fox jumps over the lazy dog."}
{"text": "भारत एक विशाल देश है"}

{"tokens": [5, 17, 42]}
"#;

/// A copy of a fixture directory with `tensor` scaled by `factor` (written through the library).
fn perturbed_copy(arch: &str, tensor: &str, factor: f32, dir: &Path) {
    let ck = Checkpoint::open(fixture(arch)).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture(arch).join(f), dir.join(f)).unwrap();
    }
    let list = ck.tensors.iter().map(|t| match t.storage {
        Storage::Dense(d) => (t.name.clone(), d, t.shape.clone()),
        s => panic!("{}: {s}", t.name),
    });
    let plan = SafetensorsPlan::new(list.collect(), None, &Default::default()).unwrap();
    write_shard(&dir.join("model.safetensors"), &plan.shards[0], |p, sink| {
        let t = &ck.tensors[p.index];
        assert!(t.name != tensor || t.storage == Storage::Dense(DType::F32));
        if t.name != tensor {
            return sink.write(ck.bytes(t));
        }
        let scaled: Vec<u8> = ck
            .bytes(t)
            .chunks_exact(4)
            .flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * factor).to_le_bytes())
            .collect();
        sink.write(&scaled)
    })
    .unwrap();
}

#[test]
fn golden_against_itself_reports_kld_0_and_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(&prompts, TEXT_PROMPTS).unwrap();
    let golden = tmp.path().join("golden.safetensors");
    ok(&["golden", s(&fixture("qwen2")), "-o", s(&golden), "--prompts", s(&prompts)]);

    let out =
        ok(&["validate", s(&fixture("qwen2")), "--golden", s(&golden), "--max-kld", "0", "--min-top1", "1", "--json"]);
    let v = json(&out);
    assert_eq!(v["verdict"]["pass"], true);
    assert_eq!(v["overall"]["kld"]["max"], 0.0);
    assert_eq!(v["overall"]["top1"], 1.0);
    assert_eq!(v["overall"]["perplexity"]["ratio"], 1.0);
    assert_eq!(v["golden"]["lengths"].as_array().unwrap().len(), 3);
    let checks = v["checks"].to_string();
    assert!(
        checks.contains("model shape fingerprint matches") && checks.contains("tokenizer fingerprint matches"),
        "{checks}"
    );

    // The golden file as a safetensors logits dump of itself (its tokens are checked too).
    let v = json(&ok(&["validate", s(&golden), "--golden", s(&golden), "--max-kld", "0", "--json"]));
    assert_eq!(v["overall"]["kld"]["max"], 0.0);

    let g = Checkpoint::open(&golden).unwrap();
    let meta = &g.st_metadata;
    assert_eq!(meta["recast_golden_version"], "1");
    assert!(meta["model_fingerprint"].starts_with("sha256:") && meta["tokenizer_fingerprint"].starts_with("sha256:"));
    assert!(meta["regenerate"].starts_with("recast golden "));
}

#[test]
fn text_prompts_encode_like_transformers() {
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixture("llama").join("tokenizer_cases.json")).unwrap()).unwrap();
    let case = &cases[0];
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("p.jsonl");
    std::fs::write(&prompts, serde_json::json!({ "text": case["text"] }).to_string()).unwrap();
    let golden = tmp.path().join("g.safetensors");
    ok(&["golden", s(&fixture("llama")), "-o", s(&golden), "--prompts", s(&prompts)]);
    let ck = Checkpoint::open(&golden).unwrap();
    let t = ck.get("tokens").unwrap();
    let ids: Vec<u64> = ck.bytes(t).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u64).collect();
    let want: Vec<u64> = case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ids, want, "HF ids of {:?} (with BOS)", case["text"]);
}

#[test]
fn perturbed_weights_fail_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    reference_prompts("qwen2", &prompts);
    let golden = tmp.path().join("golden.safetensors");
    ok(&["golden", s(&fixture("qwen2")), "-o", s(&golden), "--prompts", s(&prompts)]);
    let model = tmp.path().join("perturbed");
    perturbed_copy("qwen2", "model.layers.0.mlp.down_proj.weight", 4.0, &model);

    let report = tmp.path().join("report.md");
    let out = recast(&[
        "validate",
        s(&model),
        "--golden",
        s(&golden),
        "--max-kld",
        "0.001",
        "--report",
        s(&report),
        "--json",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["verdict"]["pass"], false);
    let kld = v["overall"]["kld"]["mean"].as_f64().unwrap();
    assert!(kld > 0.001, "mean KLD {kld}");
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.starts_with("# recast validate: FAIL"), "{md}");
    assert!(md.contains("## Worst positions") && md.contains("mean KLD"), "{md}");

    // Without thresholds the same comparison passes (nothing to fail).
    let out = recast(&["validate", s(&model), "--golden", s(&golden)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn gguf_of_the_same_model_matches_fingerprints_and_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(&prompts, TEXT_PROMPTS).unwrap();
    for arch in ["qwen2", "llama"] {
        let golden = tmp.path().join(format!("{arch}.golden"));
        ok(&["golden", s(&fixture(arch)), "-o", s(&golden), "--prompts", s(&prompts)]);
        let gguf = tmp.path().join(format!("{arch}.gguf"));
        ok(&["convert", s(&fixture(arch)), "-o", s(&gguf), "--dtype", "f32"]);
        let v = json(&ok(&["validate", s(&gguf), "--golden", s(&golden), "--max-kld", "1e-9", "--json"]));
        assert!(v["checks"].to_string().contains("tokenizer fingerprint matches"), "{arch}: {}", v["checks"]);
        assert_eq!(v["overall"]["top1"], 1.0, "{arch}");
    }
}

#[test]
fn compact_golden_scores_like_the_full_one() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    reference_prompts("qwen2", &prompts);
    let full = tmp.path().join("full.safetensors");
    let compact = tmp.path().join("top32.safetensors");
    ok(&["golden", s(&fixture("qwen2")), "-o", s(&full), "--prompts", s(&prompts)]);
    ok(&["golden", s(&fixture("qwen2")), "-o", s(&compact), "--prompts", s(&prompts), "--compact", "topk=32"]);
    assert!(std::fs::metadata(&compact).unwrap().len() < std::fs::metadata(&full).unwrap().len() / 3);

    let v = json(&ok(&["validate", s(&fixture("qwen2")), "--golden", s(&compact), "--max-kld", "0", "--json"]));
    assert_eq!(v["overall"]["kld"]["max"], 0.0, "identical model against the compact form");
    assert_eq!(v["golden"]["form"], "topk=32");

    let model = tmp.path().join("perturbed");
    perturbed_copy("qwen2", "model.layers.1.self_attn.o_proj.weight", 3.0, &model);
    let a = json(&recast(&["validate", s(&model), "--golden", s(&full), "--json"]));
    let b = json(&recast(&["validate", s(&model), "--golden", s(&compact), "--json"]));
    let (ka, kb) = (a["overall"]["kld"]["mean"].as_f64().unwrap(), b["overall"]["kld"]["mean"].as_f64().unwrap());
    assert!(kb <= ka && kb > 0.3 * ka, "compact mean KLD {kb} vs full {ka}");
    assert_eq!(a["overall"]["top1"], b["overall"]["top1"]);
    assert_eq!(a["overall"]["perplexity"], b["overall"]["perplexity"]);

    let out = recast(&["validate", s(&compact), "--golden", s(&full)]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("compact golden"), "{}", stderr(&out));
}

#[test]
fn another_model_or_tokenizer_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(&prompts, TEXT_PROMPTS).unwrap();
    let golden = tmp.path().join("golden.safetensors");
    ok(&["golden", s(&fixture("qwen2")), "-o", s(&golden), "--prompts", s(&prompts)]);

    let out = recast(&["validate", s(&fixture("llama")), "--golden", s(&golden)]);
    assert_eq!(code(&out), 2);
    let e = stderr(&out);
    assert!(e.contains("model differs") && e.contains("hidden_size"), "{e}");

    let model = tmp.path().join("other-tokenizer");
    perturbed_copy("qwen2", "none", 1.0, &model);
    std::fs::copy(fixture("smollm").join("tokenizer.json"), model.join("tokenizer.json")).unwrap();
    let out = recast(&["validate", s(&model), "--golden", s(&golden)]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("tokenizer differs"), "{}", stderr(&out));
}

fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", dims.join(", ")).into_bytes();
    let pad = (64 - (10 + h.len() + 1) % 64) % 64;
    h.resize(h.len() + pad, b' ');
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(path, out).unwrap();
}

fn fixture_candidate() -> Vec<f32> {
    let bytes = std::fs::read(metrics_fixture("candidate_f32.npy")).unwrap();
    let n = 2 * 7 * 64;
    bytes[bytes.len() - n * 4..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn bad_dumps_and_goldens_exit_2_with_a_precise_message() {
    let golden = metrics_fixture("golden.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<usize>, Vec<f32>, &str)> = vec![
        ("vocab.npy", vec![2, 7, 63], vec![0.0; 2 * 7 * 63], "vocabulary size differs: golden 64, candidate 63"),
        ("seq.npy", vec![2, 6, 64], vec![0.0; 2 * 6 * 64], "positions per sequence differs"),
        ("n.npy", vec![7, 64], vec![0.0; 7 * 64], "number of sequences differs: golden 2, candidate 1"),
    ];
    for (name, shape, values, msg) in cases {
        let p = tmp.path().join(name);
        write_npy(&p, &shape, &values);
        let out = recast(&["validate", s(&p), "--golden", s(&golden)]);
        assert_eq!(code(&out), 2, "{name}");
        assert!(stderr(&out).contains(msg), "{name}: {}", stderr(&out));
    }
    // A truncated dump and a truncated golden.
    let p = tmp.path().join("short.npy");
    let bytes = std::fs::read(metrics_fixture("candidate_f32.npy")).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let out = recast(&["validate", s(&p), "--golden", s(&golden)]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("data is 3574 bytes, but shape [2, 7, 64] of F32 needs 3584"), "{}", stderr(&out));
    let g = tmp.path().join("short.safetensors");
    let bytes = std::fs::read(&golden).unwrap();
    std::fs::write(&g, &bytes[..bytes.len() - 100]).unwrap();
    let out = recast(&["validate", s(&metrics_fixture("candidate_f32.npy")), "--golden", s(&g)]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("short.safetensors"), "{}", stderr(&out));
    // Threshold flags are checked.
    let out = recast(&["validate", s(&p), "--golden", s(&golden), "--min-top1", "99"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn nan_in_a_dump_fails_with_its_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let mut v = fixture_candidate();
    v[(7 + 2) * 64 + 11] = f32::NAN; // prompt 1, position 2, vocab index 11
    let p = tmp.path().join("nan.npy");
    write_npy(&p, &[2, 7, 64], &v);
    let report = tmp.path().join("r.md");
    let out = recast(&[
        "validate",
        s(&p),
        "--golden",
        s(&metrics_fixture("golden.safetensors")),
        "--report",
        s(&report),
        "--json",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let j = json(&out);
    assert_eq!(j["non_finite"], serde_json::json!([{"prompt": 1, "position": 2, "count": 1, "first_index": 11}]));
    assert_eq!(j["overall"]["positions"], 11);
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("## Non-finite candidate logits") && md.contains("| 1 | 2 | 1 | 11 |"), "{md}");
}

#[test]
fn cli_numbers_agree_with_numpy() {
    let want: Value = serde_json::from_slice(&std::fs::read(metrics_fixture("expected.json")).unwrap()).unwrap();
    for (file, key) in [("candidate_f32.npy", "f32"), ("candidate_bf16.npy", "bf16"), ("candidate.safetensors", "f32")]
    {
        let out = ok(&[
            "validate",
            s(&metrics_fixture(file)),
            "--golden",
            s(&metrics_fixture("golden.safetensors")),
            "--json",
        ]);
        let v = json(&out);
        for (got, want) in [
            (&v["overall"]["kld"]["mean"], &want[key]["overall"]["kld"]["mean"]),
            (&v["overall"]["kld"]["p99"], &want[key]["overall"]["kld"]["p99"]),
            (&v["overall"]["dp_top"]["rms"], &want[key]["overall"]["dp_top"]["rms"]),
            (&v["overall"]["perplexity"]["ratio"], &want[key]["overall"]["ppl_ratio"]),
        ] {
            let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-9 * w.abs(), "{file}: {g} vs numpy {w}");
        }
    }
}

fn scrub(text: &str, dir: &Path) -> String {
    text.replace(s(dir), "[TMP]").replace(env!("CARGO_PKG_VERSION"), "[VERSION]")
}

#[test]
fn markdown_report_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report.md");
    let out = recast(&[
        "validate",
        s(&metrics_fixture("candidate_f32.npy")),
        "--golden",
        s(&metrics_fixture("golden.safetensors")),
        "--tokenizer",
        s(&fixture("qwen2").join("tokenizer.json")),
        "--max-kld",
        "0.1",
        "--min-top1",
        "0.8",
        "--worst",
        "5",
        "--report",
        s(&report),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    insta::assert_snapshot!("report_metrics_fixture", scrub(&std::fs::read_to_string(&report).unwrap(), tmp.path()));
    insta::assert_snapshot!("summary_metrics_fixture", String::from_utf8(out.stdout).unwrap());
}

/// The report's noise-floor table (validate/src/report.rs NOISE_FLOOR, docs/metrics.md) is
/// re-measured here: qwen2, the two reference prompts (24 positions).
#[test]
fn noise_floor_matches_the_documented_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    reference_prompts("qwen2", &prompts);
    let golden = tmp.path().join("golden.safetensors");
    ok(&["golden", s(&fixture("qwen2")), "-o", s(&golden), "--prompts", s(&prompts)]);
    let measure = |candidate: &Path, golden: &Path| {
        let v = json(&ok(&["validate", s(candidate), "--golden", s(golden), "--json"]));
        let o = &v["overall"];
        (o["kld"]["mean"].as_f64().unwrap(), o["kld"]["max"].as_f64().unwrap(), o["top1"].as_f64().unwrap())
    };
    let mut got = vec![
        measure(&fixture("qwen2"), &golden),
        measure(&fixture("qwen2"), &fixture("qwen2").join("reference.safetensors")),
    ];
    for dtype in ["f16", "bf16"] {
        let m = tmp.path().join(dtype);
        ok(&["convert", s(&fixture("qwen2")), "-o", s(&m), "--dtype", dtype]);
        got.push(measure(&m, &golden));
    }
    let table: Vec<_> =
        recast_validate::report::NOISE_FLOOR.iter().filter(|r| r.model == recast_validate::report::TINY).collect();
    assert_eq!(got.len(), table.len());
    for (row, (mean, max, top1)) in table.iter().zip(got) {
        let near = |a: f64, b: f64| if b == 0.0 { a == 0.0 } else { a > b / 3.0 && a < b * 3.0 };
        assert!(near(mean, row.mean_kld) && near(max, row.max_kld), "{}: measured mean {mean:e} max {max:e}", row.what);
        assert_eq!(top1, row.top1, "{}", row.what);
    }
}
