//! `recast run`: a release pipeline — golden logits from the source, then for every target
//! quantize, validate against the golden, and promote only what passed.
//!
//! Output root:
//!
//! ```text
//! OUT/golden.safetensors        golden logits (when the pipeline gives prompts)
//! OUT/TARGET/                   a target that passed: its files, recast-manifest.json, validation.md
//! OUT/rejected/TARGET/          a target that failed its thresholds (never at OUT/TARGET)
//! OUT/.recast/                  journal*.jsonl, locks, staging/TARGET/ (work in progress)
//! ```
//!
//! Work is split into units — the golden, each output file of each target (a GGUF file or a
//! safetensors shard), each target's validation and promotion — and each completed unit is
//! journaled with a fingerprint of what it depends on. A rerun skips completed units and redoes
//! the rest; every file is written under a temporary name and renamed, and a target's directory
//! only appears at its final path by one rename after validation, so a crash at any moment
//! leaves nothing partial at a final path and the finished run's bytes are those of an
//! uninterrupted one. `--shard K/N` writes only share K of the output files (a deterministic
//! function of the plan); a final run without `--shard` (or with `--finalize`) does the rest.

pub mod journal;
pub mod progress;
pub mod spec;
pub mod system;

use crate::cmd::{golden as gcmd, validate as vcmd};
use crate::size::human;
use anyhow::{bail, Context, Result};
use journal::Journal;
use progress::Events;
use recast_convert::failpoint;
use recast_convert::Checkpoint;
use recast_quantize::job::{self, QuantPlan, WeightReport};
use recast_validate::golden::{Form, Golden};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use spec::{GoldenSource, Pipeline};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const WORK_DIR: &str = ".recast";
const GOLDEN_FILE: &str = "golden.safetensors";
const REPORT_FILE: &str = "validation.md";
const REJECTED_DIR: &str = "rejected";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based, as Kubernetes' JOB_COMPLETION_INDEX and Slurm's SLURM_ARRAY_TASK_ID (--array=0-(N-1)).
    pub k: usize,
    pub n: usize,
}

pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let err = || format!("expected K/N with 0 ≤ K < N (K is 0-based), found '{s}'");
    let (k, n) = s.split_once('/').ok_or_else(err)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| err())?, n.trim().parse().map_err(|_| err())?);
    if n == 0 || k >= n {
        return Err(err());
    }
    Ok(Shard { k, n })
}

#[derive(Debug, Default)]
pub struct Options {
    /// Require an existing journal (a plain run resumes too; this says it must).
    pub resume: bool,
    pub shard: Option<Shard>,
    /// Do everything but the output files, which shard runs must have written.
    pub finalize: bool,
    pub dry_run: bool,
    pub json: bool,
    pub threads: usize,
}

/// One output file of one target: the unit of work `--shard` distributes.
struct FileUnit {
    target: usize,
    file: usize,
    name: String,
    bytes: u64,
    fingerprint: String,
    shard: usize,
}

impl FileUnit {
    fn id(&self, p: &Pipeline) -> String {
        format!("file/{}/{}", p.targets[self.target].name, self.name)
    }
}

struct Work<'a> {
    p: &'a Pipeline,
    ck: &'a Checkpoint,
    plans: Vec<QuantPlan>,
    units: Vec<FileUnit>,
    /// The source's fingerprint (structure, file sizes and mtimes).
    src_fp: String,
    /// Per target: everything its files depend on.
    target_fp: Vec<String>,
    root: PathBuf,
    work: PathBuf,
}

fn sha(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    format!("{:x}", h.finalize())
}

/// The source's structure fingerprint plus the size and modification time of its files, so an
/// edited source invalidates journaled units without reading every weight.
fn source_fingerprint(ck: &Checkpoint) -> Result<String> {
    let mut parts = vec![job::source_fingerprint(ck)];
    let files: Vec<PathBuf> = if ck.path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&ck.path)
            .with_context(|| format!("reading {}", ck.path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![ck.path.clone()]
    };
    for f in files {
        parts.push(file_stamp(&f)?);
    }
    let refs: Vec<&[u8]> = parts.iter().map(|s| s.as_bytes()).collect();
    Ok(sha(&refs))
}

