//! Atomic output files: write to `<final>.partial` in the destination directory, fsync,
//! rename. A crash or an error leaves no file at the final path.
//!
//! Big outputs are written by a background thread, so producing the next bytes (decoding,
//! quantizing) overlaps the write(2) calls. On Linux the temporary is opened with `O_DIRECT`
//! and written in aligned 8 MiB blocks: the bytes go from our buffer to the disk without the
//! page-cache copy, which on the VMs we measured costs more CPU than the conversion itself
//! (buffered writes ~0.4 GB/s of one core; direct ~1.9 GB/s; bench/convert/README.md).
//! A file's sha256, when asked for, is computed by the thread that hands over the bytes, as it
//! copies them into blocks, so hashing overlaps the writer thread's waiting on the disk rather
//! than adding to it.
//! Filesystems that refuse `O_DIRECT` (tmpfs, some network filesystems) get buffered writes;
//! `RECAST_DIRECT_IO=0` forces them everywhere. Either way the file is fsynced before the
//! rename, and its bytes do not depend on the mode.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

/// Size of one write; a multiple of every logical block size `O_DIRECT` asks us to align to.
const BLOCK: usize = 8 << 20;
/// Alignment of buffer addresses, file offsets and lengths for `O_DIRECT`.
const ALIGN: usize = 4096;
/// Blocks queued for the writer thread besides the one being filled and the one being written.
const QUEUED: usize = 2;

/// A `BLOCK`-byte buffer whose start is `ALIGN`-aligned (a plain `Vec` with slack in front).
struct Block {
    data: Vec<u8>,
    start: usize,
    /// Bytes to write.
    len: usize,
}

impl Block {
    fn new() -> Block {
        let data = vec![0u8; BLOCK + ALIGN];
        let start = data.as_ptr().align_offset(ALIGN);
        Block { data, start, len: 0 }
    }

    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    /// Appends as much of `bytes` as fits; returns how much.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let k = bytes.len().min(BLOCK - self.len);
        let at = self.start + self.len;
        self.data[at..at + k].copy_from_slice(&bytes[..k]);
        self.len += k;
        k
    }

    /// Zero-pads the filled part to a multiple of `ALIGN` (the last block of a direct write;
    /// nothing when it already is one).
    fn pad(&mut self) {
        let padded = self.len.next_multiple_of(ALIGN);
        self.data[self.start + self.len..self.start + padded].fill(0);
        self.len = padded;
    }
}

/// The thread that writes blocks in order; hands each buffer back for reuse.
struct Writer {
    blocks: Option<SyncSender<Block>>,
    free: Receiver<Block>,
    /// Buffers allocated so far (at most the pipeline depth).
    made: usize,
    thread: Option<JoinHandle<io::Result<File>>>,
}

impl Writer {
    fn spawn(file: File, path: PathBuf, direct: bool) -> Writer {
        let (tx, rx) = mpsc::sync_channel::<Block>(QUEUED);
        let (free_tx, free) = mpsc::channel();
        let thread = std::thread::spawn(move || -> io::Result<File> {
            let mut file = file;
            let mut direct = direct;
            let mut at = 0u64;
            for mut block in rx {
                match file.write_all(block.filled()) {
                    // A filesystem that accepted the flag at open may still refuse the write
                    // (alignment): reopen without it where the data ends, and go on buffered.
                    Err(e) if direct && e.kind() == io::ErrorKind::InvalidInput => {
                        file = fs::OpenOptions::new().write(true).open(&path)?;
                        file.seek(SeekFrom::Start(at))?;
                        direct = false;
                        file.write_all(block.filled())?;
                    }
                    r => r?,
                }
                at += block.len as u64;
                block.len = 0;
                let _ = free_tx.send(block);
            }
            Ok(file)
        });
        Writer { blocks: Some(tx), free, made: 0, thread: Some(thread) }
    }

