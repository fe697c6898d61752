//! `recast quantize`: plan every output tensor from a recipe, then stream the checkpoint
//! through the codecs into the target layout.
//!
//! [`plan`] reuses recast-convert's conversion plans (names, Q/K permutation, DeepSeek FP8
//! dequantization, tokenizer and config side files) in F32, then decides each weight's
//! encoding: the recipe's first matching rule, else the GGUF preset's choice (llama-quantize's
//! mixture), else unquantized. [`execute`] computes each weight (small ones side by side) —
//! decode to f32, check finiteness, encode, measure the error the runtime will see — and
//! writes its tensors through convert's atomic writers, so memory holds a group of weights and
//! a bounded budget of encodings waiting to be written.

use crate::codec::fp8::{Fp8Format, Granularity};
use crate::codec::int::{self, IntSpec};
use crate::codec::stats::ErrorStats;
use crate::error::{Error, Result};
use crate::layout::gguf_mix::{self, Mixer, ModelFacts};
use crate::layout::{self, ascend, compressed_tensors, deepseek_fp8, Encoding, OutSpec};
use crate::lowrank_kv::{self, KvPlan, LayerFactors};
use crate::recipe::{Activations, FloatDtype, Indivisible, LayoutKind, Recipe, Scheme, Strategy};
use rayon::prelude::*;
use recast_convert::atomic::{self, Sink};
use recast_convert::gguf::{self, Value};
use recast_convert::job::{self as cjob, json_bytes, torch_name, OutFormat};
use recast_convert::mapping::OutTensor;
use recast_convert::safetensors::writer as st_writer;
use recast_convert::safetensors::SafetensorsPlan;
use recast_convert::transform::{self, Op};
use recast_convert::{Checkpoint, DType, Format, GgmlType, ModelConfig, Storage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// safetensors layouts: bytes of tensor data per shard.
    pub max_shard_size: Option<u64>,
    /// Calibration statistics for the recipe's `low_rank_kv` step (overrides the recipe's).
    pub calibration: Option<PathBuf>,
}

/// Which low-rank KV tensor a planned weight is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvTensor {
    /// `kv_a_proj.weight` (`attn_kv_a.weight`): the latent's down-projection.
    Down,
    /// `kv_b_proj.weight` (`attn_kv_b.weight`): keys and values from the latent.
    Up,
    /// `kv_b_proj.bias` (`attn_kv_b.bias`).
    Bias,
}

/// One source weight and how it is written.
#[derive(Clone, Debug)]
pub struct WeightPlan {
    /// Name in the output's naming (GGUF or Hugging Face).
    pub name: String,
    pub shape: Vec<u64>,
    /// How the base conversion produces it; for low-rank KV tensors, the layer's key
    /// projection (its dtype and inputs), the values coming from `low_rank`.
    pub source: OutTensor,
    /// A tensor of the `low_rank_kv` step: (layer, which).
    pub low_rank: Option<(usize, KvTensor)>,
    pub encoding: Encoding,
    /// The scheme's label (`Q4_K`, `fp8-e4m3fn-block128x128`, `bf16`…).
    pub scheme: String,
    /// Where the choice came from: `rule N`, `preset Q4_K_M`, or `default`.
    pub origin: String,
    /// A fallback or exception taken for this tensor.
    pub note: Option<String>,
    pub outputs: Vec<OutSpec>,
}

impl WeightPlan {
    pub fn bytes(&self) -> u64 {
        self.outputs.iter().map(OutSpec::nbytes).sum()
    }
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    pub fn bits_per_weight(&self) -> f64 {
        self.bytes() as f64 * 8.0 / self.numel().max(1) as f64
    }
    pub fn quantized(&self) -> bool {
        !matches!(self.encoding, Encoding::Float(_))
    }
}

pub enum FileLayout {
    Gguf(gguf::GgufPlan),
    Safetensors(SafetensorsPlan),
}

/// A fully resolved quantization.
pub struct QuantPlan {
    pub recipe: Recipe,
    pub source: PathBuf,
    pub source_format: Format,
    pub config: ModelConfig,
    pub weights: Vec<WeightPlan>,
    pub warnings: Vec<String>,
    pub out: PathBuf,
    pub layout: FileLayout,
    pub side_files: Vec<(String, Vec<u8>)>,
    /// The recipe's `low_rank_kv` step, resolved.
    pub low_rank: Option<KvPlan>,
    /// Output tensor (in file order of the layout's tensor list) → (weight, output index).
    slots: Vec<(usize, usize)>,
}

impl QuantPlan {
    pub fn total_bytes(&self) -> u64 {
        let weights = match &self.layout {
            FileLayout::Gguf(p) => p.file_size(),
            FileLayout::Safetensors(p) => p.shards.iter().map(|s| s.file_size()).sum(),
        };
        weights + self.side_files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    }
    pub fn total_params(&self) -> u64 {
        self.weights.iter().map(WeightPlan::numel).sum()
    }
    /// Where the manifest goes: `DIR/recast-manifest.json`, or `FILE.recast-manifest.json`
    /// beside a GGUF file.
    pub fn manifest_path(&self) -> PathBuf {
        match self.layout {
            FileLayout::Gguf(_) => {
                let mut s = self.out.as_os_str().to_owned();
                s.push(".recast-manifest.json");
                PathBuf::from(s)
            }
            FileLayout::Safetensors(_) => self.out.join(MANIFEST_FILE),
        }
    }
}

