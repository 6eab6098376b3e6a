//! Quantities equal BackPACK's on committed fixtures (every activation, each
//! loss, batch sizes 1, 3, 5 and 8, f32 and f64).

mod common;

use common::{fixtures, relative_error, Fixture};
use secondo_curvature::{compute_quantities, Quantity};
use secondo_tensor::DType;

const EXACT: &[Quantity] = &[
    Quantity::Grad,
    Quantity::BatchGrad,
    Quantity::BatchL2,
    Quantity::SumGradSquared,
    Quantity::Variance,
    Quantity::DiagGgnExact,
    Quantity::BatchDiagGgnExact,
    Quantity::Kflr,
    Quantity::DiagHessian,
    Quantity::Kfra,
];

#[test]
fn exact_quantities_match_backpack() {
    let mut checked = 0;
    for path in fixtures("backpack") {
        let f = Fixture::load(&path);
        let objective = f.objective();
        let params = f.params(&objective);
        let (x, y) = f.data();
        let wanted = f.stored(&objective, EXACT);
        let got = compute_quantities(&objective, &params, &x, &y, &wanted, None).unwrap();
        let tol = if f.dtype() == DType::F32 { 1e-5 } else { 1e-10 };
        for (name, t) in &got {
            let err = f.error(name, t);
            assert!(
                err < tol,
                "{} {name}: relative error {err:e}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} tensors compared");
}

/// KFAC's input factor is exact; its output factor is a Monte-Carlo estimate
/// (2000 draws in the fixtures, ours seeded differently): compare loosely.
#[test]
fn kfac_matches_backpack_up_to_monte_carlo_error() {
    let mut checked = 0;
    for path in fixtures("backpack") {
        let f = Fixture::load(&path);
        let objective = f.objective();
        let first = &objective.network.params()[0].name;
        if !f.tensors.contains_key(&format!("kfac/{first}/out")) {
            continue;
        }
        let params = f.params(&objective);
        let (x, y) = f.data();
        let targets =
            secondo_curvature::sample_mc_targets(&objective, &params, &x, &y, 2000, 1).unwrap();
        let got = compute_quantities(
            &objective,
            &params,
            &x,
            &y,
            &[Quantity::Kfac],
            Some(&targets),
        )
        .unwrap();
        for (name, t) in &got {
            let want = f.tensor(name).to_dtype(f.dtype());
            let err = relative_error(t, &want);
            let tol = if name.ends_with("/in") { 1e-5 } else { 0.15 };
            assert!(
                err < tol,
                "{} {name}: relative error {err:e}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} tensors compared");
}