/// `name:size:mtime` of a file: what a rerun compares to decide a file is unchanged.
fn file_stamp(f: &Path) -> Result<String> {
    let m = std::fs::metadata(f).with_context(|| format!("reading {}", f.display()))?;
    let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    Ok(format!("{}:{}:{}", f.file_name().unwrap_or_default().to_string_lossy(), m.len(), mtime.as_nanos()))
}

fn staging(work: &Path, target: &str) -> PathBuf {
    work.join("staging").join(target)
}

/// Where a target's plan writes inside its directory: the GGUF file, or the directory itself.
fn plan_out(dir: &Path, target: &str, layout_gguf: bool) -> PathBuf {
    if layout_gguf {
        dir.join(format!("{target}.gguf"))
    } else {
        dir.to_path_buf()
    }
}

/// The share of each unit (by its bytes) among `n`: longest first to the least loaded share
/// (ties to the lower share), deterministic and balanced to within the largest unit.
fn assign_shards(bytes: &[u64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bytes.len()).collect();
    order.sort_by(|&a, &b| bytes[b].cmp(&bytes[a]).then(a.cmp(&b)));
    let mut load = vec![0u64; n];
    let mut shard = vec![0; bytes.len()];
    for i in order {
        let s = (0..n).min_by_key(|&s| (load[s], s)).expect("n ≥ 1");
        load[s] += bytes[i];
        shard[i] = s;
    }
    shard
}

/// What a target's files depend on in its low-rank KV step beyond the recipe: the ranks, the
/// calibration statistics' model fingerprint and token count, and the statistics file itself.
fn low_rank_identity(kv: &recast_quantize::lowrank_kv::KvPlan) -> Result<String> {
    let stats = kv.stats.as_ref().map(|s| file_stamp(&s.path)).transpose()?;
    Ok(format!("{} {}", kv.extension(), stats.unwrap_or_default()))
}

fn plan_work<'a>(p: &'a Pipeline, ck: &'a Checkpoint, shards: usize) -> Result<Work<'a>> {
    let root = p.out.clone();
    let work = root.join(WORK_DIR);
    let src_fp = source_fingerprint(ck)?;
    let mut plans = Vec::new();
    let mut units = Vec::new();
    let mut target_fp = Vec::new();
    for (ti, t) in p.targets.iter().enumerate() {
        let gguf = t.recipe.layout == recast_quantize::recipe::LayoutKind::Gguf;
        let out = plan_out(&staging(&work, &t.name), &t.name, gguf);
        let opts = job::Options { max_shard_size: t.max_shard_size, calibration: t.calibration.clone() };
        let plan = job::plan(ck, &t.recipe, &out, &opts).with_context(|| {
            format!("target '{}': planning {} with recipe {}", t.name, p.source.display(), t.recipe.name)
        })?;
        let fp = sha(&[
            VERSION.as_bytes(),
            src_fp.as_bytes(),
            t.name.as_bytes(),
            plan.recipe.hash().as_bytes(),
            format!("{:?}", t.max_shard_size).as_bytes(),
            // Statistics are identified by the model they were collected on and their size.
            plan.low_rank.as_ref().map(low_rank_identity).transpose()?.unwrap_or_default().as_bytes(),
        ]);
        for (fi, (name, bytes)) in job::weight_files(&plan).into_iter().enumerate() {
            let fingerprint = sha(&[fp.as_bytes(), name.as_bytes(), &bytes.to_le_bytes()]);
            units.push(FileUnit { target: ti, file: fi, name, bytes, fingerprint, shard: 0 });
        }
        target_fp.push(fp);
        plans.push(plan);
    }
    let bytes: Vec<u64> = units.iter().map(|u| u.bytes).collect();
    for (u, s) in units.iter_mut().zip(assign_shards(&bytes, shards)) {
        u.shard = s;
    }
    Ok(Work { p, ck, plans, units, src_fp, target_fp, root, work })
}