pub const MANIFEST_FILE: &str = "recast-manifest.json";

/// HF weights a runtime loads as quantized Linear layers: 2-D projection weights (not
/// embeddings, norms or MoE routers).
pub fn is_hf_linear(name: &str, shape: &[u64]) -> bool {
    shape.len() == 2
        && name.ends_with(".weight")
        && !name.contains("embed_tokens")
        && !name.contains("norm")
        && !name.ends_with("mlp.gate.weight")
}

fn float_dtype(d: FloatDtype, model: DType) -> DType {
    match d {
        FloatDtype::F32 => DType::F32,
        FloatDtype::F16 => DType::F16,
        FloatDtype::Bf16 => DType::BF16,
        FloatDtype::Source => model,
    }
}

/// The dense float dtype a source tensor is stored in (F32 for quantized or FP8 sources).
fn source_dtype(ck: &Checkpoint, op: &Op, model: DType) -> DType {
    let ins = op.inputs();
    match ins.first().map(|i| ck.tensors[*i].storage) {
        Some(Storage::Dense(d)) if matches!(d, DType::F32 | DType::F16 | DType::BF16) => d,
        Some(_) => DType::F32,
        None => model,
    }
}

/// The scheme label of an unquantized tensor (`f32`, `f16`, `bf16`), as `Scheme::Float` labels it.
fn float_label(d: DType) -> String {
    d.name().to_lowercase()
}

/// Resolves a rule's scheme for one tensor in the recipe's layout.
fn encoding_of(r: &Recipe, scheme: &Scheme, keep: DType, model: DType) -> Encoding {
    match scheme {
        Scheme::Keep => Encoding::Float(keep),
        Scheme::Float { dtype } => Encoding::Float(float_dtype(*dtype, model)),
        Scheme::Ggml { ggml_type } => match ggml_type.0.dense() {
            Some(d) => Encoding::Float(d),
            None => Encoding::Ggml(ggml_type.0),
        },
        Scheme::Fp8 { format, strategy, block, activations } => {
            let granularity = match strategy {
                Strategy::Tensor => Granularity::Tensor,
                Strategy::Channel => Granularity::Channel,
                Strategy::Block => {
                    let [rows, cols] = block.unwrap_or([128, 128]);
                    Granularity::Block { rows, cols }
                }
            };
            let scale_dtype = match r.layout {
                LayoutKind::CompressedTensors => model,
                _ => DType::F32,
            };
            Encoding::Fp8 { format: *format, granularity, activations: *activations, scale_dtype }
        }
        Scheme::Int { bits, group, symmetric, activations } => {
            let (rule, scale_dtype) = match r.layout {
                LayoutKind::Ascend => (int::ScaleRule::MaxQ, DType::F32),
                _ => (int::ScaleRule::HalfRange, model),
            };
            let group = match group {
                crate::recipe::Group::Channel => int::Group::Channel,
                crate::recipe::Group::Size(n) => int::Group::Size(*n),
            };
            Encoding::Int {
                spec: IntSpec { bits: *bits, group, symmetric: *symmetric, rule, scale_dtype },
                activations: *activations,
            }
        }
    }
}

/// Why `enc` cannot be applied to `shape` (row length not a multiple of the block/group).
fn indivisible(layout: LayoutKind, enc: &Encoding, shape: &[u64]) -> Option<String> {
    let (rows, cols) = layout::matrix(shape);
    match enc {
        Encoding::Ggml(t) if cols % t.block_size() as u64 != 0 => {
            Some(format!("row length {cols} is not a multiple of {}'s block of {}", t.name(), t.block_size()))
        }
        Encoding::Int { spec, .. } => {
            if let int::Group::Size(g) = spec.group {
                if cols % g as u64 != 0 {
                    return Some(format!("row length {cols} is not a multiple of the group size {g}"));
                }
            }
            if layout == LayoutKind::Ascend && spec.bits == 4 {
                let (n, what) = match spec.group {
                    int::Group::Channel => (cols, "columns"),
                    int::Group::Size(_) => (rows, "rows"),
                };
                if n % 2 != 0 {
                    return Some(format!("{n} {what} cannot be packed two int4 per byte"));
                }
            }
            None
        }
        _ => None,
    }
}

/// What the F32 base conversion gives: output tensors, GGUF metadata (GGUF layouts), side
/// files, the typed config.
type Base = (Vec<OutTensor>, Option<gguf::Metadata>, Vec<(String, Vec<u8>)>, ModelConfig);

/// Base conversion in F32: output names, ops and side files, in the layout's naming.
fn base(ck: &Checkpoint, out: &Path, layout: LayoutKind) -> Result<Base> {
    if layout == LayoutKind::Gguf {
        if ck.format == Format::Gguf {
            let info = ck.gguf.as_ref().expect("gguf checkpoint");
            let cfg = ck.gguf_config()?;
            let outputs = ck
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| OutTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    dtype: DType::F32,
                    op: Op::Copy(i),
                })
                .collect();
            return Ok((outputs, Some(info.metadata.clone()), Vec::new(), cfg));
        }
        let p =
            cjob::plan(ck, out, &cjob::Options { to: OutFormat::Gguf, dtype: Some(DType::F32), max_shard_size: None })?;
        let cjob::Layout::Gguf(g) = p.layout else { unreachable!("asked for GGUF") };
        return Ok((p.outputs, Some(g.metadata), p.side_files, p.config));
    }
    let p = cjob::plan(
        ck,
        out,
        &cjob::Options { to: OutFormat::Safetensors, dtype: Some(DType::F32), max_shard_size: None },
    )?;
    Ok((p.outputs, None, p.side_files, p.config))
}

