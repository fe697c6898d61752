//! Output layouts: the tensors each runtime loads for a quantized weight, and their bytes.
//!
//! [`Encoding`] is a scheme made concrete for one layout (scale dtype, scale rule, packing);
//! [`outputs`] names and shapes the tensors it writes, [`encode`] produces their bytes and the
//! values the runtime will dequantize them to (for error statistics). Config-side files
//! (`quantization_config`, `quant_model_description.json`) are in the per-layout modules.

pub mod ascend;
pub mod compressed_tensors;
pub mod deepseek_fp8;
pub mod gguf_mix;

use crate::codec::fp8::{self, Fp8Format, Granularity};
use crate::codec::stats::{self, ErrorStats};
use crate::codec::{ggml, int, pack};
use crate::recipe::{Activations, LayoutKind};
use recast_convert::ggml_dequant;
use recast_convert::{float, DType, GgmlType, Storage};

/// A scheme made concrete for one layout.
#[derive(Clone, Debug, PartialEq)]
pub enum Encoding {
    /// Unquantized, in this float type (GGUF: F32/F16/BF16 ggml types).
    Float(DType),
    /// A ggml block type (GGUF).
    Ggml(GgmlType),
    Fp8 {
        format: Fp8Format,
        granularity: Granularity,
        activations: Activations,
        scale_dtype: DType,
    },
    Int {
        spec: int::IntSpec,
        activations: Activations,
    },
}

/// One tensor a layout writes.
#[derive(Clone, Debug, PartialEq)]
pub struct OutSpec {
    pub name: String,
    pub storage: Storage,
    pub shape: Vec<u64>,
}

impl OutSpec {
    fn dense(name: String, dtype: DType, shape: Vec<u64>) -> Self {
        OutSpec { name, storage: Storage::Dense(dtype), shape }
    }
    pub fn nbytes(&self) -> u64 {
        self.storage.nbytes(&self.shape).unwrap_or(0)
    }
}

/// `P.weight` → `P`.
pub fn module_of(name: &str) -> &str {
    name.strip_suffix(".weight").unwrap_or(name)
}

/// Whether int weights of this layout/encoding are stored packed (compressed-tensors
/// `pack-quantized`: weight-only int, and every int4).
pub(crate) fn ct_packed(spec: &int::IntSpec, activations: Activations) -> bool {
    spec.bits == 4 || activations == Activations::None
}

/// The scale tensor's shape: compressed-tensors writes a per-tensor scale as `[1]`.
fn scale_shape(g: Granularity, rows: u64, cols: u64) -> Vec<u64> {
    match g {
        Granularity::Tensor => vec![1],
        _ => g.scale_shape(rows as usize, cols as usize).iter().map(|&d| d as u64).collect(),
    }
}

