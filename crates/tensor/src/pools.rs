//! Running work on rayon pools of chosen sizes.

/// `f`'s result in a rayon pool of each of `sizes` threads, in order: how
/// tests check that a kernel's result does not depend on the thread count
/// (docs/ARCHITECTURE.md, "Determinism").
///
/// ```
/// let sums = secondo_tensor::in_thread_pools(&[1, 2], || rayon::current_num_threads());
/// assert_eq!(sums, vec![1, 2]);
/// ```
pub fn in_thread_pools<R: Send>(sizes: &[usize], f: impl Fn() -> R + Sync) -> Vec<R> {
    sizes
        .iter()
        .map(|&threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a rayon pool")
                .install(&f)
        })
        .collect()
}