    /// Queues a full block; an error means the thread stopped (its error comes from `finish`).
    fn send(&mut self, block: Block) -> std::result::Result<(), ()> {
        self.blocks.as_ref().expect("writer open").send(block).map_err(|_| ())
    }

    /// A buffer the thread has finished with, or a new one while fewer than the pipeline
    /// depth exist.
    fn next_buffer(&mut self) -> Block {
        if let Ok(b) = self.free.try_recv() {
            return b;
        }
        if self.made < QUEUED + 2 {
            self.made += 1;
            return Block::new();
        }
        self.free.recv().unwrap_or_else(|_| Block::new())
    }

    /// Waits for every queued block to be written; returns the file or the first error.
    fn finish(&mut self) -> io::Result<File> {
        self.blocks = None;
        let thread = self.thread.take().expect("finish once");
        thread.join().unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")))
    }
}

/// A file being written. Dropped without [`AtomicFile::commit`], its temporary is removed.
pub struct AtomicFile {
    final_path: PathBuf,
    temp_path: PathBuf,
    block: Option<Block>,
    direct: bool,
    writer: Writer,
    written: u64,
    hasher: Option<Sha256>,
}

/// The temporary name used for `final_path` while it is being written.
pub fn partial_path(final_path: &Path) -> PathBuf {
    let mut name = final_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    final_path.with_file_name(name)
}

/// Whether big outputs may use `O_DIRECT` (`RECAST_DIRECT_IO=0` says no).
fn direct_io_allowed() -> bool {
    std::env::var("RECAST_DIRECT_IO").map_or(true, |v| v != "0")
}

/// Creates (truncates) `path`, with `O_DIRECT` when asked and the filesystem accepts it.
/// Returns the file and whether it is direct.
fn create(path: &Path, direct: bool) -> io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    if direct {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = fs::OpenOptions::new();
        o.write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT);
        match o.open(path) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = direct;
    Ok((File::create(path)?, false))
}

impl AtomicFile {
    pub fn create(final_path: impl AsRef<Path>) -> Result<Self> {
        Self::create_with(final_path.as_ref(), direct_io_allowed(), false)
    }

    /// As [`AtomicFile::create`], also computing the sha256 of the content as it is written
    /// ([`AtomicFile::commit`] returns it), so callers that record a digest need not read the
    /// file back.
    pub fn create_hashed(final_path: impl AsRef<Path>) -> Result<Self> {
        Self::create_with(final_path.as_ref(), direct_io_allowed(), true)
    }

    /// As [`AtomicFile::create`]; `direct: false` never uses `O_DIRECT`; `hash` computes the
    /// content's sha256.
    pub fn create_with(final_path: &Path, direct: bool, hash: bool) -> Result<Self> {
        let final_path = final_path.to_path_buf();
        let temp_path = partial_path(&final_path);
        let (file, direct) = create(&temp_path, direct).map_err(|e| Error::io(&temp_path, e))?;
        let writer = Writer::spawn(file, temp_path.clone(), direct);
        let hasher = hash.then(Sha256::new);
        Ok(AtomicFile { final_path, temp_path, block: None, direct, writer, written: 0, hasher })
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.written
    }

    /// The writer thread's error (it stopped early), as an error on the temporary.
    fn writer_error(&mut self) -> Error {
        let e = match self.writer.finish() {
            Err(e) => e,
            Ok(_) => io::Error::other("the writer thread stopped"),
        };
        Error::io(&self.temp_path, e)
    }

