//! `recast run`: pipelines end to end on the tiny fixture — verdicts, crash safety (SIGKILL at
//! many points, then a rerun gives the bytes of an uninterrupted run), `--shard K/N` merges,
//! a full disk, and bad pipeline files.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recast"))
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// A pipeline over the tiny SmolLM fixture with three targets; the safetensors targets are
/// split into several shards so `--shard` has files to distribute.
fn pipeline(dir: &Path, fp8_max_kld: f64) -> PathBuf {
    let yaml = format!(
        r#"name: test
source: {src}
golden:
  prompts: {prompts}
targets:
  - name: cpu-q8_0
    recipe: cpu-gguf-q8_0
    validation: {{max_kld: 0.05, min_top1: 0.8}}
  - name: h100-fp8
    recipe: nvidia-h100-fp8-block
    max_shard_size: 60KB
    validation: {{max_kld: {fp8_max_kld}, min_top1: 0.0}}
  - name: ascend-w8a8
    recipe: ascend-910b-w8a8-dynamic
    max_shard_size: 100KB
"#,
        src = repo("tests/fixtures/tiny/smollm").display(),
        prompts = repo("examples/quickstart-prompts.jsonl").display(),
    );
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

fn run(pipeline: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = bin();
    c.arg("run").arg(pipeline).arg("--out").arg(out).args(extra).args(["--threads", "1"]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// sha256 of every file under `root`, outside the work directory `.recast`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".recast" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, format!("{:x}", Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn ok(o: &Output) {
    assert!(o.status.success(), "status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, text(&o.stdout), text(&o.stderr));
}

struct Reference {
    _dir: tempfile::TempDir,
    pipeline: PathBuf,
    tree: BTreeMap<String, String>,
}

fn reference() -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), 0.05);
    let out = dir.path().join("out");
    let o = run(&p, &out, &[], &[]);
    ok(&o);
    let tree = tree(&out);
    Reference { _dir: dir, pipeline: p, tree }
}

#[test]
fn quickstart_prints_the_verdict_table_and_a_rerun_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let o = run(&repo("examples/quickstart.yaml"), &out, &[], &[]);
    ok(&o);
    let stdout = text(&o.stdout);
    assert!(stdout.contains("target") && stdout.contains("verdict"), "{stdout}");
    for t in ["cpu-q4_k_m", "h100-fp8", "ascend-w8a8"] {
        let line = stdout.lines().find(|l| l.starts_with(t)).unwrap_or_else(|| panic!("no row for {t}:\n{stdout}"));
        assert!(line.contains("PASS"), "{line}");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(t).join("recast-manifest.json")).unwrap()).unwrap();
        assert_eq!(m["validation"]["verdict"], "pass");
        assert!(m["validation"]["summary"]["overall"]["kld"]["mean"].as_f64().unwrap() > 0.0);
        assert_eq!(
            m["files"].as_array().unwrap().iter().filter(|f| f["sha256"].as_str().unwrap().len() == 64).count(),
            m["files"].as_array().unwrap().len()
        );
        assert!(out.join(t).join("validation.md").is_file());
    }
    assert!(out.join("cpu-q4_k_m/cpu-q4_k_m.gguf").is_file());
    assert!(out.join("golden.safetensors").is_file());
    let before = tree(&out);
    let again = run(&repo("examples/quickstart.yaml"), &out, &["--resume"], &[]);
    ok(&again);
    assert_eq!(text(&again.stderr).matches("already done").count(), 3, "{}", text(&again.stderr));
    assert_eq!(tree(&out), before);
}

#[test]
fn sigkill_at_any_point_then_rerun_gives_the_bytes_of_an_uninterrupted_run() {
    let r = reference();
    // Points in run order. The engine passes `engine-layer` twice per forward (2 layers):
    // hits 1-2 are the golden, 3-4 the first validation.
    let points = [
        "run-start",
        "golden-start",
        "engine-layer:1",
        "unit-start:1",
        "quantize-write:3",
        "quantize-write:40",
        "unit-journaled:1",
        "validate-start:1",
        "engine-layer:4",
        "before-promote:1",
        "after-promote:1",
        "unit-start:3",
        "quantize-write:90",
        "before-promote:3",
    ];
    for point in points {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = run(&r.pipeline, &out, &[], &[("RECAST_FAILPOINT", point)]);
        assert_eq!(o.status.signal(), Some(9), "{point}: expected SIGKILL, got {:?}\n{}", o.status, text(&o.stderr));
        // Whatever is at a final path is complete: byte-identical to the uninterrupted run's.
        for (name, hash) in tree(&out) {
            assert!(!name.ends_with(".partial"), "{point}: stray {name}");
            assert_eq!(r.tree.get(&name), Some(&hash), "{point}: {name} differs from the uninterrupted run");
        }
        let again = run(&r.pipeline, &out, &["--resume"], &[]);
        ok(&again);
        assert_eq!(tree(&out), r.tree, "{point}: rerun output differs");
    }
}

