//! A fitted Laplace approximation as a safetensors file: the posterior
//! mean, the structure's factors (each with its eigendecomposition), the
//! prior precision and σ, with what they cover in the metadata, so that
//! `secondo predict` applies it to new data without refitting; and a
//! learned prior ([`LearnedPrior`]), which `secondo train --online-marglik`
//! writes beside the weights and `secondo laplace --prior-precision file:`
//! reads.

use std::collections::HashMap;
use std::path::Path;

use secondo_nn::ParamStore;
use secondo_tensor::Tensor;

use super::structure::{CurvatureBlock, DenseCurvature, Eigen};
use super::{Laplace, Likelihood, Prior, PriorShape};
use crate::Error;

/// Writes `la` to `path`.
pub fn save(la: &Laplace, path: &Path) -> Result<(), Error> {
    let (tensors, metadata) = encode(la)?;
    write(path, &tensors, &metadata)
}

/// The network a posterior was fitted on: its spec, one sample's shape and
/// its MAP weights (every parameter and buffer, by PyTorch name), saved
/// with the posterior so that `secondo predict --posterior FILE` needs
/// nothing else.
#[derive(Debug, Clone)]
pub struct FittedNetwork {
    /// The model spec.
    pub spec: String,
    /// One sample's shape.
    pub input_shape: Vec<usize>,
    /// The weights.
    pub weights: HashMap<String, Tensor>,
}

/// The prefix of a [`FittedNetwork`]'s weights among the posterior's tensors.
const NETWORK: &str = "network/";

/// Writes `la` with the network it was fitted on to `path`.
pub fn save_with_network(la: &Laplace, network: &FittedNetwork, path: &Path) -> Result<(), Error> {
    let (mut tensors, mut metadata) = encode(la)?;
    let mut names: Vec<&String> = network.weights.keys().collect();
    names.sort();
    for name in names {
        tensors.push((format!("{NETWORK}{name}"), network.weights[name].clone()));
    }
    metadata.insert("model".into(), network.spec.clone());
    metadata.insert(
        "input_shape".into(),
        serde_json::json!(network.input_shape).to_string(),
    );
    write(path, &tensors, &metadata)
}

/// The network among the tensors and metadata of the posterior at `path`,
/// if it was saved with one.
fn network_of(
    path: &Path,
    tensors: HashMap<String, Tensor>,
    meta: &HashMap<String, String>,
) -> Result<Option<FittedNetwork>, Error> {
    let Some(spec) = meta.get("model") else {
        return Ok(None);
    };
    let input_shape = meta
        .get("input_shape")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{}: not a Laplace posterior (no valid 'input_shape')",
                path.display()
            ))
        })?;
    let weights = tensors
        .into_iter()
        .filter_map(|(name, t)| Some((name.strip_prefix(NETWORK)?.to_string(), t)))
        .collect();
    Ok(Some(FittedNetwork {
        spec: spec.clone(),
        input_shape,
        weights,
    }))
}

/// A safetensors file's named tensors and its metadata.
type Encoded = (Vec<(String, Tensor)>, HashMap<String, String>);

