use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use crate::finite::check_finite;

/// What a dataset asks a model to predict for each sample.
///
/// ```
/// use secondo_data::Targets;
/// let t = Targets::Classes { labels: vec![0, 2, 1], num_classes: 3 };
/// assert_eq!(t.len(), 3);
/// let r = Targets::Values { values: vec![0.5, 1.0, 1.5, 2.0], width: 2 };
/// assert_eq!(r.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One class index in `0..num_classes` per sample.
    Classes {
        /// The class index of each sample.
        labels: Vec<i64>,
        /// The number of classes.
        num_classes: usize,
    },
    /// `width` real values per sample, row-major.
    Values {
        /// The target values, `width` per sample.
        values: Vec<f64>,
        /// Values per sample (at least 1).
        width: usize,
    },
}

impl Targets {
    /// Number of samples these targets describe (0 for a width-0 regression,
    /// which [`Dataset::validate`] rejects).
    ///
    /// ```
    /// use secondo_data::Targets;
    /// assert_eq!(Targets::Values { values: vec![1.0; 6], width: 3 }.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values { values, width } => values.len().checked_div(*width).unwrap_or(0),
        }
    }

    /// Whether there are no samples.
    ///
    /// ```
    /// use secondo_data::Targets;
    /// assert!(Targets::Classes { labels: vec![], num_classes: 2 }.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of classes, or `None` for regression targets.
    ///
    /// ```
    /// use secondo_data::Targets;
    /// assert_eq!(Targets::Classes { labels: vec![1], num_classes: 4 }.num_classes(), Some(4));
    /// assert_eq!(Targets::Values { values: vec![1.0], width: 1 }.num_classes(), None);
    /// ```
    pub fn num_classes(&self) -> Option<usize> {
        match self {
            Targets::Classes { num_classes, .. } => Some(*num_classes),
            Targets::Values { .. } => None,
        }
    }

    /// The targets of samples `start..end`, as borrowed slices.
    /// Callers guarantee `start <= end <= self.len()` and a non-zero width.
    fn view(&self, start: usize, end: usize) -> BatchTargets<'_> {
        match self {
            Targets::Classes {
                labels,
                num_classes,
            } => BatchTargets::Classes {
                labels: &labels[start..end],
                num_classes: *num_classes,
            },
            Targets::Values { values, width } => BatchTargets::Values {
                values: &values[start * width..end * width],
                width: *width,
            },
        }
    }

    /// The targets of the given samples, in order. Callers guarantee every
    /// index is below `self.len()` and a non-zero width.
    fn gather(&self, indices: &[usize]) -> Targets {
        match self {
            Targets::Classes {
                labels,
                num_classes,
            } => Targets::Classes {
                labels: indices.iter().map(|&i| labels[i]).collect(),
                num_classes: *num_classes,
            },
            Targets::Values { values, width } => {
                let mut out = Vec::with_capacity(indices.len() * width);
                for &i in indices {
                    out.extend_from_slice(&values[i * width..(i + 1) * width]);
                }
                Targets::Values {
                    values: out,
                    width: *width,
                }
            }
        }
    }
}

/// A dataset: inputs `x` (row-major, sample axis first, each sample of shape
/// `sample_shape`) and targets `y`.
///
/// The fields are public; operations check the layout first and return
/// [`DataError::Invalid`] if `x`, `sample_shape` and `y` disagree.
///
/// ```
/// use secondo_data::{Dataset, Targets};
/// let d = Dataset::new(
///     vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
///     vec![2],
///     Targets::Classes { labels: vec![0, 1, 1], num_classes: 2 },
///     "toy",
/// )
/// .unwrap();
/// assert_eq!((d.len(), d.num_features(), d.num_classes()), (3, 2, Some(2)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Inputs, `len() * num_features()` values, row-major.
    pub x: Vec<f64>,
    /// Shape of one sample (e.g. `[64]` or `[1, 8, 8]`).
    pub sample_shape: Vec<usize>,
    /// Targets, one entry (class) or `width` values (regression) per sample.
    pub y: Targets,
    /// A short name used in messages (e.g. `digits`).
    pub name: String,
}