#[test]
fn killed_twice_then_finished() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for point in ["quantize-write:50", "engine-layer:3", "before-promote:1"] {
        let o = run(&r.pipeline, &out, &[], &[("RECAST_FAILPOINT", point)]);
        assert_eq!(o.status.signal(), Some(9), "{point}");
    }
    ok(&run(&r.pipeline, &out, &[], &[]));
    assert_eq!(tree(&out), r.tree);
}

#[test]
fn shards_merge_to_the_bytes_of_a_single_process_run() {
    let r = reference();
    for n in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let children: Vec<_> = (0..n)
            .map(|k| {
                bin()
                    .arg("run")
                    .arg(&r.pipeline)
                    .arg("--out")
                    .arg(&out)
                    .arg("--shard")
                    .arg(format!("{k}/{n}"))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            ok(&c.wait_with_output().unwrap());
        }
        ok(&run(&r.pipeline, &out, &["--finalize"], &[]));
        assert_eq!(tree(&out), r.tree, "{n} shards");
    }
}

#[test]
fn finalize_refuses_while_a_shard_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), 0.05);
    let out = dir.path().join("out");
    ok(&run(&p, &out, &["--shard", "0/3"], &[]));
    let o = run(&p, &out, &["--finalize"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("not written yet") && err.contains("(shard 1/3)"), "{err}");
    assert!(!out.join("cpu-q8_0").exists() && !out.join("h100-fp8").exists());
}

#[test]
fn a_failing_target_is_rejected_not_promoted_and_a_rerun_with_new_limits_revalidates() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), 0.0);
    let out = dir.path().join("out");
    let o = run(&p, &out, &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("h100-fp8") && l.contains("FAIL")), "{stdout}");
    assert!(!out.join("h100-fp8").exists());
    assert!(out.join("rejected/h100-fp8/model-00001-of-00003.safetensors").is_file());
    assert!(out.join("cpu-q8_0/cpu-q8_0.gguf").is_file());
    // Loosened limits: the same files are validated again (not rewritten) and promoted.
    let p = pipeline(dir.path(), 0.05);
    let o = run(&p, &out, &[], &[]);
    ok(&o);
    assert!(!text(&o.stderr).contains("quantize h100-fp8"), "{}", text(&o.stderr));
    assert!(out.join("h100-fp8/model-00001-of-00003.safetensors").is_file());
    assert!(!out.join("rejected/h100-fp8").exists());
    assert_eq!(tree(&out), reference().tree);
}

#[test]
fn a_full_disk_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), 0.05);
    let out = dir.path().join("out");
    let o = run(&p, &out, &[], &[("RECAST_FREE_BYTES", "100000")]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("pre-flight: not enough disk space") && err.contains("available"), "{err}");
    assert!(tree(&out).is_empty(), "{:?}", tree(&out));
}

/// A write that fails mid-run (file size limit, as a full disk would): exit 2, nothing partial
/// at a final path, and a rerun with room finishes with the right bytes.
#[test]
fn a_write_error_mid_run_fails_cleanly() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // 200 blocks of 512 bytes: the golden (about 470 KiB) cannot be written.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 200 && exec '{}' run '{}' --out '{}'",
            env!("CARGO_BIN_EXE_recast"),
            r.pipeline.display(),
            out.display()
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("golden"), "{}", text(&o.stderr));
    assert!(tree(&out).is_empty(), "{:?}", tree(&out));
    ok(&run(&r.pipeline, &out, &[], &[]));
    assert_eq!(tree(&out), r.tree);
}

#[test]
fn resume_without_a_journal_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), 0.05);
    let o = run(&p, &dir.path().join("out"), &["--resume"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("nothing to resume"), "{}", text(&o.stderr));
}

