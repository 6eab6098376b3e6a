//! Ritz pairs of a projected matrix: selection by [`Which`] and convergence test.

use super::Which;

/// Ritz values (ascending), their coordinate vectors in the Krylov basis and
/// their residual norms `‖A x − θ x‖`.
pub(super) struct Ritz {
    pub(super) values: Vec<f64>,
    vectors: Vec<f64>,
    pub(super) residuals: Vec<f64>,
}

impl Ritz {
    pub(super) fn new(values: Vec<f64>, vectors: Vec<f64>, residuals: Vec<f64>) -> Self {
        Self {
            values,
            vectors,
            residuals,
        }
    }

    /// Coordinates (in the Krylov basis) of the Ritz vector of `values[j]`.
    pub(super) fn vector(&self, j: usize) -> &[f64] {
        let m = self.values.len();
        &self.vectors[j * m..(j + 1) * m]
    }

    /// Indices of the (at most) `count` Ritz values most wanted by `which`, in output order.
    pub(super) fn select(&self, which: Which, count: usize) -> Vec<usize> {
        let m = self.values.len();
        let count = count.min(m);
        match which {
            Which::Largest => (0..m).rev().take(count).collect(),
            Which::Smallest => (0..count).collect(),
            Which::LargestMagnitude => {
                let mut order: Vec<usize> = (0..m).rev().collect();
                order.sort_by(|&a, &b| self.values[b].abs().total_cmp(&self.values[a].abs()));
                order.truncate(count);
                order
            }
        }
    }

    /// Whether every wanted pair has residual at most `tol · max|θ|`.
    pub(super) fn converged(&self, wanted: &[usize], tol: f64) -> bool {
        let scale = self.values.iter().fold(0.0_f64, |s, v| s.max(v.abs()));
        wanted.iter().all(|&j| self.residuals[j] <= tol * scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ritz() -> Ritz {
        Ritz::new(
            vec![-5.0, -1.0, 2.0, 3.0],
            vec![0.0; 16],
            vec![0.0, 1.0, 0.0, 1e-12],
        )
    }

    #[test]
    fn selection_orders_follow_which() {
        let r = ritz();
        assert_eq!(r.select(Which::Largest, 2), vec![3, 2]);
        assert_eq!(r.select(Which::Smallest, 2), vec![0, 1]);
        assert_eq!(r.select(Which::LargestMagnitude, 3), vec![0, 3, 2]);
        assert_eq!(r.select(Which::Largest, 9).len(), 4);
    }

    #[test]
    fn convergence_is_relative_to_the_largest_magnitude() {
        let r = ritz();
        assert!(r.converged(&[0, 3], 1e-12));
        assert!(!r.converged(&[1], 1e-3));
    }
}