/// Plans quantizing `ck` with `recipe` into `out` (a file for GGUF, else a directory).
pub fn plan(ck: &Checkpoint, recipe: &Recipe, out: &Path, opts: &Options) -> Result<QuantPlan> {
    let layout_kind = recipe.layout;
    let (mut outputs, mut meta, mut side_files, config) = base(ck, out, layout_kind)?;
    let mut low_rank_of: HashMap<String, (usize, KvTensor)> = HashMap::new();
    let low_rank = match &recipe.low_rank_kv {
        Some(spec) => {
            let kv = lowrank_kv::plan(ck, &config, spec, opts.calibration.as_deref(), layout_kind == LayoutKind::Gguf)?;
            (outputs, low_rank_of) = low_rank_outputs(outputs, &kv, layout_kind);
            if let Some(m) = meta.as_mut() {
                m.set(lowrank_kv::GGUF_KEY, Value::String(kv.extension().to_string()));
            }
            Some(kv)
        }
        None if opts.calibration.is_some() => {
            return Err(Error::recipe(
                &recipe.name,
                "--calibration was given, but the recipe has no `low_rank_kv` step",
            ))
        }
        None => None,
    };
    let model = match layout_kind {
        LayoutKind::Gguf => DType::F32,
        _ => cjob::source_float(ck),
    };
    let model = float_dtype(recipe.dtype, model);
    let mut warnings = Vec::new();

    // llama-quantize's choices, made in its loader order.
    let mut preset_choice: HashMap<String, Option<GgmlType>> = HashMap::new();
    if let (Some(preset), LayoutKind::Gguf) = (recipe.preset, layout_kind) {
        let facts = ModelFacts {
            arch: config.arch.info().gguf_arch.to_string(),
            n_layer: (config.num_hidden_layers + config.num_nextn_predict_layers) as u32,
            n_head: config.num_attention_heads as u32,
            n_head_kv: config.num_key_value_heads as u32,
            n_expert: config.moe.as_ref().map_or(0, |m| m.n_routed_experts as u32),
        };
        let mut order: Vec<&OutTensor> = outputs.iter().collect();
        order.sort_by(|a, b| gguf_mix::loader_order(&a.name, &b.name));
        let mut mixer = Mixer::new(facts, preset, false, order.iter().map(|o| o.name.as_str()));
        for o in order {
            preset_choice.insert(o.name.clone(), mixer.choose(&o.name, &o.shape));
        }
    }

    let mut rule_hits = vec![0usize; recipe.rules.len()];
    let mut weights = Vec::with_capacity(outputs.len());
    for o in outputs {
        let candidate = match layout_kind {
            LayoutKind::Gguf => gguf_mix::allows_quantization(&o.name, o.shape.len()),
            _ => is_hf_linear(&o.name, &o.shape),
        };
        let keep = match layout_kind {
            LayoutKind::Gguf => DType::F32,
            // Low-rank KV factors left unquantized stay F32 unless the recipe names a dtype:
            // rounding both factors to a bf16 source's type would make full rank inexact.
            _ if recipe.dtype == FloatDtype::Source && low_rank_of.contains_key(&o.name) => DType::F32,
            _ if recipe.dtype == FloatDtype::Source => source_dtype(ck, &o.op, model),
            _ => model,
        };
        let mut note = None;
        let (mut encoding, mut scheme, origin, on_indiv) =
            match candidate.then(|| recipe.rule_for(&o.name, true)).flatten() {
                Some((i, rule)) => {
                    rule_hits[i] += 1;
                    let e = encoding_of(recipe, &rule.scheme, keep, model);
                    (
                        e,
                        rule.scheme.label(),
                        format!("rule {}", i + 1),
                        rule.on_indivisible.unwrap_or(recipe.on_indivisible),
                    )
                }
                None => match preset_choice.get(&o.name).copied().flatten() {
                    Some(t) => {
                        let e = t.dense().map_or(Encoding::Ggml(t), Encoding::Float);
                        let wanted = recipe.preset.expect("preset").default_type();
                        if candidate && t != wanted && t.block_size() != wanted.block_size() {
                            note = Some(format!(
                                "{} → {} (row length {})",
                                wanted.name(),
                                t.name(),
                                o.shape.last().unwrap_or(&0)
                            ));
                        }
                        (e, t.name().to_string(), format!("preset {:?}", recipe.preset.unwrap()), Indivisible::Fail)
                    }
                    None => (Encoding::Float(keep), float_label(keep), "default".into(), Indivisible::Fail),
                },
            };
        if let Some(why) = indivisible(layout_kind, &encoding, &o.shape) {
            match on_indiv {
                Indivisible::Keep => {
                    note = Some(format!("kept unquantized: {why}"));
                    encoding = Encoding::Float(keep);
                    scheme = float_label(keep);
                }
                Indivisible::Fail => {
                    return Err(Error::tensor(
                        &o.name,
                        format!(
                            "{scheme}: {why} (set `on_indivisible: keep` in the recipe or the rule to leave such tensors unquantized)"
                        ),
                    ))
                }
                Indivisible::Pad => {
                    return Err(Error::tensor(
                        &o.name,
                        format!("{scheme}: {why}; `on_indivisible: pad` is not possible here: the {} layout has no record of a padded shape", layout_kind.name()),
                    ))
                }
            }
        }
        if layout_kind == LayoutKind::DeepseekFp8 {
            if let Encoding::Fp8 { format: Fp8Format::E5M2, .. } = encoding {
                return Err(Error::recipe(
                    &recipe.name,
                    "DeepSeek's FP8 layout stores e4m3 (`fmt: e4m3`); e5m2 has no loader",
                ));
            }
        }
        if layout_kind == LayoutKind::CompressedTensors {
            if let Encoding::Fp8 { format: Fp8Format::E5M2, .. } = encoding {
                return Err(Error::recipe(
                    &recipe.name,
                    "compressed-tensors' float-quantized format stores e4m3 weights",
                ));
            }
        }
        let outputs = layout::outputs(layout_kind, &o.name, &o.shape, &encoding);
        weights.push(WeightPlan {
            name: o.name.clone(),
            shape: o.shape.clone(),
            low_rank: low_rank_of.get(&o.name).copied(),
            source: o,
            encoding,
            scheme,
            origin,
            note,
            outputs,
        });
    }
    for (i, n) in rule_hits.iter().enumerate() {
        if *n == 0 {
            let targets: Vec<&str> = recipe.rules[i].targets.iter().map(|p| p.text.as_str()).collect();
            warnings.push(format!("rule {} (targets {}) matched no tensor", i + 1, targets.join(", ")));
        }
    }
    if !weights.iter().any(WeightPlan::quantized) && layout_kind != LayoutKind::Hf {
        warnings.push("no tensor is quantized by this recipe".into());
    }

    let mut slots = Vec::new();
    let mut specs = Vec::new();
    for (w, wp) in weights.iter().enumerate() {
        for (k, s) in wp.outputs.iter().enumerate() {
            slots.push((w, k));
            specs.push(s.clone());
        }
    }
    let layout = match layout_kind {
        LayoutKind::Gguf => {
            let mut meta = meta.expect("gguf metadata");
            let file_type = recipe.preset.map_or_else(|| mostly_type(&weights), |p| p.file_type());
            meta.set("general.file_type", Value::U32(file_type));
            meta.set("general.quantization_version", Value::U32(2));
            let tensors = specs
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.shape.clone(),
                        s.storage
                            .ggml_type()
                            .or_else(|| match s.storage {
                                Storage::Dense(d) => GgmlType::from_dtype(d),
                                _ => None,
                            })
                            .expect("gguf storage"),
                    )
                })
                .collect();
            FileLayout::Gguf(gguf::GgufPlan::new(meta, tensors)?)
        }
        _ => {
            let tensors = specs
                .iter()
                .map(|s| match s.storage {
                    Storage::Dense(d) => (s.name.clone(), d, s.shape.clone()),
                    Storage::Ggml(_) => unreachable!("ggml storage outside GGUF"),
                })
                .collect();
            let stem = if layout_kind == LayoutKind::Ascend { ascend::STEM } else { "model" };
            let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
            FileLayout::Safetensors(SafetensorsPlan::with_layout(tensors, opts.max_shard_size, &meta, stem, false)?)
        }
    };
    if layout_kind != LayoutKind::Gguf {
        side_files = hf_side_files(recipe, side_files, &weights, model, low_rank.as_ref())?;
    }
    Ok(QuantPlan {
        recipe: recipe.clone(),
        source: ck.path.clone(),
        source_format: ck.format,
        config,
        weights,
        warnings,
        out: out.to_path_buf(),
        layout,
        side_files,
        low_rank,
        slots,
    })
}