impl Dataset {
    /// Builds a dataset and runs [`Dataset::validate`] on it.
    ///
    /// ```
    /// use secondo_data::{Dataset, Targets};
    /// let y = Targets::Values { values: vec![1.0, 2.0], width: 1 };
    /// assert!(Dataset::new(vec![1.0, 2.0, 3.0], vec![1], y, "bad").is_err());
    /// ```
    pub fn new(
        x: Vec<f64>,
        sample_shape: Vec<usize>,
        y: Targets,
        name: impl Into<String>,
    ) -> Result<Dataset> {
        let d = Dataset {
            x,
            sample_shape,
            y,
            name: name.into(),
        };
        d.validate()?;
        Ok(d)
    }

    /// Number of samples (taken from the targets).
    ///
    /// ```
    /// assert_eq!(secondo_data::digits().len(), 1797);
    /// ```
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether the dataset has no samples.
    ///
    /// ```
    /// assert!(!secondo_data::digits().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of input values per sample: the product of `sample_shape`.
    ///
    /// ```
    /// assert_eq!(secondo_data::digits().num_features(), 64);
    /// ```
    pub fn num_features(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The number of classes, or `None` for regression targets.
    ///
    /// ```
    /// assert_eq!(secondo_data::digits().num_classes(), Some(10));
    /// ```
    pub fn num_classes(&self) -> Option<usize> {
        self.y.num_classes()
    }

    /// Checks everything: the layout (`x` holds `len() * num_features()`
    /// values, regression width non-zero), class labels in
    /// `0..num_classes`, and finite `x` and regression values.
    ///
    /// ```
    /// let mut d = secondo_data::digits();
    /// assert!(d.validate().is_ok());
    /// d.x[5] = f64::INFINITY;
    /// assert!(d.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.check_layout()?;
        let origin = self.origin();
        match &self.y {
            Targets::Classes {
                labels,
                num_classes,
            } => {
                for (index, &value) in labels.iter().enumerate() {
                    if value < 0 {
                        return Err(DataError::NegativeLabel {
                            origin,
                            tensor: "y".into(),
                            index,
                            value,
                        });
                    }
                    if value as u64 >= *num_classes as u64 {
                        return Err(DataError::Invalid(format!(
                            "{origin}: class label {value} at index {index} is out of range for {num_classes} classes"
                        )));
                    }
                }
            }
            Targets::Values { values, .. } => check_finite(&origin, "y", values)?,
        }
        check_finite(&origin, "x", &self.x)
    }

    /// Returns the same data with another sample shape of equal size, e.g.
    /// `[64]` to `[1, 8, 8]`.
    ///
    /// ```
    /// let d = secondo_data::digits().with_sample_shape(vec![1, 8, 8]).unwrap();
    /// assert_eq!(d.sample_shape, vec![1, 8, 8]);
    /// assert!(secondo_data::digits().with_sample_shape(vec![9, 9]).is_err());
    /// ```
    pub fn with_sample_shape(mut self, sample_shape: Vec<usize>) -> Result<Dataset> {
        self.check_layout()?;
        let from = self.num_features();
        let to: Option<usize> = sample_shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if to != Some(from) {
            return Err(DataError::Invalid(format!(
                "{}: cannot reshape samples of shape {:?} to {sample_shape:?}",
                self.origin(),
                self.sample_shape
            )));
        }
        self.sample_shape = sample_shape;
        Ok(self)
    }

