//! Keeping freed memory for reuse.

/// Tells glibc's allocator to serve buffers up to 256 MiB from its heap, to
/// keep freed memory for the next allocation, and to use one arena for all
/// threads. secondo allocates and frees the same large buffers on every
/// product and step; with glibc's defaults many of them are fresh mappings
/// whose pages fault in again on first write (a top-10 Lanczos on the
/// benchmark MLP: 264,000 page faults before, 38,000 after; 100
/// Hessian-vector products in a fresh process: 0.95 s → 0.40 s). The single
/// arena matters because the kernels run on rayon workers: a worker's own
/// arena grows in heaps of at most 64 MiB, so a larger buffer (batch_grad's
/// 100 MB of per-sample gradients) was mapped and unmapped on every call, a
/// third of its time spent zeroing fresh pages in the kernel (batch_grad 5.9
/// → 3.3 gradient steps). `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`
/// or `MALLOC_ARENA_MAX` in the environment leave glibc's settings to the user.
///
/// Programs using secondo as a library call it first thing in `main`, before
/// any thread starts (the `secondo` binary does):
///
/// ```
/// secondo::allocator::keep_freed_memory();
/// ```
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = [
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_ARENA_MAX",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        if !user_set {
            // SAFETY: mallopt only changes allocator parameters; it is called
            // at startup, before any other thread exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        }
    }
}
