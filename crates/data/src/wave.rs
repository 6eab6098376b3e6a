//! A built-in 1-D regression problem: 150 points of a noisy-looking sine on
//! [−2, 2], `y = sin 2x + 0.1 cos 9x` (deterministic), for regression
//! examples and the Laplace benchmark's predictive band.

use crate::{Dataset, Targets};

/// The 150 points (`--data wave`).
///
/// ```
/// let d = secondo_data::wave();
/// assert_eq!((d.len(), d.num_features(), d.num_classes()), (150, 1, None));
/// assert_eq!(d.x[0], -2.0);
/// ```
pub fn wave() -> Dataset {
    let n = 150;
    let x: Vec<f64> = (0..n)
        .map(|i| -2.0 + 4.0 * i as f64 / (n - 1) as f64)
        .collect();
    let values = x
        .iter()
        .map(|v| (2.0 * v).sin() + 0.1 * (9.0 * v).cos())
        .collect();
    Dataset::new(x, vec![1], Targets::Values { values, width: 1 }, "wave")
        .expect("150 samples of one feature and one target")
}
