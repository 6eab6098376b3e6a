//! A fitted Laplace approximation as a safetensors file: the posterior
//! mean, the structure's factors (each with its eigendecomposition), the
//! prior precision and σ, with what they cover in the metadata, so that
//! `secondo predict` applies it to new data without refitting.

use std::collections::HashMap;
use std::path::Path;

use secondo_tensor::Tensor;

use super::structure::{CurvatureBlock, Eigen};
use super::{Laplace, Prior, PriorShape};
use crate::Error;

/// Writes `la` to `path`.
pub fn save(la: &Laplace, path: &Path) -> Result<(), Error> {
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("mean".into(), vector(&la.mean)),
        ("prior_precision".into(), vector(&la.prior.values)),
        ("sigma".into(), vector(&[la.sigma])),
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
            CurvatureBlock::Dense { matrix, eigen } => {
                parts.extend([
                    ("matrix", matrix.as_slice()),
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
    secondo_nn::write_safetensors(
        path,
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &metadata,
    )?;
    Ok(())
}

fn vector(values: &[f64]) -> Tensor {
    Tensor::from_vec(vec![values.len()], values.to_vec()).expect("a vector")
}

/// Reads a Laplace approximation written by [`save`].
pub fn load(path: &Path) -> Result<Laplace, Error> {
    let (tensors, meta) = secondo_nn::read_safetensors_with_metadata(path)?;
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
            "dense" => CurvatureBlock::Dense {
                matrix: values(&format!("block{k}/matrix"))?,
                eigen: eigen(k, "matrix")?,
            },
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
        sigma: values("sigma")?[0],
        mask,
    })
}
