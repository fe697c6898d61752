//! What the machine offers: free disk space, available memory, and an exclusive lock so two
//! processes never work on the same share of a run.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The nearest existing ancestor of `p` (the directory whose filesystem `p` will live on).
pub fn existing_ancestor(p: &Path) -> PathBuf {
    let mut cur = if p.is_absolute() { p.to_path_buf() } else { Path::new(".").join(p) };
    while !cur.exists() {
        match cur.parent() {
            Some(parent) => cur = parent.to_path_buf(),
            None => return PathBuf::from("."),
        }
    }
    cur
}

/// Bytes available to this user on the filesystem holding `p`. `RECAST_FREE_BYTES` overrides
/// the answer (for tests of the pre-flight refusal; a real full disk is tested too).
pub fn free_bytes(p: &Path) -> Result<u64> {
    if let Some(v) = std::env::var("RECAST_FREE_BYTES").ok().and_then(|v| v.parse().ok()) {
        return Ok(v);
    }
    let dir = existing_ancestor(p);
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .with_context(|| format!("path {} contains a NUL byte", dir.display()))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("reading free space of {}: {e}", dir.display());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// `MemAvailable` from /proc/meminfo, if the platform has it.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// An exclusive advisory lock held for the life of the value (released by the kernel if the
/// process dies, so a SIGKILL never leaves a stale lock).
pub struct Lock(#[allow(dead_code)] File);

pub fn lock(path: &Path) -> Result<Lock> {
    use std::os::fd::AsRawFd;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another recast process is running this share of the pipeline (lock {} is held); wait for it or stop it",
            path.display()
        );
    }
    Ok(Lock(f))
}