#[test]
fn bad_pipeline_files_are_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo("tests/fixtures/tiny/smollm");
    let cases = [
        ("targets: []\n", "golden"),
        (&*format!("source: {}\ngolden: {{prompts: p.jsonl}}\ntargets: []\n", src.display()), "no targets"),
        (
            &*format!("source: {}\ngolden: {{prompts: p.jsonl}}\ntargets: [{{name: a, recipe: no-such}}]\n", src.display()),
            "target 'a': recipe no-such",
        ),
        (
            &*format!(
                "source: {}\ngolden: {{prompts: p.jsonl}}\ntargets: [{{name: a, recipe: cpu-gguf-q8_0, bogus: 1}}]\n",
                src.display()
            ),
            "unknown field `bogus`",
        ),
        (
            &*format!("source: {}\ngolden: {{prompts: p.jsonl, path: g}}\ntargets: [{{name: a, recipe: cpu-gguf-q8_0}}]\n", src.display()),
            "exactly one of `path`",
        ),
        (
            &*format!("source: {}\ngolden: {{prompts: p.jsonl}}\ntargets: [{{name: ../x, recipe: cpu-gguf-q8_0}}]\n", src.display()),
            "directory name",
        ),
        (
            &*format!(
                "source: {}\ngolden: {{prompts: p.jsonl}}\ntargets: [{{name: a, recipe: cpu-gguf-q8_0, validation: {{min_top1: 2}}}}]\n",
                src.display()
            ),
            "min_top1 must be a fraction",
        ),
    ];
    for (yaml, want) in cases {
        let p = dir.path().join("bad.yaml");
        std::fs::write(&p, yaml).unwrap();
        let o = run(&p, &dir.path().join("out"), &[], &[]);
        assert_eq!(o.status.code(), Some(2), "{yaml}");
        assert!(text(&o.stderr).contains(want), "{yaml}: expected '{want}' in\n{}", text(&o.stderr));
    }
}

#[test]
fn dry_run_plan() {
    let o = bin()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "examples/quickstart.yaml", "--dry-run", "--shard", "1/2"])
        .output()
        .unwrap();
    ok(&o);
    insta::assert_snapshot!(text(&o.stdout));
}

#[test]
fn json_events_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), 0.0);
    let o = run(&p, &dir.path().join("out"), &["--json"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let events: Vec<serde_json::Value> =
        text(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"stage_started"));
    assert_eq!(kinds.last(), Some(&"finished"));
    assert_eq!(kinds.iter().filter(|k| **k == "verdict").count(), 3);
    // 1 GGUF file + 3 FP8 shards + 2 Ascend shards.
    assert_eq!(kinds.iter().filter(|k| **k == "unit_done").count(), 6);
    let last = events.last().unwrap();
    assert_eq!(last["exit_code"], 1);
    let fp8 = events.iter().find(|e| e["event"] == "verdict" && e["verdict"]["target"] == "h100-fp8").unwrap();
    assert_eq!(fp8["verdict"]["pass"], false);
    assert_eq!(fp8["verdict"]["path"], "rejected/h100-fp8");
}

/// A low-rank KV target in a pipeline: its calibration statistics come from the target's
/// `calibration` (relative to the pipeline file), are recorded in the manifest, and new
/// statistics make `--resume` rewrite the target's files.
#[test]
fn a_low_rank_kv_target_takes_its_calibration_from_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo("tests/fixtures/tiny/smollm");
    let prompts = repo("examples/quickstart-prompts.jsonl");
    let calibrate = |out: &Path, p: &Path| {
        let o = bin()
            .args(["calibrate", src.to_str().unwrap(), "--prompts", p.to_str().unwrap(), "-o"])
            .arg(out)
            .output()
            .unwrap();
        ok(&o);
    };
    calibrate(&dir.path().join("stats.safetensors"), &prompts);
    let yaml = format!(
        "source: {}\ngolden:\n  prompts: {}\ntargets:\n  - name: kv50\n    recipe: low-rank-kv-50\n    calibration: stats.safetensors\n    validation: {{max_kld: 10.0, min_top1: 0.0}}\n",
        src.display(),
        prompts.display()
    );
    let p = dir.path().join("pipeline.yaml");
    std::fs::write(&p, yaml).unwrap();
    let out = dir.path().join("out");
    ok(&run(&p, &out, &[], &[]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("kv50/recast-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["low_rank_kv"]["method"], "calibrated-joint-svd", "{manifest}");
    let before = tree(&out);
    // Statistics from other text: the target's files are rewritten on resume.
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, "{\"text\": \"A completely different calibration text about lighthouses and tides.\"}\n")
        .unwrap();
    calibrate(&dir.path().join("stats.safetensors"), &other);
    ok(&run(&p, &out, &["--resume"], &[]));
    let after = tree(&out);
    assert_ne!(before["kv50/model.safetensors"], after["kv50/model.safetensors"]);
    // A calibration for a recipe without the step is refused.
    std::fs::write(&p, std::fs::read_to_string(&p).unwrap().replace("low-rank-kv-50", "cpu-gguf-q8_0")).unwrap();
    let o = run(&p, &dir.path().join("out2"), &[], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("`calibration` is for low_rank_kv recipes"), "{}", text(&o.stderr));
}
