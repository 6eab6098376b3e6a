//! Online marginal-likelihood training (`secondo::laplace::online`) in f64:
//! the prior's gradient (per layer, per weight, tempered) against finite
//! differences of the negative log joint written out by hand, the training
//! loop against a direct marginal-likelihood fit of the weights it ends
//! with, untempered training against the algorithm as it was before the
//! temperature (bit for bit), and keep-best against the phases' weights.

mod common;

use common::train_keeping_phase_weights;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secondo::laplace::marglik::{optimize_marglik, Ascent, MarglikOptions};
use secondo::laplace::online::{Keep, OnlineMarglik, OnlineOptions};
use secondo::laplace::predictive::{outputs, standard_normal};
use secondo::laplace::{fit, FitOptions, Likelihood, Prior, PriorShape, Structure};
use secondo::train::{train_with, OptimizerChoice, Regularizer, TrainConfig};
use secondo::{Objective, ObjectiveConfig};
use secondo_data::{Dataset, Targets};
use secondo_nn::{ParamStore, Reduction};
use secondo_tensor::{DType, Tensor};

fn objective(spec: &str, inputs: usize, loss: &str, reduction: Reduction) -> Objective {
    Objective::from_config(&ObjectiveConfig {
        spec: spec.into(),
        input_shape: vec![inputs],
        loss: loss.into(),
        reduction,
        dtype: DType::F64,
    })
    .unwrap()
}

/// `n` samples of 3 features: labels of 3 classes, or 2 noisy smooth targets.
fn data(n: usize, likelihood: Likelihood) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = standard_normal(&mut rng, n * 3);
    let y = match likelihood {
        Likelihood::Classification => Targets::Classes {
            labels: (0..n)
                .map(|i| i64::from(x[3 * i] + 0.5 * x[3 * i + 1] > 0.0) + rng.random_range(0..2))
                .collect(),
            num_classes: 3,
        },
        Likelihood::Regression => {
            let noise = standard_normal(&mut rng, 2 * n);
            Targets::Values {
                values: (0..2 * n)
                    .map(|k| {
                        let (i, o) = (k / 2, k % 2);
                        (x[3 * i + o] * 1.5).sin() + x[3 * i + 2] * 0.5 + 0.2 * noise[k]
                    })
                    .collect(),
                width: 2,
            }
        }
    };
    Dataset::new(x, vec![3], y, "toy").unwrap()
}

/// `Σₙ −log p(yₙ | f(xₙ), σ) + ½ Σ δ θ²` written out from the outputs,
/// without constants.
fn negative_log_joint(
    obj: &Objective,
    params: &ParamStore,
    data: &Dataset,
    delta: &[f64],
    sigma: f64,
) -> f64 {
    let f = outputs(obj, params, data, 1000).unwrap();
    let nll: f64 = match &data.y {
        Targets::Classes { labels, .. } => f
            .chunks(3)
            .zip(labels)
            .map(|(row, &l)| {
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() - row[l as usize]
            })
            .sum(),
        Targets::Values { values, .. } => {
            f.iter()
                .zip(values)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                / (2.0 * sigma * sigma)
        }
    };
    let theta: Vec<f64> = params.iter().flat_map(|(_, t)| t.to_f64_vec()).collect();
    nll + 0.5 * theta.iter().zip(delta).map(|(t, d)| d * t * t).sum::<f64>()
}

/// `params` with flat weight `k` moved by `h`.
fn moved(params: &ParamStore, k: usize, h: f64) -> ParamStore {
    let mut out = params.clone();
    let mut at = 0;
    for (name, t) in params.iter() {
        if k < at + t.numel() {
            let mut v = t.to_f64_vec();
            v[k - at] += h;
            out.insert(
                name,
                Tensor::from_f64(t.shape().to_vec(), &v, DType::F64).unwrap(),
            );
            return out;
        }
        at += t.numel();
    }
    unreachable!("k is a weight")
}

