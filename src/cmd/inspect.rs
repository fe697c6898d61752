//! `recast inspect PATH [--json]`.

use crate::size::human;
use anyhow::Result;
use recast_convert::gguf::Value;
use recast_convert::{Checkpoint, Format};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A .safetensors file, a .gguf file, or a Hugging Face model directory.
    path: PathBuf,
    /// Print a stable JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Tensor rows to show in text mode (all with --json); 0 shows all.
    #[arg(long, default_value_t = 40)]
    max_tensors: usize,
}

/// The `--json` document. Field names are a stable interface: add, never rename.
#[derive(Serialize)]
pub struct Report {
    pub path: String,
    pub format: &'static str,
    pub gguf_version: Option<u32>,
    pub architecture: Option<String>,
    pub files: usize,
    pub tensor_count: usize,
    pub parameter_count: u64,
    pub data_bytes: u64,
    pub dtypes: Vec<DtypeRow>,
    pub metadata: Vec<MetaRow>,
    pub tensors: Vec<TensorRow>,
}

#[derive(Serialize)]
pub struct DtypeRow {
    pub dtype: String,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct MetaRow {
    pub key: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub value: serde_json::Value,
}

#[derive(Serialize)]
pub struct TensorRow {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub bytes: u64,
}

/// Arrays longer than this are summarised (length plus the first items).
const ARRAY_HEAD: usize = 8;

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Array(a) => {
            let head: Vec<_> = (0..a.len().min(ARRAY_HEAD)).filter_map(|i| a.get(i)).map(|x| value_json(&x)).collect();
            if a.len() <= ARRAY_HEAD {
                json!(head)
            } else {
                json!({"len": a.len(), "head": head})
            }
        }
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::F32(x) => json!(recast_convert::config::f32_to_f64_decimal(*x)),
        Value::F64(x) => json!(x),
        other => json!(other.as_int().map(|i| i as i64)),
    }
}

fn architecture(ck: &Checkpoint) -> Option<String> {
    if let Some(g) = &ck.gguf {
        return g.metadata.get("general.architecture").and_then(Value::as_str).map(str::to_string);
    }
    let text = std::fs::read(ck.config_path()?).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v.get("model_type").and_then(|m| m.as_str()).map(str::to_string)
}

pub fn report(ck: &Checkpoint) -> Report {
    let mut dtypes: BTreeMap<String, DtypeRow> = BTreeMap::new();
    for t in &ck.tensors {
        let row = dtypes.entry(t.storage.name().to_string()).or_insert_with(|| DtypeRow {
            dtype: t.storage.name().into(),
            tensors: 0,
            parameters: 0,
            bytes: 0,
        });
        row.tensors += 1;
        row.parameters += t.numel();
        row.bytes += t.nbytes;
    }
    let metadata = match &ck.gguf {
        Some(g) => g
            .metadata
            .iter()
            .map(|(k, v)| MetaRow { key: k.into(), ty: v.type_label(), value: value_json(v) })
            .collect(),
        None => ck
            .st_metadata
            .iter()
            .map(|(k, v)| MetaRow { key: k.clone(), ty: "STRING".into(), value: json!(v) })
            .collect(),
    };
    Report {
        path: ck.path.display().to_string(),
        format: ck.format.name(),
        gguf_version: ck.gguf.as_ref().map(|g| g.version),
        architecture: architecture(ck),
        files: ck.sources.len(),
        tensor_count: ck.tensors.len(),
        parameter_count: ck.tensors.iter().map(|t| t.numel()).sum(),
        data_bytes: ck.data_bytes(),
        dtypes: dtypes.into_values().collect(),
        metadata,
        tensors: ck
            .tensors
            .iter()
            .map(|t| TensorRow {
                name: t.name.clone(),
                dtype: t.storage.name().into(),
                shape: t.shape.clone(),
                bytes: t.nbytes,
            })
            .collect(),
    }
}

fn short(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    let s = s.replace('\n', "\\n");
    if s.chars().count() > 72 {
        format!("{}…", s.chars().take(71).collect::<String>())
    } else {
        s
    }
}

/// The text rendering (snapshot-tested).
pub fn render_text(r: &Report, max_tensors: usize) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let fmt = match r.gguf_version {
        Some(v) => format!("{} v{v}", r.format),
        None => format!("{} ({} file{})", r.format, r.files, if r.files == 1 { "" } else { "s" }),
    };
    writeln!(o, "path          {}", r.path).unwrap();
    writeln!(o, "format        {fmt}").unwrap();
    writeln!(o, "architecture  {}", r.architecture.as_deref().unwrap_or("unknown")).unwrap();
    writeln!(o, "tensors       {}", r.tensor_count).unwrap();
    writeln!(o, "parameters    {}", r.parameter_count).unwrap();
    writeln!(o, "data          {} ({} bytes)", human(r.data_bytes), r.data_bytes).unwrap();
    writeln!(o, "\ndtype        tensors      parameters           bytes").unwrap();
    for d in &r.dtypes {
        writeln!(o, "{:<12} {:>7} {:>15} {:>15}", d.dtype, d.tensors, d.parameters, d.bytes).unwrap();
    }
    if !r.metadata.is_empty() {
        let kw = r.metadata.iter().map(|m| m.key.len()).max().unwrap_or(0);
        writeln!(o, "\nmetadata ({} keys)", r.metadata.len()).unwrap();
        for m in &r.metadata {
            writeln!(o, "  {:<kw$}  {:<14} {}", m.key, m.ty, short(&m.value)).unwrap();
        }
    }
    let shown = if max_tensors == 0 { r.tensors.len() } else { max_tensors.min(r.tensors.len()) };
    let nw = r.tensors.iter().take(shown).map(|t| t.name.len()).max().unwrap_or(4);
    writeln!(o, "\n{:<nw$}  {:<8} {:<22} {:>12}", "tensor", "dtype", "shape (row-major)", "bytes").unwrap();
    for t in &r.tensors[..shown] {
        writeln!(o, "{:<nw$}  {:<8} {:<22} {:>12}", t.name, t.dtype, format!("{:?}", t.shape), t.bytes).unwrap();
    }
    if shown < r.tensors.len() {
        writeln!(o, "… {} more (--max-tensors 0 shows all)", r.tensors.len() - shown).unwrap();
    }
    o
}

pub fn run(a: Args) -> Result<ExitCode> {
    let ck = Checkpoint::open(&a.path)?;
    let r = report(&ck);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render_text(&r, a.max_tensors));
    }
    let _ = Format::Gguf;
    Ok(ExitCode::SUCCESS)
}
