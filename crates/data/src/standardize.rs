use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Features whose standard deviation is below this (relative to
/// `max(1, |mean|)`) are treated as constant and scaled by 1.
const MIN_RELATIVE_STD: f64 = 1e-8;

/// Per-feature standardization `(x - mean) / std`, fitted on one dataset
/// (the training split) and applied to any dataset with the same features.
///
/// `std` is the population standard deviation (divisor `n`, as
/// scikit-learn's `StandardScaler`). Near-constant features, whose std is
/// below `1e-8 * max(1, |mean|)`, get std 1 instead, so they map to about 0
/// rather than blowing up.
///
/// ```
/// use secondo_data::Standardizer;
/// let (mut train, mut test) = secondo_data::digits().split(0.25, 0).unwrap();
/// let s = Standardizer::fit(&train).unwrap();
/// s.apply(&mut train).unwrap();
/// s.apply(&mut test).unwrap();
/// let col_mean: f64 = train.x.iter().skip(20).step_by(64).sum::<f64>() / train.len() as f64;
/// assert!(col_mean.abs() < 1e-12);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature standard deviation, never zero.
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Computes per-feature mean and standard deviation of `train`.
    /// Errors if it has no samples or an inconsistent layout.
    ///
    /// ```
    /// use secondo_data::{Dataset, Standardizer, Targets};
    /// let d = Dataset::new(
    ///     vec![1.0, 5.0, 3.0, 5.0],
    ///     vec![2],
    ///     Targets::Classes { labels: vec![0, 1], num_classes: 2 },
    ///     "toy",
    /// )
    /// .unwrap();
    /// let s = Standardizer::fit(&d).unwrap();
    /// assert_eq!(s.mean, vec![2.0, 5.0]);
    /// assert_eq!(s.std, vec![1.0, 1.0]); // second feature is constant
    /// ```
    pub fn fit(train: &Dataset) -> Result<Standardizer> {
        train.check_layout()?;
        let n = train.len();
        let nf = train.num_features();
        if n == 0 {
            return Err(DataError::Invalid(format!(
                "dataset `{}`: cannot fit a standardizer on zero samples",
                train.name
            )));
        }
        let mut mean = vec![0.0; nf];
        for row in train.x.chunks_exact(nf.max(1)) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        let mut var = vec![0.0; nf];
        for row in train.x.chunks_exact(nf.max(1)) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let std = var
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let sd = (s / n as f64).sqrt();
                if sd < MIN_RELATIVE_STD * m.abs().max(1.0) {
                    1.0
                } else {
                    sd
                }
            })
            .collect();
        Ok(Standardizer { mean, std })
    }

    /// Standardizes `data.x` in place. Errors if `data` has a different
    /// number of features or an inconsistent layout.
    ///
    /// ```
    /// use secondo_data::{Dataset, Standardizer, Targets};
    /// let s = Standardizer { mean: vec![1.0], std: vec![2.0] };
    /// let mut d = Dataset::new(
    ///     vec![3.0, -1.0],
    ///     vec![1],
    ///     Targets::Values { values: vec![0.0, 0.0], width: 1 },
    ///     "toy",
    /// )
    /// .unwrap();
    /// s.apply(&mut d).unwrap();
    /// assert_eq!(d.x, vec![1.0, -1.0]);
    /// ```
    pub fn apply(&self, data: &mut Dataset) -> Result<()> {
        data.check_layout()?;
        let nf = data.num_features();
        if self.mean.len() != nf || self.std.len() != nf {
            return Err(DataError::Invalid(format!(
                "dataset `{}`: standardizer has {} means and {} stds but samples have {nf} features",
                data.name,
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(i) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DataError::Invalid(format!(
                "standardizer std {} of feature {i} is not positive and finite",
                self.std[i]
            )));
        }
        for row in data.x.chunks_exact_mut(nf.max(1)) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Targets;

    #[test]
    fn fit_on_train_apply_to_test() {
        let train = Dataset::new(
            vec![0.0, 10.0, 2.0, 10.0, 4.0, 10.0],
            vec![2],
            Targets::Classes {
                labels: vec![0, 0, 1],
                num_classes: 2,
            },
            "train",
        )
        .unwrap();
        let s = Standardizer::fit(&train).unwrap();
        let sd = (8.0f64 / 3.0).sqrt();
        assert_eq!(s.mean, vec![2.0, 10.0]);
        assert!((s.std[0] - sd).abs() < 1e-15);
        assert_eq!(s.std[1], 1.0);
        let mut test = Dataset::new(
            vec![6.0, 11.0],
            vec![2],
            Targets::Classes {
                labels: vec![1],
                num_classes: 2,
            },
            "test",
        )
        .unwrap();
        s.apply(&mut test).unwrap();
        assert!((test.x[0] - 4.0 / sd).abs() < 1e-12);
        assert_eq!(test.x[1], 1.0);
    }

    #[test]
    fn mismatches_are_errors() {
        let d = crate::digits();
        let s = Standardizer::fit(&d).unwrap();
        let mut other = d.with_sample_shape(vec![1, 8, 8]).unwrap();
        s.apply(&mut other).unwrap();
        let mut small = other
            .select(&[0])
            .unwrap()
            .with_sample_shape(vec![64])
            .unwrap();
        small.x.truncate(32);
        small.sample_shape = vec![32];
        assert!(s.apply(&mut small).is_err());
        let empty = crate::digits().select(&[]).unwrap();
        assert!(Standardizer::fit(&empty).is_err());
        let zero = Standardizer {
            mean: vec![0.0; 64],
            std: vec![0.0; 64],
        };
        assert!(zero.apply(&mut crate::digits()).is_err());
    }
}