/// The tensors written for weight `name` of row-major `shape` under `enc` in `layout`.
pub fn outputs(layout: LayoutKind, name: &str, shape: &[u64], enc: &Encoding) -> Vec<OutSpec> {
    let (rows, cols) = matrix(shape);
    let m = module_of(name);
    match enc {
        Encoding::Float(d) if layout == LayoutKind::Gguf => vec![OutSpec {
            name: name.into(),
            storage: Storage::from_ggml(GgmlType::from_dtype(*d).expect("float ggml type")),
            shape: shape.to_vec(),
        }],
        Encoding::Float(d) => vec![OutSpec::dense(name.into(), *d, shape.to_vec())],
        Encoding::Ggml(t) => {
            vec![OutSpec { name: name.into(), storage: Storage::from_ggml(*t), shape: shape.to_vec() }]
        }
        Encoding::Fp8 { granularity, scale_dtype, .. } => {
            let scale_name = match layout {
                LayoutKind::DeepseekFp8 => format!("{m}.weight_scale_inv"),
                _ => format!("{m}.weight_scale"),
            };
            vec![
                OutSpec::dense(name.into(), DType::F8E4M3, shape.to_vec()),
                OutSpec::dense(scale_name, *scale_dtype, scale_shape(*granularity, rows, cols)),
            ]
        }
        Encoding::Int { spec, activations } => {
            // `plan` has rejected (or kept unquantized) rows that are not whole groups.
            let g = spec.groups_per_row(cols as usize) as u64;
            let sd = spec.scale_dtype;
            match layout {
                LayoutKind::Ascend => {
                    let weight = if spec.bits == 4 {
                        match spec.group {
                            int::Group::Channel => OutSpec::dense(name.into(), DType::I8, vec![rows, cols.div_ceil(2)]),
                            int::Group::Size(_) => OutSpec::dense(name.into(), DType::I8, vec![rows.div_ceil(2), cols]),
                        }
                    } else {
                        OutSpec::dense(name.into(), DType::I8, vec![rows, cols])
                    };
                    vec![
                        weight,
                        OutSpec::dense(format!("{m}.weight_scale"), sd, vec![rows, g]),
                        OutSpec::dense(format!("{m}.weight_offset"), sd, vec![rows, g]),
                    ]
                }
                _ if ct_packed(spec, *activations) => {
                    let per = 32 / spec.bits as u64;
                    let mut v = vec![
                        OutSpec::dense(format!("{m}.weight_packed"), DType::I32, vec![rows, cols.div_ceil(per)]),
                        OutSpec::dense(format!("{m}.weight_scale"), sd, vec![rows, g]),
                        OutSpec::dense(format!("{m}.weight_shape"), DType::I64, vec![2]),
                    ];
                    if !spec.symmetric {
                        v.push(OutSpec::dense(
                            format!("{m}.weight_zero_point"),
                            DType::I32,
                            vec![rows.div_ceil(per), g],
                        ));
                    }
                    v
                }
                _ => {
                    let mut v = vec![
                        OutSpec::dense(name.into(), DType::I8, vec![rows, cols]),
                        OutSpec::dense(format!("{m}.weight_scale"), sd, vec![rows, g]),
                    ];
                    if !spec.symmetric {
                        v.push(OutSpec::dense(format!("{m}.weight_zero_point"), DType::I8, vec![rows, g]));
                    }
                    v
                }
            }
        }
    }
}

/// `[rows, cols]` of a weight (leading dimensions folded into rows).
pub fn matrix(shape: &[u64]) -> (u64, u64) {
    let cols = *shape.last().unwrap_or(&1);
    let rows = shape[..shape.len().saturating_sub(1)].iter().product::<u64>();
    (rows.max(1), cols)
}

fn scalars_bytes(values: &[f32], dtype: DType) -> Vec<u8> {
    let mut out = Vec::new();
    float::encode_from_f32(dtype, values, &mut out);
    out
}

/// Encoded tensors (in [`outputs`] order) and the error of the values a runtime dequantizes
/// them to.
pub struct Encoded {
    pub tensors: Vec<Vec<u8>>,
    pub error: ErrorStats,
}