/// Output names of layer `l`'s low-rank KV tensors in a layout's naming.
fn low_rank_names(l: usize, layout: LayoutKind) -> [(String, KvTensor); 3] {
    if layout == LayoutKind::Gguf {
        [
            (format!("blk.{l}.attn_kv_a.weight"), KvTensor::Down),
            (format!("blk.{l}.attn_kv_b.weight"), KvTensor::Up),
            (format!("blk.{l}.attn_kv_b.bias"), KvTensor::Bias),
        ]
    } else {
        let p = format!("model.layers.{l}.self_attn");
        [
            (format!("{p}.kv_a_proj.weight"), KvTensor::Down),
            (format!("{p}.kv_b_proj.weight"), KvTensor::Up),
            (format!("{p}.kv_b_proj.bias"), KvTensor::Bias),
        ]
    }
}

/// The base outputs with every layer's k/v projections (weights and biases) replaced by the
/// low-rank tensors, in file order, and which low-rank tensor each new output is.
fn low_rank_outputs(
    outputs: Vec<OutTensor>,
    kv: &KvPlan,
    layout: LayoutKind,
) -> (Vec<OutTensor>, HashMap<String, (usize, KvTensor)>) {
    let replaced = |name: &str| -> bool {
        let (prefix, tails): (&str, &[&str]) = if layout == LayoutKind::Gguf {
            ("blk.", &["attn_k.weight", "attn_k.bias", "attn_v.weight", "attn_v.bias"])
        } else {
            (
                "model.layers.",
                &[
                    "self_attn.k_proj.weight",
                    "self_attn.k_proj.bias",
                    "self_attn.v_proj.weight",
                    "self_attn.v_proj.bias",
                ],
            )
        };
        name.strip_prefix(prefix)
            .and_then(|r| r.split_once('.'))
            .is_some_and(|(l, t)| l.parse::<usize>().is_ok_and(|l| l < kv.ranks.len()) && tails.contains(&t))
    };
    let mut out: Vec<OutTensor> = outputs.into_iter().filter(|o| !replaced(&o.name)).collect();
    let (m, d) = (kv.source.width() as u64, kv.source.d as u64);
    let has_bias = kv.source.has_bias();
    let mut which_of = HashMap::new();
    for (l, &r) in kv.ranks.iter().enumerate() {
        for (name, which) in low_rank_names(l, layout) {
            let shape = match which {
                KvTensor::Down => vec![r as u64, d],
                KvTensor::Up => vec![m, r as u64],
                KvTensor::Bias if has_bias => vec![m],
                KvTensor::Bias => continue,
            };
            which_of.insert(name.clone(), (l, which));
            out.push(OutTensor { name, shape, dtype: DType::F32, op: kv.source.key_op(l).clone() });
        }
    }
    recast_convert::mapping::sort_outputs(&mut out);
    (out, which_of)
}

