//! [`Progress`]: an optional report of matrix–vector products done and planned.

/// An optional callback told `(products_done, products_planned)` after every
/// block of matrix–vector products, so a caller can draw a progress bar.
///
/// `products_planned` is an upper bound that an algorithm may stop short of
/// (for instance when Lanczos converges early); the last report of every
/// algorithm has `products_done == products_planned`.
///
/// # Example
///
/// ```
/// use secondo_linalg::{hutchinson, DenseSymmetric, Progress, TraceOptions};
///
/// let a = DenseSymmetric::new(2, vec![1.0, 0.0, 0.0, 3.0])?;
/// let mut reports = Vec::new();
/// let mut record = |done: usize, planned: usize| reports.push((done, planned));
/// let opts = TraceOptions { products: 8, block_size: 4, ..TraceOptions::default() };
/// hutchinson(&a, &opts, Progress::new(&mut record))?;
/// assert_eq!(reports, vec![(4, 8), (8, 8), (8, 8)]);
/// # Ok::<(), secondo_linalg::LinalgError>(())
/// ```
#[derive(Default)]
pub struct Progress<'a> {
    callback: Option<&'a mut dyn FnMut(usize, usize)>,
}

impl<'a> Progress<'a> {
    /// Reports nothing.
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::{power_iteration, DenseSymmetric, PowerOptions, Progress};
    ///
    /// let a = DenseSymmetric::new(1, vec![4.0])?;
    /// let pair = power_iteration(&a, &PowerOptions::default(), Progress::none())?;
    /// assert_eq!(pair.value, 4.0);
    /// # Ok::<(), secondo_linalg::LinalgError>(())
    /// ```
    pub fn none() -> Self {
        Self { callback: None }
    }

    /// Reports to `callback`.
    ///
    /// # Example
    ///
    /// ```
    /// use secondo_linalg::{power_iteration, DenseSymmetric, PowerOptions, Progress};
    ///
    /// let a = DenseSymmetric::new(1, vec![4.0])?;
    /// let mut last = (0, 0);
    /// let mut record = |done: usize, planned: usize| last = (done, planned);
    /// power_iteration(&a, &PowerOptions::default(), Progress::new(&mut record))?;
    /// assert_eq!(last, (1, 1));
    /// # Ok::<(), secondo_linalg::LinalgError>(())
    /// ```
    pub fn new(callback: &'a mut dyn FnMut(usize, usize)) -> Self {
        Self {
            callback: Some(callback),
        }
    }

    pub(crate) fn report(&mut self, done: usize, planned: usize) {
        if let Some(callback) = self.callback.as_mut() {
            callback(done, planned);
        }
    }
}
