//! Keeping freed memory for reuse.

/// Tells glibc's allocator to serve buffers up to 256 MiB from its heap and
/// to keep freed memory for the next allocation. secondo allocates and frees
/// the same large buffers on every product and step; with glibc's defaults
/// many of them are fresh mappings whose pages fault in again on first write
/// (a top-10 Lanczos on the benchmark MLP: 264,000 page faults before, 38,000
/// after; 100 Hessian-vector products in a fresh process: 0.95 s → 0.40 s).
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` in the environment
/// leave glibc's settings to the user.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !user_set {
            // SAFETY: mallopt only changes allocator parameters; it is called
            // at startup, before any other thread exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        }
    }
}