    /// The samples at `indices`, in that order (repeats allowed).
    ///
    /// ```
    /// let d = secondo_data::digits();
    /// let s = d.select(&[3, 0]).unwrap();
    /// assert_eq!(s.len(), 2);
    /// assert_eq!(&s.x[64..], &d.x[..64]);
    /// assert!(d.select(&[5000]).is_err());
    /// ```
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        self.check_layout()?;
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(DataError::Invalid(format!(
                "{}: sample index {bad} out of range for {n} samples",
                self.origin()
            )));
        }
        let nf = self.num_features();
        let mut x = Vec::with_capacity(indices.len() * nf);
        for &i in indices {
            x.extend_from_slice(&self.x[i * nf..(i + 1) * nf]);
        }
        Ok(Dataset {
            x,
            sample_shape: self.sample_shape.clone(),
            y: self.y.gather(indices),
            name: self.name.clone(),
        })
    }

    /// The samples in an order drawn from `seed` (ChaCha8, deterministic).
    ///
    /// ```
    /// let d = secondo_data::digits();
    /// let a = d.shuffled(7).unwrap();
    /// assert_eq!(a, d.shuffled(7).unwrap());
    /// assert_ne!(a.x, d.x);
    /// ```
    pub fn shuffled(&self, seed: u64) -> Result<Dataset> {
        self.select(&permutation(self.len(), seed))
    }

    /// Splits into `(train, test)` after a seeded shuffle; the test part gets
    /// `ceil(test_fraction * len())` samples (as scikit-learn's
    /// `train_test_split`). Names get `-train` / `-test` appended.
    ///
    /// ```
    /// let (train, test) = secondo_data::digits().split(0.2, 0).unwrap();
    /// assert_eq!((train.len(), test.len()), (1437, 360));
    /// assert!(secondo_data::digits().split(1.5, 0).is_err());
    /// ```
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..=1.0).contains(&test_fraction) {
            return Err(DataError::Invalid(format!(
                "{}: test fraction {test_fraction} is not in [0, 1]",
                self.origin()
            )));
        }
        self.check_layout()?;
        let n = self.len();
        let order = permutation(n, seed);
        let n_test = ((test_fraction * n as f64).ceil() as usize).min(n);
        let mut test = self.select(&order[..n_test])?;
        let mut train = self.select(&order[n_test..])?;
        test.name = format!("{}-test", self.name);
        train.name = format!("{}-train", self.name);
        Ok((train, test))
    }

    /// Iterates over consecutive batches of at most `batch_size` samples
    /// (the last one may be shorter), as borrowed views.
    ///
    /// ```
    /// let d = secondo_data::digits();
    /// let sizes: Vec<usize> = d.batches(500).unwrap().map(|b| b.len()).collect();
    /// assert_eq!(sizes, vec![500, 500, 500, 297]);
    /// let b = d.batches(500).unwrap().nth(1).unwrap();
    /// assert_eq!((b.start, b.end, b.x.len()), (500, 1000, 500 * 64));
    /// ```
    pub fn batches(&self, batch_size: usize) -> Result<Batches<'_>> {
        if batch_size == 0 {
            return Err(DataError::Invalid(format!(
                "{}: batch size must be at least 1",
                self.origin()
            )));
        }
        self.check_layout()?;
        Ok(Batches {
            data: self,
            batch_size,
            next: 0,
        })
    }

    /// `dataset `name`` for messages.
    fn origin(&self) -> String {
        format!("dataset `{}`", self.name)
    }

    /// Checks that `x`, `sample_shape` and `y` agree, so that slicing by
    /// sample index cannot go out of bounds.
    pub(crate) fn check_layout(&self) -> Result<()> {
        if let Targets::Values { values, width } = &self.y {
            if *width == 0 || values.len() % width != 0 {
                return Err(DataError::Invalid(format!(
                    "{}: {} regression values do not form rows of width {width}",
                    self.origin(),
                    values.len()
                )));
            }
        }
        let n = self.len();
        let nf = self
            .sample_shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if nf.and_then(|nf| nf.checked_mul(n)) != Some(self.x.len()) {
            return Err(DataError::Invalid(format!(
                "{}: x has {} values, expected {n} samples of shape {:?}",
                self.origin(),
                self.x.len(),
                self.sample_shape
            )));
        }
        Ok(())
    }
}