#[test]
fn the_prior_gradient_is_the_log_joints_scaled_as_the_loss() {
    let n = 20;
    // Per layer untempered; one precision per weight at a temperature T,
    // where the weight steps take the prior over T (laplace-torch's).
    let cases = [
        (
            "cross_entropy",
            Reduction::Mean,
            Likelihood::Classification,
            PriorShape::PerLayer,
            1.0,
        ),
        (
            "cross_entropy",
            Reduction::Sum,
            Likelihood::Classification,
            PriorShape::Diagonal,
            2.0,
        ),
        (
            "mse",
            Reduction::Mean,
            Likelihood::Regression,
            PriorShape::Diagonal,
            0.5,
        ),
        (
            "mse",
            Reduction::Sum,
            Likelihood::Regression,
            PriorShape::PerLayer,
            1.0,
        ),
    ];
    for (loss, reduction, likelihood, prior_shape, temperature) in cases {
        let c = match likelihood {
            Likelihood::Classification => 3,
            Likelihood::Regression => 2,
        };
        let obj = objective(
            &format!("linear(3,4),tanh,linear(4,{c})"),
            3,
            loss,
            reduction,
        );
        let params = ParamStore::init(obj.network.spec(), 1, DType::F64);
        let d = data(n, likelihood);
        let options = OnlineOptions {
            sigma: 0.7,
            structure: Structure::Diag,
            prior_shape,
            temperature,
            ..OnlineOptions::default()
        };
        let mut online = OnlineMarglik::new(&obj, &params, &d, options).unwrap();
        // A phase makes the precisions differ (and moves σ).
        online.end_epoch(1, &params, &d).unwrap();
        let delta = online.prior().per_weight();
        assert!(
            delta.iter().any(|&v| (v - delta[0]).abs() > 1e-3),
            "{delta:?}"
        );
        let sigma = online.sigma();
        let (x, y) = obj
            .batch_tensors(&d.batches(n).unwrap().next().unwrap())
            .unwrap();
        let mut grads = obj
            .training_program(n)
            .unwrap()
            .run(&params, x, y)
            .unwrap()
            .grads;
        online.add_gradient(&params, &mut grads, n).unwrap();
        let got: Vec<f64> = grads.iter().flat_map(Tensor::to_f64_vec).collect();
        assert_eq!(got.len(), delta.len());
        // The loss's gradient is κ times the log joint's: the mean
        // cross-entropy's 1/N, the squared error's 2σ² over its mean's N·C.
        let kappa = match (likelihood, reduction) {
            (Likelihood::Classification, Reduction::Mean) => 1.0 / n as f64,
            (Likelihood::Classification, Reduction::Sum) => 1.0,
            (Likelihood::Regression, Reduction::Mean) => 2.0 * sigma * sigma / (n * c) as f64,
            (Likelihood::Regression, Reduction::Sum) => 2.0 * sigma * sigma,
        };
        let h = 1e-5;
        for (k, g) in got.iter().enumerate() {
            let tempered: Vec<f64> = delta.iter().map(|v| v / temperature).collect();
            let joint = |p: &ParamStore| negative_log_joint(&obj, p, &d, &tempered, sigma);
            let fd = (joint(&moved(&params, k, h)) - joint(&moved(&params, k, -h))) / (2.0 * h);
            assert!(
                (g - kappa * fd).abs() < 1e-7 * (1.0 + (kappa * fd).abs()),
                "{loss} {reduction:?} weight {k}: {g} vs {}",
                kappa * fd
            );
        }
    }
}

/// Trains with online marginal-likelihood phases after every epoch.
fn online_run<'a>(
    obj: &'a Objective,
    d: &Dataset,
    options: OnlineOptions,
    epochs: usize,
) -> (ParamStore, OnlineMarglik<'a>) {
    let mut params = ParamStore::init(obj.network.spec(), 2, DType::F64);
    let mut online = OnlineMarglik::new(obj, &params, d, options).unwrap();
    let config = TrainConfig {
        epochs,
        batch_size: 16,
        optimizer: OptimizerChoice::parse("adam", 1e-2, 0.0, false, 0.0).unwrap(),
        ..TrainConfig::default()
    };
    train_with(
        obj,
        &mut params,
        d,
        &config,
        None,
        Some(&mut online),
        |_| {},
    )
    .unwrap();
    (params, online)
}

