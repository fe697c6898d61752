//! The `low_rank_kv` recipe step (docs/low-rank-kv.md): which layers are factored at which
//! rank, the calibration statistics file `recast calibrate` writes and this step reads, and the
//! factors of one layer, computed on demand while the output is written.
//!
//! Weights are read by their Hugging Face names through recast-convert's own conversion plans,
//! so a GGUF source (with llama.cpp's Q/K permutation) factors exactly like its HF original.
//! Factors are computed in HF row order; for the GGUF layout the key rows of the up-projection
//! get attn_k's permutation afterwards.

use crate::error::{Error, Result};
use crate::lowrank::{self, KvFactors, KvSvd, RankRule};
use crate::recipe::{Calibration, KvRank, LowRankKv};
use recast_convert::atomic::Sink;
use recast_convert::mapping::{self, OutTensor};
use recast_convert::safetensors::writer::write_shard;
use recast_convert::safetensors::SafetensorsPlan;
use recast_convert::transform::{self, Op};
use recast_convert::{Checkpoint, DType, ModelConfig, Storage};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `__metadata__["format"]` of a calibration statistics file.
pub const STATS_FORMAT: &str = "recast-kv-calibration";
/// The statistics file version this code writes and reads.
pub const STATS_VERSION: u32 = 1;
/// Version of the `low_rank_kv` config extension (config.json / GGUF `recast.low_rank_kv`).
pub const EXTENSION_VERSION: u32 = 1;
/// The GGUF metadata key carrying the extension (a JSON string).
pub const GGUF_KEY: &str = "recast.low_rank_kv";

/// The tensor holding layer `l`'s `E[x xᵀ]` in a statistics file.
pub fn stats_tensor(l: usize) -> String {
    format!("layers.{l}.second_moment")
}

/// One layer's sources, by HF name.
#[derive(Clone, Debug)]
struct LayerSrc {
    k: Op,
    v: Op,
    kb: Option<Op>,
    vb: Option<Op>,
}

/// The key/value projections of every layer of a llama-family model, readable as f32 in HF
/// row order whatever the checkpoint's format.
#[derive(Clone, Debug)]
pub struct KvSource {
    layers: Vec<LayerSrc>,
    /// Rows of one projection: n_kv · head_dim.
    pub rows: usize,
    /// Hidden size.
    pub d: usize,
    pub n_kv: u64,
}

/// One layer's weights as read.
pub struct LayerWeights {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// `[k_bias ‖ v_bias]` (zeros for a missing half), when the model has either.
    pub bias: Option<Vec<f32>>,
}

fn unsupported(why: String) -> Error {
    Error::Unsupported(format!("low_rank_kv: {why}"))
}