/// A rough peak-memory estimate: quantizing holds a weight in f32, its source bytes and two
/// weights' encodings; validating holds one layer in f32 plus embeddings and logits.
fn memory_estimate(w: &Work) -> u64 {
    let quant =
        w.plans.iter().flat_map(|p| p.weights.iter()).map(|wp| wp.numel() * 4 * 2 + wp.bytes() * 2).max().unwrap_or(0);
    let mut per_layer: std::collections::BTreeMap<String, u64> = Default::default();
    for t in &w.ck.tensors {
        let numel: u64 = t.shape.iter().product();
        let key = match t.name.split('.').collect::<Vec<_>>().as_slice() {
            [_, "layers", l, ..] | ["blk", l, ..] => format!("layer {l}"),
            _ => t.name.clone(),
        };
        *per_layer.entry(key).or_default() += numel * 4;
    }
    let mut sizes: Vec<u64> = per_layer.values().copied().collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    // Logits of the golden and of a candidate: positions (bounded by a third of the prompt
    // file's bytes) × vocabulary × f32, twice.
    let vocab = w.plans.first().map_or(0, |p| p.config.vocab_size);
    let positions = match &w.p.golden {
        GoldenSource::Prompts { prompts, .. } => std::fs::metadata(prompts).map_or(0, |m| m.len() / 3),
        GoldenSource::File(g) => std::fs::metadata(g).map_or(0, |m| m.len() / (4 * vocab.max(1))),
    };
    let engine: u64 = sizes.iter().take(3).sum::<u64>() + positions * vocab * 4 * 2;
    quant.max(engine)
}

fn check_disk(w: &Work, pending: u64, ev: &mut Events) -> Result<()> {
    let free = system::free_bytes(&w.root)?;
    // Journal, manifests and reports are small; keep a margin for them and the filesystem.
    let need = pending + pending / 100 + (1 << 20);
    let where_ = system::existing_ancestor(&w.root);
    if need > free {
        bail!(
            "pre-flight: not enough disk space for {}: this run writes about {} more, and {} has {} available; free some space or choose another --out",
            w.root.display(),
            human(need),
            where_.display(),
            human(free)
        );
    }
    ev.say(&format!("pre-flight: {} to write, {} available at {}", human(pending), human(free), where_.display()));
    Ok(())
}

fn check_memory(w: &Work, ev: &mut Events) {
    let est = memory_estimate(w);
    match system::available_memory() {
        Some(avail) if est > avail => ev.say(&format!(
            "warning: pre-flight: peak memory is estimated at {}, more than the {} available; expect swapping",
            human(est),
            human(avail)
        )),
        Some(avail) => ev.say(&format!("pre-flight: peak memory about {} ({} available)", human(est), human(avail))),
        None => ev.say(&format!("pre-flight: peak memory about {}", human(est))),
    }
}

/// Removes files a killed writer left under temporary names (`*.partial`) in `dir`.
fn clean_partials(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "partial") {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Is the unit's file in place, as journaled?
fn file_done<'j>(j: &'j Journal, w: &Work, u: &FileUnit) -> Option<&'j journal::Record> {
    let r = j.done(&u.id(w.p), &u.fingerprint)?;
    let path = staging(&w.work, &w.p.targets[u.target].name).join(&u.name);
    let size = std::fs::metadata(&path).ok()?.len();
    (size == u.bytes && r.data["bytes"].as_u64() == Some(size)).then_some(r)
}

