//! Recipes: YAML that says what a target runs, resolved into a checked, hashable [`Recipe`].
//!
//! A recipe names a target (hardware + runtime), the output layout that runtime loads, and an
//! ordered list of rules (first match wins) mapping tensors to schemes. `extends:` builds on
//! another recipe: the child's scalar fields override the parent's, the child's rules are tried
//! before the parent's, and ignore lists are joined. Every field is checked when the YAML is
//! read (unknown keys and values are errors carrying serde's line and column); what the
//! hardware cannot run is checked against [`crate::hardware`] after resolution.
//!
//! Shipped recipes live in `recipes/*.yaml` at the repository root and are compiled in.

use crate::codec::fp8::Fp8Format;
use crate::error::{Error, Result};
use crate::hardware;
use recast_convert::GgmlType;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// Recipes shipped with recast: (name, YAML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("amd-mi300-fp8", include_str!("../../recipes/amd-mi300-fp8.yaml")),
    ("ascend-910b-w4a16", include_str!("../../recipes/ascend-910b-w4a16.yaml")),
    ("ascend-910b-w8a16", include_str!("../../recipes/ascend-910b-w8a16.yaml")),
    ("ascend-910b-w8a8-dynamic", include_str!("../../recipes/ascend-910b-w8a8-dynamic.yaml")),
    ("cpu-gguf-q2_k", include_str!("../../recipes/cpu-gguf-q2_k.yaml")),
    ("cpu-gguf-q3_k_m", include_str!("../../recipes/cpu-gguf-q3_k_m.yaml")),
    ("cpu-gguf-q4_k_m", include_str!("../../recipes/cpu-gguf-q4_k_m.yaml")),
    ("cpu-gguf-q4_k_s", include_str!("../../recipes/cpu-gguf-q4_k_s.yaml")),
    ("cpu-gguf-q5_k_m", include_str!("../../recipes/cpu-gguf-q5_k_m.yaml")),
    ("cpu-gguf-q6_k", include_str!("../../recipes/cpu-gguf-q6_k.yaml")),
    ("cpu-gguf-q8_0", include_str!("../../recipes/cpu-gguf-q8_0.yaml")),
    ("deepseek-fp8-block", include_str!("../../recipes/deepseek-fp8-block.yaml")),
    ("low-rank-kv-50", include_str!("../../recipes/low-rank-kv-50.yaml")),
    ("low-rank-kv-full", include_str!("../../recipes/low-rank-kv-full.yaml")),
    ("nvidia-h100-fp8-block", include_str!("../../recipes/nvidia-h100-fp8-block.yaml")),
    ("nvidia-h100-fp8-channel", include_str!("../../recipes/nvidia-h100-fp8-channel.yaml")),
    ("vllm-w4a16-g128", include_str!("../../recipes/vllm-w4a16-g128.yaml")),
    ("vllm-w8a8-int8", include_str!("../../recipes/vllm-w8a8-int8.yaml")),
];

/// The on-disk layout a recipe writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutKind {
    /// A single GGUF file for llama.cpp.
    Gguf,
    /// DeepSeek-V3's release layout: F8_E4M3 weights with F32 `weight_scale_inv` per block.
    DeepseekFp8,
    /// vLLM / llm-compressor `compressed-tensors`.
    CompressedTensors,
    /// Huawei msModelSlim layout (MindIE, vllm-ascend).
    Ascend,
    /// Plain Hugging Face safetensors, float tensors only (transformers, recast's engine).
    Hf,
}

impl LayoutKind {
    pub fn name(self) -> &'static str {
        match self {
            LayoutKind::Gguf => "gguf",
            LayoutKind::DeepseekFp8 => "deepseek-fp8",
            LayoutKind::CompressedTensors => "compressed-tensors",
            LayoutKind::Ascend => "ascend",
            LayoutKind::Hf => "hf",
        }
    }
}

/// Unquantized float types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatDtype {
    F32,
    F16,
    Bf16,
    /// The source checkpoint's dominant float type.
    Source,
}

/// FP8 scale granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Tensor,
    Channel,
    Block,
}