/// A seeded permutation of `0..n`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// A borrowed view of samples `start..end` of a [`Dataset`].
///
/// ```
/// use secondo_data::BatchTargets;
/// let d = secondo_data::digits();
/// let b = d.batches(10).unwrap().next().unwrap();
/// assert_eq!(b.x.len(), 10 * 64);
/// if let BatchTargets::Classes { labels, num_classes } = b.y {
///     assert_eq!((labels[0], num_classes), (0, 10));
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batch<'a> {
    /// Index of the first sample.
    pub start: usize,
    /// One past the index of the last sample.
    pub end: usize,
    /// The inputs of these samples, row-major.
    pub x: &'a [f64],
    /// The targets of these samples.
    pub y: BatchTargets<'a>,
}

impl Batch<'_> {
    /// Number of samples in the batch.
    ///
    /// ```
    /// let d = secondo_data::digits();
    /// assert_eq!(d.batches(1000).unwrap().last().unwrap().len(), 797);
    /// ```
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the batch is empty (never, for batches from [`Dataset::batches`]).
    ///
    /// ```
    /// let d = secondo_data::digits();
    /// assert!(d.batches(32).unwrap().all(|b| !b.is_empty()));
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Borrowed targets of a [`Batch`], mirroring [`Targets`].
///
/// ```
/// use secondo_data::BatchTargets;
/// let d = secondo_data::digits();
/// let b = d.batches(4).unwrap().next().unwrap();
/// assert_eq!(b.y, BatchTargets::Classes { labels: &[0, 1, 2, 3], num_classes: 10 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchTargets<'a> {
    /// Class indices of the batch's samples.
    Classes {
        /// One class index per sample.
        labels: &'a [i64],
        /// The number of classes.
        num_classes: usize,
    },
    /// Regression values of the batch's samples.
    Values {
        /// `width` values per sample.
        values: &'a [f64],
        /// Values per sample.
        width: usize,
    },
}

/// Iterator over the [`Batch`]es of a dataset; see [`Dataset::batches`].
///
/// ```
/// let d = secondo_data::digits();
/// assert_eq!(d.batches(100).unwrap().count(), 18);
/// ```
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    data: &'a Dataset,
    batch_size: usize,
    next: usize,
}

impl<'a> Iterator for Batches<'a> {
    type Item = Batch<'a>;

