//! `recast convert`: plan a conversion completely, then stream it to disk.
//!
//! Directions: HF → GGUF, GGUF → HF, HF → HF (dtype cast, re-sharding, DeepSeek FP8 →
//! float). [`plan`] resolves the config, names, shapes, dtypes and file layout without writing;
//! [`execute`] materialises one output tensor at a time (peak memory ≈ the largest output
//! tensor plus its inputs) into atomically renamed files.

use crate::atomic::{self, Sink};
use crate::checkpoint::{Checkpoint, Format};
use crate::config::ModelConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ggml_type::GgmlType;
use crate::gguf::{self, Metadata, Value};
use crate::mapping::{self, OutTensor};
use crate::safetensors::writer as st_writer;
use crate::safetensors::SafetensorsPlan;
use crate::tensor::Storage;
use crate::tokenizer;
use crate::transform;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Output container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    Safetensors,
    Gguf,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub to: OutFormat,
    /// Float type of weights; `None` keeps the source's (f16 for GGUF from quantized).
    pub dtype: Option<DType>,
    /// safetensors only: bytes of tensor data per shard.
    pub max_shard_size: Option<u64>,
}

/// A fully resolved conversion.
pub struct Plan {
    pub config: ModelConfig,
    pub outputs: Vec<OutTensor>,
    pub layout: Layout,
    /// Small side files (config.json, tokenizer files) written after the weights.
    pub side_files: Vec<(String, Vec<u8>)>,
    pub out: PathBuf,
}

pub enum Layout {
    Gguf(gguf::GgufPlan),
    Safetensors(SafetensorsPlan),
}

impl Plan {
    /// Bytes the output will occupy (weights files plus side files).
    pub fn output_bytes(&self) -> u64 {
        let weights = match &self.layout {
            Layout::Gguf(p) => p.file_size(),
            Layout::Safetensors(p) => p.shards.iter().map(|s| s.file_size()).sum(),
        };
        weights + self.side_files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    }
}

fn read_raw_config(ck: &Checkpoint) -> Result<Option<(PathBuf, serde_json::Value)>> {
    let Some(p) = ck.config_path() else { return Ok(None) };
    let text = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    let v = serde_json::from_slice(&text).map_err(|e| Error::Json { path: p.clone(), detail: e.to_string() })?;
    Ok(Some((p, v)))
}

fn hf_config(ck: &Checkpoint) -> Result<(PathBuf, serde_json::Value, ModelConfig)> {
    let (p, raw) = read_raw_config(ck)?.ok_or_else(|| Error::MissingTensor {
        tensor: "config.json".into(),
        why: format!("reading {} as a Hugging Face model (config.json must sit beside the weights)", ck.path.display()),
    })?;
    let cfg = ModelConfig::from_hf_json(&p, &raw)?;
    Ok((p, raw, cfg))
}

/// The dominant float dtype of a checkpoint's weights (for "keep the source dtype").
pub fn source_float(ck: &Checkpoint) -> DType {
    let mut bytes: BTreeMap<DType, u64> = BTreeMap::new();
    for t in &ck.tensors {
        let d = match t.storage {
            Storage::Dense(d) if matches!(d, DType::F32 | DType::F16 | DType::BF16) => d,
            Storage::Dense(_) => continue,
            Storage::Ggml(_) => DType::F16,
        };
        *bytes.entry(d).or_default() += t.nbytes;
    }
    bytes.into_iter().max_by_key(|(_, b)| *b).map_or(DType::F32, |(d, _)| d)
}

/// Plans converting `ck` to `out`.
pub fn plan(ck: &Checkpoint, out: &Path, opts: &Options) -> Result<Plan> {
    if let Some(d) = opts.dtype {
        if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::Unsupported(format!(
                "--dtype {d}: convert writes f32, f16 or bf16 (quantized types come from `recast quantize`)"
            )));
        }
    }
    let target = opts.dtype.unwrap_or_else(|| source_float(ck));
    match (ck.format, opts.to) {
        (Format::Safetensors, OutFormat::Gguf) => plan_hf_to_gguf(ck, out, target),
        (Format::Gguf, OutFormat::Safetensors) => plan_gguf_to_hf(ck, out, target, opts.max_shard_size),
        (Format::Safetensors, OutFormat::Safetensors) => plan_hf_to_hf(ck, out, target, opts.max_shard_size),
        (Format::Gguf, OutFormat::Gguf) => {
            Err(Error::Unsupported("GGUF → GGUF re-typing is `recast quantize`'s job".into()))
        }
    }
}

/// llama.cpp `general.file_type` for an all-float output (formats.md §2.10).
fn file_type(target: DType) -> u32 {
    match target {
        DType::F32 => 0,
        DType::F16 => 1,
        _ => 32, // BF16
    }
}

