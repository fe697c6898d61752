//! Byte sources: the one place recast maps files into memory.
//!
//! Every reader takes a [`ByteSource`] and borrows slices from it; nothing else in the
//! workspace calls `mmap`. Reads are bounds-checked here so a parser can ask for any
//! `(offset, len)` an untrusted header names and get an error instead of a panic.

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A read-only view of one file's bytes.
pub struct ByteSource {
    path: PathBuf,
    map: Option<Mmap>,
}

impl ByteSource {
    /// Maps `path` read-only. Empty files are allowed and give an empty slice.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and lives as long as this ByteSource. If another
            // process truncates the file while it is mapped, reads past the new end fault
            // (SIGBUS); this is the same contract every mmap-based checkpoint loader
            // (safetensors, llama.cpp) accepts. recast never writes to files it reads.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            Some(map)
        };
        Ok(ByteSource { path, map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// `len` bytes at `offset`, or [`Error::Truncated`] naming `what` if the file is too short.
    pub fn slice(&self, offset: u64, len: u64, what: &str) -> Result<&[u8]> {
        let end = offset.checked_add(len).filter(|&e| e <= self.len());
        match end {
            Some(end) => Ok(&self.bytes()[offset as usize..end as usize]),
            None => Err(Error::Truncated {
                path: self.path.clone(),
                what: what.to_string(),
                needed: offset.saturating_add(len),
                len: self.len(),
            }),
        }
    }

    /// Hints the kernel that `[offset, offset+len)` will not be needed again soon, so a
    /// streaming pass over a model larger than RAM does not keep it all in the page cache.
    pub fn release(&self, offset: u64, len: u64) {
        if let Some(map) = &self.map {
            let end = offset.saturating_add(len).min(map.len() as u64);
            if offset < end {
                // SAFETY: the map is a read-only, file-backed mapping; MADV_DONTNEED only drops
                // its resident pages, which the kernel re-reads from the file on the next
                // access, so no borrowed slice ever observes different bytes. Best effort: a
                // failure changes only caching, never results.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        offset as usize,
                        (end - offset) as usize,
                    )
                };
            }
        }
    }
}

impl std::fmt::Debug for ByteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteSource").field("path", &self.path).field("len", &self.len()).finish()
    }
}