    fn next(&mut self) -> Option<Batch<'a>> {
        let n = self.data.len();
        if self.next >= n {
            return None;
        }
        let start = self.next;
        let end = start.saturating_add(self.batch_size).min(n);
        self.next = end;
        let nf = self.data.num_features();
        Some(Batch {
            start,
            end,
            x: &self.data.x[start * nf..end * nf],
            y: self.data.y.view(start, end),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.data.len().saturating_sub(self.next);
        let batches = left.div_ceil(self.batch_size);
        (batches, Some(batches))
    }
}

/// Splits the shape of a loaded input tensor into its sample count and
/// sample shape, refusing shapes without a feature axis (`[N]`) or with no
/// feature at all (`[N, 0]`): every model's first layer needs one, and a
/// loader that let them through would have the model spec blamed for the file.
pub(crate) fn split_samples<'s>(
    path: &Path,
    tensor: &str,
    shape: &'s [usize],
) -> Result<(usize, &'s [usize])> {
    match shape.split_first() {
        Some((&n, sample_shape)) if !sample_shape.is_empty() && !sample_shape.contains(&0) => {
            Ok((n, sample_shape))
        }
        _ => Err(DataError::WrongType {
            path: path.to_path_buf(),
            tensor: tensor.into(),
            found: format!("of shape {shape:?}"),
            expected: "a sample axis and at least one feature (shape [N, F, ...])".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        Dataset::new(
            (0..12).map(f64::from).collect(),
            vec![2],
            Targets::Values {
                values: (0..6).map(|v| f64::from(v) * 10.0).collect(),
                width: 1,
            },
            "toy",
        )
        .unwrap()
    }

    #[test]
    fn select_gathers_rows_and_targets() {
        let d = toy();
        let s = d.select(&[5, 0, 5]).unwrap();
        assert_eq!(s.x, vec![10.0, 11.0, 0.0, 1.0, 10.0, 11.0]);
        assert_eq!(
            s.y,
            Targets::Values {
                values: vec![50.0, 0.0, 50.0],
                width: 1
            }
        );
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let d = toy();
        let a = d.shuffled(1).unwrap();
        assert_eq!(a, d.shuffled(1).unwrap());
        let mut firsts: Vec<f64> = a.x.chunks(2).map(|r| r[0]).collect();
        firsts.sort_by(f64::total_cmp);
        assert_eq!(firsts, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        // rows stay paired with their targets
        if let Targets::Values { values, .. } = &a.y {
            for (row, v) in a.x.chunks(2).zip(values) {
                assert_eq!(row[0] * 5.0, *v);
            }
        }
        let different = (0..20).any(|s| d.shuffled(s).unwrap().x != a.x);
        assert!(different);
    }

    #[test]
    fn split_partitions_samples() {
        let d = toy();
        let (train, test) = d.split(0.34, 3).unwrap();
        assert_eq!((train.len(), test.len()), (3, 3));
        assert_eq!(
            (train.name.as_str(), test.name.as_str()),
            ("toy-train", "toy-test")
        );
        let mut all: Vec<f64> = train.x.iter().chain(&test.x).copied().collect();
        all.sort_by(f64::total_cmp);
        assert_eq!(all, d.x);
        let (train, test) = d.split(0.0, 3).unwrap();
        assert_eq!((train.len(), test.len()), (6, 0));
        let (train, test) = d.split(1.0, 3).unwrap();
        assert_eq!((train.len(), test.len()), (0, 6));
        assert!(d.split(f64::NAN, 0).is_err());
        assert!(d.split(-0.1, 0).is_err());
    }

    #[test]
    fn batches_cover_everything_once() {
        let d = toy();
        let it = d.batches(4).unwrap();
        assert_eq!(it.size_hint(), (2, Some(2)));
        let batches: Vec<Batch<'_>> = it.collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].x, &[8.0, 9.0, 10.0, 11.0]);
        assert_eq!(
            batches[1].y,
            BatchTargets::Values {
                values: &[40.0, 50.0],
                width: 1
            }
        );
        assert!(d.batches(0).is_err());
        assert_eq!(d.batches(usize::MAX).unwrap().count(), 1);
    }

    #[test]
    fn inconsistent_fields_give_errors_not_panics() {
        let mut d = toy();
        d.x.pop();
        assert!(matches!(d.select(&[0]), Err(DataError::Invalid(_))));
        assert!(d.shuffled(0).is_err());
        assert!(d.split(0.5, 0).is_err());
        assert!(d.batches(2).is_err());
        let mut d = toy();
        d.y = Targets::Values {
            values: vec![1.0; 6],
            width: 0,
        };
        assert_eq!(d.len(), 0);
        assert!(d.validate().is_err());
        assert!(d.select(&[]).is_err());
        let mut d = toy();
        d.sample_shape = vec![usize::MAX, 2];
        assert!(d.validate().is_err());
        let d = toy();
        assert!(d.clone().with_sample_shape(vec![usize::MAX, 3]).is_err());
        assert_eq!(d.with_sample_shape(vec![1, 2]).unwrap().num_features(), 2);
    }

    #[test]
    fn validate_checks_labels_and_values() {
        let bad_label = Dataset::new(
            vec![0.0; 2],
            vec![1],
            Targets::Classes {
                labels: vec![0, -3],
                num_classes: 2,
            },
            "neg",
        )
        .unwrap_err();
        assert_eq!(
            bad_label.to_string(),
            "dataset `neg`: tensor `y` has negative class label -3 at flat index 1"
        );
        let too_big = Dataset::new(
            vec![0.0; 2],
            vec![1],
            Targets::Classes {
                labels: vec![0, 2],
                num_classes: 2,
            },
            "big",
        )
        .unwrap_err();
        assert!(too_big.to_string().contains("out of range for 2 classes"));
        let nan_y = Dataset::new(
            vec![0.0; 2],
            vec![1],
            Targets::Values {
                values: vec![0.0, f64::NAN],
                width: 1,
            },
            "nan",
        )
        .unwrap_err();
        assert!(
            matches!(nan_y, DataError::NonFinite { index: 1, ref tensor, .. } if tensor == "y")
        );
    }
}
