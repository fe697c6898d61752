//! The hardware capability table: what each target can run, and the check that rejects a recipe
//! asking for something else (with the reason and what to use instead).
//!
//! One row per target. Sources: NVIDIA Hopper and Ada support OCP FP8 (e4m3/e5m2) in tensor
//! cores, Ampere does not; AMD MI300 (CDNA3) computes FP8 in the FNUZ encodings (e4m3fnuz, bias 8,
//! max 240) — vLLM on ROCm converts OCP e4m3fn checkpoints at load (formats.md §8.3); Huawei
//! Ascend 910B has no FP8 units and runs int8 / int4 weight formats through msModelSlim
//! layouts (§7); CPUs run llama.cpp's ggml types.

use crate::codec::fp8::Fp8Format;
use crate::error::{Error, Result};
use crate::recipe::{Activations, LayoutKind, Recipe, Scheme};

/// One target's capabilities.
pub struct Hardware {
    pub key: &'static str,
    pub name: &'static str,
    /// FP8 encodings the hardware computes in.
    pub fp8: &'static [Fp8Format],
    /// Integer weight widths its kernels take.
    pub int_bits: &'static [u8],
    /// Layouts whose runtime runs on it.
    pub layouts: &'static [LayoutKind],
    /// Why FP8 is missing, or what the FP8 constraint is (for error messages).
    pub fp8_note: &'static str,
}

use Fp8Format::*;
use LayoutKind::*;

pub const TABLE: &[Hardware] = &[
    Hardware {
        key: "nvidia-h100",
        name: "NVIDIA H100 (Hopper, SM90)",
        fp8: &[E4M3Fn, E5M2],
        int_bits: &[4, 8],
        layouts: &[CompressedTensors, DeepseekFp8, Gguf],
        fp8_note: "Hopper tensor cores take OCP FP8 (e4m3fn, e5m2), not the FNUZ encodings",
    },
    Hardware {
        key: "nvidia-l40s",
        name: "NVIDIA L40S (Ada, SM89)",
        fp8: &[E4M3Fn, E5M2],
        int_bits: &[4, 8],
        layouts: &[CompressedTensors, DeepseekFp8, Gguf],
        fp8_note: "Ada tensor cores take OCP FP8 (e4m3fn, e5m2)",
    },
    Hardware {
        key: "nvidia-a100",
        name: "NVIDIA A100 (Ampere, SM80)",
        fp8: &[],
        int_bits: &[4, 8],
        layouts: &[CompressedTensors, Gguf],
        fp8_note: "Ampere has no FP8 tensor cores; use int8 (W8A8) or int4 (W4A16)",
    },
    Hardware {
        key: "amd-mi300",
        name: "AMD Instinct MI300X/MI300A (CDNA3)",
        fp8: &[E4M3Fnuz],
        int_bits: &[4, 8],
        layouts: &[CompressedTensors, DeepseekFp8, Gguf],
        fp8_note: "CDNA3 computes FP8 as e4m3fnuz (bias 8, max 240, no -0); quantize with format e4m3fnuz \
                   (recast stores it in the OCP container vLLM ROCm converts at load, with identical values)",
    },
    Hardware {
        key: "ascend-910b",
        name: "Huawei Ascend 910B",
        fp8: &[],
        int_bits: &[4, 8],
        layouts: &[Ascend],
        fp8_note: "Ascend 910B has no FP8 units; use int8 (W8A8_DYNAMIC, W8A16) or int4 (W4A16)",
    },
    Hardware {
        key: "cpu",
        name: "CPUs through llama.cpp (x86-64 AVX2/AVX-512, ARM NEON)",
        fp8: &[],
        int_bits: &[],
        layouts: &[Gguf],
        fp8_note: "llama.cpp has no FP8 weight type; use ggml types (Q8_0, Q6_K, Q4_K…)",
    },
    Hardware {
        key: "reference",
        name: "recast's reference engine (recast golden / validate on CPU)",
        fp8: &[E4M3Fn, E5M2, E4M3Fnuz],
        int_bits: &[4, 8],
        layouts: &[Hf, Gguf, CompressedTensors, DeepseekFp8, Ascend],
        fp8_note: "",
    },
];

pub fn find(key: &str) -> Option<&'static Hardware> {
    TABLE.iter().find(|h| h.key == key)
}

