//! Helpers shared by the integration tests: running the binary
//! ([`binary`]), loading reference fixtures.

#![allow(dead_code)]

pub mod binary;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use secondo::{Objective, ObjectiveConfig};
use secondo_nn::{ParamStore, Reduction};
use secondo_tensor::{DType, Tensor};

/// One fixture file: its tensors and metadata.
pub struct Fixture {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub meta: HashMap<String, String>,
}

impl Fixture {
    pub fn load(path: &Path) -> Fixture {
        let (tensors, meta) =
            secondo_nn::read_safetensors_with_metadata(path).expect("fixture loads");
        Fixture {
            path: path.to_path_buf(),
            tensors,
            meta,
        }
    }

    pub fn dtype(&self) -> DType {
        match self.meta["dtype"].as_str() {
            "float32" => DType::F32,
            _ => DType::F64,
        }
    }

    pub fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: no tensor {name}", self.path.display()))
    }

    /// The objective the fixture was made with.
    pub fn objective(&self) -> Objective {
        let x = self.tensor("x");
        Objective::from_config(&ObjectiveConfig {
            spec: self.meta["spec"].clone(),
            input_shape: x.shape()[1..].to_vec(),
            loss: self.meta["loss"].clone(),
            reduction: self.meta["reduction"].parse::<Reduction>().unwrap(),
            dtype: self.dtype(),
        })
        .unwrap()
    }

    /// The fixture's parameters and buffers (`param/<name>`) in the
    /// objective's order.
    pub fn params(&self, objective: &Objective) -> ParamStore {
        let mut p = ParamStore::new();
        for info in objective.network.params() {
            p.insert(
                &info.name,
                self.tensor(&format!("param/{}", info.name))
                    .to_dtype(self.dtype()),
            );
        }
        for info in objective.network.spec().buffers() {
            let t = self.tensor(&format!("param/{}", info.name));
            p.insert_buffer(&info.name, t.to_dtype(self.dtype()));
        }
        for name in objective.network.spec().batch_counters() {
            p.set_counter(&name, self.tensor(&format!("param/{name}")).item() as i64);
        }
        p
    }

    /// The relative error of `got` against the stored quantity `name`. The
    /// variance of few samples is rounding noise around 0 where the samples
    /// agree: it is measured against the size of its terms instead.
    pub fn error(&self, name: &str, got: &Tensor) -> f64 {
        let want = self.tensor(name).to_dtype(self.dtype());
        if name.starts_with("variance/") {
            let terms = self.tensor(&name.replace("variance/", "sum_grad_squared/"));
            let scale = terms.to_f64_vec().iter().fold(0f64, |m, v| m.max(v.abs()));
            got.max_abs_diff(&want) / scale.max(f64::MIN_POSITIVE)
        } else {
            relative_error(got, &want)
        }
    }

    /// Those of `candidates` the fixture stores for some parameter (as a
    /// tensor or a Kronecker factor).
    pub fn stored(
        &self,
        objective: &Objective,
        candidates: &[secondo_curvature::Quantity],
    ) -> Vec<secondo_curvature::Quantity> {
        let has = |q: &secondo_curvature::Quantity| {
            objective.network.params().iter().any(|p| {
                self.tensors.contains_key(&format!("{q}/{}", p.name))
                    || self.tensors.contains_key(&format!("{q}/{}/out", p.name))
            })
        };
        candidates.iter().copied().filter(has).collect()
    }

    /// Inputs and targets in the fixture's dtype (targets as float class indices or values).
    pub fn data(&self) -> (Tensor, Tensor) {
        let d = self.dtype();
        (self.tensor("x").to_dtype(d), self.tensor("y").to_dtype(d))
    }
}

/// Every `.safetensors` file of a fixtures subfolder, sorted.
pub fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", root.display());
    files
}

/// max|a − b| / max|b|: the relative error of a whole tensor.
pub fn relative_error(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let scale = want.to_f64_vec().iter().fold(0f64, |m, v| m.max(v.abs()));
    got.max_abs_diff(want) / scale.max(f64::MIN_POSITIVE)
}