fn write_file_units(w: &Work, j: &mut Journal, ev: &mut Events, which: &[usize], stage: &str) -> Result<()> {
    let total: u64 = which.iter().map(|&i| w.units[i].bytes).sum();
    if which.is_empty() {
        return Ok(());
    }
    ev.stage_start(stage, None, Some(total));
    let (mut wrote, mut skipped) = (0usize, 0usize);
    for &i in which {
        let u = &w.units[i];
        let id = u.id(w.p);
        if file_done(j, w, u).is_some() {
            ev.advance(u.bytes, true);
            ev.unit_done(&id, u.bytes, true);
            skipped += 1;
            continue;
        }
        let plan = &w.plans[u.target];
        let dir = staging(&w.work, &w.p.targets[u.target].name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let sizes: std::collections::HashMap<&str, u64> =
            plan.weights.iter().map(|wp| (wp.name.as_str(), wp.bytes())).collect();
        let mut last = 0u64;
        let mut progress = |name: &str, _: usize, _: usize| {
            let b = sizes.get(name).copied().unwrap_or(0);
            ev.advance(last, false);
            last = b;
        };
        failpoint::hit("unit-start");
        let written = job::execute_files(w.ck, plan, &[u.file], &mut progress)
            .with_context(|| format!("target '{}': writing {}", w.p.targets[u.target].name, u.name))?;
        ev.advance(last, false);
        let (_, bytes, sha256) = written.files.into_iter().next().expect("one file written");
        let reports: Vec<Json> =
            written.reports.into_iter().map(|(wi, r)| json!({"weight": wi, "report": r})).collect();
        j.record(&id, &u.fingerprint, json!({"bytes": bytes, "sha256": sha256, "weights": reports}))?;
        failpoint::hit("unit-journaled");
        ev.unit_done(&id, bytes, false);
        wrote += 1;
    }
    ev.stage_end(&format!("{wrote} file(s) written, {skipped} already done"));
    Ok(())
}

/// A row of the verdict table (also stored in the journal and manifest).
fn verdict_row(name: &str, plan: &QuantPlan, bytes: u64, v: &Json, path: &Path) -> Json {
    let overall = &v["overall"];
    json!({
        "target": name,
        "recipe": plan.recipe.name,
        "hardware": plan.recipe.target.hardware,
        "layout": plan.recipe.layout.name(),
        "bytes": bytes,
        "bits_per_weight": plan.weights.iter().map(|w| w.bytes()).sum::<u64>() as f64 * 8.0 / plan.total_params().max(1) as f64,
        "kld": overall["kld"]["mean"],
        "top1": overall["top1"],
        "thresholds": v["thresholds"],
        "pass": v["verdict"]["pass"],
        "path": path.display().to_string(),
    })
}

/// Moves `dir` aside into the work area and deletes it (an earlier run's output being replaced).
fn discard(work: &Path, dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let trash = work.join("trash");
    std::fs::create_dir_all(&trash).with_context(|| format!("creating {}", trash.display()))?;
    let mut t = trash.join(dir.file_name().unwrap_or_default());
    let mut i = 0;
    while t.exists() {
        i += 1;
        t = trash.join(format!("{}.{i}", dir.file_name().unwrap_or_default().to_string_lossy()));
    }
    std::fs::rename(dir, &t).with_context(|| format!("moving aside {}", dir.display()))?;
    std::fs::remove_dir_all(&t).with_context(|| format!("removing {}", t.display()))?;
    Ok(())
}

fn sync_dir(d: &Path) {
    if let Ok(f) = std::fs::File::open(d) {
        let _ = f.sync_all();
    }
}

/// The manifest in `dir`, if there is a readable one.
fn read_manifest(dir: &Path) -> Option<Json> {
    serde_json::from_slice(&std::fs::read(dir.join(job::MANIFEST_FILE)).ok()?).ok()
}

/// A `run` field of the manifest in `dir`.
fn manifest_run(dir: &Path, key: &str) -> Option<String> {
    read_manifest(dir)?["run"][key].as_str().map(str::to_string)
}

/// A promoted (or rejected) output of an earlier run whose files this run would write
/// identically; only when nothing is being staged for the target.
fn reusable_final(w: &Work, ti: usize) -> Option<PathBuf> {
    let t = &w.p.targets[ti];
    if staging(&w.work, &t.name).exists() {
        return None;
    }
    [w.root.join(&t.name), w.root.join(REJECTED_DIR).join(&t.name)]
        .into_iter()
        .find(|d| manifest_run(d, "target_fingerprint").as_deref() == Some(w.target_fp[ti].as_str()))
}

/// Quantized, validated, promoted: one target after its files exist.
fn finish_target(
    w: &Work,
    ti: usize,
    j: &mut Journal,
    ev: &mut Events,
    golden: &(PathBuf, String),
    threads: usize,
) -> Result<Json> {
    let t = &w.p.targets[ti];
    let plan = &w.plans[ti];
    let vfp = sha(&[w.target_fp[ti].as_bytes(), golden.1.as_bytes(), serde_json::to_string(&t.thresholds)?.as_bytes()]);
    let passed_dir = w.root.join(&t.name);
    let rejected_dir = w.root.join(REJECTED_DIR).join(&t.name);
    let promote_id = format!("promote/{}", t.name);
    // Done before (possibly renamed into place just before a crash stopped the journal record).
    for dir in [&passed_dir, &rejected_dir] {
        let Some(m) = read_manifest(dir) else { continue };
        if m["run"]["fingerprint"].as_str() == Some(vfp.as_str()) {
            let row = m["run"]["verdict_row"].clone();
            if j.done(&promote_id, &vfp).is_none() {
                j.record(&promote_id, &vfp, row.clone())?;
            }
            ev.say(&format!("{}: already done ({})", t.name, dir.display()));
            ev.verdict(row.clone());
            return Ok(row);
        }
    }
    // Same files, new golden or thresholds: take the files back to validate them again.
    let dir = staging(&w.work, &t.name);
    if let Some(prev) = reusable_final(w, ti) {
        std::fs::create_dir_all(dir.parent().expect("staging parent"))?;
        std::fs::rename(&prev, &dir).with_context(|| format!("moving {} back to {}", prev.display(), dir.display()))?;
    }
    let missing: Vec<usize> =
        (0..w.units.len()).filter(|&i| w.units[i].target == ti && file_done(j, w, &w.units[i]).is_none()).collect();
    write_file_units(w, j, ev, &missing, &format!("quantize {}", t.name))?;

    job::write_extras(plan).with_context(|| format!("target '{}': writing side files", t.name))?;

    // Per-weight reports and file hashes from the file units' journal records.
    let mut reports: Vec<Option<WeightReport>> = vec![None; plan.weights.len()];
    let mut files: Vec<(String, u64, String)> = Vec::new();
    for u in w.units.iter().filter(|u| u.target == ti) {
        let r = file_done(j, w, u).with_context(|| format!("unit {} is not done", u.id(w.p)))?;
        files.push((
            u.name.clone(),
            r.data["bytes"].as_u64().unwrap_or(0),
            r.data["sha256"].as_str().unwrap_or("").into(),
        ));
        for e in r.data["weights"].as_array().into_iter().flatten() {
            let wi = e["weight"].as_u64().context("journal: weight index")? as usize;
            let rep: WeightReport = serde_json::from_value(e["report"].clone()).context("journal: weight report")?;
            if wi < reports.len() {
                reports[wi] = Some(rep);
            }
        }
    }
    let reports: Vec<WeightReport> = reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("no report for weight {}", plan.weights[i].name)))
        .collect::<Result<_>>()?;
    for name in job::extra_files(plan) {
        let (b, h) = job::sha256_file(&dir.join(&name))?;
        files.push((name, b, h));
    }
    let bytes: u64 = files.iter().map(|f| f.1).sum();

    // Validation.
    let validate_id = format!("validate/{}", t.name);
    let report_path = dir.join(REPORT_FILE);
    let validation = match j.done(&validate_id, &vfp) {
        Some(r) if report_path.is_file() => r.data.clone(),
        _ => {
            ev.stage_start("validate", Some(&t.name), None);
            failpoint::hit("validate-start");
            let g = Golden::open(&golden.0).with_context(|| format!("reading golden {}", golden.0.display()))?;
            let candidate = &plan.out;
            let out = vcmd::evaluate(
                &vcmd::Params {
                    candidate,
                    golden: &golden.0,
                    thresholds: t.thresholds,
                    tokenizer: None,
                    worst: 10,
                    threads,
                },
                &g,
            )
            .with_context(|| format!("target '{}': validating", t.name))?;
            recast_convert::atomic::write_file(&report_path, out.markdown.as_bytes())?;
            j.record(&validate_id, &vfp, out.json.clone())?;
            ev.stage_end(if out.pass { "pass" } else { "FAIL" });
            out.json
        }
    };
    let pass = validation["verdict"]["pass"] == json!(true);
    let final_dir = if pass { &passed_dir } else { &rejected_dir };
    let row = verdict_row(&t.name, plan, bytes, &validation, &rel(&w.root, final_dir));

    // Manifest, then one rename into place.
    let mut m = job::manifest(w.ck, plan, &reports, &files, VERSION);
    m["validation"] = json!({
        "golden": {"file": golden.0.file_name().map(|n| n.to_string_lossy().into_owned()), "sha256": golden.1},
        "verdict": if pass { "pass" } else { "fail" },
        "report": REPORT_FILE,
        "summary": validation,
    });
    m["run"] = json!({
        "pipeline": w.p.name,
        "target": t.name,
        "fingerprint": vfp,
        "target_fingerprint": w.target_fp[ti],
        "verdict_row": row,
    });
    let text = serde_json::to_string_pretty(&m)? + "\n";
    recast_convert::atomic::write_file(dir.join(job::MANIFEST_FILE), text.as_bytes())?;
    failpoint::hit("before-promote");
    discard(&w.work, if pass { &rejected_dir } else { &passed_dir })?;
    discard(&w.work, final_dir)?;
    let parent = final_dir.parent().expect("target dir has a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    std::fs::rename(&dir, final_dir).with_context(|| format!("moving {} to {}", dir.display(), final_dir.display()))?;
    sync_dir(parent);
    failpoint::hit("after-promote");
    j.record(&promote_id, &vfp, row.clone())?;
    ev.verdict(row.clone());
    Ok(row)
}

