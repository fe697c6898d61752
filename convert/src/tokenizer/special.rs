//! Special-token ids, `add_*_token` flags, merges, chat templates and normaliser flags: a port
//! of gguf-py's `SpecialVocab` (`gguf-py/gguf/vocab.py`, llama.cpp as vendored by
//! llama-cpp-python 0.3.36), including its crude reading of the `post_processor` template.
//!
//! Insertion order is kept everywhere (Python dicts), because it is the order the keys are
//! written in: merges, special ids, `add_*` flags, chat template, normaliser flags.

use super::hf_files::{read_json_opt, read_text_opt, truthy, HfFiles};
use super::keys::{self, DEFAULT_ROLE_COUNT, ROLES};
use crate::error::{Error, Result};
use crate::gguf::{Array, Metadata, Value};
use serde_json::{Map, Value as Json};

/// `tokenizer_config.json` `chat_template`: one template or named ones.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatTemplate {
    Single(String),
    /// `(name, template)` in file order; `"default"` becomes `tokenizer.chat_template`.
    Named(Vec<(String, String)>),
}

#[derive(Debug, Default)]
pub struct SpecialVocab {
    pub merges: Vec<String>,
    /// `(role, id)` in first-set order; the first value set for a role wins.
    pub ids: Vec<(&'static str, u32)>,
    /// `(role, add?)` in first-set order; later sets overwrite in place.
    pub add: Vec<(&'static str, bool)>,
    pub chat_template: Option<ChatTemplate>,
    pub normalizer_lowercase: Option<bool>,
    pub normalizer_strip_accents: Option<bool>,
    /// Roles considered (SpecialVocab's `special_token_types`, grown by `eot`/`eom`).
    roles: Vec<&'static str>,
    n_vocab: Option<usize>,
}

impl SpecialVocab {
    /// `SpecialVocab(dir, load_merges, n_vocab=n_vocab)`.
    pub fn load(files: &HfFiles, load_merges: bool, n_vocab: Option<usize>) -> Result<Self> {
        let mut sv = SpecialVocab {
            roles: ROLES[..DEFAULT_ROLE_COUNT].iter().map(|r| r.name).collect(),
            n_vocab,
            ..Default::default()
        };
        sv.read_tokenizer_files(files, load_merges)?;
        sv.read_model_config(files)?;
        if load_merges && sv.merges.is_empty() {
            sv.merges = merges_txt(files)?.unwrap_or_default();
        }
        Ok(sv)
    }

    pub fn id(&self, role: &str) -> Option<u32> {
        self.ids.iter().find(|(r, _)| *r == role).map(|(_, id)| *id)
    }

    /// `SpecialVocab.add_to_gguf`: roles without a gguf-py writer (`cls`, `add_unk`…) are skipped.
    pub fn write(&self, meta: &mut Metadata) {
        if !self.merges.is_empty() {
            meta.set(keys::MERGES, Value::Array(Array::String(self.merges.clone())));
        }
        for (role, id) in &self.ids {
            if let Some(key) = keys::role(role).id_key {
                meta.set(key, Value::U32(*id));
            }
        }
        for (role, add) in &self.add {
            if let Some(key) = keys::role(role).add_key {
                meta.set(key, Value::Bool(*add));
            }
        }
        if let Some(t) = &self.chat_template {
            write_chat_template(meta, t);
        }
        if let Some(v) = self.normalizer_lowercase {
            meta.set(keys::NORMALIZER_LOWERCASE, Value::Bool(v));
        }
        if let Some(v) = self.normalizer_strip_accents {
            meta.set(keys::NORMALIZER_STRIP_ACCENTS, Value::Bool(v));
        }
    }

    fn set_id(&mut self, role: &'static str, id: &Json) -> Result<()> {
        let Some(id) = id.as_i64() else { return Ok(()) };
        let id = u32::try_from(id).map_err(|_| Error::Tokenizer {
            detail: format!("invalid id {id} for special token '{role}' (must be in 0..2^32)"),
        })?;
        let in_range = self.n_vocab.is_none_or(|n| (id as usize) < n);
        if in_range && self.id(role).is_none() {
            self.ids.push((role, id));
        }
        Ok(())
    }

    fn set_add(&mut self, role: &'static str, value: bool, overwrite: bool) {
        match self.add.iter_mut().find(|(r, _)| *r == role) {
            Some(slot) if overwrite => slot.1 = value,
            Some(_) => {}
            None => self.add.push((role, value)),
        }
    }

    fn add_role(&mut self, role: &'static str) {
        self.roles.push(role);
    }

    /// `_try_load_from_tokenizer_json`.
    fn read_tokenizer_files(&mut self, files: &HfFiles, load_merges: bool) -> Result<()> {
        let mut config: Option<Map<String, Json>> =
            files.tokenizer_config.as_ref().and_then(|c| c.as_object().cloned());
        let tokenizer = files.tokenizer_json.as_ref().filter(|t| truthy(Some(t)));
        let mut added: &[Json] = &[];
        if let Some(tok) = tokenizer {
            if load_merges {
                self.merges = merges_from_tokenizer_json(tok, &files.path("tokenizer.json"))?;
            }
            if let Some(norm) = tok.get("normalizer").filter(|n| truthy(Some(n))) {
                self.parse_normalizer(norm);
            }
            added = tok.get("added_tokens").and_then(Json::as_array).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(post) = tok.get("post_processor").filter(|p| truthy(Some(p))) {
                PostProcessorReader::new(self, config.as_mut()).read(post);
            }
        }
        let Some(config) = config.filter(|c| !c.is_empty()) else { return Ok(()) };
        self.chat_template = chat_template(files, &config)?;
        for role in self.roles.clone() {
            if let Some(add) = config.get(&format!("add_{role}_token")).and_then(Json::as_bool) {
                self.set_add(role, add, false);
            }
            let content = match config.get(&format!("{role}_token")) {
                Some(Json::String(s)) => s.as_str(),
                Some(Json::Object(o)) => match o.get("content") {
                    Some(Json::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            let first = added.iter().find(|a| a.get("content").and_then(Json::as_str) == Some(content));
            if let Some(id) = first.and_then(|a| a.get("id")) {
                self.set_id(role, id)?;
            }
        }
        Ok(())
    }

    /// `_try_load_from_config_json`: `{role}_token_id`, else `text_config.{role}_token_id`.
    fn read_model_config(&mut self, files: &HfFiles) -> Result<()> {
        let Some(config) = &files.config else { return Ok(()) };
        for role in self.roles.clone() {
            let key = format!("{role}_token_id");
            let id = config
                .get(&key)
                .filter(|v| !v.is_null())
                .or_else(|| config.get("text_config").and_then(|t| t.get(&key)));
            if let Some(id) = id {
                self.set_id(role, id)?;
            }
        }
        Ok(())
    }

    /// `_parse_normalizer`: Lowercase / StripAccents / BertNormalizer, nested in Sequence.
    fn parse_normalizer(&mut self, norm: &Json) {
        match norm.get("type").and_then(Json::as_str) {
            Some("Lowercase") => self.normalizer_lowercase = Some(true),
            Some("StripAccents") => self.normalizer_strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = norm.get("lowercase") {
                    self.normalizer_lowercase = v.as_bool();
                }
                if let Some(v) = norm.get("strip_accents") {
                    self.normalizer_strip_accents = v.as_bool();
                }
            }
            Some("Sequence") => {
                for n in norm.get("normalizers").and_then(Json::as_array).into_iter().flatten() {
                    self.parse_normalizer(n);
                }
            }
            _ => {}
        }
    }
}

/// The `post_processor` reading of `_try_load_from_tokenizer_json`, with the special-token
/// strings it consults and the `tokenizer_config` entries it rewrites.
struct PostProcessorReader<'a> {
    sv: &'a mut SpecialVocab,
    config: Option<&'a mut Map<String, Json>>,
    bos: Json,
    cls: Json,
    eos: Json,
    sep: Json,
}

impl<'a> PostProcessorReader<'a> {
    fn new(sv: &'a mut SpecialVocab, config: Option<&'a mut Map<String, Json>>) -> Self {
        let get = |k: &str| config.as_ref().and_then(|c| c.get(k)).cloned().unwrap_or(Json::Null);
        let (bos, cls, eos, sep) = (get("bos_token"), get("cls_token"), get("eos_token"), get("sep_token"));
        let mut r = PostProcessorReader { sv, config, bos, cls, eos, sep };
        // A missing BOS/EOS falls back to CLS/SEP, written back into the config.
        if !truthy(Some(&r.bos)) && truthy(Some(&r.cls)) && r.has_config() {
            r.bos = r.cls.clone();
            r.set_config("bos_token", r.bos.clone());
        }
        if !truthy(Some(&r.eos)) && truthy(Some(&r.sep)) && r.has_config() {
            r.eos = r.sep.clone();
            r.set_config("eos_token", r.eos.clone());
        }
        r
    }

    fn has_config(&self) -> bool {
        self.config.as_ref().is_some_and(|c| !c.is_empty())
    }

    fn set_config(&mut self, key: &str, value: Json) {
        if let Some(c) = self.config.as_mut() {
            c.insert(key.to_string(), value);
        }
    }

    fn read(mut self, post: &Json) {
        let single = [post.clone()];
        let processors = post.get("processors").and_then(Json::as_array).map(Vec::as_slice).unwrap_or(&single);
        for p in processors {
            match p.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    self.sv.set_add("bos", false, false);
                    self.sv.set_add("eos", false, false);
                }
                Some("RobertaProcessing") => self.roberta(p),
                Some("TemplateProcessing") => self.template(p),
                _ => {}
            }
        }
    }

    fn roberta(&mut self, p: &Json) {
        for role in ["bos", "eos", "sep"] {
            self.sv.set_add(role, true, true);
        }
        if !truthy(Some(&self.cls)) && self.has_config() {
            self.cls = p.get("cls").and_then(|c| c.get(0)).cloned().unwrap_or_else(|| self.bos.clone());
            self.set_config("cls_token", self.cls.clone());
        }
        if !truthy(Some(&self.sep)) && self.has_config() {
            self.sep = p.get("sep").and_then(|c| c.get(0)).cloned().unwrap_or_else(|| self.eos.clone());
            self.set_config("sep_token", self.sep.clone());
        }
    }

    /// "Crude parsing of TemplateProcessing to determine if BOS/SEP/EOS should be added".
    fn template(&mut self, p: &Json) {
        let empty = Vec::new();
        let single = p.get("single").and_then(Json::as_array).unwrap_or(&empty);
        let pair = p.get("pair").and_then(Json::as_array).unwrap_or(&empty);
        let mut first = Json::Null;
        let mut last = Json::Null;
        if single.len() > 1 {
            first = special_id(&single[0]);
            if truthy(Some(&first)) {
                self.leading(&first);
            }
            last = special_id(&single[single.len() - 1]);
            if truthy(Some(&last)) {
                self.trailing(&last);
            }
        }
        self.pair(pair, &first, &last);
    }

    fn leading(&mut self, first: &Json) {
        if !self.has_config() {
            self.bos = first.clone();
        } else if *first != self.bos && *first != self.cls {
            if !truthy(Some(&self.bos)) {
                self.bos = first.clone();
                self.set_config("bos_token", first.clone());
            }
            if !truthy(Some(&self.cls)) {
                self.cls = first.clone();
                self.set_config("cls_token", first.clone());
            }
        }
        let known = *first == self.bos || *first == self.cls;
        self.sv.set_add("bos", known, true);
    }

    fn trailing(&mut self, last: &Json) {
        if !self.has_config() {
            self.eos = last.clone();
        } else if *last != self.eos {
            for role in ["eot", "eom"] {
                if !self.sv.roles.contains(&role) {
                    self.sv.add_role(role);
                    self.set_config(&format!("{role}_token"), self.eos.clone());
                    break;
                }
            }
            self.eos = last.clone();
            self.set_config("eos_token", last.clone());
        }
        let known = *last == self.eos;
        self.sv.set_add("eos", known, true);
    }

    fn pair(&mut self, pair: &[Json], first: &Json, last: &Json) {
        if pair.is_empty() {
            return;
        }
        let start = usize::from(truthy(Some(first)) && special_id(&pair[0]) == *first);
        let stop_trim = usize::from(truthy(Some(last)) && special_id(&pair[pair.len() - 1]) == *last);
        let Some(body) = pair.get(start..pair.len().saturating_sub(stop_trim)).filter(|b| !b.is_empty()) else {
            return;
        };
        let a = body[0].get("Sequence").and_then(|s| s.get("id"));
        let b = body[body.len() - 1].get("Sequence").and_then(|s| s.get("id"));
        if a.and_then(Json::as_str) != Some("A") || b.and_then(Json::as_str) != Some("B") || body.len() < 3 {
            return;
        }
        let middle = &body[1..body.len() - 1];
        let is_sep_or_eos = |e: &Json| *e == self.sep || *e == self.eos;
        let mut add_sep = false;
        let entry = special_id(&middle[0]);
        if truthy(Some(&entry)) && is_sep_or_eos(&entry) && !truthy(Some(last)) {
            add_sep = true;
        }
        if middle.len() == 2 {
            let entry = special_id(&middle[1]);
            if truthy(Some(&entry)) && is_sep_or_eos(&entry) {
                add_sep = true;
            }
        }
        self.sv.set_add("sep", add_sep, true);
        if add_sep && !truthy(Some(&self.sep)) && self.has_config() {
            self.set_config("sep_token", self.eos.clone());
        }
    }
}

/// `entry.get('SpecialToken', {}).get('id')`.
fn special_id(entry: &Json) -> Json {
    entry.get("SpecialToken").and_then(|s| s.get("id")).cloned().unwrap_or(Json::Null)
}

/// `model.merges` in either format, as the `"left right"` strings GGUF stores.
pub(crate) fn merges_from_tokenizer_json(tok: &Json, path: &std::path::Path) -> Result<Vec<String>> {
    let Some(merges) = tok.get("model").and_then(|m| m.get("merges")).and_then(Json::as_array) else {
        return Ok(Vec::new());
    };
    let bad = || Error::Tokenizer { detail: format!("{}: unknown tokenizer merges format", path.display()) };
    match merges.first() {
        None => Ok(Vec::new()),
        Some(Json::String(_)) => merges.iter().map(|m| m.as_str().map(str::to_string).ok_or_else(bad)).collect(),
        Some(Json::Array(_)) => merges
            .iter()
            .map(|m| match m.as_array().map(Vec::as_slice) {
                Some([Json::String(l), Json::String(r)]) => Ok(format!("{} {}", space_to_g(l), space_to_g(r))),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// New-format merge parts may contain spaces; gguf-py writes them as U+0120 (`chr(0x20 + 256)`).
fn space_to_g(part: &str) -> String {
    part.replace(' ', "\u{120}")
}

/// `_try_load_merges_txt`: skips a leading `#` line and malformed lines.
fn merges_txt(files: &HfFiles) -> Result<Option<Vec<String>>> {
    let Some(text) = read_text_opt(&files.path("merges.txt"))? else { return Ok(None) };
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
        lines.next();
    }
    let merges = lines
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts.len() == 2).then(|| format!("{} {}", parts[0], parts[1]))
        })
        .collect();
    Ok(Some(merges))
}

/// `tokenizer_config.json` `chat_template`, else `chat_template.jinja` (with
/// `additional_chat_templates/*.jinja` as named ones), else `chat_template.json`.
fn chat_template(files: &HfFiles, config: &Map<String, Json>) -> Result<Option<ChatTemplate>> {
    if let Some(t) = config.get("chat_template") {
        return Ok(parse_template_value(t));
    }
    if let Some(text) = read_text_opt(&files.path("chat_template.jinja"))? {
        let extra = additional_templates(files)?;
        if extra.is_empty() {
            return Ok(Some(ChatTemplate::Single(text)));
        }
        let mut named = vec![("default".to_string(), text)];
        named.extend(extra);
        return Ok(Some(ChatTemplate::Named(named)));
    }
    let json = read_json_opt(&files.path("chat_template.json"))?;
    Ok(json.as_ref().and_then(|j| j.get("chat_template")).and_then(parse_template_value))
}

fn parse_template_value(t: &Json) -> Option<ChatTemplate> {
    match t {
        Json::String(s) => Some(ChatTemplate::Single(s.clone())),
        Json::Array(items) => Some(ChatTemplate::Named(
            items
                .iter()
                .filter_map(|i| {
                    let name = i.get("name").and_then(Json::as_str).unwrap_or("");
                    Some((name.to_string(), i.get("template")?.as_str()?.to_string()))
                })
                .collect(),
        )),
        _ => None,
    }
}

/// `additional_chat_templates/*.jinja`, sorted by file name (Python's glob order is the
/// directory's; sorting makes the output deterministic).
fn additional_templates(files: &HfFiles) -> Result<Vec<(String, String)>> {
    let dir = files.path("additional_chat_templates");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        if path.extension().is_some_and(|x| x == "jinja") {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            Ok((name, text))
        })
        .collect()
}

/// gguf-py `add_chat_template`: named templates as `tokenizer.chat_template.{name}` plus the
/// `tokenizer.chat_templates` name list, then `default` as `tokenizer.chat_template`.
fn write_chat_template(meta: &mut Metadata, t: &ChatTemplate) {
    let named = match t {
        ChatTemplate::Single(s) => {
            meta.set(keys::CHAT_TEMPLATE, Value::String(s.clone()));
            return;
        }
        ChatTemplate::Named(named) => named,
    };
    let mut default = None;
    let mut names: Vec<String> = Vec::new();
    for (name, template) in named {
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        if name == "default" {
            default = Some(template.clone());
        } else if !name.is_empty() {
            meta.set(format!("{}{name}", keys::CHAT_TEMPLATE_PREFIX), Value::String(template.clone()));
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if !names.is_empty() {
        names.sort();
        meta.set(keys::CHAT_TEMPLATES, Value::Array(Array::String(names)));
    }
    if let Some(d) = default {
        meta.set(keys::CHAT_TEMPLATE, Value::String(d));
    }
}