impl Fixture {
    /// The fixture's `x`/`y` as a dataset (classes for cross-entropy).
    pub fn dataset(&self, classes: usize) -> secondo_data::Dataset {
        let x = self.tensor("x");
        let y = self.tensor("y").to_f64_vec();
        let targets = if self.meta["loss"] == "cross_entropy" {
            secondo_data::Targets::Classes {
                labels: y.iter().map(|&v| v as i64).collect(),
                num_classes: classes,
            }
        } else {
            secondo_data::Targets::Values {
                width: y.len() / x.shape()[0],
                values: y,
            }
        };
        secondo_data::Dataset::new(x.to_f64_vec(), x.shape()[1..].to_vec(), targets, "fixture")
            .unwrap()
    }
}

/// max|a − b| / max|b| over flat slices.
pub fn relative_error_flat(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// The first-order quantities of `data` as one batch, by brute force: a loop
/// over samples with the plain gradient, scaled by the batch's reduction
/// factor. Returns `(name, values)` pairs named like the quantities
/// (`batch_grad/<param>`, `grad/...`, `batch_l2/...`, `sum_grad_squared/...`,
/// `variance/...`).
pub fn first_order_by_loops(
    objective: &Objective,
    params: &ParamStore,
    data: &secondo_data::Dataset,
) -> Vec<(String, Vec<f64>)> {
    let n = data.len();
    let c = objective.network.output_shape()[0];
    let scale = objective.loss.scale(&[n, c]) / objective.loss.scale(&[1, c]);
    let per_sample: Vec<Vec<Vec<f64>>> = (0..n)
        .map(|i| {
            let one = data.select(&[i]).unwrap();
            let batch = one.batches(1).unwrap().next().unwrap();
            let (xi, yi) = objective.batch_tensors(&batch).unwrap();
            let grads = objective
                .program(1, true)
                .unwrap()
                .run(params, xi, yi)
                .unwrap()
                .grads;
            grads
                .iter()
                .map(|g| g.to_f64_vec().iter().map(|v| v * scale).collect())
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for (k, p) in objective.network.params().iter().enumerate() {
        let size = p.numel();
        let stacked: Vec<f64> = per_sample.iter().flat_map(|s| s[k].clone()).collect();
        let sum: Vec<f64> = (0..size)
            .map(|j| per_sample.iter().map(|s| s[k][j]).sum())
            .collect();
        let l2: Vec<f64> = per_sample
            .iter()
            .map(|s| s[k].iter().map(|v| v * v).sum())
            .collect();
        let sgs: Vec<f64> = (0..size)
            .map(|j| per_sample.iter().map(|s| s[k][j] * s[k][j]).sum())
            .collect();
        let var: Vec<f64> = (0..size)
            .map(|j| sgs[j] / n as f64 - (sum[j] / n as f64).powi(2))
            .collect();
        for (q, v) in [
            ("batch_grad", stacked),
            ("grad", sum),
            ("batch_l2", l2),
            ("sum_grad_squared", sgs),
            ("variance", var),
        ] {
            out.push((format!("{q}/{}", p.name), v));
        }
    }
    out
}

/// Trains `params` on `data` by `config` with online marginal-likelihood
/// training `online`, and returns the weights every phase ran at, to check
/// which phase's weights it keeps.
pub fn train_keeping_phase_weights(
    objective: &Objective,
    params: &mut ParamStore,
    data: &secondo_data::Dataset,
    config: &secondo::train::TrainConfig,
    online: &mut secondo::laplace::online::OnlineMarglik<'_>,
) -> Vec<ParamStore> {
    let mut recording = PhaseWeights {
        online,
        weights: Vec::new(),
    };
    secondo::train::train_with(
        objective,
        params,
        data,
        config,
        None,
        Some(&mut recording),
        |_| {},
    )
    .unwrap();
    recording.weights
}

struct PhaseWeights<'o, 'a> {
    online: &'o mut secondo::laplace::online::OnlineMarglik<'a>,
    weights: Vec<ParamStore>,
}

impl secondo::train::Regularizer for PhaseWeights<'_, '_> {
    fn add_gradient(
        &self,
        params: &ParamStore,
        grads: &mut [Tensor],
        batch: usize,
    ) -> Result<(), secondo::Error> {
        self.online.add_gradient(params, grads, batch)
    }

    fn end_epoch(
        &mut self,
        epoch: usize,
        params: &ParamStore,
        data: &secondo_data::Dataset,
    ) -> Result<(), secondo::Error> {
        let before = self.online.phases().len();
        self.online.end_epoch(epoch, params, data)?;
        if self.online.phases().len() > before {
            self.weights.push(params.clone());
        }
        Ok(())
    }
}