impl KvSource {
    /// Finds every layer's k_proj/v_proj (and biases). Errors name what is not a plain
    /// llama-family attention: MLA (already a latent), an already factored model, a missing
    /// projection.
    pub fn new(ck: &Checkpoint, cfg: &ModelConfig) -> Result<KvSource> {
        if cfg.mla.is_some() {
            return Err(unsupported(format!(
                "{} uses multi-head latent attention, which already caches a low-rank latent; only llama-family \
                 attention (MHA/GQA with k_proj and v_proj) is factored",
                cfg.arch.info().model_type
            )));
        }
        let outs = mapping::hf_view(ck, cfg)?;
        let by: HashMap<String, OutTensor> = outs.into_iter().map(|o| (o.name.clone(), o)).collect();
        let (d, rows) = (cfg.hidden_size as usize, (cfg.num_key_value_heads * cfg.head_dim) as usize);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers as usize);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}.self_attn");
            if by.contains_key(&format!("{p}.kv_a_proj.weight")) {
                return Err(unsupported(format!(
                    "{}: layer {l} is already low-rank ({p}.kv_a_proj.weight); factor the original model",
                    ck.path.display()
                )));
            }
            let get = |name: &str, shape: &[usize]| -> Result<Op> {
                let o = by.get(name).ok_or_else(|| {
                    unsupported(format!("{}: no {name} (unsupported attention type)", ck.path.display()))
                })?;
                if o.shape.iter().map(|&x| x as usize).ne(shape.iter().copied()) {
                    return Err(Error::tensor(
                        name,
                        format!("shape {:?}, expected {shape:?} (n_kv·head_dim × hidden)", o.shape),
                    ));
                }
                Ok(o.op.clone())
            };
            let bias = |name: String| -> Result<Option<Op>> {
                by.contains_key(&name).then(|| get(&name, &[rows])).transpose()
            };
            layers.push(LayerSrc {
                k: get(&format!("{p}.k_proj.weight"), &[rows, d])?,
                v: get(&format!("{p}.v_proj.weight"), &[rows, d])?,
                kb: bias(format!("{p}.k_proj.bias"))?,
                vb: bias(format!("{p}.v_proj.bias"))?,
            });
        }
        if layers.is_empty() {
            return Err(unsupported(format!("{}: the model has no layers", ck.path.display())));
        }
        Ok(KvSource { layers, rows, d, n_kv: cfg.num_key_value_heads })
    }

    /// Whether the model has key or value biases (then the up-projection has a bias).
    pub fn has_bias(&self) -> bool {
        self.layers.iter().any(|l| l.kb.is_some() || l.vb.is_some())
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Joint KV width m = 2·n_kv·head_dim.
    pub fn width(&self) -> usize {
        2 * self.rows
    }

    /// Largest rank: min(m, d).
    pub fn full_rank(&self) -> usize {
        self.width().min(self.d)
    }

    /// Layer `l`'s projections as f32 in HF row order.
    pub fn read(&self, ck: &Checkpoint, l: usize) -> Result<LayerWeights> {
        let s = &self.layers[l];
        let bias = match (&s.kb, &s.vb) {
            (None, None) => None,
            (kb, vb) => {
                let mut b = Vec::with_capacity(2 * self.rows);
                for op in [kb, vb] {
                    match op {
                        Some(op) => b.extend(transform::materialize_f32(ck, op)?),
                        None => b.extend(std::iter::repeat_n(0.0, self.rows)),
                    }
                }
                Some(b)
            }
        };
        Ok(LayerWeights { k: transform::materialize_f32(ck, &s.k)?, v: transform::materialize_f32(ck, &s.v)?, bias })
    }

    /// The op a planned output borrows for its source dtype and inputs (layer `l`'s key).
    pub fn key_op(&self, l: usize) -> &Op {
        &self.layers[l].k
    }
}

/// Identifies a model's key/value weights by value: sha256 over every layer's k_proj and
/// v_proj rounded to bf16, in HF row order. The same model in F32, BF16 or F16 safetensors
/// or as an F32/F16/BF16 GGUF fingerprints the same (for F16, when its values are bf16-exact
/// after rounding, which they are for a BF16 original); a fine-tune, another model or a
/// quantized copy does not.
pub struct Fingerprinter {
    h: Sha256,
}

impl Default for Fingerprinter {
    fn default() -> Self {
        let mut h = Sha256::new();
        h.update(b"recast-kv-weights-v1");
        Fingerprinter { h }
    }
}

impl Fingerprinter {
    pub fn layer(&mut self, w: &LayerWeights) {
        for x in w.k.iter().chain(&w.v) {
            self.h.update(half::bf16::from_f32(*x).to_bits().to_le_bytes());
        }
    }
    pub fn finish(self) -> String {
        format!("sha256:{:x}", self.h.finalize())
    }
}

/// Accumulates each layer's `Σ x xᵀ` over calibration tokens (f64).
pub struct Moments {
    d: usize,
    sums: Vec<faer::Mat<f64>>,
    tokens: Vec<u64>,
}

impl Moments {
    pub fn new(layers: usize, d: usize) -> Self {
        Moments { d, sums: (0..layers).map(|_| faer::Mat::zeros(d, d)).collect(), tokens: vec![0; layers] }
    }

    /// Adds layer `l`'s inputs `h` (`[n, d]` row-major).
    pub fn add(&mut self, l: usize, h: &[f32]) {
        let (d, n) = (self.d, h.len() / self.d);
        let x = faer::Mat::<f64>::from_fn(n, d, |i, j| h[i * d + j] as f64);
        // Every entry sums over tokens in the same order whatever the thread count (faer's
        // parallel matmul splits the output, never the inner dimension), so statistics do not
        // depend on the number of threads.
        faer::linalg::matmul::matmul(
            self.sums[l].as_mut(),
            faer::Accum::Add,
            x.transpose(),
            x.as_ref(),
            1.0,
            faer::Par::rayon(0),
        );
        self.tokens[l] += n as u64;
    }

