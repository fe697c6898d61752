//! Process-wide allocator settings for recast's binaries.
//!
//! The reference engine and the quantizer free and re-allocate buffers of the same sizes over
//! and over (a layer's activations, a weight's encoding). glibc's malloc hands blocks above
//! its mmap threshold (128 KiB, raised at run time up to 32 MiB) straight back to the kernel
//! when freed, and trims the heap top above its trim threshold, so every reuse paid page
//! faults and kernel page zeroing: 11 % of the CPU time of a 512-token SmolLM2 prefill went to
//! `clear_page`. [`retain_freed_memory`] keeps freed blocks up to 32 MiB in the heap for
//! reuse, and trims the heap only when 64 MiB at its top are free (glibc's own rule once it
//! has raised the threshold to 32 MiB). Bigger blocks (a 150k-vocab logits matrix) are still
//! mapped and unmapped. The cost is some retained memory: the SmolLM2 release pipeline
//! (`examples/smollm2.yaml`, every stage in one process) peaks at ~615 MB instead of 535–570.

/// Keeps freed heap blocks of up to 32 MiB in the process for reuse (glibc; a no-op
/// elsewhere); the heap is trimmed above 64 MiB of free space at its top. Call once at start,
/// before other threads exist.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters; called before any thread is
    // spawned. A refused setting (returns 0) leaves the defaults, which are also correct.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