/// Rejects what the recipe's target cannot run, or what its layout cannot store.
pub fn check(r: &Recipe) -> Result<()> {
    let hw = find(&r.target.hardware).ok_or_else(|| {
        let keys: Vec<&str> = TABLE.iter().map(|h| h.key).collect();
        Error::recipe(&r.name, format!("unknown target hardware `{}` (known: {})", r.target.hardware, keys.join(", ")))
    })?;
    let refuse = |what: String, why: String| Error::Capability {
        recipe: r.name.clone(),
        target: hw.name.to_string(),
        what,
        why,
    };
    if !hw.layouts.contains(&r.layout) {
        let ok: Vec<&str> = hw.layouts.iter().map(|l| l.name()).collect();
        return Err(refuse(format!("layout {}", r.layout.name()), format!("its runtimes load {}", ok.join(", "))));
    }
    if r.low_rank_kv.is_some() && hw.key != "reference" {
        return Err(refuse(
            "low-rank KV layers (kv_a_proj/kv_b_proj in a llama-family model)".into(),
            "no runtime of this target loads them yet; use `hardware: reference` (recast golden / validate run them)"
                .into(),
        ));
    }
    if let Some(kv) = &r.kv_cache {
        if !hw.fp8.contains(&kv.format) {
            return Err(refuse(format!("an {} KV cache", kv.format.name()), hw.fp8_note.to_string()));
        }
    }
    for (i, rule) in r.rules.iter().enumerate() {
        let what = || format!("rule {} ({})", i + 1, rule.scheme.label());
        match (&rule.scheme, r.layout) {
            (Scheme::Fp8 { format, .. }, _) if !hw.fp8.contains(format) => {
                return Err(refuse(what(), hw.fp8_note.to_string()));
            }
            (Scheme::Int { bits, .. }, _) if !hw.int_bits.contains(bits) => {
                return Err(refuse(what(), format!("its kernels take {:?}-bit integer weights", hw.int_bits)));
            }
            (Scheme::Int { activations: Activations::Static, .. }, _)
            | (Scheme::Fp8 { activations: Activations::Static, .. }, _) => {
                return Err(refuse(
                    what(),
                    "static activation scales need calibration statistics (`recast calibrate`), \
                     which recipes do not take yet; use `activations: dynamic`"
                        .into(),
                ));
            }
            _ => {}
        }
        check_layout_scheme(r, i, &rule.scheme)?;
    }
    Ok(())
}

/// What each layout can store.
fn check_layout_scheme(r: &Recipe, i: usize, s: &Scheme) -> Result<()> {
    use crate::recipe::{Group, Strategy};
    let bad = |why: &str| Err(Error::recipe(&r.name, format!("rule {}: {} {why}", i + 1, s.label())));
    match (r.layout, s) {
        (_, Scheme::Keep | Scheme::Float { .. }) => Ok(()),
        (Hf, _) => bad(
            "is quantized; the hf layout stores float tensors (use compressed-tensors, gguf, … for quantized weights)",
        ),
        (Gguf, Scheme::Ggml { .. }) => Ok(()),
        (Gguf, _) => bad("cannot be stored in GGUF; use a ggml type (`type: ggml, format: Q8_0`)"),
        (_, Scheme::Ggml { .. }) => bad(&format!("is a GGUF type; the {} layout cannot store it", r.layout.name())),
        (DeepseekFp8, Scheme::Fp8 { strategy: Strategy::Block, .. }) => Ok(()),
        (DeepseekFp8, _) => bad("is not DeepSeek's layout: it stores FP8 with 2-D block scales (`strategy: block`)"),
        (CompressedTensors, Scheme::Fp8 { .. }) => Ok(()),
        (CompressedTensors, Scheme::Int { bits: 4 | 8, .. }) => Ok(()),
        (Ascend, Scheme::Fp8 { .. }) => bad("cannot be stored in msModelSlim's layout"),
        (Ascend, Scheme::Int { bits: 8, group: Group::Channel, symmetric: true, .. }) => Ok(()),
        (Ascend, Scheme::Int { bits: 4, activations: Activations::None, symmetric: true, .. }) => Ok(()),
        (Ascend, Scheme::Int { symmetric: false, .. }) => {
            bad("is asymmetric: vllm-ascend passes weight_offset without the sign MindIE applies, so only \
             symmetric weights load the same in both (formats.md §7.4)")
        }
        (Ascend, _) => bad("has no msModelSlim type (W8A8_DYNAMIC, W8A16 per channel, W4A16)"),
        (_, Scheme::Int { .. }) => bad("is not a supported integer width (4 or 8)"),
    }
}
