//! Low-rank KV (issue 5, in progress): the joint K/V factorization at full rank, written in the
//! latent layout (`self_attn.kv_a_proj` / `self_attn.kv_b_proj`, docs/low-rank-kv.md), runs in
//! the reference engine and reproduces the original model on every llama-family fixture.

use recast_convert::{Checkpoint, DType, Storage};
use recast_quantize::lowrank;
use recast_validate::Engine;
use std::path::{Path, PathBuf};

fn tiny(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(arch)
}

fn f32s(ck: &Checkpoint, name: &str) -> Vec<f32> {
    let t = ck.get(name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(t.storage, Storage::Dense(DType::F32), "{name}");
    bytemuck::pod_collect_to_vec(ck.bytes(t))
}

/// Writes a single-file safetensors checkpoint (F32 tensors, sorted names).
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut sorted: Vec<&(String, Vec<usize>, Vec<f32>)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut off = 0usize;
    for (name, shape, data) in &sorted {
        let end = off + data.len() * 4;
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [off, end]}));
        off = end;
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    for (_, _, data) in &sorted {
        bytes.extend_from_slice(bytemuck::cast_slice(data));
    }
    std::fs::write(path, bytes).unwrap();
}

/// The fixture with every layer's k_proj/v_proj replaced by full-rank joint factors.
fn factorized(arch: &str, dir: &Path) -> (usize, usize) {
    let src = tiny(arch);
    let ck = Checkpoint::open(&src).unwrap();
    let cfg = recast_convert::ModelConfig::from_hf_file(&src.join("config.json")).unwrap();
    let (d, layers) = (cfg.hidden_size as usize, cfg.num_hidden_layers as usize);
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as usize;
    let mut out = Vec::new();
    for t in &ck.tensors {
        if t.name.contains(".k_proj.") || t.name.contains(".v_proj.") {
            continue;
        }
        out.push((t.name.clone(), t.shape.iter().map(|&x| x as usize).collect(), f32s(&ck, &t.name)));
    }
    let mut rank = 0;
    for l in 0..layers {
        let p = format!("model.layers.{l}.self_attn");
        let (wk, wv) = (f32s(&ck, &format!("{p}.k_proj.weight")), f32s(&ck, &format!("{p}.v_proj.weight")));
        let svd = lowrank::decompose(&wk, &wv, kv, d, None).unwrap();
        let f = svd.truncate(svd.full_rank()).unwrap();
        rank = f.rank;
        out.push((format!("{p}.kv_a_proj.weight"), vec![f.rank, d], f.down));
        out.push((format!("{p}.kv_b_proj.weight"), vec![2 * kv, f.rank], f.up));
        if ck.get(&format!("{p}.k_proj.bias")).is_some() {
            let mut b = f32s(&ck, &format!("{p}.k_proj.bias"));
            b.extend(f32s(&ck, &format!("{p}.v_proj.bias")));
            out.push((format!("{p}.kv_b_proj.bias"), vec![2 * kv], b));
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    write_safetensors(&dir.join("model.safetensors"), &out);
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    (rank, 2 * kv)
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|&v| v as f64 - z).collect()
}

#[test]
fn full_rank_latent_layout_reproduces_every_llama_family_fixture() {
    let tokens = vec![vec![1u32, 17, 42, 99, 7, 3, 250, 11, 64, 5, 120, 33]];
    for arch in ["llama", "mistral", "qwen2", "qwen3", "smollm"] {
        let dir = tempfile::tempdir().unwrap();
        let (rank, width) = factorized(arch, dir.path());
        let orig = Checkpoint::open(tiny(arch)).unwrap();
        let lr = Checkpoint::open(dir.path()).unwrap();
        assert!(lr.get("model.layers.0.self_attn.k_proj.weight").is_none());
        let (ea, eb) = (Engine::new(&orig, 1).unwrap(), Engine::new(&lr, 1).unwrap());
        let layers = ea.config.num_hidden_layers as usize;
        assert_eq!(ea.kv_values_per_token(), vec![width as u64; layers], "{arch}");
        assert_eq!(eb.kv_values_per_token(), vec![rank as u64; layers], "{arch}");
        let a = ea.forward(&tokens).unwrap();
        let b = eb.forward(&tokens).unwrap();
        let vocab = a[0].len() / tokens[0].len();
        let (mut kld_sum, mut agree) = (0.0, 0);
        for (pa, pb) in a[0].chunks(vocab).zip(b[0].chunks(vocab)) {
            let (la, lb) = (log_softmax(pa), log_softmax(pb));
            kld_sum += la.iter().zip(&lb).map(|(p, q)| p.exp() * (p - q)).sum::<f64>();
            let am = |v: &[f32]| v.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
            agree += usize::from(am(pa) == am(pb));
        }
        let n = tokens[0].len();
        let kld = kld_sum / n as f64;
        assert!(kld <= 1e-8, "{arch} (rank {rank} of KV width {width}): mean KLD {kld:e}");
        assert_eq!(agree, n, "{arch}: top-1 agreement {agree}/{n}");
    }
}

#[test]
fn kv_cache_size_per_layout() {
    for arch in ["deepseek_v2", "deepseek_v3"] {
        let ck = Checkpoint::open(tiny(arch)).unwrap();
        let e = Engine::new(&ck, 1).unwrap();
        let m = e.config.mla.as_ref().unwrap();
        let per = m.kv_lora_rank + m.qk_rope_head_dim;
        assert_eq!(e.kv_values_per_token(), vec![per; e.config.num_hidden_layers as usize], "{arch}");
    }
}