fn plan_hf_to_gguf(ck: &Checkpoint, out: &Path, target: DType) -> Result<Plan> {
    let (_, raw, cfg) = hf_config(ck)?;
    let block = mapping::fp8_block_size(Some(&raw));
    let outputs = mapping::hf_to_gguf(ck, &cfg, target, block)?;
    let mut meta = Metadata::new();
    meta.set("general.architecture", Value::String(cfg.arch.info().gguf_arch.into()));
    meta.set("general.type", Value::String("model".into()));
    let name = ck.model_dir.as_deref().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    if let Some(name) = name {
        meta.set("general.name", Value::String(name));
    }
    cfg.to_gguf_metadata(&mut meta);
    meta.set("general.file_type", Value::U32(file_type(target)));
    meta.set("general.quantization_version", Value::U32(2));
    let dir = ck.model_dir.as_deref().unwrap_or(Path::new("."));
    for (k, v) in tokenizer::gguf_metadata_from_hf(dir, cfg.vocab_size as usize)?.iter() {
        meta.set(k, v.clone());
    }
    let tensors =
        outputs.iter().map(|o| (o.name.clone(), o.shape.clone(), GgmlType::from_dtype(o.dtype).unwrap())).collect();
    let layout = Layout::Gguf(gguf::GgufPlan::new(meta, tensors)?);
    Ok(Plan { config: cfg, outputs, layout, side_files: Vec::new(), out: out.to_path_buf() })
}

/// transformers' name of a float dtype (config.json `dtype`).
pub fn torch_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

/// Pretty JSON with a trailing newline, as side files are written.
pub fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).expect("serializes");
    s.push('\n');
    s.into_bytes()
}

fn st_layout(outputs: &[OutTensor], max_shard_size: Option<u64>) -> Result<Layout> {
    let tensors = outputs.iter().map(|o| (o.name.clone(), o.dtype, o.shape.clone())).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    Ok(Layout::Safetensors(SafetensorsPlan::new(tensors, max_shard_size, &meta)?))
}

fn plan_gguf_to_hf(ck: &Checkpoint, out: &Path, target: DType, max_shard_size: Option<u64>) -> Result<Plan> {
    let meta = &ck.gguf.as_ref().expect("gguf checkpoint").metadata;
    let cfg = ck.gguf_config()?;
    let outputs = mapping::gguf_to_hf(ck, &cfg, target)?;
    let tok = tokenizer::hf_tokenizer_from_gguf(meta)?;
    let mut config = cfg.to_hf_json(torch_name(target));
    for (k, v) in
        [("bos_token_id", tok.bos_token_id), ("eos_token_id", tok.eos_token_id), ("pad_token_id", tok.pad_token_id)]
    {
        if let Some(v) = v {
            config[k] = serde_json::json!(v);
        }
    }
    let side_files = vec![
        ("config.json".to_string(), json_bytes(&config)),
        ("tokenizer.json".to_string(), json_bytes(&tok.tokenizer_json)),
        ("tokenizer_config.json".to_string(), json_bytes(&tok.tokenizer_config)),
    ];
    Ok(Plan { config: cfg, layout: st_layout(&outputs, max_shard_size)?, outputs, side_files, out: out.to_path_buf() })
}

/// Side files copied verbatim in HF → HF conversions.
const HF_SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

fn plan_hf_to_hf(ck: &Checkpoint, out: &Path, target: DType, max_shard_size: Option<u64>) -> Result<Plan> {
    let (_, mut raw, cfg) = hf_config(ck)?;
    let block = mapping::fp8_block_size(Some(&raw));
    let outputs = mapping::hf_to_hf(ck, target, block)?;
    if let Some(obj) = raw.as_object_mut() {
        obj.remove("quantization_config");
        obj.remove("torch_dtype");
        obj.insert("dtype".into(), serde_json::json!(torch_name(target)));
    }
    let mut side_files = vec![("config.json".to_string(), json_bytes(&raw))];
    let dir = ck.model_dir.clone().unwrap_or_default();
    for name in HF_SIDE_FILES {
        let p = dir.join(name);
        if p.is_file() {
            side_files.push((name.to_string(), std::fs::read(&p).map_err(|e| Error::io(&p, e))?));
        }
    }
    Ok(Plan { config: cfg, layout: st_layout(&outputs, max_shard_size)?, outputs, side_files, out: out.to_path_buf() })
}

/// Progress callback: `(tensor name, bytes written)` after each tensor.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64);

/// Writes the plan. GGUF: `out` is the file. safetensors: `out` is a directory (created).
pub fn execute(ck: &Checkpoint, plan: &Plan, progress: Progress) -> Result<()> {
    let mut produce = |op: &transform::Op, dtype: DType, name: &str, sink: &mut Sink| -> Result<()> {
        transform::stream(ck, op, dtype, sink)?;
        for i in op.inputs() {
            ck.release(&ck.tensors[i]);
        }
        progress(name, sink.written());
        Ok(())
    };
    match &plan.layout {
        Layout::Gguf(g) => {
            if let Some(parent) = plan.out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            gguf::writer::write(&plan.out, g, |i, t, buf| {
                produce(&plan.outputs[i].op, plan.outputs[i].dtype, &t.name, buf)
            })
        }
        Layout::Safetensors(s) => {
            std::fs::create_dir_all(&plan.out).map_err(|e| Error::io(&plan.out, e))?;
            st_writer::write_all(&plan.out, s, |t, buf| produce(&plan.outputs[t.index].op, t.dtype, &t.name, buf))?;
            for (name, bytes) in &plan.side_files {
                atomic::write_file(plan.out.join(name), bytes)?;
            }
            Ok(())
        }
    }
}
