//! Allocator settings for the batched kernels.
//!
//! The gradient loops of the scan allocate and free the same few hundred-kilobyte buffers
//! thousands of times. glibc's defaults hand the freed top of a thread's heap back to the
//! kernel (`madvise`) and fault the pages in again on the next step: measured on the digits
//! backdoor scan, 0.76 s of system time in a 0.94 s run (6,000 `madvise` calls). Keeping freed
//! memory (trim threshold 1 GiB) and serving blocks up to 32 MiB from the heap (glibc's largest
//! mmap threshold) removes it: the same scan takes 0.51 s with no system time. mimalloc did as
//! well on the scan but cost smoothing 20 % of its throughput; these settings cost it < 5 %.

/// Apply the allocator settings (glibc on Linux; elsewhere nothing). Call once, before any
/// thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two allocator thresholds; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}