fn rel(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf())
}

/// The golden file and its sha256, made from the source if the pipeline gives prompts.
fn golden(w: &Work, j: &mut Journal, ev: &mut Events, threads: usize) -> Result<(PathBuf, String)> {
    match &w.p.golden {
        GoldenSource::File(path) => {
            let (_, h) = job::sha256_file(path).with_context(|| format!("reading golden {}", path.display()))?;
            Ok((path.clone(), h))
        }
        GoldenSource::Prompts { prompts, max_tokens } => {
            let out = w.root.join(GOLDEN_FILE);
            let prompt_bytes = std::fs::read(prompts).with_context(|| format!("reading {}", prompts.display()))?;
            let fp =
                sha(&[VERSION.as_bytes(), w.src_fp.as_bytes(), &prompt_bytes, format!("{max_tokens:?}").as_bytes()]);
            if let Some(r) = j.done("golden", &fp) {
                if let Ok((_, h)) = job::sha256_file(&out) {
                    if Some(h.as_str()) == r.data["sha256"].as_str() {
                        return Ok((out, h));
                    }
                }
            }
            ev.stage_start("golden", None, None);
            failpoint::hit("golden-start");
            let staged = w.work.join(GOLDEN_FILE);
            let line = gcmd::make(&gcmd::Params {
                model: &w.p.source,
                output: &staged,
                output_label: Some(Path::new(GOLDEN_FILE)),
                prompts,
                max_tokens: *max_tokens,
                form: Form::Full,
                threads,
            })?;
            std::fs::rename(&staged, &out)
                .with_context(|| format!("moving {} to {}", staged.display(), out.display()))?;
            sync_dir(&w.root);
            let (_, h) = job::sha256_file(&out)?;
            j.record("golden", &fp, json!({"sha256": h}))?;
            ev.stage_end(line.trim_start_matches("wrote "));
            Ok((out, h))
        }
    }
}