/// Encodes weight `w` (row-major `shape`) as `outputs(layout, …, enc)` describes. A quantized
/// encoding of a weight with a NaN or infinity is refused: `Err((index, value))` of the first.
pub fn encode(layout: LayoutKind, shape: &[u64], enc: &Encoding, w: &[f32]) -> Result<Encoded, (usize, f32)> {
    let (rows, cols) = matrix(shape);
    let (r, c) = (rows as usize, cols as usize);
    if !matches!(enc, Encoding::Float(_) | Encoding::Ggml(_)) {
        if let Some(bad) = stats::first_non_finite(w) {
            return Err(bad);
        }
    }
    Ok(match enc {
        Encoding::Float(d) => {
            let bytes = scalars_bytes(w, *d);
            let size = d.size().expect("float dtype");
            let error = stats::error_stats_by_chunk(w, |start, out| {
                float::decode_to_f32(*d, &bytes[start * size..(start + out.len()) * size], out)
            });
            Encoded { tensors: vec![bytes], error }
        }
        Encoding::Ggml(t) => {
            let mut bytes = vec![0u8; t.nbytes(cols, rows).expect("planned shape") as usize];
            // Each encoding task's rows are dequantized and summed right after they are
            // encoded. Chunks are whole blocks (CHUNK is a multiple of every block size, tasks
            // and rows are whole blocks), so value e of a task lives in block e / block_size of
            // the task's bytes.
            let (bs, ts) = (t.block_size() as usize, t.type_size() as usize);
            debug_assert_eq!(stats::CHUNK % bs, 0);
            let parts = ggml::quantize_then(*t, w, c, &mut bytes, |x, y| {
                stats::partial_by_chunk(x, |start, out| {
                    let (b0, b1) = (start / bs, (start + out.len()) / bs);
                    ggml_dequant::dequantize(*t, &y[b0 * ts..b1 * ts], out)
                })
            })?;
            Encoded { tensors: vec![bytes], error: stats::combine_partials(&parts) }
        }
        Encoding::Fp8 { format, granularity, scale_dtype, .. } => {
            // e4m3fnuz is stored in the OCP e4m3fn container vLLM reads on every platform (on
            // ROCm it reinterprets the bits as fnuz and doubles the scale). Rounding on the fnuz
            // grid with max 224 (scale amax/224, stored halved) is exactly e4m3fn rounding with
            // max 448: the fnuz value of every code is half its fn value. So quantize as e4m3fn
            // and only replace -0 (0x80, NaN in fnuz) by +0; codes 0x7F/0xFF (±240 in fnuz, NaN
            // in fn) are never produced.
            let container = if *format == Fp8Format::E4M3Fnuz { Fp8Format::E4M3Fn } else { *format };
            let mut q = fp8::quantize(container, w, r, c, *granularity, *scale_dtype);
            if *format == Fp8Format::E4M3Fnuz {
                for b in q.codes.iter_mut().filter(|b| **b == 0x80) {
                    *b = 0;
                }
            }
            let table = fp8::decode_table(container);
            let error = stats::error_stats_by_chunk(w, |start, out| {
                fp8::dequantize_range(&table, &q, c, *granularity, start, out)
            });
            let scales = scalars_bytes(&q.scales, *scale_dtype);
            Encoded { tensors: vec![q.codes, scales], error }
        }
        Encoding::Int { spec, activations } => {
            let q = int::quantize(w, r, c, spec);
            let deq = int::dequantize(&q, r, c, spec);
            let sd = spec.scale_dtype;
            let tensors = match layout {
                LayoutKind::Ascend => {
                    let weight: Vec<i8> = if spec.bits == 4 {
                        pack::pack_int4_ascend(&q.codes, r, c, matches!(spec.group, int::Group::Size(_)))
                    } else {
                        q.codes.clone()
                    };
                    let offsets = vec![0f32; q.scales.len()];
                    vec![
                        bytemuck::cast_slice(&weight).to_vec(),
                        scalars_bytes(&q.scales, sd),
                        scalars_bytes(&offsets, sd),
                    ]
                }
                _ if ct_packed(spec, *activations) => {
                    let packed = pack::pack_int32_rows(&q.codes, r, c, spec.bits);
                    let shape = [rows as i64, cols as i64];
                    let mut v = vec![
                        bytemuck::cast_slice(&packed).to_vec(),
                        scalars_bytes(&q.scales, sd),
                        bytemuck::cast_slice(&shape).to_vec(),
                    ];
                    if let Some(z) = &q.zeros {
                        let g = q.groups_per_row;
                        v.push(bytemuck::cast_slice(&pack::pack_int32_cols(z, r, g, spec.bits)).to_vec());
                    }
                    v
                }
                _ => {
                    let mut v = vec![bytemuck::cast_slice(&q.codes).to_vec(), scalars_bytes(&q.scales, sd)];
                    if let Some(z) = &q.zeros {
                        v.push(bytemuck::cast_slice(z).to_vec());
                    }
                    v
                }
            };
            Encoded { tensors, error: stats::error_stats(w, &deq) }
        }
    })
}
