//! Elementary functions written to vectorize: straight-line arithmetic and
//! selects, no calls and no branches, so that a loop over a slice compiles
//! to SIMD code (glibc's `tanhf` is a scalar call per element, and was half
//! of a `tanh` network's training step).

/// `tanh(x)` in `f32`, within 2 ulp of the exact value (checked against
/// `f64` over every 61st `f32` of `[2⁻²⁶, 12]`); `±0`, `±∞`, subnormals and
/// NaN as `tanhf`.
///
/// Below `|x| = 0.55` the odd Taylor series (terms to `x¹⁹`, the first
/// left out is under 2⁻²⁴ of the sum there), above it `1 − 2/(e^{2|x|} + 1)`
/// (which loses under one bit to cancellation from 0.55 on), with `|x|`
/// capped at 10, where `tanh` rounds to 1 (from 9.01 on).
///
/// ```
/// use secondo_tensor::tanh_f32;
/// assert_eq!(tanh_f32(0.0), 0.0);
/// assert_eq!(tanh_f32(f32::INFINITY), 1.0);
/// assert!((tanh_f32(0.5) - 0.5f32.tanh()).abs() <= f32::EPSILON);
/// assert!(tanh_f32(f32::NAN).is_nan());
/// ```
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    // tanh x = Σ 2²ⁿ(2²ⁿ − 1) B₂ₙ x²ⁿ⁻¹ / (2n)!, from x³ on.
    const TAYLOR: [f32; 9] = [
        -1.0 / 3.0,
        2.0 / 15.0,
        -17.0 / 315.0,
        62.0 / 2835.0,
        -1382.0 / 155_925.0,
        21844.0 / 6_081_075.0,
        -929_569.0 / 638_512_875.0,
        6_404_582.0 / 10_854_718_875.0,
        -443_861_162.0 / 1_856_156_927_625.0,
    ];
    let a = x.abs();
    let z = a * a;
    let series = TAYLOR.iter().rev().fold(0.0f32, |p, &c| p * z + c);
    let small = a + a * z * series;
    let capped = if a < 10.0 { a } else { 10.0 };
    let e = exp_f32_reduced(2.0 * capped);
    let large = 1.0 - 2.0 / (e + 1.0);
    // NaN fails the comparison and takes the series, which keeps it.
    let t = if a >= 0.55 { large } else { small };
    t.copysign(x)
}

/// `eˣ` for `x ∈ [0, 20]` (no overflow or underflow to handle), within
/// about 1 ulp: `2ᵏ eʳ` with `k` the nearest integer to `x/ln 2`, `ln 2`
/// split in two so that `r = x − k ln 2` is exact, and Cephes' `expf`
/// polynomial on `|r| ≤ ½ ln 2`.
#[inline(always)]
fn exp_f32_reduced(x: f32) -> f32 {
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const CEPHES: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = CEPHES.iter().fold(0.0f32, |p, &c| p * r + c);
    let er = p * r * r + r + 1.0;
    // `shifted`'s low mantissa bits hold k: 2ᵏ's exponent field without a
    // float-to-integer conversion (which would not vectorize).
    let k_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(k_bits.wrapping_add(127) << 23);
    er * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance in units of the last place of `f32` at the exact value.
    fn ulps(got: f32, exact: f64) -> f64 {
        let e = exact as f32;
        let ulp = (f32::from_bits(e.to_bits() + 1) - e) as f64;
        (got as f64 - exact).abs() / ulp
    }

    #[test]
    fn tanh_is_within_two_ulps_on_a_sweep_of_floats() {
        let (start, end) = (2f32.powi(-26).to_bits(), 12f32.to_bits());
        let mut worst = (0.0, 0.0f32);
        for bits in (start..end).step_by(61) {
            let x = f32::from_bits(bits);
            for x in [x, -x] {
                let u = ulps(tanh_f32(x), (x as f64).tanh());
                if u > worst.0 {
                    worst = (u, x);
                }
            }
        }
        assert!(worst.0 <= 2.0, "{} ulp at x = {}", worst.0, worst.1);
    }

    #[test]
    fn tanh_keeps_the_special_values() {
        assert_eq!(tanh_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh_f32(30.0), 1.0);
        assert_eq!(tanh_f32(-1e30), -1.0);
        let tiny = f32::from_bits(3);
        assert_eq!(tanh_f32(tiny), tiny);
        assert_eq!(tanh_f32(-tiny), -tiny);
        assert!(tanh_f32(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_one_ulp_on_its_range() {
        let worst = (0..=200_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| ulps(exp_f32_reduced(x), (x as f64).exp()))
            .fold(0.0, f64::max);
        assert!(worst <= 1.0, "{worst} ulp");
    }
}