/// `general.file_type` without a preset: the type holding most quantized parameters.
fn mostly_type(weights: &[WeightPlan]) -> u32 {
    let mut by: BTreeMap<u32, u64> = BTreeMap::new();
    for w in weights {
        let ft = match w.encoding {
            Encoding::Ggml(t) => match t {
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q2_K => 10,
                GgmlType::Q3_K => 12,
                GgmlType::Q4_K => 15,
                GgmlType::Q5_K => 17,
                GgmlType::Q6_K => 18,
                _ => continue,
            },
            Encoding::Float(DType::F16) if w.shape.len() >= 2 => 1,
            Encoding::Float(DType::BF16) if w.shape.len() >= 2 => 32,
            _ => continue,
        };
        *by.entry(ft).or_default() += w.numel();
    }
    by.into_iter().max_by_key(|(_, n)| *n).map_or(0, |(t, _)| t)
}

/// config.json (with the layout's quantization config) and the layout's own side files.
fn hf_side_files(
    r: &Recipe,
    files: Vec<(String, Vec<u8>)>,
    weights: &[WeightPlan],
    model: DType,
    low_rank: Option<&KvPlan>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        if name != "config.json" {
            out.push((name, bytes));
            continue;
        }
        let mut cfg: Json =
            serde_json::from_slice(&bytes).map_err(|e| Error::Unsupported(format!("config.json: {e}")))?;
        let obj = cfg.as_object_mut().ok_or_else(|| Error::Unsupported("config.json is not an object".into()))?;
        obj.remove("quantization_config");
        obj.insert("dtype".into(), json!(torch_name(model)));
        if let Some(kv) = low_rank {
            obj.insert("low_rank_kv".into(), kv.extension());
        }
        match r.layout {
            LayoutKind::DeepseekFp8 => {
                let block = weights
                    .iter()
                    .find_map(|w| match w.encoding {
                        Encoding::Fp8 { granularity: Granularity::Block { rows, cols }, .. } => Some([rows, cols]),
                        _ => None,
                    })
                    .unwrap_or([128, 128]);
                obj.insert("quantization_config".into(), deepseek_fp8::quantization_config(block));
            }
            LayoutKind::CompressedTensors => {
                let mut groups: Vec<(Encoding, Vec<String>)> = Vec::new();
                let mut dense_linear = Vec::new();
                for w in weights.iter().filter(|w| is_hf_linear(&w.name, &w.shape)) {
                    let module = layout::module_of(&w.name).to_string();
                    if !w.quantized() {
                        dense_linear.push(module);
                        continue;
                    }
                    match groups.iter_mut().find(|(e, _)| *e == w.encoding) {
                        Some((_, m)) => m.push(module),
                        None => groups.push((w.encoding.clone(), vec![module])),
                    }
                }
                if !weights.iter().any(|w| w.name == "lm_head.weight") {
                    // Tied embeddings: no lm_head tensor, but runtimes still build the module.
                    dense_linear.push("lm_head".into());
                }
                let q = compressed_tensors::quantization_config(&groups, &dense_linear, r.kv_cache.as_ref());
                obj.insert("quantization_config".into(), q);
            }
            LayoutKind::Ascend | LayoutKind::Gguf | LayoutKind::Hf => {}
        }
        out.push((name, json_bytes(&cfg)));
    }
    if r.layout == LayoutKind::Ascend {
        let mut entries = Vec::new();
        let mut group_size = 0u64;
        for w in weights {
            let t = match &w.encoding {
                Encoding::Int { spec, activations } => {
                    if let int::Group::Size(g) = spec.group {
                        group_size = g as u64;
                    }
                    ascend::type_name(spec.bits, *activations == Activations::Dynamic)
                }
                _ => "FLOAT",
            };
            for o in &w.outputs {
                entries.push((o.name.clone(), t));
            }
        }
        out.push((ascend::DESCRIPTION_FILE.to_string(), json_bytes(&ascend::description(&entries, group_size))));
    }
    Ok(out)
}

/// What `execute` measured for one weight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WeightReport {
    pub name: String,
    pub scheme: String,
    pub origin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub shape: Vec<u64>,
    pub bytes: u64,
    pub bits_per_weight: f64,
    pub error: ErrorStats,
    pub outputs: Vec<OutputReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutputReport {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
}