    pub fn write_all(&mut self, mut bytes: &[u8]) -> Result<()> {
        assert!(self.writer.blocks.is_some(), "write after commit");
        self.written += bytes.len() as u64;
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        while !bytes.is_empty() {
            let block = match &mut self.block {
                Some(b) => b,
                None => self.block.insert(self.writer.next_buffer()),
            };
            let k = block.fill(bytes);
            bytes = &bytes[k..];
            if block.len == BLOCK {
                let full = self.block.take().expect("block");
                if self.writer.send(full).is_err() {
                    return Err(self.writer_error());
                }
            }
        }
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

    /// Writes what is buffered, fsyncs and renames to the final path, then fsyncs the
    /// directory. Returns the size and, for [`AtomicFile::create_hashed`] files, the sha256.
    pub fn commit(mut self) -> Result<Committed> {
        if let Some(mut last) = self.block.take() {
            if self.direct {
                last.pad();
            }
            if self.writer.send(last).is_err() {
                return Err(self.writer_error());
            }
        }
        let file = self.writer.finish().map_err(|e| Error::io(&self.temp_path, e))?;
        let sha256 = self.hasher.take().map(|h| format!("{:x}", h.finalize()));
        // The last direct block was padded to the alignment; cut the file to its length.
        if self.direct && !self.written.is_multiple_of(ALIGN as u64) {
            file.set_len(self.written).map_err(|e| Error::io(&self.temp_path, e))?;
        }
        file.sync_all().map_err(|e| Error::io(&self.temp_path, e))?;
        drop(file);
        rename_durably(&self.temp_path, &self.final_path)?;
        self.temp_path = PathBuf::new();
        Ok(Committed { path: self.final_path.clone(), bytes: self.written, sha256 })
    }
}

/// A file [`AtomicFile::commit`] put in place.
#[derive(Clone, Debug)]
pub struct Committed {
    pub path: PathBuf,
    pub bytes: u64,
    /// Lowercase hex sha256 of the content, for files created with
    /// [`AtomicFile::create_hashed`].
    pub sha256: Option<String>,
}

/// Renames `from` to `to`, then fsyncs the directory so the rename survives a crash.
fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    if let Some(dir) = to.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        // Directory fsync makes the rename durable; not every filesystem supports it.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.temp_path.as_os_str().is_empty() {
            return; // committed
        }
        self.block = None;
        if self.writer.thread.is_some() {
            let _ = self.writer.finish();
        }
        let _ = fs::remove_file(&self.temp_path);
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

/// Writes a small file (JSON, text) atomically in one call (buffered; no writer thread).
pub fn write_file(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let temp = partial_path(path);
    let written = (|| {
        let mut f = File::create(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(&temp, e));
    }
    rename_durably(&temp, path)
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

    /// Direct and buffered writes give the same bytes, for lengths around the block and
    /// alignment boundaries, written in uneven pieces.
    #[test]
    fn direct_and_buffered_write_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, ALIGN - 1, ALIGN, ALIGN + 7, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 4097] {
            let data: Vec<u8> = (0..len).map(|i| ((i * 2654435761usize) >> 7) as u8).collect();
            for direct in [true, false] {
                let p = dir.path().join(format!("{len}-{direct}.bin"));
                let mut f = AtomicFile::create_with(&p, direct, true).unwrap();
                let mut rest = &data[..];
                let mut piece = 1;
                while !rest.is_empty() {
                    let k = piece.min(rest.len());
                    f.write_all(&rest[..k]).unwrap();
                    rest = &rest[k..];
                    piece = piece * 3 + 1;
                }
                assert_eq!(f.position(), len as u64);
                let c = f.commit().unwrap();
                assert!(fs::read(&p).unwrap() == data, "{len} bytes, direct {direct}");
                assert_eq!(c.bytes, len as u64);
                assert_eq!(c.sha256.unwrap(), format!("{:x}", Sha256::digest(&data)), "{len} bytes, direct {direct}");
            }
        }
    }

    #[test]
    fn write_file_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_file(&p, b"one").unwrap();
        write_file(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!partial_path(&p).exists());
        let missing = dir.path().join("no-such-dir").join("y.json");
        let e = write_file(&missing, b"z").unwrap_err().to_string();
        assert!(e.contains("y.json.partial"), "{e}");
    }
}