/// How activations are quantized at run time (weights are what recast writes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activations {
    /// Weight-only (W8A16, W4A16).
    #[default]
    None,
    /// Scales computed per token (or per group) at run time: nothing to calibrate.
    Dynamic,
    /// Static activation scales: needs calibration statistics.
    Static,
}

/// Integer grouping: one scale per output channel, or per `n` input columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Channel,
    Size(usize),
}

impl Serialize for Group {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Group::Channel => s.serialize_str("channel"),
            Group::Size(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Group {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) if s == "channel" => Ok(Group::Channel),
            Raw::N(n) if n >= 8 && n.is_power_of_two() => Ok(Group::Size(n as usize)),
            Raw::N(n) => Err(serde::de::Error::custom(format!("group {n}: expected a power of two ≥ 8 or `channel`"))),
            Raw::S(s) => Err(serde::de::Error::custom(format!("group `{s}`: expected a number or `channel`"))),
        }
    }
}

/// A ggml tensor type named in a recipe (`Q4_K`, `Q8_0`, `F16`…), checked when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlName(pub GgmlType);

impl Serialize for GgmlName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for GgmlName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = GgmlType::from_name(&s.to_ascii_uppercase())
            .filter(|t| crate::codec::ggml::can_encode(*t) || matches!(t.name(), "F32" | "F16" | "BF16"))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "ggml type `{s}`: recast writes F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"
                ))
            })?;
        Ok(GgmlName(t))
    }
}

/// How a tensor is stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Scheme {
    /// Leave the tensor unquantized (in the recipe's `dtype`).
    Keep,
    /// Store in a float type.
    Float { dtype: FloatDtype },
    /// FP8 with a scale per tensor, output channel or block.
    Fp8 {
        format: Fp8Format,
        strategy: Strategy,
        /// `[rows, cols]` of a scale block (strategy `block`; default 128×128).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        block: Option<[usize; 2]>,
        #[serde(default)]
        activations: Activations,
    },
    /// Integer weights: 8 or 4 bits, per channel or group-wise, symmetric or with a zero point.
    Int {
        bits: u8,
        group: Group,
        #[serde(default = "yes")]
        symmetric: bool,
        #[serde(default)]
        activations: Activations,
    },
    /// A ggml block or k-quant type (GGUF layout).
    Ggml {
        #[serde(rename = "format")]
        ggml_type: GgmlName,
    },
}

fn yes() -> bool {
    true
}

impl Scheme {
    /// A short label for plans and manifests (`fp8-e4m3fn-block128x128`, `int4-g128-sym`, `Q4_K`).
    pub fn label(&self) -> String {
        match self {
            Scheme::Keep => "keep".into(),
            Scheme::Float { dtype } => format!("{dtype:?}").to_lowercase(),
            Scheme::Fp8 { format, strategy, block, .. } => match strategy {
                Strategy::Block => {
                    let [r, c] = block.unwrap_or([128, 128]);
                    format!("fp8-{}-block{r}x{c}", format.name())
                }
                s => format!("fp8-{}-{}", format.name(), format!("{s:?}").to_lowercase()),
            },
            Scheme::Int { bits, group, symmetric, activations } => {
                let g = match group {
                    Group::Channel => "channel".to_string(),
                    Group::Size(n) => format!("g{n}"),
                };
                let a = if *activations == Activations::Dynamic { "-a8dyn" } else { "" };
                format!("int{bits}-{g}-{}{a}", if *symmetric { "sym" } else { "asym" })
            }
            Scheme::Ggml { ggml_type } => ggml_type.0.name().to_string(),
        }
    }
}

/// What to do with a tensor whose shape does not divide into the scheme's blocks or groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Indivisible {
    /// Stop with an error naming the tensor.
    #[default]
    Fail,
    /// Leave the tensor unquantized.
    Keep,
    /// Zero-pad the last block (only where the layout records the true shape).
    Pad,
}

