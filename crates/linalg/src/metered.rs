//! [`Metered`]: an operator wrapper that counts products, reports progress and
//! rejects non-finite outputs.

use crate::{LinalgError, Progress, SymmetricOperator};

/// Applies an operator while counting matrix–vector products.
pub(crate) struct Metered<'o, 'p, O: ?Sized> {
    op: &'o O,
    progress: Progress<'p>,
    done: usize,
    planned: usize,
}

impl<'o, 'p, O: SymmetricOperator + ?Sized> Metered<'o, 'p, O> {
    /// Wraps `op`; `planned` is the number of products the caller expects to spend at most.
    pub(crate) fn new(op: &'o O, progress: Progress<'p>, planned: usize) -> Self {
        Self {
            op,
            progress,
            done: 0,
            planned,
        }
    }

    /// The dimension of the wrapped operator.
    pub(crate) fn dim(&self) -> usize {
        self.op.dim()
    }

    /// `out = A · v` for `k` vectors; fails if the output is not finite.
    pub(crate) fn apply(
        &mut self,
        v: &[f64],
        k: usize,
        out: &mut [f64],
    ) -> Result<(), LinalgError> {
        if k == 0 {
            return Ok(());
        }
        self.op.apply_block(v, k, out)?;
        if !all_finite(out) {
            let index = out.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Err(LinalgError::NonFinite {
                what: "operator output",
                index,
            });
        }
        self.done += k;
        self.planned = self.planned.max(self.done);
        self.progress.report(self.done, self.planned);
        Ok(())
    }

    /// Sends the final report `(done, done)` and returns the number of products.
    pub(crate) fn finish(mut self) -> usize {
        self.progress.report(self.done, self.done);
        self.done
    }
}

secondo_tensor::avx2_kernel! {
    /// Whether every value is finite: an `or` over the whole slice, which
    /// vectorizes (a search that stops at the first bad value does not).
    fn all_finite(x: &[f64]) -> bool {
        !x.iter().fold(false, |bad, v| bad | !v.is_finite())
    }
}