    /// Tokens seen (by layer 0).
    pub fn tokens(&self) -> u64 {
        self.tokens.first().copied().unwrap_or(0)
    }

    /// `E[x xᵀ]` per layer, row-major.
    pub fn finish(self) -> Vec<Vec<f64>> {
        let d = self.d;
        self.sums
            .iter()
            .zip(&self.tokens)
            .map(|(s, &n)| {
                let n = n.max(1) as f64;
                (0..d * d).map(|k| s[(k / d, k % d)] / n).collect()
            })
            .collect()
    }
}

/// What a statistics file says about itself.
#[derive(Clone, Debug)]
pub struct StatsMeta {
    /// [`Fingerprinter`] of the model the statistics were collected on.
    pub model_fingerprint: String,
    pub layers: usize,
    pub hidden_size: usize,
    /// Calibration tokens (positions) the moments average over.
    pub tokens: u64,
    /// The command that regenerates the file.
    pub regenerate: String,
    /// Where the model came from (file name), for messages.
    pub model_source: String,
}

impl StatsMeta {
    fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("format".into(), STATS_FORMAT.into()),
            ("version".into(), STATS_VERSION.to_string()),
            ("model_fingerprint".into(), self.model_fingerprint.clone()),
            ("layers".into(), self.layers.to_string()),
            ("hidden_size".into(), self.hidden_size.to_string()),
            ("tokens".into(), self.tokens.to_string()),
            ("regenerate".into(), self.regenerate.clone()),
            ("model_source".into(), self.model_source.clone()),
        ])
    }
}

/// Writes a statistics file (atomically): `moments[l]` is layer l's `E[x xᵀ]`, `d × d` row-major.
pub fn write_stats(path: &Path, meta: &StatsMeta, moments: &[Vec<f64>]) -> Result<u64> {
    let d = meta.hidden_size;
    if moments.len() != meta.layers || moments.iter().any(|m| m.len() != d * d) {
        return Err(Error::Unsupported(format!(
            "{}: moments do not match {} layers of {d}×{d}",
            path.display(),
            meta.layers
        )));
    }
    let planned = (0..meta.layers).map(|l| (stats_tensor(l), DType::F64, vec![d as u64, d as u64])).collect();
    let plan = SafetensorsPlan::new(planned, None, &meta.to_map())?;
    let shard = &plan.shards[0];
    write_shard(path, shard, |t, sink: &mut Sink| {
        let l: usize = t.name["layers.".len()..].split('.').next().and_then(|n| n.parse().ok()).expect("planned name");
        sink.write(&moments[l].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
    })?;
    Ok(shard.file_size())
}

/// A statistics file opened for reading (tensors stay mapped; one layer is decoded at a time).
pub struct Stats {
    pub path: PathBuf,
    pub meta: StatsMeta,
    ck: Checkpoint,
}

impl Stats {
    /// Opens and checks a statistics file: its format tag and version, one `d × d` F64 tensor
    /// per layer.
    pub fn open(path: &Path) -> Result<Stats> {
        let bad = |detail: String| Error::File { path: path.to_path_buf(), detail };
        let ck = Checkpoint::open(path).map_err(|e| bad(format!("not a calibration statistics file: {e}")))?;
        let m = &ck.st_metadata;
        if m.get("format").map(String::as_str) != Some(STATS_FORMAT) {
            return Err(bad(format!(
                "not a calibration statistics file (metadata format is {:?}, expected \"{STATS_FORMAT}\"; write one with `recast calibrate`)",
                m.get("format")
            )));
        }
        let num = |key: &str| -> Result<u64> {
            m.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(format!("metadata '{key}' is missing or not a number")))
        };
        let version = num("version")?;
        if version != STATS_VERSION as u64 {
            return Err(bad(format!("statistics version {version}; this recast reads version {STATS_VERSION}")));
        }
        let text = |key: &str| m.get(key).cloned().unwrap_or_default();
        let meta = StatsMeta {
            model_fingerprint: m
                .get("model_fingerprint")
                .cloned()
                .ok_or_else(|| bad("metadata 'model_fingerprint' is missing".into()))?,
            layers: num("layers")? as usize,
            hidden_size: num("hidden_size")? as usize,
            tokens: num("tokens")?,
            regenerate: text("regenerate"),
            model_source: text("model_source"),
        };
        let d = meta.hidden_size as u64;
        for l in 0..meta.layers {
            let name = stats_tensor(l);
            let t = ck.get(&name).ok_or_else(|| bad(format!("tensor {name} is missing")))?;
            if t.storage != Storage::Dense(DType::F64) || t.shape != [d, d] {
                return Err(bad(format!("tensor {name}: {} {:?}, expected F64 [{d}, {d}]", t.storage.name(), t.shape)));
            }
        }
        Ok(Stats { path: path.to_path_buf(), meta, ck })
    }

    /// Layer `l`'s second moment, `d × d` row-major.
    pub fn layer(&self, l: usize) -> Result<Vec<f64>> {
        let t = self.ck.get(&stats_tensor(l)).expect("checked at open");
        let v: Vec<f64> = bytemuck::pod_collect_to_vec(self.ck.bytes(t));
        self.ck.release(t);
        Ok(v)
    }
}