/// A tensor pattern: `re:REGEX` (searched, as compressed-tensors does), a glob with `*`/`?`,
/// the class name `Linear` (every 2-D projection weight), or an exact module/tensor name.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub text: String,
    regex: regex::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, o: &Self) -> bool {
        self.text == o.text
    }
}

impl Pattern {
    pub fn new(text: &str) -> std::result::Result<Self, String> {
        let re = if let Some(r) = text.strip_prefix("re:") {
            r.to_string()
        } else if text == "Linear" {
            // Placeholder; `matches` handles the class name.
            "^$".to_string()
        } else {
            let mut r = String::from("^");
            for c in text.chars() {
                match c {
                    '*' => r.push_str(".*"),
                    '?' => r.push('.'),
                    c => r.push_str(&regex::escape(&c.to_string())),
                }
            }
            r.push('$');
            r
        };
        let regex = regex::Regex::new(&re).map_err(|e| format!("pattern `{text}`: {e}"))?;
        Ok(Pattern { text: text.to_string(), regex })
    }

    /// Whether the pattern selects a weight: `name` is the full tensor name, `module` the name
    /// without `.weight`, `linear` whether it is a 2-D projection weight.
    pub fn matches(&self, name: &str, module: &str, linear: bool) -> bool {
        if self.text == "Linear" {
            return linear;
        }
        self.regex.is_match(name) || self.regex.is_match(module)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One rule: the tensors it selects and their scheme.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub targets: Vec<Pattern>,
    pub scheme: Scheme,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_indivisible: Option<Indivisible>,
}

/// Hardware and runtime a recipe is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A key of the capability table (`recast recipes` lists them).
    pub hardware: String,
    /// The runtime that loads the output, with the version it was checked against.
    pub runtime: String,
}

/// A KV-cache scheme carried into the layout's config (scales need calibration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvCache {
    pub format: Fp8Format,
}

/// How many latent dimensions a low-rank KV layer keeps (exactly one key in the YAML).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum KvRank {
    /// The same rank in every layer.
    Rank(usize),
    /// A fraction of the original KV width 2·n_kv·head_dim in every layer (1.0: exact).
    Ratio(f64),
    /// Per layer, the smallest rank keeping this fraction of the spectrum's energy.
    Energy(f64),
    /// A fraction of the model's original KV bytes per token, spread over the layers by their
    /// spectra.
    Budget(f64),
}

/// Where the calibration statistics of a low-rank KV recipe come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Calibration {
    /// Plain joint SVD (no statistics).
    None,
    /// The recipe needs statistics given on the command line (`--calibration STATS`).
    Required,
    /// A statistics file from `recast calibrate` (relative paths: to the recipe file).
    Path(PathBuf),
}

impl Serialize for Calibration {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Calibration::None => s.serialize_none(),
            Calibration::Required => s.serialize_str("required"),
            Calibration::Path(p) => s.serialize_str(&p.display().to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Calibration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match Option::<String>::deserialize(d)? {
            None => Calibration::None,
            Some(s) if s == "required" => Calibration::Required,
            Some(s) if s.is_empty() => return Err(serde::de::Error::custom("calibration: empty path")),
            Some(s) => Calibration::Path(PathBuf::from(s)),
        })
    }
}

/// `low_rank_kv:`: factor each layer's key and value projections jointly into a latent
/// (docs/low-rank-kv.md). Weight rules then apply to the new `kv_a_proj`/`kv_b_proj`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowRankKv {
    #[serde(flatten)]
    pub rank: KvRank,
    #[serde(default = "no_calibration", skip_serializing_if = "is_no_calibration")]
    pub calibration: Calibration,
}

fn no_calibration() -> Calibration {
    Calibration::None
}

fn is_no_calibration(c: &Calibration) -> bool {
    *c == Calibration::None
}

impl LowRankKv {
    /// Checks the numbers (what a shape-independent check can say).
    fn check(&self) -> std::result::Result<(), String> {
        match self.rank {
            KvRank::Rank(0) => Err("low_rank_kv: rank must be at least 1".into()),
            KvRank::Ratio(f) | KvRank::Budget(f) if !(f > 0.0 && f <= 1.0) => {
                Err(format!("low_rank_kv: {f} is not a fraction in (0, 1]"))
            }
            KvRank::Energy(e) if !(e > 0.0 && e <= 1.0) => Err(format!("low_rank_kv: energy {e} is not in (0, 1]")),
            _ => Ok(()),
        }
    }