/// Progress callback: `(weight name, index, count)` after each weight.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Bytes of encoded weights that may wait to be written (see [`execute_files`]).
const IN_FLIGHT: u64 = 64 << 20;

/// [`IN_FLIGHT`], or `RECAST_QUANTIZE_IN_FLIGHT` bytes (for tests: a tiny budget makes every
/// weight wait for the previous one to be written).
fn in_flight_budget() -> u64 {
    std::env::var("RECAST_QUANTIZE_IN_FLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(IN_FLIGHT)
}

/// f32 bytes of source weights encoded together as one group (see [`group_len`]).
const GROUP_F32_BYTES: u64 = 32 << 20;

/// How many of `order`'s first weights are encoded together: consecutive weights holding at
/// most `cap` bytes of f32 values ([`GROUP_F32_BYTES`], or less when the budget of unwritten
/// bytes is smaller), or the first weight alone when it is bigger or a low-rank KV tensor
/// (those share the layer's decomposition, computed once in order). Small weights (norms, the
/// projections of a 135M model) then cost one parallel job per group instead of one each;
/// memory holds the group's values and encodings.
fn group_len(weights: &[WeightPlan], order: &[usize], cap: u64) -> usize {
    let mut bytes = 0u64;
    let mut k = 0;
    for &w in order {
        let wp = &weights[w];
        bytes += wp.numel() * 4;
        if wp.low_rank.is_some() || (k > 0 && bytes > cap) {
            break;
        }
        k += 1;
    }
    k.max(1)
}

struct Pending {
    weight: usize,
    tensors: Vec<Vec<u8>>,
}

type EncodedWeight = (usize, Vec<Vec<u8>>, WeightReport);

/// The files of a plan's weights, in write order: the GGUF file, or each safetensors shard
/// (names relative to the output directory; for GGUF, the output's file name). Each is a unit
/// [`execute_files`] can write on its own.
pub fn weight_files(plan: &QuantPlan) -> Vec<(String, u64)> {
    match &plan.layout {
        FileLayout::Gguf(g) => vec![(gguf_file_name(plan), g.file_size())],
        FileLayout::Safetensors(s) => s.shards.iter().map(|sh| (sh.file_name.clone(), sh.file_size())).collect(),
    }
}

fn gguf_file_name(plan: &QuantPlan) -> String {
    plan.out.file_name().map_or("model.gguf".into(), |n| n.to_string_lossy().into_owned())
}

/// Size and sha256 of a written file: `(name relative to the output, bytes, hex sha256)`.
pub type FileDigest = (String, u64, String);

/// What [`execute_files`] wrote.
pub struct Written {
    /// `(weight index, report)` in write order.
    pub reports: Vec<(usize, WeightReport)>,
    /// Each weight file written, with its digest (computed while writing).
    pub files: Vec<FileDigest>,
}

/// Writes the plan: the weights file(s), then the index and side files. Returns per-weight
/// reports in plan order and the weight files' digests.
pub fn execute(ck: &Checkpoint, plan: &QuantPlan, progress: Progress) -> Result<(Vec<WeightReport>, Vec<FileDigest>)> {
    let all: Vec<usize> = (0..weight_files(plan).len()).collect();
    let mut reports: Vec<Option<WeightReport>> = vec![None; plan.weights.len()];
    let written = execute_files(ck, plan, &all, progress)?;
    for (w, r) in written.reports {
        reports[w] = Some(r);
    }
    write_extras(plan)?;
    Ok((reports.into_iter().map(|r| r.expect("every weight written")).collect(), written.files))
}

/// Writes the files numbered `files` (indices into [`weight_files`]) and returns the report of
/// every weight they hold, as `(weight index, report)` in write order, and each file's digest. A weight whose outputs
/// fall in two files is encoded for each (the encoding is deterministic, so the bytes agree).
///
/// One thread encodes weights in file order (each weight's rows in parallel) and hands them
/// to the writer, so encoding goes on while earlier weights are hashed and written. Encodings
/// not yet written are bounded by [`IN_FLIGHT`] bytes, or one weight when a weight is bigger:
/// a big weight (a token embedding) does not stall the encoders while it is written. Bytes
/// are those of encoding each weight on its own, whatever the thread count.
pub fn execute_files(ck: &Checkpoint, plan: &QuantPlan, files: &[usize], progress: Progress) -> Result<Written> {
    // Output slots in write order, then the weights in the order the writer will need them.
    let slot_order: Vec<Vec<usize>> = files
        .iter()
        .map(|&f| match &plan.layout {
            FileLayout::Gguf(g) => (0..g.tensors.len()).collect(),
            // Slots are numbered in the order tensors were given to the plan (`index`).
            FileLayout::Safetensors(s) => s.shards[f].tensors.iter().map(|t| t.index).collect(),
        })
        .collect();
    let mut order: Vec<usize> = Vec::new();
    for slots in &slot_order {
        let mut last = None;
        for &slot in slots {
            let w = plan.slots[slot].0;
            if last != Some(w) {
                order.push(w);
                last = Some(w);
            }
        }
    }
    let n = order.len();
    let mut reports: Vec<(usize, WeightReport)> = Vec::with_capacity(n);
    let layout_kind = plan.recipe.layout;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<Result<EncodedWeight>>();
        // The writer hands back the size of each weight it has written.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<u64>();
        let weights = &plan.weights;
        let order = &order;
        let low_rank = plan.low_rank.as_ref();
        scope.spawn(move || {
            // The factors of the layer being written: its two or three tensors come from one
            // decomposition.
            let mut factors: Option<LayerFactors> = None;
            let mut in_flight = 0u64;
            let budget = in_flight_budget();
            let cap = GROUP_F32_BYTES.min(budget);
            let mut at = 0;
            while at < order.len() {
                let group = &order[at..at + group_len(weights, &order[at..], cap)];
                at += group.len();
                let size: u64 = group.iter().map(|&w| weights[w].bytes()).sum();
                while in_flight > 0 && in_flight + size > budget {
                    match done_rx.recv() {
                        Ok(b) => in_flight -= b,
                        // The writer stopped (its error is reported there).
                        Err(_) => return,
                    }
                }
                in_flight += size;
                let encoded: Vec<Result<(Vec<Vec<u8>>, WeightReport)>> = match group {
                    [w] => vec![encode_weight(ck, layout_kind, &weights[*w], low_rank, &mut factors)],
                    // Weights of a group are encoded side by side (each still row-parallel),
                    // so a worker that finishes its share of one weight takes rows of
                    // another instead of waiting at every weight's end.
                    _ => group
                        .par_iter()
                        .map(|&w| encode_weight(ck, layout_kind, &weights[w], None, &mut None))
                        .collect(),
                };
                for (r, &w) in encoded.into_iter().zip(group) {
                    let failed = r.is_err();
                    // A closed channel means the writer stopped (its error is reported there).
                    if tx.send(r.map(|(t, rep)| (w, t, rep))).is_err() || failed {
                        return;
                    }
                }
            }
        });
        let mut pending: Option<Pending> = None;
        let mut produce = |slot: usize, sink: &mut Sink| -> Result<()> {
            let (w, k) = plan.slots[slot];
            if !matches!(&pending, Some(p) if p.weight == w) {
                // The weight written last is done: return its bytes to the encoder's budget
                // before waiting for the next one (waiting first would deadlock when that
                // weight alone fills the budget).
                if let Some(done) = pending.take() {
                    let _ = done_tx.send(plan.weights[done.weight].bytes());
                }
                let (got, tensors, report) =
                    rx.recv().map_err(|_| Error::Unsupported("the encoding thread stopped unexpectedly".into()))??;
                assert_eq!(got, w, "weights are written in the order planned");
                progress(&plan.weights[w].name, reports.len(), n);
                reports.push((w, report));
                pending = Some(Pending { weight: w, tensors });
            }
            let p = pending.as_mut().expect("pending weight");
            sink.write(&std::mem::take(&mut p.tensors[k]))?;
            recast_convert::failpoint::hit("quantize-write");
            Ok(())
        };
        let mut digests = Vec::with_capacity(files.len());
        let names = weight_files(plan);
        for &f in files {
            let written = match &plan.layout {
                FileLayout::Gguf(g) => {
                    if let Some(parent) = plan.out.parent().filter(|p| !p.as_os_str().is_empty()) {
                        std::fs::create_dir_all(parent).map_err(|e| recast_convert::Error::io(parent, e))?;
                    }
                    gguf::writer::write_hashed(&plan.out, g, |i, _, sink| produce(i, sink).map_err(to_convert))
                }
                FileLayout::Safetensors(s) => {
                    std::fs::create_dir_all(&plan.out).map_err(|e| recast_convert::Error::io(&plan.out, e))?;
                    let shard = &s.shards[f];
                    st_writer::write_shard_hashed(&plan.out.join(&shard.file_name), shard, |t, sink| {
                        produce(t.index, sink).map_err(to_convert)
                    })
                }
            };
            // On an error the closure returns and drops `rx`, which stops the encoding thread.
            let c = written?;
            digests.push((names[f].0.clone(), c.bytes, c.sha256.expect("hashed file")));
        }
        Ok(digests)
    })
    .map(|files| Written { reports, files })
}

