//! The prior precision `δ` of a zero-mean Gaussian prior over the selected
//! weights: one value for all, one per parameter tensor, or one per weight
//! (laplace-torch's `prior_precision` of shape `[1]`, `[layers]` or `[P]`).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use crate::Error;

/// How many prior precisions there are (`--prior-shape`,
/// `--marglik-prior-shape`).
///
/// ```
/// use secondo::laplace::PriorShape;
/// assert_eq!("layer".parse::<PriorShape>().unwrap(), PriorShape::PerLayer);
/// assert_eq!(PriorShape::Diagonal.to_string(), "diagonal");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorShape {
    /// One for every weight.
    Scalar,
    /// One per parameter tensor of the subset.
    PerLayer,
    /// One per weight.
    Diagonal,
}

impl FromStr for PriorShape {
    type Err = Error;
    fn from_str(s: &str) -> Result<PriorShape, Error> {
        match s {
            "scalar" => Ok(PriorShape::Scalar),
            "layer" => Ok(PriorShape::PerLayer),
            "diagonal" => Ok(PriorShape::Diagonal),
            _ => Err(Error::Invalid(format!(
                "--prior-shape '{s}': expected scalar, layer or diagonal"
            ))),
        }
    }
}

impl fmt::Display for PriorShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PriorShape::Scalar => "scalar",
            PriorShape::PerLayer => "layer",
            PriorShape::Diagonal => "diagonal",
        })
    }
}

/// The prior precisions over weights laid out as parameter tensors of
/// `sizes` (the subset's, in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Prior {
    /// The shape of `values`.
    pub shape: PriorShape,
    /// The precisions, all positive.
    pub values: Vec<f64>,
    sizes: Vec<usize>,
}

impl Prior {
    /// A prior of `shape`, every precision `value`, for tensors of `sizes`.
    pub fn uniform(shape: PriorShape, value: f64, sizes: &[usize]) -> Result<Prior, Error> {
        let count = match shape {
            PriorShape::Scalar => 1,
            PriorShape::PerLayer => sizes.len(),
            PriorShape::Diagonal => sizes.iter().sum(),
        };
        Prior::new(shape, vec![value; count], sizes)
    }

    /// A prior of `shape` with the given precisions.
    pub fn new(shape: PriorShape, values: Vec<f64>, sizes: &[usize]) -> Result<Prior, Error> {
        if let Some(bad) = values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(Error::Invalid(format!(
                "--prior-precision must be positive and finite, got {bad}"
            )));
        }
        let prior = Prior {
            shape,
            values,
            sizes: sizes.to_vec(),
        };
        let expected = prior.runs().last().map_or(0, |(g, _)| g + 1);
        if prior.values.len() != expected {
            return Err(Error::Invalid(format!(
                "{} prior precisions for a {shape:?} prior over {} tensors",
                prior.values.len(),
                sizes.len()
            )));
        }
        Ok(prior)
    }

    /// The same prior with other precisions (of the same shape).
    pub fn with_values(&self, values: Vec<f64>) -> Result<Prior, Error> {
        Prior::new(self.shape, values, &self.sizes)
    }

    /// The weights of each precision as contiguous runs `(precision,
    /// weights)`, in order: one run for a scalar prior, one per tensor or
    /// per weight for the others.
    pub(crate) fn runs(&self) -> Vec<(usize, Range<usize>)> {
        let total: usize = self.sizes.iter().sum();
        match self.shape {
            PriorShape::Scalar if total == 0 => Vec::new(),
            PriorShape::Scalar => vec![(0, 0..total)],
            PriorShape::PerLayer => {
                let mut at = 0;
                self.sizes
                    .iter()
                    .enumerate()
                    .map(|(t, &n)| {
                        at += n;
                        (t, at - n..at)
                    })
                    .collect()
            }
            PriorShape::Diagonal => (0..total).map(|i| (i, i..i + 1)).collect(),
        }
    }

    /// The precisions each tensor's weights have: one value (scalar and
    /// per-layer priors) or one per weight (diagonal), tensor by tensor.
    ///
    /// ```
    /// use secondo::laplace::{Prior, PriorShape};
    /// let p = Prior::new(PriorShape::Diagonal, vec![1.0, 2.0, 3.0], &[2, 1]).unwrap();
    /// assert_eq!(p.per_tensor(), [vec![1.0, 2.0], vec![3.0]]);
    /// ```
    pub fn per_tensor(&self) -> Vec<Vec<f64>> {
        let mut at = 0;
        self.sizes
            .iter()
            .enumerate()
            .map(|(t, &n)| match self.shape {
                PriorShape::Scalar => vec![self.values[0]],
                PriorShape::PerLayer => vec![self.values[t]],
                PriorShape::Diagonal => {
                    at += n;
                    self.values[at - n..at].to_vec()
                }
            })
            .collect()
    }

    /// The precision of every weight.
    pub fn per_weight(&self) -> Vec<f64> {
        self.runs()
            .into_iter()
            .flat_map(|(g, weights)| std::iter::repeat_n(self.values[g], weights.len()))
            .collect()
    }

    /// `log det P₀ = Σ_w log δ_w`, one logarithm per precision.
    ///
    /// ```
    /// use secondo::laplace::{Prior, PriorShape};
    /// let p = Prior::new(PriorShape::PerLayer, vec![2.0, 3.0], &[4, 1]).unwrap();
    /// assert!((p.log_det() - (4.0 * 2f64.ln() + 3f64.ln())).abs() < 1e-15);
    /// ```
    pub fn log_det(&self) -> f64 {
        self.values
            .iter()
            .zip(self.counts())
            .map(|(v, n)| n as f64 * v.ln())
            .sum()
    }

    /// Sums per-weight values over each precision's weights (the chain rule
    /// from a derivative per weight to one per precision).
    pub fn sum_per_group(&self, per_weight: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.values.len()];
        for (g, weights) in self.runs() {
            out[g] += per_weight[weights].iter().sum::<f64>();
        }
        out
    }

    /// How many weights each precision has.
    pub fn counts(&self) -> Vec<usize> {
        let mut out = vec![0; self.values.len()];
        for (g, weights) in self.runs() {
            out[g] += weights.len();
        }
        out
    }
}