    /// A short label: `ratio 0.5, calibrated`.
    pub fn label(&self) -> String {
        let r = match self.rank {
            KvRank::Rank(r) => format!("rank {r}"),
            KvRank::Ratio(f) => format!("ratio {f}"),
            KvRank::Energy(e) => format!("energy {e}"),
            KvRank::Budget(b) => format!("budget {b}"),
        };
        match self.calibration {
            Calibration::None => format!("{r}, plain SVD"),
            _ => format!("{r}, calibration-aware SVD"),
        }
    }
}

/// Pass/fail thresholds for `recast validate` and pipelines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kld: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_top1: Option<f64>,
}

/// llama-quantize's `--ftype` mixtures (formats.md §2.9).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preset {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

/// A recipe file as written (every field optional so `extends` can fill it in).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    name: Option<String>,
    description: Option<String>,
    extends: Option<String>,
    target: Option<Target>,
    layout: Option<LayoutKind>,
    preset: Option<Preset>,
    dtype: Option<FloatDtype>,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    ignore: Vec<Pattern>,
    on_indivisible: Option<Indivisible>,
    kv_cache: Option<KvCache>,
    low_rank_kv: Option<LowRankKv>,
    validation: Option<Thresholds>,
}

/// A resolved recipe: `extends` applied, defaults filled in, checked against the hardware.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    pub target: Target,
    pub layout: LayoutKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Float type of tensors left unquantized.
    pub dtype: FloatDtype,
    pub rules: Vec<Rule>,
    pub ignore: Vec<Pattern>,
    pub on_indivisible: Indivisible,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<KvCache>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_rank_kv: Option<LowRankKv>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Thresholds>,
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&serde_yaml_ng::to_string(self).map_err(|_| fmt::Error)?)
    }
}

impl Recipe {
    /// sha256 of the resolved recipe's canonical JSON (what the manifest records).
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("recipe serializes");
        format!("{:x}", Sha256::digest(&json))
    }

    /// Loads `spec`: a shipped recipe name, or a path to a YAML file.
    pub fn load(spec: &str) -> Result<Recipe> {
        let mut chain = Vec::new();
        let file = load_chain(spec, None, &mut chain)?;
        resolve(spec, file)
    }

    /// Parses YAML text (for tests and tools); `extends` resolves against shipped recipes and
    /// paths relative to the working directory.
    pub fn from_yaml(label: &str, text: &str) -> Result<Recipe> {
        let file = parse(label, text)?;
        let mut chain = vec![label.to_string()];
        let file = apply_extends(label, file, None, &mut chain)?;
        resolve(label, file)
    }

    /// The first rule selecting a tensor, with its index; `None` if no rule does or the
    /// ignore list does.
    pub fn rule_for(&self, name: &str, linear: bool) -> Option<(usize, &Rule)> {
        let module = name.strip_suffix(".weight").unwrap_or(name);
        if self.ignore.iter().any(|p| p.matches(name, module, linear)) {
            return None;
        }
        self.rules.iter().enumerate().find(|(_, r)| r.targets.iter().any(|p| p.matches(name, module, linear)))
    }
}

fn parse(label: &str, text: &str) -> Result<RecipeFile> {
    serde_yaml_ng::from_str(text).map_err(|e| Error::recipe(label, e.to_string()))
}

fn load_chain(spec: &str, base: Option<&Path>, chain: &mut Vec<String>) -> Result<RecipeFile> {
    let (label, text, dir) = read_spec(spec, base)?;
    if chain.contains(&label) {
        return Err(Error::recipe(&label, format!("`extends` forms a cycle: {} → {label}", chain.join(" → "))));
    }
    chain.push(label.clone());
    let mut file = parse(&label, &text)?;
    // A calibration path in a recipe file is relative to that file.
    if let (Some(kv), Some(dir)) = (file.low_rank_kv.as_mut(), dir.as_deref()) {
        if let Calibration::Path(p) = &kv.calibration {
            if p.is_relative() {
                kv.calibration = Calibration::Path(dir.join(p));
            }
        }
    }
    apply_extends(&label, file, dir.as_deref(), chain)
}