/// Writes what follows the weight files: the safetensors index (multi-shard plans) and the
/// side files (config, tokenizer, quantization description). Nothing for GGUF.
pub fn write_extras(plan: &QuantPlan) -> Result<()> {
    if let FileLayout::Safetensors(s) = &plan.layout {
        std::fs::create_dir_all(&plan.out).map_err(|e| recast_convert::Error::io(&plan.out, e))?;
        if s.shards.len() > 1 {
            let mut text = serde_json::to_string_pretty(&s.index_json()).expect("index serializes");
            text.push('\n');
            atomic::write_file(plan.out.join(s.index_name()), text.as_bytes())?;
        }
        for (name, bytes) in &plan.side_files {
            atomic::write_file(plan.out.join(name), bytes)?;
        }
    }
    Ok(())
}

fn to_convert(e: Error) -> recast_convert::Error {
    match e {
        Error::Convert(c) => c,
        other => recast_convert::Error::Unsupported(other.to_string()),
    }
}

fn encode_weight(
    ck: &Checkpoint,
    layout_kind: LayoutKind,
    wp: &WeightPlan,
    low_rank: Option<&KvPlan>,
    factors: &mut Option<LayerFactors>,
) -> Result<(Vec<Vec<u8>>, WeightReport)> {
    // An F32 source tensor copied unchanged is read in place from the mapped file.
    let owned: Vec<f32>;
    let w: &[f32] = match (&wp.source.op, wp.low_rank) {
        (_, Some((l, which))) => {
            let kv = low_rank.expect("low-rank tensors come with the step's plan");
            if factors.as_ref().is_none_or(|f| f.layer != l) {
                *factors = Some(kv.factors(ck, l)?);
            }
            let f = factors.as_ref().expect("just computed");
            match which {
                KvTensor::Down => &f.factors.down,
                KvTensor::Up => &f.factors.up,
                KvTensor::Bias => f.bias.as_deref().expect("a bias is planned only when the model has one"),
            }
        }
        (Op::Copy(i), None) if ck.tensors[*i].storage == Storage::Dense(DType::F32) => {
            match bytemuck::try_cast_slice(ck.bytes(&ck.tensors[*i])) {
                Ok(w) => w,
                Err(_) => {
                    owned = bytemuck::pod_collect_to_vec(ck.bytes(&ck.tensors[*i]));
                    &owned
                }
            }
        }
        (op, None) => {
            owned = transform::materialize_f32(ck, op)?;
            &owned
        }
    };
    // Quantized encodings refuse non-finite weights (the GGUF encoder checks each task's rows
    // as it encodes them; the others scan first).
    let enc = layout::encode(layout_kind, &wp.shape, &wp.encoding, w).map_err(|(i, v)| {
        let (_, cols) = layout::matrix(&wp.shape);
        let (r, c) = (i as u64 / cols.max(1), i as u64 % cols.max(1));
        Error::tensor(&wp.name, format!("non-finite weight {v} at index {i} (row {r}, column {c}); cannot quantize"))
    })?;
    for i in wp.source.op.inputs() {
        ck.release(&ck.tensors[i]);
    }
    let error = enc.error;
    let report = WeightReport {
        name: wp.name.clone(),
        scheme: wp.scheme.clone(),
        origin: wp.origin.clone(),
        note: wp.note.clone(),
        shape: wp.shape.clone(),
        bytes: wp.bytes(),
        bits_per_weight: wp.bits_per_weight(),
        error,
        outputs: wp
            .outputs
            .iter()
            .map(|o| OutputReport { name: o.name.clone(), dtype: o.storage.name().to_string(), shape: o.shape.clone() })
            .collect(),
    };
    Ok((enc.tensors, report))
}

