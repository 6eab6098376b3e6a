//! `secondo spectrum` and the spectral routines on curvature operators.

mod common;

use std::path::Path;
use std::process::Output;

use common::secondo;

use secondo::curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
use secondo::spectrum::{compute, SpectrumOptions};
use secondo_nn::ParamStore;
use secondo_tensor::DType;

fn small_problem(spec: &str) -> (Objective, ParamStore, secondo_data::Dataset) {
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: spec.into(),
        input_shape: vec![64],
        dtype: DType::F64,
        ..ObjectiveConfig::default()
    })
    .unwrap();
    let params = ParamStore::init(objective.network.spec(), 1, DType::F64);
    let mut data = secondo_data::digits()
        .select(&(0..60).collect::<Vec<_>>())
        .unwrap();
    data.x.iter_mut().for_each(|v| *v /= 16.0);
    (objective, params, data)
}

/// Lanczos top-k on the Hessian and GGN equals the dense eigendecomposition.
#[test]
fn top_eigenvalues_match_dense_eigendecomposition() {
    let (objective, params, data) = small_problem("linear(64,4),tanh,linear(4,10)");
    for kind in [Curvature::Hessian, Curvature::Ggn] {
        let op = CurvatureOperator::new(&objective, &params, &data, 25, kind, None).unwrap();
        let dense = op.to_dense().unwrap();
        let matrix = secondo_linalg::DenseSymmetric::new(op.dim(), dense).unwrap();
        let mut want = secondo_linalg::dense_symmetric_eigen(&matrix)
            .unwrap()
            .values;
        want.sort_by(|a, b| b.total_cmp(a));
        let opts = SpectrumOptions {
            top: Some(5),
            ..SpectrumOptions::default()
        };
        let got = compute(&op, &opts, &mut |_, _| {})
            .unwrap()
            .top_eigenvalues
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-8 * want[0].abs(),
                "{kind}: {got:?} vs {:?}",
                &want[..5]
            );
        }
    }
}

/// The trace estimate covers the exact trace within a few standard errors.
#[test]
fn trace_estimate_covers_the_exact_trace() {
    let (objective, params, data) = small_problem("linear(64,3),relu,linear(3,10)");
    let op = CurvatureOperator::new(&objective, &params, &data, 30, Curvature::Ggn, None).unwrap();
    let dense = op.to_dense().unwrap();
    let d = op.dim();
    let exact: f64 = (0..d).map(|i| dense[i * d + i]).sum();
    let opts = SpectrumOptions {
        top: None,
        trace: true,
        trace_products: 60,
        ..SpectrumOptions::default()
    };
    let (estimate, stderr) = compute(&op, &opts, &mut |_, _| {}).unwrap().trace.unwrap();
    assert!(
        (estimate - exact).abs() <= 4.0 * stderr + 1e-9 * exact.abs(),
        "{estimate} ± {stderr} vs {exact}"
    );
}

#[test]
fn spectrum_command_writes_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spec");
    let o = secondo(&[
        "spectrum",
        "--model",
        "linear(64,8),tanh,linear(8,10)",
        "--data",
        "digits",
        "--curvature",
        "ggn",
        "--top",
        "3",
        "--trace",
        "--density",
        "--dtype",
        "f64",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("spectrum.json")).unwrap()).unwrap();
    let top: Vec<f64> = doc["top_eigenvalues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(top.len(), 3);
    assert!(top.windows(2).all(|w| w[0] >= w[1]));
    assert!(doc["trace"]["estimate"].as_f64().unwrap() > top[0]);
    assert!(doc["trace"]["stderr"].as_f64().unwrap() >= 0.0);
    let grid = doc["density"]["grid"].as_array().unwrap();
    assert_eq!(
        grid.len(),
        doc["density"]["values"].as_array().unwrap().len()
    );
    let svg = std::fs::read_to_string(out.join("spectrum.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

fn assert_bad(o: &Output, needle: &str, out: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "expected '{needle}' in {err}");
    assert!(!out.join("spectrum.json").exists());
}

#[test]
fn spectrum_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spec");
    let o_s = out.to_str().unwrap();
    let base = [
        "spectrum",
        "--model",
        "linear(64,10)",
        "--data",
        "digits",
        "--out",
        o_s,
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        secondo(&a)
    };
    assert_bad(
        &with(&["--curvature", "hessain"]),
        "unknown curvature 'hessain'",
        &out,
    );
    assert_bad(&with(&["--top", "651"]), "--top 651", &out);
    assert_bad(&with(&["--top", "0"]), "nothing to compute", &out);
    assert_bad(
        &with(&["--curvature", "fisher", "--mc-samples", "0"]),
        "MC sample",
        &out,
    );
}