/// The `--dry-run` text: targets, their files and shares, and the pre-flight figures.
fn render_plan(w: &Work, shards: usize) -> String {
    let mut o = String::new();
    writeln!(o, "pipeline      {} ({})", w.p.name, w.p.file.display()).unwrap();
    writeln!(o, "source        {}", w.p.source.display()).unwrap();
    writeln!(o, "output root   {}", w.root.display()).unwrap();
    match &w.p.golden {
        GoldenSource::File(p) => writeln!(o, "golden        {}", p.display()).unwrap(),
        GoldenSource::Prompts { prompts, max_tokens } => writeln!(
            o,
            "golden        {} from {}{}",
            GOLDEN_FILE,
            prompts.display(),
            max_tokens.map_or(String::new(), |n| format!(" (first {n} tokens)"))
        )
        .unwrap(),
    }
    for (ti, t) in w.p.targets.iter().enumerate() {
        let plan = &w.plans[ti];
        let th = |x: Option<f64>| x.map_or("-".to_string(), |v| v.to_string());
        writeln!(
            o,
            "\ntarget {}: recipe {} ({} / {}), layout {}, pass if KLD ≤ {} and top-1 ≥ {}",
            t.name,
            plan.recipe.name,
            plan.recipe.target.hardware,
            plan.recipe.target.runtime,
            plan.recipe.layout.name(),
            th(t.thresholds.max_kld),
            th(t.thresholds.min_top1)
        )
        .unwrap();
        for u in w.units.iter().filter(|u| u.target == ti) {
            let share = if shards > 1 { format!("  shard {}/{}", u.shard, shards) } else { String::new() };
            writeln!(o, "  {:<40} {:>12} bytes{share}", u.name, u.bytes).unwrap();
        }
        for n in job::extra_files(plan) {
            writeln!(o, "  {n}").unwrap();
        }
        for warn in &plan.warnings {
            writeln!(o, "  warning: {warn}").unwrap();
        }
    }
    let total: u64 = w.units.iter().map(|u| u.bytes).sum();
    writeln!(
        o,
        "\ntotal         {} in {} file(s); peak memory about {}",
        human(total),
        w.units.len(),
        human(memory_estimate(w))
    )
    .unwrap();
    if shards > 1 {
        for s in 0..shards {
            let b: u64 = w.units.iter().filter(|u| u.shard == s).map(|u| u.bytes).sum();
            let n = w.units.iter().filter(|u| u.shard == s).count();
            writeln!(o, "shard {s}/{shards}     {n} file(s), {}", human(b)).unwrap();
        }
    }
    o
}

