//! Kernels compiled twice: for baseline x86-64 and for AVX2.

/// Defines a function whose body is compiled twice, for baseline x86-64
/// (whose loops vectorize 2 doubles at a time) and for AVX2 (4 at a time),
/// and runs the AVX2 copy when the CPU has it (checked once, then cached
/// by `std`). For hot loops that are not already dispatched (GEMM is).
/// Takes a function with plain `name: Type` arguments and type parameters
/// with one bound each.
///
/// ```
/// secondo_tensor::avx2_kernel! {
///     /// The sum of squares.
///     fn sum_squares<T: secondo_tensor::Element>(x: &[T]) -> T {
///         x.iter().fold(T::zero(), |s, &v| s + v * v)
///     }
/// }
/// assert_eq!(sum_squares(&[1.0f64, 2.0]), 5.0);
/// ```
#[macro_export]
macro_rules! avx2_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$($gen:ident: $bound:path),+>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name $(<$($gen: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$($gen: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn wide $(<$($gen: $bound),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    body $(::<$($gen),+>)? ($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { wide $(::<$($gen),+>)? ($($arg),*) };
                }
            }
            body $(::<$($gen),+>)? ($($arg),*)
        }
    };
}