/// The posterior's tensors and metadata.
fn encode(la: &Laplace) -> Result<Encoded, Error> {
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("mean".into(), vector(&la.mean)),
        ("prior_precision".into(), vector(&la.prior.values)),
        ("sigma".into(), vector(&[la.sigma])),
        ("temperature".into(), vector(&[la.temperature])),
    ];
    if let Some(mask) = &la.mask {
        let indices: Vec<f64> = mask.iter().map(|&i| i as f64).collect();
        tensors.push(("mask".into(), vector(&indices)));
    }
    let mut kinds = Vec::new();
    for (k, block) in la.blocks.iter().enumerate() {
        let mut parts: Vec<(&str, &[f64])> = Vec::new();
        kinds.push(match block {
            CurvatureBlock::Diag(h) => {
                parts.push(("diag", h));
                "diag".to_string()
            }
            CurvatureBlock::Dense(d) => {
                let eigen = d.eigen()?;
                parts.extend([
                    ("matrix", d.matrix()),
                    ("matrix/eigenvalues", &eigen.values),
                    ("matrix/eigenvectors", &eigen.rows),
                ]);
                "dense".to_string()
            }
            CurvatureBlock::Kron { out, input } => {
                parts.extend([
                    ("out/eigenvalues", out.values.as_slice()),
                    ("out/eigenvectors", &out.rows),
                    ("in/eigenvalues", &input.values),
                    ("in/eigenvectors", &input.rows),
                ]);
                "kron".to_string()
            }
            CurvatureBlock::LowRank { values, rows, dim } => {
                parts.extend([("eigenvalues", values.as_slice()), ("eigenvectors", rows)]);
                format!("lowrank:{dim}")
            }
        });
        for (name, values) in parts {
            tensors.push((format!("block{k}/{name}"), vector(values)));
        }
    }
    let json = |v: serde_json::Value| v.to_string();
    let metadata = HashMap::from([
        ("likelihood".to_string(), la.likelihood.to_string()),
        ("structure".to_string(), la.structure.to_string()),
        ("names".to_string(), json(serde_json::json!(la.names))),
        ("shapes".to_string(), json(serde_json::json!(la.shapes))),
        ("blocks".to_string(), json(serde_json::json!(kinds))),
        ("prior_shape".to_string(), format!("{:?}", la.prior.shape)),
        ("nll".to_string(), json(serde_json::json!(la.nll))),
        ("n_data".to_string(), la.n_data.to_string()),
        ("n_outputs".to_string(), la.n_outputs.to_string()),
    ]);
    Ok((tensors, metadata))
}

/// Writes named tensors and metadata to `path`.
fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<(), Error> {
    let named = tensors.iter().map(|(n, t)| (n.as_str(), t));
    secondo_nn::write_safetensors(path, named, metadata)?;
    Ok(())
}

fn vector(values: &[f64]) -> Tensor {
    Tensor::from_vec(vec![values.len()], values.to_vec()).expect("a vector")
}

/// Reads a Laplace approximation written by [`save`].
pub fn load(path: &Path) -> Result<Laplace, Error> {
    let (tensors, meta) = secondo_nn::read_safetensors_with_metadata(path)?;
    decode(path, &tensors, &meta)
}

/// Reads a posterior and the network saved with it, if it was
/// ([`save_with_network`]), from one read of `path`.
pub fn load_with_network(path: &Path) -> Result<(Laplace, Option<FittedNetwork>), Error> {
    let (tensors, meta) = secondo_nn::read_safetensors_with_metadata(path)?;
    let la = decode(path, &tensors, &meta)?;
    Ok((la, network_of(path, tensors, &meta)?))
}

