//! Kernels compiled twice: for baseline x86-64 and for AVX2.

/// Defines a function whose body is compiled twice, for baseline x86-64
/// (whose loops vectorize 2 doubles at a time) and for AVX2 (4 at a time),
/// and runs the AVX2 copy when the CPU has it (checked once, then cached
/// by `std`). For hot loops that are not already dispatched (GEMM is).
/// Takes a non-generic function with plain `name: Type` arguments.
///
/// ```
/// secondo_tensor::avx2_kernel! {
///     /// The sum of squares.
///     fn sum_squares(x: &[f64]) -> f64 {
///         x.iter().map(|v| v * v).sum()
///     }
/// }
/// assert_eq!(sum_squares(&[1.0, 2.0]), 5.0);
/// ```
#[macro_export]
macro_rules! avx2_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
