//! The run journal: one JSON line per completed unit, appended and fsynced after the unit's
//! output is durable, so a crash at any moment loses at most the unit in progress.
//!
//! Each process appends to its own file (`journal.jsonl`, or `journal.shard-K-of-N.jsonl` for
//! `--shard K/N`, so processes on different machines never share a file); reading takes the
//! union of all of them. A line cut short by a crash does not parse and is ignored.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// `golden`, `file/TARGET/NAME`, `extras/TARGET`, `validate/TARGET`, `promote/TARGET`.
    pub unit: String,
    /// Of everything the unit's output depends on; a record with another fingerprint is stale.
    pub fingerprint: String,
    #[serde(default)]
    pub data: Json,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    done: HashMap<String, Record>,
}

impl Journal {
    /// Opens `dir/name` for appending after reading every `journal*.jsonl` in `dir`.
    pub fn open(dir: &Path, name: &str) -> Result<Journal> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut done = HashMap::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("journal") && n.ends_with(".jsonl"))
            })
            .collect();
        files.sort();
        let path = dir.join(name);
        let mut torn = false;
        for p in &files {
            let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            for line in text.split(|&b| b == b'\n') {
                if let Ok(r) = serde_json::from_slice::<Record>(line) {
                    done.insert(r.unit.clone(), r);
                }
            }
            torn |= *p == path && text.last().is_some_and(|&b| b != b'\n');
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // A torn last line from a crash: start on a fresh line so the next record parses.
        if torn {
            file.write_all(b"\n").with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Journal { path, file, done })
    }

    /// The unit's record if it was completed with this fingerprint.
    pub fn done(&self, unit: &str, fingerprint: &str) -> Option<&Record> {
        self.done.get(unit).filter(|r| r.fingerprint == fingerprint)
    }

    /// Records a completed unit (call after its output is durable).
    pub fn record(&mut self, unit: &str, fingerprint: &str, data: Json) -> Result<()> {
        let r = Record { unit: unit.to_string(), fingerprint: fingerprint.to_string(), data };
        let mut line = serde_json::to_vec(&r)?;
        line.push(b'\n');
        self.file.write_all(&line).with_context(|| format!("writing {}", self.path.display()))?;
        self.file.sync_data().with_context(|| format!("syncing {}", self.path.display()))?;
        self.done.insert(r.unit.clone(), r);
        Ok(())
    }
}