/// The resolved step: ranks per layer and how the factors are computed.
pub struct KvPlan {
    pub spec: LowRankKv,
    pub source: KvSource,
    pub ranks: Vec<usize>,
    pub stats: Option<Stats>,
    /// [`Fingerprinter`] of the source's K/V weights (computed when statistics are used).
    pub fingerprint: Option<String>,
    /// For the GGUF layout of a llama-arch model: permute the first `rows` rows of the
    /// up-projection (and bias) as llama.cpp permutes attn_k, for `n_kv` heads.
    pub permute_keys: Option<u64>,
}

fn low_rank_err(e: lowrank::LowRankError, what: String) -> Error {
    Error::Unsupported(format!("low_rank_kv: {what}: {e}"))
}

/// Plans the step for `ck`. `calibration` (the `--calibration` flag) overrides the recipe's.
pub fn plan(
    ck: &Checkpoint,
    cfg: &ModelConfig,
    spec: &LowRankKv,
    calibration: Option<&Path>,
    gguf: bool,
) -> Result<KvPlan> {
    let source = KvSource::new(ck, cfg)?;
    let stats_path = match (calibration, &spec.calibration) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Calibration::Path(p)) => Some(p.clone()),
        (None, Calibration::Required) => {
            return Err(unsupported(
                "this recipe needs calibration statistics: run `recast calibrate MODEL --prompts FILE -o STATS` \
                 and pass `--calibration STATS`"
                    .into(),
            ))
        }
        (None, Calibration::None) => None,
    };
    let mut spec = spec.clone();
    if let Some(p) = &stats_path {
        spec.calibration = Calibration::Path(p.clone());
    }
    let stats = stats_path.as_deref().map(Stats::open).transpose()?;
    if let Some(s) = &stats {
        if s.meta.layers != source.n_layers() || s.meta.hidden_size != source.d {
            return Err(Error::File {
                path: s.path.clone(),
                detail: format!(
                    "statistics of {} layers × hidden {}; this model has {} layers × hidden {} (collected on another model)",
                    s.meta.layers,
                    s.meta.hidden_size,
                    source.n_layers(),
                    source.d
                ),
            });
        }
    }
    let needs_spectra = matches!(spec.rank, KvRank::Energy(_) | KvRank::Budget(_));
    let mut fp = stats.as_ref().map(|_| Fingerprinter::default());
    let mut spectra = Vec::new();
    if fp.is_some() || needs_spectra {
        for l in 0..source.n_layers() {
            let w = source.read(ck, l)?;
            if let Some(f) = fp.as_mut() {
                f.layer(&w);
            }
            if needs_spectra {
                let c = stats.as_ref().map(|s| s.layer(l)).transpose()?;
                let svd = lowrank::decompose(&w.k, &w.v, source.rows, source.d, c.as_deref())
                    .map_err(|e| low_rank_err(e, format!("layer {l}")))?;
                spectra.push(svd.s);
            }
        }
    }
    let fingerprint = fp.map(Fingerprinter::finish);
    if let (Some(s), Some(f)) = (&stats, &fingerprint) {
        if s.meta.model_fingerprint != *f {
            return Err(Error::File {
                path: s.path.clone(),
                detail: format!(
                    "calibration statistics were collected on another model ({}, fingerprint {}), not on {} \
                     (fingerprint {f}); collect them on this model: recast calibrate {} --prompts FILE -o STATS",
                    if s.meta.model_source.is_empty() { "unknown source" } else { &s.meta.model_source },
                    s.meta.model_fingerprint,
                    ck.path.display(),
                    ck.path.display(),
                ),
            });
        }
    }
    let (m, full) = (source.width(), source.full_rank());
    let rule = match spec.rank {
        KvRank::Rank(r) => RankRule::Rank(r),
        KvRank::Ratio(f) => RankRule::Ratio(f),
        KvRank::Energy(e) => RankRule::Energy(e),
        KvRank::Budget(f) => RankRule::Budget(((f * (m * source.n_layers()) as f64).round() as usize).max(1)),
    };
    if !needs_spectra {
        // Rank rules need only the spectrum lengths.
        spectra = vec![vec![0.0; full]; source.n_layers()];
    }
    let ranks = lowrank::select_ranks(&spectra, m, rule).map_err(|e| match e {
        lowrank::LowRankError::RankTooLarge { rank, .. } => unsupported(format!(
            "rank {rank} is larger than this model's layers factor to: at most rank {full}, the min of the \
             KV width 2·n_kv·head_dim = {m} and the hidden size {} (that rank is already exact)",
            source.d
        )),
        e => low_rank_err(e, "selecting ranks".into()),
    })?;
    let permute_keys = (gguf && cfg.arch.permutes_qk()).then_some(source.n_kv);
    Ok(KvPlan { spec, source, ranks, stats, fingerprint, permute_keys })
}

