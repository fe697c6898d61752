//! The pipeline file (`recast run PIPELINE.yaml`): a source, a golden, and targets.
//!
//! Relative paths in the file are relative to the file's directory; `--source` and `--out`
//! on the command line are relative to the working directory and override the file.

use crate::size::parse_size;
use anyhow::{bail, Context, Result};
use recast_quantize::Recipe;
use recast_validate::metrics::Thresholds;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    source: Option<PathBuf>,
    #[serde(default)]
    output: Option<PathBuf>,
    golden: GoldenFile,
    targets: Vec<TargetFile>,
    /// Default for every safetensors target.
    #[serde(default)]
    max_shard_size: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GoldenFile {
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    prompts: Option<PathBuf>,
    #[serde(default)]
    max_tokens: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    name: String,
    recipe: String,
    #[serde(default)]
    max_shard_size: Option<String>,
    /// Calibration statistics for a `low_rank_kv` recipe (`recast calibrate`).
    #[serde(default)]
    calibration: Option<PathBuf>,
    #[serde(default)]
    validation: Option<ThresholdsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdsFile {
    #[serde(default)]
    max_kld: Option<f64>,
    #[serde(default)]
    min_top1: Option<f64>,
}

/// Where the golden logits come from.
#[derive(Debug)]
pub enum GoldenSource {
    /// An existing golden file.
    File(PathBuf),
    /// Prompts to run the source model on (the golden is written to `OUT/golden.safetensors`).
    Prompts { prompts: PathBuf, max_tokens: Option<usize> },
}

#[derive(Debug)]
pub struct Target {
    /// Also the output directory's name under the output root.
    pub name: String,
    pub recipe: Recipe,
    pub max_shard_size: Option<u64>,
    /// Calibration statistics for the recipe's `low_rank_kv` step.
    pub calibration: Option<PathBuf>,
    pub thresholds: Thresholds,
}

#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    pub source: PathBuf,
    pub out: PathBuf,
    pub golden: GoldenSource,
    pub targets: Vec<Target>,
}

impl Pipeline {
    /// Reads and checks `path`; `source` and `out` override the file's values.
    pub fn load(path: &Path, source: Option<PathBuf>, out: Option<PathBuf>) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: File = serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let at = |p: PathBuf| if p.is_absolute() { p } else { lexical_clean(&base.join(p)) };
        let here = |what: &str| format!("{}: {what}", path.display());
        let name =
            f.name.unwrap_or_else(|| path.file_stem().map_or("pipeline".into(), |s| s.to_string_lossy().into_owned()));
        let source = match (source, f.source) {
            (Some(s), _) => s,
            (None, Some(s)) => at(s),
            (None, None) => bail!("{}", here("no source: set `source:` or pass --source PATH")),
        };
        let out = match (out, f.output) {
            (Some(o), _) => o,
            (None, Some(o)) => at(o),
            (None, None) => bail!("{}", here("no output root: set `output:` or pass --out DIR")),
        };
        let golden = match (f.golden.path, f.golden.prompts) {
            (Some(p), None) => {
                if f.golden.max_tokens.is_some() {
                    bail!("{}", here("golden: `max_tokens` applies to `prompts`, not to an existing `path`"));
                }
                GoldenSource::File(at(p))
            }
            (None, Some(p)) => GoldenSource::Prompts { prompts: at(p), max_tokens: f.golden.max_tokens },
            _ => bail!("{}", here("golden: give exactly one of `path` (a golden file) or `prompts` (a JSONL file)")),
        };
        if f.targets.is_empty() {
            bail!("{}", here("no targets"));
        }
        let default_shard =
            f.max_shard_size.as_deref().map(parse_size).transpose().map_err(|e| anyhow::anyhow!(here(&e)))?;
        let mut targets = Vec::new();
        for t in f.targets {
            let ctx = |what: String| here(&format!("target '{}': {what}", t.name));
            if t.name.is_empty()
                || t.name.starts_with('.')
                || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                || t.name == "rejected"
                || t.name == "golden.safetensors"
            {
                bail!("{}", ctx("a target name is a directory name: letters, digits, '-', '_', '.', not starting with '.', not 'rejected'".into()));
            }
            if targets.iter().any(|x: &Target| x.name == t.name) {
                bail!("{}", ctx("the name is used twice".into()));
            }
            // A recipe path is relative to the pipeline file; otherwise it names a shipped recipe.
            let local = at(PathBuf::from(&t.recipe));
            let spec = if local.is_file() { local.display().to_string() } else { t.recipe.clone() };
            let recipe = Recipe::load(&spec).with_context(|| ctx(format!("recipe {}", t.recipe)))?;
            let max_shard_size = match t.max_shard_size.as_deref() {
                Some(s) => Some(parse_size(s).map_err(|e| anyhow::anyhow!(ctx(e)))?),
                None => default_shard,
            };
            let (own, from_recipe) = (t.validation.as_ref(), recipe.validation.as_ref());
            let thresholds = Thresholds {
                max_kld: own.and_then(|v| v.max_kld).or(from_recipe.and_then(|v| v.max_kld)),
                min_top1: own.and_then(|v| v.min_top1).or(from_recipe.and_then(|v| v.min_top1)),
            };
            if thresholds.max_kld.is_none() && thresholds.min_top1.is_none() {
                bail!(
                    "{}",
                    ctx(format!(
                        "no validation thresholds (recipe {} has none): set `validation: {{max_kld: …, min_top1: …}}`",
                        recipe.name
                    ))
                );
            }
            if let Some(k) = thresholds.max_kld.filter(|k| !(k.is_finite() && *k >= 0.0)) {
                bail!("{}", ctx(format!("max_kld must be a non-negative number of nats, found {k}")));
            }
            if let Some(k) = thresholds.min_top1.filter(|k| !(0.0..=1.0).contains(k)) {
                bail!("{}", ctx(format!("min_top1 must be a fraction in [0, 1], found {k}")));
            }
            let calibration = t.calibration.map(at);
            if calibration.is_some() && recipe.low_rank_kv.is_none() {
                bail!("{}", ctx(format!("`calibration` is for low_rank_kv recipes; recipe {} has none", recipe.name)));
            }
            targets.push(Target { name: t.name, recipe, max_shard_size, calibration, thresholds });
        }
        Ok(Pipeline { name, file: path.to_path_buf(), source, out, golden, targets })
    }
}

/// `examples/../target/x` → `target/x`: folds `.` and `name/..` without touching the
/// filesystem (paths in messages and manifests read as the user would write them).
pub fn lexical_clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}