/// The posterior in the tensors and metadata of the file at `path`.
fn decode(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &HashMap<String, String>,
) -> Result<Laplace, Error> {
    let bad = |what: &str| {
        Error::Invalid(format!(
            "{}: not a Laplace posterior ({what})",
            path.display()
        ))
    };
    let field = |key: &str| meta.get(key).ok_or_else(|| bad(&format!("no '{key}'")));
    let values = |name: &str| -> Result<Vec<f64>, Error> {
        Ok(tensors
            .get(name)
            .ok_or_else(|| bad(&format!("no tensor '{name}'")))?
            .to_f64_vec())
    };
    let scalar = |name: &str| -> Result<f64, Error> {
        match values(name)?.as_slice() {
            [v] => Ok(*v),
            _ => Err(bad(&format!("'{name}' is not one number"))),
        }
    };
    let parsed = |key: &str| -> Result<serde_json::Value, Error> {
        serde_json::from_str(field(key)?).map_err(|_| bad(key))
    };
    let names: Vec<String> = serde_json::from_value(parsed("names")?).map_err(|_| bad("names"))?;
    let shapes: Vec<Vec<usize>> =
        serde_json::from_value(parsed("shapes")?).map_err(|_| bad("shapes"))?;
    let kinds: Vec<String> =
        serde_json::from_value(parsed("blocks")?).map_err(|_| bad("blocks"))?;
    let eigen = |k: usize, name: &str| -> Result<Eigen, Error> {
        Ok(Eigen {
            values: values(&format!("block{k}/{name}/eigenvalues"))?,
            rows: values(&format!("block{k}/{name}/eigenvectors"))?,
        })
    };
    let mut blocks = Vec::new();
    for (k, kind) in kinds.iter().enumerate() {
        blocks.push(match kind.as_str() {
            "diag" => CurvatureBlock::Diag(values(&format!("block{k}/diag"))?),
            "dense" => CurvatureBlock::Dense(DenseCurvature::with_eigen(
                values(&format!("block{k}/matrix"))?,
                eigen(k, "matrix")?,
            )),
            "kron" => CurvatureBlock::Kron {
                out: eigen(k, "out")?,
                input: eigen(k, "in")?,
            },
            other => match other.strip_prefix("lowrank:").and_then(|d| d.parse().ok()) {
                Some(dim) => CurvatureBlock::LowRank {
                    values: values(&format!("block{k}/eigenvalues"))?,
                    rows: values(&format!("block{k}/eigenvectors"))?,
                    dim,
                },
                None => return Err(bad("block kind")),
            },
        });
    }
    let prior_shape = match field("prior_shape")?.as_str() {
        "Scalar" => PriorShape::Scalar,
        "PerLayer" => PriorShape::PerLayer,
        "Diagonal" => PriorShape::Diagonal,
        _ => return Err(bad("prior_shape")),
    };
    let mask: Option<Vec<usize>> = tensors
        .get("mask")
        .map(|t| t.to_f64_vec().iter().map(|&i| i as usize).collect());
    let sizes: Vec<usize> = match &mask {
        Some(m) => super::fit::counts_per_tensor(m, &shapes),
        None => shapes.iter().map(|s| s.iter().product()).collect(),
    };
    let count = |key: &str| field(key)?.parse::<usize>().map_err(|_| bad(key));
    Ok(Laplace {
        likelihood: field("likelihood")?.parse()?,
        structure: field("structure")?.parse()?,
        names,
        shapes,
        mean: values("mean")?,
        blocks,
        nll: parsed("nll")?.as_f64().ok_or_else(|| bad("nll"))?,
        n_data: count("n_data")?,
        n_outputs: count("n_outputs")?,
        prior: Prior::new(prior_shape, values("prior_precision")?, &sizes)?,
        sigma: scalar("sigma")?,
        // Posteriors written before the temperature existed are untempered.
        temperature: match tensors.contains_key("temperature") {
            true => scalar("temperature")?,
            false => 1.0,
        },
        mask,
    })
}

/// What a learned-prior file holds besides the precisions.
const PRIOR_FORMAT: &str = "secondo learned prior";

/// A prior precision learned for a network's parameters, with the
/// observation noise and the likelihood's temperature it was learned with.
/// As a file: one tensor `prior_precision/<parameter>` per parameter, of
/// shape `[1]` for a scalar or per-layer prior (the metadata's
/// `prior_shape` tells which) and of the parameter's shape for a diagonal
/// one; the metadata's `shapes` has every parameter's shape, so that the
/// prior is matched to a model by name and shape as its weights are
/// (strictly: every parameter, nothing else); `sigma` and `temperature` of
/// shape `[1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedPrior {
    /// The likelihood it was learned under.
    pub likelihood: Likelihood,
    /// How many precisions.
    pub shape: PriorShape,
    /// Per parameter, in the network's order: its name and precisions (one
    /// value, or one per weight for a diagonal prior).
    pub tensors: Vec<(String, Vec<f64>)>,
    /// The observation noise (1 for classification).
    pub sigma: f64,
    /// The likelihood's temperature ([`Laplace::temperature`]).
    pub temperature: f64,
}

impl LearnedPrior {
    /// The prior `prior` over all of `params`' tensors (in order).
    pub fn new(
        likelihood: Likelihood,
        prior: &Prior,
        params: &ParamStore,
        sigma: f64,
        temperature: f64,
    ) -> LearnedPrior {
        LearnedPrior {
            likelihood,
            shape: prior.shape,
            tensors: params
                .iter()
                .map(|(name, _)| name.to_string())
                .zip(prior.per_tensor())
                .collect(),
            sigma,
            temperature,
        }
    }

