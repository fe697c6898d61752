//! Atomic output files: write to `<final>.partial` in the destination directory, fsync,
//! rename. A crash or an error leaves no file at the final path.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written. Dropped without [`AtomicFile::commit`], its temporary is removed.
pub struct AtomicFile {
    final_path: PathBuf,
    temp_path: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
}

/// The temporary name used for `final_path` while it is being written.
pub fn partial_path(final_path: &Path) -> PathBuf {
    let mut name = final_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    final_path.with_file_name(name)
}

impl AtomicFile {
    pub fn create(final_path: impl AsRef<Path>) -> Result<Self> {
        let final_path = final_path.as_ref().to_path_buf();
        let temp_path = partial_path(&final_path);
        let file = File::create(&temp_path).map_err(|e| Error::io(&temp_path, e))?;
        Ok(AtomicFile { final_path, temp_path, out: Some(BufWriter::with_capacity(1 << 20, file)), written: 0 })
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.written
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("write after commit");
        out.write_all(bytes).map_err(|e| Error::io(&self.temp_path, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes `n` zero bytes (alignment padding).
    pub fn write_zeros(&mut self, n: u64) -> Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..k])?;
            left -= k as u64;
        }
        Ok(())
    }

    /// Flushes, fsyncs and renames to the final path, then fsyncs the directory.
    pub fn commit(mut self) -> Result<PathBuf> {
        let out = self.out.take().expect("commit twice");
        let file = out.into_inner().map_err(|e| Error::io(&self.temp_path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.temp_path, e))?;
        drop(file);
        fs::rename(&self.temp_path, &self.final_path).map_err(|e| Error::io(&self.final_path, e))?;
        if let Some(dir) = self.final_path.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            // Directory fsync makes the rename durable; not every filesystem supports it.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.final_path.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// Something bytes can be appended to: an output file, or memory.
pub trait ByteSink {
    fn put(&mut self, bytes: &[u8]) -> Result<()>;
}

impl ByteSink for AtomicFile {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_all(bytes)
    }
}

impl ByteSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Where a producer streams one tensor's bytes; counts what it writes so the writer can check
/// the total against its plan.
pub struct Sink<'a> {
    out: &'a mut dyn ByteSink,
    written: u64,
}

impl<'a> Sink<'a> {
    pub fn new(out: &'a mut dyn ByteSink) -> Self {
        Sink { out, written: 0 }
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.put(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written through this sink.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that exactly `expected` bytes were written for `tensor` (`layout` describes its
    /// planned type and shape for the error message).
    pub fn check_total(&self, tensor: &str, expected: u64, layout: &str) -> Result<()> {
        if self.written == expected {
            return Ok(());
        }
        Err(Error::TensorData {
            tensor: tensor.to_string(),
            detail: format!("produced {} bytes, plan expects {expected} ({layout})", self.written),
        })
    }
}

/// Writes a small file (JSON, text) atomically in one call.
pub fn write_file(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_renames_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"abc").unwrap();
            assert!(partial_path(&p).exists());
            assert!(!p.exists());
        }
        assert!(!partial_path(&p).exists(), "dropped temp must be removed");
        assert!(!p.exists());
        let mut f = AtomicFile::create(&p).unwrap();
        f.write_all(b"abc").unwrap();
        f.write_zeros(5000).unwrap();
        assert_eq!(f.position(), 5003);
        f.commit().unwrap();
        assert_eq!(fs::read(&p).unwrap().len(), 5003);
        assert!(!partial_path(&p).exists());
    }
}