/// One layer's output tensors.
pub struct LayerFactors {
    pub layer: usize,
    pub factors: KvFactors,
    pub bias: Option<Vec<f32>>,
}

impl KvPlan {
    pub fn method(&self) -> &'static str {
        if self.stats.is_some() {
            "calibrated-joint-svd"
        } else {
            "joint-svd"
        }
    }

    /// Values cached per token: before (2·n_kv·head_dim per layer) and after (the ranks).
    pub fn cache_values(&self) -> (u64, u64) {
        let before = (self.source.width() * self.ranks.len()) as u64;
        (before, self.ranks.iter().map(|&r| r as u64).sum())
    }

    /// Computes layer `l`'s factors (deterministic: the same bytes on every call).
    pub fn factors(&self, ck: &Checkpoint, l: usize) -> Result<LayerFactors> {
        let w = self.source.read(ck, l)?;
        let c = self.stats.as_ref().map(|s| s.layer(l)).transpose()?;
        let svd: KvSvd = lowrank::decompose(&w.k, &w.v, self.source.rows, self.source.d, c.as_deref())
            .map_err(|e| low_rank_err(e, format!("layer {l}")))?;
        let mut factors = svd.truncate(self.ranks[l]).map_err(|e| low_rank_err(e, format!("layer {l}")))?;
        let mut bias = w.bias;
        if let Some(n_head) = self.permute_keys {
            let rows = self.source.rows;
            let order = recast_convert::transform::row_order(rows as u64, n_head, false)
                .map_err(|e| unsupported(format!("layer {l}: {e}")))?;
            let r = factors.rank;
            let up = factors.up.clone();
            for (new, &old) in order.iter().enumerate() {
                factors.up[new * r..(new + 1) * r].copy_from_slice(&up[old * r..(old + 1) * r]);
            }
            if let Some(b) = bias.as_mut() {
                let orig = b.clone();
                for (new, &old) in order.iter().enumerate() {
                    b[new] = orig[old];
                }
            }
        }
        Ok(LayerFactors { layer: l, factors, bias })
    }

    /// The config extension (`"low_rank_kv"` in config.json, `recast.low_rank_kv` in GGUF).
    pub fn extension(&self) -> Json {
        let (before, after) = self.cache_values();
        json!({
            "version": EXTENSION_VERSION,
            "method": self.method(),
            "rule": self.spec.label(),
            "kv_width": self.source.width(),
            "ranks": self.ranks,
            "cache_values_per_token": after,
            "original_cache_values_per_token": before,
            "tensors": {
                "down": "model.layers.N.self_attn.kv_a_proj.weight [rank, hidden]",
                "up": "model.layers.N.self_attn.kv_b_proj.weight [2*n_kv*head_dim, rank] (key rows, then value rows)",
                "bias": "model.layers.N.self_attn.kv_b_proj.bias [2*n_kv*head_dim] (models with k/v biases)",
            },
            "calibration": self.stats.as_ref().map(|s| json!({
                "file": s.path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "model_fingerprint": s.meta.model_fingerprint,
                "tokens": s.meta.tokens,
            })),
        })
    }
}