    /// Writes the prior to `path`, a tensor per parameter shaped as
    /// `params`' (for a diagonal prior).
    pub fn save(&self, path: &Path, params: &ParamStore) -> Result<(), Error> {
        let mut tensors: Vec<(String, Tensor)> = vec![
            ("sigma".into(), vector(&[self.sigma])),
            ("temperature".into(), vector(&[self.temperature])),
        ];
        for ((name, values), (_, param)) in self.tensors.iter().zip(params.iter()) {
            let shape = match self.shape {
                PriorShape::Diagonal => param.shape().to_vec(),
                _ => vec![1],
            };
            let t = Tensor::from_vec(shape, values.clone()).expect("one value per weight");
            tensors.push((format!("prior_precision/{name}"), t));
        }
        let shapes: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|(name, t)| (name.to_string(), serde_json::json!(t.shape())))
            .collect();
        let metadata = HashMap::from([
            ("format".to_string(), PRIOR_FORMAT.to_string()),
            (
                "shapes".to_string(),
                serde_json::Value::Object(shapes).to_string(),
            ),
            ("likelihood".to_string(), self.likelihood.to_string()),
            ("prior_shape".to_string(), self.shape.to_string()),
        ]);
        write(path, &tensors, &metadata)
    }

    /// Reads the prior `path` holds for the parameters of `params`:
    /// refuses, naming the file and the tensor, a parameter without its
    /// tensor, a tensor of another shape and a tensor for no parameter.
    pub fn load(path: &Path, params: &ParamStore) -> Result<LearnedPrior, Error> {
        let (mut tensors, meta) = secondo_nn::read_safetensors_with_metadata(path)?;
        let file = path.display();
        let bad = |what: String| Error::Invalid(format!("{file}: {what}"));
        if meta.get("format").map(String::as_str) != Some(PRIOR_FORMAT) {
            return Err(bad(
                "not a learned prior (secondo train --online-marglik writes one)".into(),
            ));
        }
        let field = |key: &str| {
            meta.get(key)
                .ok_or_else(|| bad(format!("no metadata '{key}'")))
        };
        let likelihood: Likelihood = field("likelihood")?.parse()?;
        let shape: PriorShape = field("prior_shape")?.parse()?;
        let shapes: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(field("shapes")?)
                .map_err(|_| bad("metadata 'shapes' is not a JSON object".into()))?;
        let mut scalar = |name: &str| match tensors.remove(name).map(|t| t.to_f64_vec()) {
            Some(v) if v.len() == 1 => Ok(v[0]),
            _ => Err(bad(format!("tensor '{name}' is missing or not one number"))),
        };
        let (sigma, temperature) = (scalar("sigma")?, scalar("temperature")?);
        let mut per_param = Vec::new();
        for (name, param) in params.iter() {
            let key = format!("prior_precision/{name}");
            let t = tensors.remove(&key).ok_or_else(|| {
                bad(format!(
                    "no tensor '{key}' for parameter '{name}' of --model"
                ))
            })?;
            let learned_for: Option<Vec<usize>> = shapes
                .get(name)
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            if learned_for.as_deref() != Some(param.shape()) {
                return Err(bad(format!(
                    "tensor '{key}' was learned for a parameter of shape {}, '{name}' of \
                     --model has {:?}",
                    learned_for.map_or("unknown".into(), |s| format!("{s:?}")),
                    param.shape()
                )));
            }
            let want = match shape {
                PriorShape::Diagonal => param.shape(),
                _ => &[1][..],
            };
            if t.shape() != want {
                return Err(bad(format!(
                    "tensor '{key}' has shape {:?}, a {shape} prior over '{name}' needs {want:?}",
                    t.shape()
                )));
            }
            per_param.push((name.to_string(), t.to_f64_vec()));
        }
        if let Some(extra) = tensors.keys().min() {
            return Err(bad(format!(
                "tensor '{extra}' is for no parameter of --model"
            )));
        }
        Ok(LearnedPrior {
            likelihood,
            shape,
            tensors: per_param,
            sigma,
            temperature,
        })
    }

    /// The prior over the weights `la` covers (a subset of the parameters,
    /// perhaps masked), of `la`'s prior's shape, which must be this one's.
    pub fn prior_for(&self, la: &Laplace) -> Result<Prior, Error> {
        let covered = la.names.iter().map(|name| {
            self.tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_slice())
                .ok_or_else(|| Error::Invalid(format!("the learned prior has no '{name}'")))
        });
        let covered: Vec<&[f64]> = covered.collect::<Result<_, _>>()?;
        let values = match self.shape {
            PriorShape::Scalar => covered.first().map_or(Vec::new(), |v| v.to_vec()),
            PriorShape::PerLayer => covered.iter().map(|v| v[0]).collect(),
            PriorShape::Diagonal => la.gather(&covered.concat()),
        };
        la.prior.with_values(values)
    }
}