#[test]
fn online_training_raises_the_evidence_and_ends_at_the_direct_fit() {
    // A bias's evidence is nearly flat in its precision under squared
    // error, so regression learns one precision (and σ).
    for (loss, likelihood, structure, prior_shape, epochs) in [
        (
            "cross_entropy",
            Likelihood::Classification,
            Structure::Kron,
            PriorShape::PerLayer,
            60,
        ),
        (
            "mse",
            Likelihood::Regression,
            Structure::Full,
            PriorShape::Scalar,
            150,
        ),
    ] {
        let c = match likelihood {
            Likelihood::Classification => 3,
            Likelihood::Regression => 2,
        };
        let obj = objective(
            &format!("linear(3,8),tanh,linear(8,{c})"),
            3,
            loss,
            Reduction::Mean,
        );
        let d = data(96, likelihood);
        let options = OnlineOptions {
            structure,
            prior_shape,
            ..OnlineOptions::default()
        };
        let (params, online) = online_run(&obj, &d, options, epochs);
        let phases = online.phases();
        assert_eq!(phases.len(), epochs);
        let evidence: Vec<f64> = phases.iter().map(|p| p.log_marginal_likelihood).collect();
        assert!(evidence[epochs - 1] > evidence[0] + 1.0, "{evidence:?}");
        // The last phase's hyperparameters maximize the evidence of the final weights.
        let mut la = fit(
            &obj,
            &params,
            &d,
            &FitOptions {
                structure,
                likelihood,
                prior_shape: options.prior_shape,
                ..FitOptions::default()
            },
        )
        .unwrap();
        optimize_marglik(
            &mut la,
            &MarglikOptions {
                steps: 1000,
                ..MarglikOptions::default()
            },
        )
        .unwrap();
        let last = &phases[epochs - 1];
        eprintln!(
            "{loss}: online {:?} σ {} direct {:?} σ {}",
            last.prior_precision, last.sigma, la.prior.values, la.sigma
        );
        for (got, want) in last.prior_precision.iter().flatten().zip(&la.prior.values) {
            assert!((got / want).ln().abs() < 0.05, "{got} vs {want}");
        }
        assert!((last.sigma / la.sigma).ln().abs() < 0.02);
    }
}

/// Online training as it ran before the temperature and keep-best were
/// added (the untempered prior factor, the last epoch kept): the run at
/// `T = 1` with [`Keep::Last`] must equal it bit for bit.
struct Untempered<'a> {
    obj: &'a Objective,
    options: OnlineOptions,
    n: usize,
    prior: Prior,
    sigma: f64,
    ascent: Ascent,
    phases: Vec<(f64, Vec<f64>, f64)>,
}

impl Regularizer for Untempered<'_> {
    fn add_gradient(
        &self,
        params: &ParamStore,
        grads: &mut [Tensor],
        batch: usize,
    ) -> Result<(), secondo::Error> {
        let likelihood = Likelihood::of_loss(self.obj.loss.kind)?;
        let c = self.obj.network.output_shape()[0];
        let scale = self.obj.loss.scale(&[batch, c]);
        let s = likelihood.precision_scale(self.sigma);
        let factor = scale * batch as f64 / (self.n as f64 * likelihood.loss_factor() * s);
        let delta = self.prior.per_weight();
        let mut at = 0;
        for ((_, theta), g) in params.iter().zip(grads.iter_mut()) {
            let values: Vec<f64> = (g.to_f64_vec().iter().zip(theta.to_f64_vec()))
                .zip(&delta[at..])
                .map(|((g, t), d)| g + factor * d * t)
                .collect();
            at += theta.numel();
            *g = Tensor::from_f64(g.shape().to_vec(), &values, g.dtype()).expect("its shape");
        }
        Ok(())
    }

    fn end_epoch(
        &mut self,
        epoch: usize,
        params: &ParamStore,
        data: &Dataset,
    ) -> Result<(), secondo::Error> {
        if !self.options.due(epoch) {
            return Ok(());
        }
        let o = &self.options;
        let opts = FitOptions {
            structure: o.structure,
            likelihood: Likelihood::of_loss(self.obj.loss.kind)?,
            prior_shape: o.prior_shape,
            prior_precision: o.prior_precision,
            sigma: o.sigma,
            batch_size: o.batch_size,
            ..FitOptions::default()
        };
        let mut la = fit(self.obj, params, data, &opts)?;
        (la.prior, la.sigma) = (self.prior.clone(), self.sigma);
        let value = self.ascent.run(&mut la, o.steps)?;
        (self.prior, self.sigma) = (la.prior, la.sigma);
        self.phases
            .push((value, self.prior.values.clone(), self.sigma));
        Ok(())
    }
}

/// The weights' bits, in the network's order.
fn bits(p: &ParamStore) -> Vec<u64> {
    p.iter()
        .flat_map(|(_, t)| t.to_f64_vec())
        .map(f64::to_bits)
        .collect()
}