fn apply_extends(label: &str, mut file: RecipeFile, dir: Option<&Path>, chain: &mut Vec<String>) -> Result<RecipeFile> {
    let Some(parent_spec) = file.extends.take() else { return Ok(file) };
    let parent = load_chain(&parent_spec, dir, chain)
        .map_err(|e| Error::recipe(label, format!("extends `{parent_spec}`: {e}")))?;
    let mut rules = std::mem::take(&mut file.rules);
    rules.extend(parent.rules);
    let mut ignore = parent.ignore;
    for p in file.ignore.drain(..) {
        if !ignore.contains(&p) {
            ignore.push(p);
        }
    }
    Ok(RecipeFile {
        name: file.name,
        description: file.description.or(parent.description),
        extends: None,
        target: file.target.or(parent.target),
        layout: file.layout.or(parent.layout),
        preset: file.preset.or(parent.preset),
        dtype: file.dtype.or(parent.dtype),
        rules,
        ignore,
        on_indivisible: file.on_indivisible.or(parent.on_indivisible),
        kv_cache: file.kv_cache.or(parent.kv_cache),
        low_rank_kv: file.low_rank_kv.or(parent.low_rank_kv),
        validation: file.validation.or(parent.validation),
    })
}

/// Finds a recipe's text: a shipped name, or a file (relative to `base` for `extends`).
fn read_spec(spec: &str, base: Option<&Path>) -> Result<(String, String, Option<PathBuf>)> {
    let looks_like_path = spec.ends_with(".yaml") || spec.ends_with(".yml") || spec.contains('/');
    if !looks_like_path {
        if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == spec) {
            return Ok((name.to_string(), text.to_string(), None));
        }
    }
    let path = match base {
        Some(b) if Path::new(spec).is_relative() => b.join(spec),
        _ => PathBuf::from(spec),
    };
    if !path.is_file() {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        return Err(Error::recipe(
            spec,
            format!(
                "no shipped recipe or file of that name (shipped: {}; see `recast recipes list`)",
                names.join(", ")
            ),
        ));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::File { path: path.clone(), detail: format!("reading recipe: {e}") })?;
    Ok((path.display().to_string(), text, path.parent().map(Path::to_path_buf)))
}

fn resolve(label: &str, f: RecipeFile) -> Result<Recipe> {
    let name = f.name.unwrap_or_else(|| {
        Path::new(label).file_stem().map_or(label.to_string(), |s| s.to_string_lossy().into_owned())
    });
    let missing = |key: &str| Error::recipe(&name, format!("missing `{key}` (here or in a recipe it extends)"));
    let target = f.target.ok_or_else(|| missing("target"))?;
    let layout = f.layout.ok_or_else(|| missing("layout"))?;
    if f.preset.is_some() && layout != LayoutKind::Gguf {
        return Err(Error::recipe(&name, "`preset` (a llama-quantize mixture) applies to the gguf layout only"));
    }
    if layout == LayoutKind::Gguf && f.preset.is_none() && f.rules.is_empty() {
        return Err(Error::recipe(&name, "a gguf recipe needs a `preset` or at least one rule"));
    }
    if let Some(kv) = &f.low_rank_kv {
        kv.check().map_err(|e| Error::recipe(&name, e))?;
    }
    let recipe = Recipe {
        description: f.description.unwrap_or_default(),
        target,
        layout,
        preset: f.preset,
        dtype: f.dtype.unwrap_or(FloatDtype::Source),
        rules: f.rules,
        ignore: f.ignore,
        on_indivisible: f.on_indivisible.unwrap_or_default(),
        kv_cache: f.kv_cache,
        low_rank_kv: f.low_rank_kv,
        validation: f.validation,
        name,
    };
    hardware::check(&recipe)?;
    Ok(recipe)
}
