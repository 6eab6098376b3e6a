//! secondo's Laplace approximations against laplace-torch 0.3 (BackPACK
//! backend) through the committed fixtures of
//! `scripts/reference/make_laplace_fixtures.py`: the log marginal
//! likelihood, the prior precision its Adam ascent reaches, and the GLM
//! predictive, for full, kron and diag posteriors over small MLPs and a
//! last-layer posterior over a small CNN, and tempered kron and full
//! posteriors (`Laplace(..., temperature=T)`). Convention difference: secondo's
//! regression variance includes σ², laplace-torch's functional variance does not.

mod common;

use std::path::Path;

use common::Fixture;
use secondo::laplace::marglik::{optimize_marglik, MarglikOptions};
use secondo::laplace::predictive::{predict, Link, Predictive};
use secondo::laplace::{fit, FitOptions, Likelihood, PriorShape, Structure, Subset};
use secondo_data::{Dataset, Targets};

fn dataset(f: &Fixture, x: &str, y: &str, likelihood: Likelihood) -> Dataset {
    let x = f.tensor(x);
    let y = f.tensor(y);
    let targets = match likelihood {
        Likelihood::Classification => Targets::Classes {
            labels: y.to_f64_vec().iter().map(|v| *v as i64).collect(),
            num_classes: 3,
        },
        Likelihood::Regression => Targets::Values {
            values: y.to_f64_vec(),
            width: 1,
        },
    };
    Dataset::new(x.to_f64_vec(), x.shape()[1..].to_vec(), targets, "fixture").unwrap()
}

fn close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn check(name: &str) {
    let f = Fixture::load(&Path::new("tests/fixtures/laplace").join(format!("{name}.safetensors")));
    let obj = f.objective();
    let params = f.params(&obj);
    let likelihood: Likelihood = f.meta["likelihood"].parse().unwrap();
    let train = dataset(&f, "x", "y", likelihood);
    let test = dataset(&f, "test_x", "test_y", likelihood);
    let opts = FitOptions {
        subset: match f.meta["subset"].as_str() {
            "all" => Subset::All,
            _ => Subset::LastLayer,
        },
        structure: f.meta["structure"].parse::<Structure>().unwrap(),
        likelihood,
        prior_shape: match f.meta["prior_shape"].as_str() {
            "scalar" => PriorShape::Scalar,
            "layerwise" => PriorShape::PerLayer,
            _ => PriorShape::Diagonal,
        },
        prior_precision: f.meta["prior_precision"].parse().unwrap(),
        sigma: f.meta["sigma"].parse().unwrap(),
        // Fixtures written before the temperature case are untempered.
        temperature: f
            .meta
            .get("temperature")
            .map_or(1.0, |t| t.parse().unwrap()),
        batch_size: f.meta["batch_size"].parse().unwrap(),
        ..FitOptions::default()
    };
    let la = fit(&obj, &params, &train, &opts).unwrap();
    let want = f.tensor("log_marglik").item();
    close(
        &[la.log_marginal_likelihood().unwrap()],
        &[want],
        1e-10,
        &format!("{name} log marglik"),
    );
    let glm = |link| predict(&obj, &params, &la, &test, Predictive::Glm(link), 0, 64).unwrap();
    match likelihood {
        Likelihood::Classification => {
            close(
                &glm(Link::Probit).mean,
                &f.tensor("probit").to_f64_vec(),
                1e-10,
                &format!("{name} probit"),
            );
            close(
                &glm(Link::Bridge).mean,
                &f.tensor("bridge").to_f64_vec(),
                1e-9,
                &format!("{name} bridge"),
            );
        }
        Likelihood::Regression => {
            let p = glm(Link::Probit);
            close(
                &p.mean,
                &f.tensor("f_mu").to_f64_vec(),
                1e-12,
                &format!("{name} mean"),
            );
            let noise = la.sigma * la.sigma;
            let epistemic: Vec<f64> = p.variance.iter().map(|v| v - noise).collect();
            close(
                &epistemic,
                &f.tensor("f_var").to_f64_vec(),
                1e-10,
                &format!("{name} variance"),
            );
        }
    }
    let mut tuned = fit(
        &obj,
        &params,
        &train,
        &FitOptions {
            prior_precision: 1.0,
            ..opts
        },
    )
    .unwrap();
    let steps = f.meta["n_steps"].parse().unwrap();
    let evidence = optimize_marglik(
        &mut tuned,
        &MarglikOptions {
            steps,
            lr: 0.1,
            sigma: false,
        },
    )
    .unwrap();
    close(
        &tuned.prior.values,
        &f.tensor("optimized_prior").to_f64_vec(),
        1e-6,
        &format!("{name} optimized prior"),
    );
    close(
        &[evidence],
        &[f.tensor("optimized_log_marglik").item()],
        1e-9,
        &format!("{name} optimized log marglik"),
    );
}

#[test]
fn full_kron_and_diag_on_a_classifier_match_laplace_torch() {
    ["mlp_full", "mlp_kron", "mlp_diag"]
        .into_iter()
        .for_each(check);
}

#[test]
fn full_kron_and_diag_on_a_regressor_match_laplace_torch() {
    [
        "mlp_regression_full",
        "mlp_regression_kron",
        "mlp_regression_diag",
    ]
    .into_iter()
    .for_each(check);
}

#[test]
fn a_last_layer_posterior_over_a_cnn_matches_laplace_torch() {
    check("cnn_last_layer");
}

#[test]
fn tempered_kron_and_full_posteriors_match_laplace_torch() {
    ["mlp_kron_tempered", "mlp_regression_full_tempered"]
        .into_iter()
        .for_each(check);
}
