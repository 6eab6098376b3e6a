//! Quantities equal BackPACK's on convolutional networks (committed fixtures
//! of scripts/reference/make_fixtures.py: stride, padding, dilation, groups,
//! overlapping max and average pools, adaptive pooling, batch norm in
//! evaluation mode, f32 and f64). The Monte-Carlo quantities are compared
//! exactly, with the targets BackPACK drew.

mod common;

use common::{fixtures, Fixture};
use secondo_curvature::{compute_quantities, Quantity};
use secondo_tensor::DType;

/// What BackPACK computes on these layers and secondo compares (KFRA is
/// defined here for dense chains only, see docs/ARCHITECTURE.md).
const COMPARED: &[Quantity] = &[
    Quantity::Grad,
    Quantity::BatchGrad,
    Quantity::BatchL2,
    Quantity::SumGradSquared,
    Quantity::Variance,
    Quantity::DiagGgnExact,
    Quantity::BatchDiagGgnExact,
    Quantity::DiagGgnMc,
    Quantity::DiagHessian,
    Quantity::Kflr,
    Quantity::Kfac,
];

#[test]
fn quantities_match_backpack_on_convolutional_networks() {
    let mut checked = 0;
    for path in fixtures("backpack_conv") {
        let f = Fixture::load(&path);
        let objective = f.objective();
        let params = f.params(&objective);
        let (x, y) = f.data();
        let wanted = f.stored(&objective, COMPARED);
        let targets = f.tensors.get("mc_targets").map(|t| t.to_dtype(f.dtype()));
        let got =
            compute_quantities(&objective, &params, &x, &y, &wanted, targets.as_ref()).unwrap();
        let tol = if f.dtype() == DType::F32 { 1e-5 } else { 1e-10 };
        for (name, t) in &got {
            if !f.tensors.contains_key(name) {
                continue;
            }
            let err = f.error(name, t);
            assert!(
                err < tol,
                "{} {name}: relative error {err:e}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 400, "only {checked} tensors compared");
}
