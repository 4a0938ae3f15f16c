//! Keeping freed tensor buffers in the process instead of returning them to
//! the kernel.
//!
//! candle allocates a fresh `Vec` for every tensor. glibc serves buffers above
//! its mmap threshold (128 KiB at start) with `mmap` and gives them back on
//! free, so every training step page-faults its large activations and
//! gradients in again (~20% of an MLP step in `perf`). Raising the mmap and
//! trim thresholds lets the heap recycle them.

/// Bytes below which glibc serves allocations from the heap (64 MiB).
const MMAP_THRESHOLD: i32 = 64 << 20;
/// Free heap bytes glibc keeps before trimming (256 MiB).
const TRIM_THRESHOLD: i32 = 256 << 20;

/// Tunes the C allocator for training loops: call once at the start of a
/// process that trains or runs models. Returns whether the settings were
/// applied (always `false` off glibc, where it does nothing).
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values are valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