/// sha256 and size of each file the plan wrote (relative names): those in `known` (digests
/// taken while writing) as given, the others read back.
pub fn output_files(plan: &QuantPlan, known: &[FileDigest]) -> Result<Vec<FileDigest>> {
    let names = weight_files(plan).into_iter().map(|(name, _)| name).chain(extra_files(plan));
    names
        .map(|name| {
            if let Some(d) = known.iter().find(|d| d.0 == name) {
                return Ok(d.clone());
            }
            let path = match plan.layout {
                FileLayout::Gguf(_) => plan.out.clone(),
                FileLayout::Safetensors(_) => plan.out.join(&name),
            };
            let (size, hash) = sha256_file(&path)?;
            Ok((name, size, hash))
        })
        .collect()
}

/// The files [`write_extras`] writes (relative names): the safetensors index of a multi-shard
/// plan, then the side files. None for GGUF.
pub fn extra_files(plan: &QuantPlan) -> Vec<String> {
    let FileLayout::Safetensors(s) = &plan.layout else { return Vec::new() };
    let index = (s.shards.len() > 1).then(|| s.index_name());
    index.into_iter().chain(plan.side_files.iter().map(|(n, _)| n.clone())).collect()
}

pub fn sha256_file(p: &Path) -> Result<(u64, String)> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| recast_convert::Error::io(p, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| recast_convert::Error::io(p, e))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, format!("{:x}", h.finalize())))
}

/// A fingerprint of the source's structure: tensor names, storage types, shapes and byte
/// sizes, plus config.json. Identifies the checkpoint without reading its weights.
pub fn source_fingerprint(ck: &Checkpoint) -> String {
    let mut h = Sha256::new();
    for t in &ck.tensors {
        h.update(t.name.as_bytes());
        h.update(t.storage.name().as_bytes());
        for d in &t.shape {
            h.update(d.to_le_bytes());
        }
        h.update(t.nbytes.to_le_bytes());
    }
    if let Some(p) = ck.config_path() {
        if let Ok(b) = std::fs::read(p) {
            h.update(&b);
        }
    }
    format!("{:x}", h.finalize())
}

/// The manifest written beside the output (`recast-manifest.json`).
pub fn manifest(
    ck: &Checkpoint,
    plan: &QuantPlan,
    reports: &[WeightReport],
    files: &[(String, u64, String)],
    version: &str,
) -> Json {
    let total_bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    json!({
        "recast_version": version,
        "source": {
            "path": ck.path.display().to_string(),
            "format": ck.format.name(),
            "fingerprint": source_fingerprint(ck),
        },
        "recipe": {
            "name": plan.recipe.name,
            "sha256": plan.recipe.hash(),
            "resolved": plan.recipe,
        },
        "layout": plan.recipe.layout.name(),
        "summary": {
            "parameters": plan.total_params(),
            "weight_bytes": total_bytes,
            "bits_per_weight": total_bytes as f64 * 8.0 / plan.total_params().max(1) as f64,
        },
        "warnings": plan.warnings,
        "low_rank_kv": plan.low_rank.as_ref().map(KvPlan::extension),
        "tensors": reports,
        "files": files.iter().map(|(n, s, h)| json!({"name": n, "bytes": s, "sha256": h})).collect::<Vec<_>>(),
        "validation": null,
    })
}