fn adam(lr: f64, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        optimizer: OptimizerChoice::parse("adam", lr, 0.0, false, 0.0).unwrap(),
        ..TrainConfig::default()
    }
}

#[test]
fn untempered_training_keeping_the_last_epoch_is_the_algorithm_before_both() {
    for (loss, likelihood, structure, prior_shape) in [
        (
            "cross_entropy",
            Likelihood::Classification,
            Structure::Kron,
            PriorShape::PerLayer,
        ),
        (
            "mse",
            Likelihood::Regression,
            Structure::Full,
            PriorShape::Scalar,
        ),
    ] {
        let c = if likelihood == Likelihood::Regression {
            2
        } else {
            3
        };
        let obj = objective(
            &format!("linear(3,5),tanh,linear(5,{c})"),
            3,
            loss,
            Reduction::Mean,
        );
        let d = data(48, likelihood);
        let options = OnlineOptions {
            structure,
            prior_shape,
            every: 2,
            keep: Keep::Last,
            ..OnlineOptions::default()
        };
        let (params, online) = online_run(&obj, &d, options, 7);
        let mut reference_params = ParamStore::init(obj.network.spec(), 2, DType::F64);
        let sizes: Vec<usize> = reference_params.iter().map(|(_, t)| t.numel()).collect();
        let mut reference = Untempered {
            obj: &obj,
            options,
            n: d.len(),
            prior: Prior::uniform(prior_shape, options.prior_precision, &sizes).unwrap(),
            sigma: options.sigma,
            ascent: Ascent::new(options.lr, true).unwrap(),
            phases: Vec::new(),
        };
        let config = adam(1e-2, 7);
        train_with(
            &obj,
            &mut reference_params,
            &d,
            &config,
            None,
            Some(&mut reference),
            |_| {},
        )
        .unwrap();
        assert_eq!(bits(&params), bits(&reference_params), "{loss}");
        let phases: Vec<(f64, Vec<f64>, f64)> = online
            .phases()
            .iter()
            .map(|p| {
                (
                    p.log_marginal_likelihood,
                    p.prior_precision.clone().unwrap(),
                    p.sigma,
                )
            })
            .collect();
        assert_eq!(phases, reference.phases, "{loss}");
        assert_eq!(phases.len(), 3);
    }
}

#[test]
fn keeping_the_best_phase_ends_at_its_weights_and_hyperparameters() {
    // Adam at a large rate on squared error: the evidence falls back after
    // its best phase.
    let obj = objective("linear(3,8),tanh,linear(8,2)", 3, "mse", Reduction::Mean);
    let d = data(48, Likelihood::Regression);
    let run = |keep: Keep| {
        let options = OnlineOptions {
            structure: Structure::Full,
            keep,
            ..OnlineOptions::default()
        };
        let mut params = ParamStore::init(obj.network.spec(), 2, DType::F64);
        let mut online = OnlineMarglik::new(&obj, &params, &d, options).unwrap();
        let config = adam(0.5, 10);
        let weights = train_keeping_phase_weights(&obj, &mut params, &d, &config, &mut online);
        let last = params.clone();
        let kept = online.finish(&mut params).unwrap();
        (params, online, weights, last, kept)
    };
    let (params, online, weights, _, kept) = run(Keep::Best);
    let evidence: Vec<f64> = online
        .phases()
        .iter()
        .map(|p| p.log_marginal_likelihood)
        .collect();
    let best = (0..evidence.len())
        .max_by(|&a, &b| evidence[a].total_cmp(&evidence[b]))
        .unwrap();
    assert!(
        best + 1 < evidence.len(),
        "the best phase is the last: {evidence:?}"
    );
    assert_eq!(kept, best);
    assert_eq!(online.kept(), Some(best));
    assert_eq!(bits(&params), bits(&weights[best]));
    let phase = &online.phases()[best];
    assert_eq!(Some(&online.prior().values), phase.prior_precision.as_ref());
    assert_eq!(online.sigma(), phase.sigma);
    // Keeping the last: the last epoch's weights, the last phase's hyperparameters.
    let (params, online, _, last, kept) = run(Keep::Last);
    assert_eq!(kept, evidence.len() - 1);
    assert_eq!(bits(&params), bits(&last));
    let phase = online.phases().last().unwrap();
    assert_eq!(Some(&online.prior().values), phase.prior_precision.as_ref());
}