/// The verdict table printed at the end.
pub fn verdict_table(rows: &[Json], root: &Path) -> String {
    let mut o = String::new();
    let cell = |v: &Json, f: &dyn Fn(f64) -> String| v.as_f64().map_or("-".to_string(), f);
    let lines: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r["target"].as_str().unwrap_or("").to_string(),
                r["recipe"].as_str().unwrap_or("").to_string(),
                human(r["bytes"].as_u64().unwrap_or(0)),
                cell(&r["bits_per_weight"], &|x| format!("{x:.2}")),
                cell(&r["kld"], &|x| format!("{x:.2e}")),
                cell(&r["top1"], &|x| format!("{:.1}%", 100.0 * x)),
                format!(
                    "{} / {}",
                    cell(&r["thresholds"]["max_kld"], &|x| format!("{x}")),
                    cell(&r["thresholds"]["min_top1"], &|x| format!("{:.0}%", 100.0 * x))
                ),
                if r["pass"] == json!(true) { "PASS".to_string() } else { "FAIL".to_string() },
            ]
        })
        .collect();
    let head = ["target", "recipe", "size", "bpw", "KLD", "top-1", "limits (KLD / top-1)", "verdict"];
    let mut width = head.map(str::len);
    for l in &lines {
        for (i, c) in l.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let fmt_row = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if (2..=5).contains(&i) {
                s += &format!("{}{c}  ", " ".repeat(pad));
            } else {
                s += &format!("{c}{}  ", " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(o, "{}", fmt_row(&head.map(String::from))).unwrap();
    for (l, r) in lines.iter().zip(rows) {
        writeln!(o, "{}  → {}", fmt_row(l), root.join(r["path"].as_str().unwrap_or("")).display()).unwrap();
    }
    o
}

/// Runs the pipeline; returns the process exit code (0 all passed, 1 a target failed).
pub fn run(p: &Pipeline, opts: &Options) -> Result<u8> {
    let start = Instant::now();
    let mut ev = Events::new(opts.json);
    let ck = Checkpoint::open(&p.source).with_context(|| format!("opening source {}", p.source.display()))?;
    let shards = opts.shard.map_or(1, |s| s.n);
    let w = plan_work(p, &ck, shards)?;
    if opts.dry_run {
        print!("{}", render_plan(&w, shards));
        return Ok(0);
    }
    std::fs::create_dir_all(&w.work).with_context(|| format!("creating {}", w.work.display()))?;
    let (lock_name, journal_name) = match opts.shard {
        Some(s) if !opts.finalize => {
            (format!("lock.shard-{}-of-{}", s.k, s.n), format!("journal.shard-{}-of-{}.jsonl", s.k, s.n))
        }
        _ => ("lock".to_string(), "journal.jsonl".to_string()),
    };
    if opts.resume && !has_journal(&w.work) {
        bail!("--resume: no journal in {} (nothing to resume); run without --resume", w.work.display());
    }
    let _lock = system::lock(&w.work.join(lock_name))?;
    let mut j = Journal::open(&w.work, &journal_name)?;
    failpoint::hit("run-start");

    // This process's file units.
    let mine: Vec<usize> = match (opts.shard, opts.finalize) {
        (Some(s), false) => (0..w.units.len()).filter(|&i| w.units[i].shard == s.k).collect(),
        (_, true) => Vec::new(),
        (None, false) => (0..w.units.len()).collect(),
    };
    // A killed writer's temporary files: only this share's (other shards may be writing theirs).
    for &i in &mine {
        let u = &w.units[i];
        let _ = std::fs::remove_file(recast_convert::atomic::partial_path(
            &staging(&w.work, &p.targets[u.target].name).join(&u.name),
        ));
    }
    if opts.finalize || opts.shard.is_none() {
        clean_partials(&w.root);
        clean_partials(&w.work);
        for t in &p.targets {
            clean_partials(&staging(&w.work, &t.name));
        }
    }

    // Pre-flight: what is left to write against the free space; memory against what is available.
    let todo: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|&i| reusable_final(&w, w.units[i].target).is_none() && file_done(&j, &w, &w.units[i]).is_none())
        .collect();
    let pending: u64 = todo.iter().map(|&i| w.units[i].bytes).sum();
    check_disk(&w, pending, &mut ev)?;
    check_memory(&w, &mut ev);

    if let Some(s) = opts.shard.filter(|_| !opts.finalize) {
        write_file_units(&w, &mut j, &mut ev, &todo, &format!("quantize (shard {}/{})", s.k, s.n))?;
        let n = mine.len();
        ev.say(&format!(
            "shard {}/{}: {n} file(s) done in {:.1}s; run `recast run {} --finalize` when every shard has finished",
            s.k,
            s.n,
            start.elapsed().as_secs_f64(),
            p.file.display()
        ));
        ev.finished(0, json!({"shard": format!("{}/{}", s.k, s.n), "files": n}));
        return Ok(0);
    }
    if opts.finalize {
        // Name the share that owns each missing file, with the N the shard runs used.
        let n = shard_count(&w.work);
        let bytes: Vec<u64> = w.units.iter().map(|u| u.bytes).collect();
        let owner = n.map(|n| assign_shards(&bytes, n));
        let missing: Vec<String> = w
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| reusable_final(&w, u.target).is_none() && file_done(&j, &w, u).is_none())
            .map(|(i, u)| match (&owner, n) {
                (Some(owner), Some(n)) => format!("{} (shard {}/{n})", u.id(p), owner[i]),
                _ => u.id(p),
            })
            .collect();
        if !missing.is_empty() {
            bail!(
                "--finalize: {} output file(s) are not written yet: {}; run those shards again (or run without --shard to do them here)",
                missing.len(),
                missing.join(", ")
            );
        }
    }
    let golden = golden(&w, &mut j, &mut ev, opts.threads)?;
    let mut rows = Vec::new();
    for ti in 0..p.targets.len() {
        rows.push(finish_target(&w, ti, &mut j, &mut ev, &golden, opts.threads)?);
    }
    let failed = rows.iter().filter(|r| r["pass"] != json!(true)).count();
    if !opts.json {
        println!();
        print!("{}", verdict_table(&rows, &w.root));
    }
    eprintln!(
        "\n{}: {} target(s), {} passed, {failed} failed, in {:.1}s",
        p.name,
        rows.len(),
        rows.len() - failed,
        start.elapsed().as_secs_f64()
    );
    let code = u8::from(failed > 0);
    ev.finished(code, json!({"targets": rows}));
    Ok(code)
}

/// The N of the `--shard K/N` runs whose journals are in `work`, if they agree on one.
fn shard_count(work: &Path) -> Option<usize> {
    let mut ns: Vec<usize> = std::fs::read_dir(work)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("journal.shard-")?.strip_suffix(".jsonl")?;
            rest.split_once("-of-")?.1.parse().ok()
        })
        .collect();
    ns.sort_unstable();
    ns.dedup();
    (ns.len() == 1).then(|| ns[0])
}

fn has_journal(work: &Path) -> bool {
    std::fs::read_dir(work).is_ok_and(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with("journal")))
}
