//! Online marginal-likelihood training against laplace-torch 0.3's
//! `marglik_training` (BackPACK backend) through the committed fixtures of
//! `scripts/reference/make_marglik_fixtures.py`, in f64 and full batches:
//! a diagonal prior under a full posterior at temperature 2, a per-layer
//! prior with σ under a full posterior at temperature ½, and a per-layer
//! prior under Kronecker factors. Per phase, the weights it ran at, the
//! hyperparameters after its Adam steps and the evidence there; at the end,
//! the weights of the phase of highest evidence (the fifth of eight for
//! the regression), which both keep.

mod common;

use std::path::Path;

use common::{relative_error_flat, train_keeping_phase_weights, Fixture};
use secondo::laplace::online::{OnlineMarglik, OnlineOptions};
use secondo::laplace::{Likelihood, PriorShape};
use secondo::train::{OptimizerChoice, TrainConfig};
use secondo_data::{Dataset, Targets};
use secondo_nn::ParamStore;

fn dataset(f: &Fixture, likelihood: Likelihood) -> Dataset {
    let x = f.tensor("x");
    let y = f.tensor("y").to_f64_vec();
    let targets = match likelihood {
        Likelihood::Classification => Targets::Classes {
            labels: y.iter().map(|v| *v as i64).collect(),
            num_classes: 3,
        },
        Likelihood::Regression => Targets::Values {
            values: y,
            width: 1,
        },
    };
    Dataset::new(x.to_f64_vec(), x.shape()[1..].to_vec(), targets, "fixture").unwrap()
}

fn flat(params: &ParamStore) -> Vec<f64> {
    params.iter().flat_map(|(_, t)| t.to_f64_vec()).collect()
}

/// The fixture's weights under `prefix` (`phase2/`, `best/`) in the network's order.
fn stored(f: &Fixture, params: &ParamStore, prefix: &str) -> Vec<f64> {
    params
        .iter()
        .flat_map(|(name, _)| f.tensor(&format!("{prefix}param/{name}")).to_f64_vec())
        .collect()
}

fn check(name: &str) {
    let f = Fixture::load(&Path::new("tests/fixtures/marglik").join(format!("{name}.safetensors")));
    let meta = |key: &str| f.meta[key].as_str();
    let obj = f.objective();
    let likelihood: Likelihood = meta("likelihood").parse().unwrap();
    let data = dataset(&f, likelihood);
    let epochs: usize = meta("epochs").parse().unwrap();
    let options = OnlineOptions {
        steps: meta("n_hypersteps").parse().unwrap(),
        structure: meta("structure").parse().unwrap(),
        lr: meta("lr_hyp").parse().unwrap(),
        prior_shape: match meta("prior_structure") {
            "diag" => PriorShape::Diagonal,
            "layerwise" => PriorShape::PerLayer,
            _ => PriorShape::Scalar,
        },
        temperature: meta("temperature").parse().unwrap(),
        ..OnlineOptions::default()
    };
    let mut params = f.params(&obj);
    let mut online = OnlineMarglik::new(&obj, &params, &data, options).unwrap();
    let config = TrainConfig {
        epochs,
        batch_size: data.len(),
        optimizer: OptimizerChoice::parse("adam", meta("lr").parse().unwrap(), 0.0, false, 0.0)
            .unwrap(),
        ..TrainConfig::default()
    };
    let weights = train_keeping_phase_weights(&obj, &mut params, &data, &config, &mut online);
    assert_eq!(online.phases().len(), epochs);
    let mut evidence = Vec::new();
    for (k, phase) in online.phases().iter().enumerate() {
        let w = relative_error_flat(
            &flat(&weights[k]),
            &stored(&f, &params, &format!("phase{k}/")),
        );
        assert!(w < 1e-9, "{name} phase {k}: weights off by {w:e}");
        let want = f.tensor(&format!("phase{k}/log_marglik")).item();
        let got = phase.log_marginal_likelihood;
        assert!(
            (got - want).abs() < 1e-9 * want.abs(),
            "{name} phase {k}: evidence {got} vs {want}"
        );
        let log_prior: Vec<f64> = match &phase.prior_precision {
            Some(p) => p.iter().map(|v| v.ln()).collect(),
            // A diagonal prior's values per phase: only the kept one's, below.
            None => continue,
        };
        let want = f.tensor(&format!("phase{k}/log_prior")).to_f64_vec();
        let e = relative_error_flat(&log_prior, &want);
        assert!(e < 1e-8, "{name} phase {k}: log prior off by {e:e}");
        if likelihood == Likelihood::Regression {
            let want = f.tensor(&format!("phase{k}/log_sigma")).item();
            assert!(
                (phase.sigma.ln() - want).abs() < 1e-8,
                "{name} phase {k}: σ"
            );
        }
        evidence.push(got);
    }
    let best = f.tensor("best_phase").item() as usize;
    assert_eq!(online.finish(&mut params), Some(best), "{name}: kept phase");
    let w = relative_error_flat(&flat(&params), &stored(&f, &params, "best/"));
    assert!(w < 1e-9, "{name}: kept weights off by {w:e}");
    let want = f.tensor(&format!("phase{best}/log_prior")).to_f64_vec();
    let got: Vec<f64> = online.prior().values.iter().map(|v| v.ln()).collect();
    let e = relative_error_flat(&got, &want);
    assert!(e < 1e-8, "{name}: kept log prior off by {e:e}");
}

#[test]
fn a_diagonal_prior_at_temperature_two_matches_laplace_torch() {
    check("classification_full_diagonal");
}

#[test]
fn regression_at_temperature_one_half_keeps_laplace_torchs_best_phase() {
    check("regression_full_layerwise");
}

#[test]
fn kronecker_factors_match_laplace_torch() {
    check("classification_kron_layerwise");
}
