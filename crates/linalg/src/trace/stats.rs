//! Sample mean and standard error.

/// The mean of `samples` and its standard error `s / √m` (sample standard
/// deviation `s` with `m − 1` degrees of freedom); needs at least two samples.
pub(super) fn mean_and_stderr(samples: &[f64]) -> (f64, f64) {
    let m = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / m;
    let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1.0);
    (mean, (variance / m).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let (mean, stderr) = mean_and_stderr(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(mean, 2.5);
        assert!((stderr - (5.0_f64 / 12.0).sqrt()).abs() < 1e-15);
    }
}
