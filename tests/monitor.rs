//! Every instrument of the monitor against a brute-force computation in f64:
//! per-sample gradients by a loop over single samples, dense Hessians by
//! central differences of gradients, GGNs from finite-difference Jacobians,
//! explicit eigendecompositions and histograms counted by hand.

use rand::{Rng, SeedableRng};
use secondo::monitor::{alpha, Instrument, Monitor, MonitorConfig, MonitorSetup, Record};
use secondo::{Objective, ObjectiveConfig};
use secondo_data::{Dataset, Targets};
use secondo_linalg::{dense_symmetric_eigen, DenseSymmetric};
use secondo_nn::ParamStore;
use secondo_tensor::{DType, Tensor};

const SPEC: &str = "linear(6,5),tanh,linear(5,3)";
const LR: f64 = 0.1;

fn objective() -> Objective {
    Objective::from_config(&ObjectiveConfig {
        spec: SPEC.into(),
        input_shape: vec![6],
        dtype: DType::F64,
        ..ObjectiveConfig::default()
    })
    .unwrap()
}

/// `n` samples with inputs of scale `scale` and labels cycling through 3 classes.
fn data(n: usize, seed: u64, scale: f64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f64> = (0..n * 6)
        .map(|_| scale * (rng.random::<f64>() * 2.0 - 1.0))
        .collect();
    let labels = (0..n).map(|i| (i % 3) as i64).collect();
    Dataset::new(
        x,
        vec![6],
        Targets::Classes {
            labels,
            num_classes: 3,
        },
        "random",
    )
    .unwrap()
}

fn params(objective: &Objective) -> ParamStore {
    // Larger weights than the default init, so that gradients and curvature
    // are far from zero and the histograms spread over many bins.
    let mut p = ParamStore::init(objective.network.spec(), 3, DType::F64);
    let flat: Vec<f64> = flat(&p).iter().map(|v| 3.0 * v).collect();
    set_flat(&mut p, &flat);
    p
}

fn flat(p: &ParamStore) -> Vec<f64> {
    p.iter().flat_map(|(_, t)| t.to_f64_vec()).collect()
}

fn sizes(p: &ParamStore) -> Vec<usize> {
    p.iter().map(|(_, t)| t.numel()).collect()
}

fn set_flat(p: &mut ParamStore, v: &[f64]) {
    let mut at = 0;
    for t in p.tensors_mut() {
        let n = t.numel();
        *t = Tensor::from_f64(t.shape().to_vec(), &v[at..at + n], DType::F64).unwrap();
        at += n;
    }
}

/// Per-sample losses and unscaled gradients `∇ℓ_n` (flattened), by a loop.
fn per_sample(obj: &Objective, p: &ParamStore, d: &Dataset) -> (Vec<f64>, Vec<Vec<f64>>) {
    let program = obj.program(1, true).unwrap();
    (0..d.len())
        .map(|i| {
            let one = d.select(&[i]).unwrap();
            let batch = one.batches(1).unwrap().next().unwrap();
            let (x, y) = obj.batch_tensors(&batch).unwrap();
            let out = program.run(p, x, y).unwrap();
            (
                out.loss,
                out.grads.iter().flat_map(|g| g.to_f64_vec()).collect(),
            )
        })
        .unzip()
}

fn mean_grad(grads: &[Vec<f64>]) -> Vec<f64> {
    let n = grads.len() as f64;
    (0..grads[0].len())
        .map(|j| grads.iter().map(|g| g[j]).sum::<f64>() / n)
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The dense Hessian of the mean loss on `d` by central differences of the
/// loop gradients.
fn fd_hessian(obj: &Objective, p: &ParamStore, d: &Dataset) -> Vec<f64> {
    let theta = flat(p);
    let dim = theta.len();
    let h = 1e-5;
    let mut out = vec![0.0; dim * dim];
    let mut q = p.clone();
    for j in 0..dim {
        let mut grad_at = |shift: f64| {
            let mut t = theta.clone();
            t[j] += shift;
            set_flat(&mut q, &t);
            mean_grad(&per_sample(obj, &q, d).1)
        };
        let (plus, minus) = (grad_at(h), grad_at(-h));
        for i in 0..dim {
            out[i * dim + j] = (plus[i] - minus[i]) / (2.0 * h);
        }
    }
    // Symmetrize away the differencing error.
    for i in 0..dim {
        for j in 0..i {
            let s = 0.5 * (out[i * dim + j] + out[j * dim + i]);
            out[i * dim + j] = s;
            out[j * dim + i] = s;
        }
    }
    out
}

/// Eigenvalues (descending) and eigenvectors (column j of the result is
/// vector j, each of length `dim`).
fn eigen(m: &[f64], dim: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let e = dense_symmetric_eigen(&DenseSymmetric::new(dim, m.to_vec()).unwrap()).unwrap();
    let values = e.values.iter().rev().copied().collect();
    let vectors = (0..dim)
        .rev()
        .map(|j| e.vector(j).unwrap().to_vec())
        .collect();
    (values, vectors)
}

fn close(name: &str, got: f64, want: f64, tol: f64) {
    let err = (got - want).abs() / want.abs().max(1e-12);
    assert!(
        err <= tol,
        "{name}: got {got}, want {want} (relative error {err:.2e})"
    );
}

fn close_all(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / scale;
        assert!(
            err <= tol,
            "{name}[{i}]: got {g}, want {w} (error {err:.2e} of the largest)"
        );
    }
}

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn counts(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Runs `steps` monitored SGD steps on the whole of `d` (one batch) and
/// returns the records and the parameters at every step.
fn monitored_run(
    obj: &Objective,
    config: &MonitorConfig,
    d: &Dataset,
    probe: Option<Dataset>,
    steps: usize,
) -> (Vec<Record>, Vec<ParamStore>) {
    let mut p = params(obj);
    let setup = MonitorSetup {
        config,
        total_steps: steps,
        lr: LR,
        plain_sgd: true,
        probe,
        seed: 5,
    };
    let mut monitor = Monitor::new(obj, &p, setup).unwrap();
    let batch = d.batches(d.len()).unwrap().next().unwrap();
    let (x, y) = obj.batch_tensors(&batch).unwrap();
    let plain = obj.program(d.len(), true).unwrap();
    let mut history = Vec::new();
    let mut records = Vec::new();
    for step in 0..steps {
        history.push(p.clone());
        let mut run_plain = || Ok(plain.run(&p, x.clone(), y.clone())?);
        let out = monitor
            .step(step, 1, &p, &x, &y, &|| Ok(d.clone()), &mut run_plain)
            .unwrap();
        let g: Vec<f64> = out.grads.iter().flat_map(|t| t.to_f64_vec()).collect();
        let next: Vec<f64> = flat(&p).iter().zip(&g).map(|(t, g)| t - LR * g).collect();
        set_flat(&mut p, &next);
        monitor.updated(&p).unwrap();
        records.extend(monitor.drain());
    }
    records.extend(monitor.finish());
    history.push(p);
    (records, history)
}

/// Splits a flat vector into per-parameter blocks of `sizes`.
fn blocks<'a>(v: &'a [f64], sizes: &[usize]) -> Vec<&'a [f64]> {
    let mut at = 0;
    sizes
        .iter()
        .map(|&n| {
            at += n;
            &v[at - n..at]
        })
        .collect()
}

fn norms(v: &[f64], sizes: &[usize]) -> Vec<f64> {
    blocks(v, sizes).iter().map(|b| dot(b, b).sqrt()).collect()
}

#[test]
fn cockpit_instruments_equal_brute_force() {
    let obj = objective();
    let d = data(7, 1, 2.0);
    let mut config =
        MonitorConfig::parse("full,mean_gsnr,cabs,early_stopping,tic_trace", 1).unwrap();
    assert_eq!(config.instruments.len(), 17);
    config.track_every = 1;
    let (records, history) = monitored_run(&obj, &config, &d, None, 2);
    assert_eq!(records.len(), 2);
    let sizes = sizes(&history[0]);
    let b = d.len() as f64;
    for (t, r) in records.iter().enumerate() {
        let p = &history[t];
        let (terms, g_n) = per_sample(&obj, p, &d);
        let g = mean_grad(&g_n);
        let g2 = dot(&g, &g);
        let loss = terms.iter().sum::<f64>() / b;
        close("loss", r["loss"].as_f64().unwrap(), loss, 1e-12);
        close_all(
            "grad_norm",
            &numbers(&r["grad_norm"]),
            &norms(&g, &sizes),
            1e-10,
        );
        let moved: Vec<f64> = flat(p)
            .iter()
            .zip(flat(&history[0]))
            .map(|(a, b)| a - b)
            .collect();
        close_all(
            "distance",
            &numbers(&r["distance"]),
            &norms(&moved, &sizes),
            1e-10,
        );
        let step: Vec<f64> = flat(&history[t + 1])
            .iter()
            .zip(flat(p))
            .map(|(a, b)| a - b)
            .collect();
        close_all(
            "update_size",
            &numbers(&r["update_size"]),
            &norms(&step, &sizes),
            1e-10,
        );

        // The gradient tests from their definitions (sample variances).
        let var_norm = g_n
            .iter()
            .map(|gn| dot(gn, gn) - 2.0 * dot(gn, &g) + g2)
            .sum::<f64>()
            / (b - 1.0);
        close(
            "norm_test",
            r["norm_test"].as_f64().unwrap(),
            (var_norm / b).sqrt() / g2.sqrt(),
            1e-9,
        );
        let var_inner = g_n.iter().map(|gn| (dot(gn, &g) - g2).powi(2)).sum::<f64>() / (b - 1.0);
        close(
            "inner_test",
            r["inner_test"].as_f64().unwrap(),
            (var_inner / b).sqrt() / g2,
            1e-9,
        );
        let var_ortho = g_n
            .iter()
            .map(|gn| {
                let c = dot(gn, &g) / g2;
                gn.iter()
                    .zip(&g)
                    .map(|(a, b)| (a - c * b).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / (b - 1.0);
        close(
            "ortho_test",
            r["ortho_test"].as_f64().unwrap(),
            (var_ortho / b).sqrt() / g2.sqrt(),
            1e-9,
        );

        // Elementwise noise.
        let dim = g.len();
        let var = |j: usize, ddof: f64| {
            g_n.iter().map(|gn| (gn[j] - g[j]).powi(2)).sum::<f64>() / (b - ddof)
        };
        let gsnr = (0..dim)
            .map(|j| g[j] * g[j] / (var(j, 0.0) + 1e-5))
            .sum::<f64>()
            / dim as f64;
        close("mean_gsnr", r["mean_gsnr"].as_f64().unwrap(), gsnr, 1e-9);
        let snr = (0..dim)
            .map(|j| g[j] * g[j] / (var(j, 1.0) + 1e-5))
            .sum::<f64>()
            / dim as f64;
        close(
            "early_stopping",
            r["early_stopping"].as_f64().unwrap(),
            1.0 - b * snr,
            1e-9,
        );
        let noise: f64 = (0..dim).map(|j| var(j, 0.0) * b).sum();
        close(
            "cabs",
            r["cabs"].as_f64().unwrap(),
            LR * noise / (b * loss),
            1e-9,
        );

        // Curvature from the finite-difference Hessian.
        let h = fd_hessian(&obj, p, &d);
        let diag: Vec<f64> = (0..dim).map(|j| h[j * dim + j]).collect();
        let traces: Vec<f64> = blocks(&diag, &sizes)
            .iter()
            .map(|b| b.iter().sum())
            .collect();
        close_all("hess_trace", &numbers(&r["hess_trace"]), &traces, 1e-6);
        let second = |j: usize| g_n.iter().map(|gn| gn[j] * gn[j]).sum::<f64>() / b;
        let tic: f64 = (0..dim).map(|j| second(j) / (diag[j] + 1e-7)).sum();
        close("tic_diag", r["tic_diag"].as_f64().unwrap(), tic, 1e-5);
        let tic_trace = (0..dim).map(second).sum::<f64>() / (diag.iter().sum::<f64>() + 1e-7);
        close(
            "tic_trace",
            r["tic_trace"].as_f64().unwrap(),
            tic_trace,
            1e-6,
        );
        close(
            "hess_max_ev",
            r["hess_max_ev"].as_f64().unwrap(),
            eigen(&h, dim).0[0],
            1e-6,
        );

        // Histograms counted by hand.
        let mut h1 = vec![0u64; 100];
        let mut h2 = vec![vec![0u64; 50]; 40];
        let theta = flat(p);
        for gn in &g_n {
            for (j, &v) in gn.iter().enumerate() {
                let bin = (((v.clamp(-2.0, 2.0) + 2.0) / 4.0 * 100.0) as usize).min(99);
                h1[bin] += 1;
                let xb = ((v.clamp(-1.0 + 1.0 / 40.0, 1.0 - 1.0 / 40.0) + 1.0) / 0.05) as usize;
                let yb = ((theta[j].clamp(-2.0 + 0.04, 2.0 - 0.04) + 2.0) / 0.08) as usize;
                h2[xb][yb] += 1;
            }
        }
        assert!(
            h1.iter().filter(|&&c| c > 0).count() > 10,
            "the histogram spreads"
        );
        assert_eq!(counts(&r["grad_hist_1d"]["counts"]), h1);
        let rows: Vec<Vec<u64>> = r["grad_hist_2d"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(counts)
            .collect();
        assert_eq!(rows, h2);
    }
    // α of step 0 from the observations at both ends, projected by hand.
    let d0: Vec<f64> = flat(&history[1])
        .iter()
        .zip(flat(&history[0]))
        .map(|(a, b)| a - b)
        .collect();
    let length = dot(&d0, &d0).sqrt();
    let observe = |p: &ParamStore| {
        let (terms, g_n) = per_sample(&obj, p, &d);
        let slopes: Vec<f64> = g_n.iter().map(|gn| dot(gn, &d0) / length).collect();
        alpha::observe(terms.iter().sum::<f64>() / b, &terms, &slopes)
    };
    let want = alpha::alpha(length, observe(&history[0]), observe(&history[1])).unwrap();
    close("alpha", records[0]["alpha"].as_f64().unwrap(), want, 1e-9);
    assert!(
        records[1].get("alpha").is_none(),
        "the last step has no end point"
    );
}

/// The GGN `(1/N) Σ_n J_nᵀ (diag p_n − p_n p_nᵀ) J_n` of the mean
/// cross-entropy, with Jacobians by central differences.
fn fd_ggn(obj: &Objective, p: &ParamStore, d: &Dataset) -> Vec<f64> {
    let theta = flat(p);
    let dim = theta.len();
    let n = d.len();
    let forward = obj.program(n, false).unwrap();
    let batch = d.batches(n).unwrap().next().unwrap();
    let (x, y) = obj.batch_tensors(&batch).unwrap();
    let mut q = p.clone();
    let mut outputs = |t: &[f64]| {
        set_flat(&mut q, t);
        forward
            .run(&q, x.clone(), y.clone())
            .unwrap()
            .output
            .to_f64_vec()
    };
    let f = outputs(&theta);
    let c = f.len() / n;
    let mut jac = vec![0.0; n * c * dim];
    for j in 0..dim {
        let (mut plus, mut minus) = (theta.clone(), theta.clone());
        plus[j] += 1e-6;
        minus[j] -= 1e-6;
        let (fp, fm) = (outputs(&plus), outputs(&minus));
        for r in 0..n * c {
            jac[r * dim + j] = (fp[r] - fm[r]) / 2e-6;
        }
    }
    let mut g = vec![0.0; dim * dim];
    for s in 0..n {
        let logits = &f[s * c..(s + 1) * c];
        let m = logits.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let e: Vec<f64> = logits.iter().map(|v| (v - m).exp()).collect();
        let z: f64 = e.iter().sum();
        let pr: Vec<f64> = e.iter().map(|v| v / z).collect();
        for a in 0..c {
            for bb in 0..c {
                let hab = if a == bb { pr[a] } else { 0.0 } - pr[a] * pr[bb];
                for i in 0..dim {
                    let ja = jac[(s * c + a) * dim + i] * hab;
                    for j in 0..dim {
                        g[i * dim + j] += ja * jac[(s * c + bb) * dim + j] / n as f64;
                    }
                }
            }
        }
    }
    g
}

/// Principal angles between two sets of orthonormal vectors, by the dense
/// eigendecomposition of `MᵀM`, `M = AᵀB`.
fn angles(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<f64> {
    let k = a.len();
    let m: Vec<f64> = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| dot(&a[i], &b[j]))
        .collect();
    let mtm: Vec<f64> = (0..k)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| (0..k).map(|r| m[r * k + i] * m[r * k + j]).sum())
        .collect();
    let mut out: Vec<f64> = eigen(&mtm, k)
        .0
        .iter()
        .map(|s| s.max(0.0).sqrt().min(1.0).acos())
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Solves `(A + λI) x = g` by the eigendecomposition of `A`.
fn damped_solve(a: &[f64], dim: usize, lambda: f64, g: &[f64]) -> Vec<f64> {
    let (values, vectors) = eigen(a, dim);
    let mut x = vec![0.0; dim];
    for (v, u) in values.iter().zip(&vectors) {
        let c = dot(u, g) / (v + lambda);
        x.iter_mut().zip(u).for_each(|(xi, ui)| *xi += c * ui);
    }
    x
}

#[test]
fn structure_measurements_equal_dense_computations() {
    let obj = objective();
    let probe = data(12, 2, 1.5);
    let config = MonitorConfig::parse("structure", 1).unwrap();
    let (records, history) = monitored_run(&obj, &config, &probe, Some(probe.clone()), 2);
    let c = 3;
    let dim = flat(&history[0]).len();
    let mut previous: Option<Vec<Vec<f64>>> = None;
    for (t, r) in records.iter().enumerate() {
        let p = &history[t];
        let (_, g_n) = per_sample(&obj, p, &probe);
        let g = mean_grad(&g_n);
        let (hv, hu) = eigen(&fd_hessian(&obj, p, &probe), dim);
        close_all(
            "hess_top_ev",
            &numbers(&r["hess_top_ev"]["eigenvalues"]),
            &hv[..2 * c],
            1e-5,
        );
        let outliers = secondo::monitor::structure::outliers(&hv[..2 * c]) as u64;
        assert_eq!(r["hess_top_ev"]["outliers"].as_u64(), Some(outliers));
        let fraction = hu[..c].iter().map(|u| dot(u, &g).powi(2)).sum::<f64>() / dot(&g, &g);
        close(
            "grad_top_space",
            r["grad_top_space"]["fraction"].as_f64().unwrap(),
            fraction,
            1e-4,
        );
        match &previous {
            None => assert!(r.get("top_space_rotation").is_none()),
            Some(prev) => close_all(
                "top_space_rotation",
                &numbers(&r["top_space_rotation"]["angles"]),
                &angles(prev, &hu[..c]),
                1e-3,
            ),
        }
        previous = Some(hu[..c].to_vec());

        let ggn = fd_ggn(&obj, p, &probe);
        let (gv, gu) = eigen(&ggn, dim);
        close_all(
            "ggn_top_ev",
            &numbers(&r["ggn_top_ev"]["eigenvalues"]),
            &gv[..2 * c],
            1e-5,
        );
        let outliers = secondo::monitor::structure::outliers(&gv[..2 * c]) as u64;
        assert_eq!(r["ggn_top_ev"]["outliers"].as_u64(), Some(outliers));

        // Class means: Σ_c π_c μ_c μ_cᵀ, dense.
        let labels: Vec<usize> = (0..probe.len()).map(|i| i % 3).collect();
        let mut m = vec![0.0; dim * dim];
        for class in 0..c {
            let members: Vec<&Vec<f64>> = g_n
                .iter()
                .zip(&labels)
                .filter(|(_, &l)| l == class)
                .map(|(g, _)| g)
                .collect();
            let pi = members.len() as f64 / probe.len() as f64;
            let mu = mean_grad(&members.iter().map(|v| v.to_vec()).collect::<Vec<_>>());
            for i in 0..dim {
                for j in 0..dim {
                    m[i * dim + j] += pi * mu[i] * mu[j];
                }
            }
        }
        let (mv, mu) = eigen(&m, dim);
        close_all(
            "ggn_class_means",
            &numbers(&r["ggn_class_means"]["eigenvalues"]),
            &mv[..c],
            1e-8,
        );
        let captured: f64 = mu[..c]
            .iter()
            .map(|q| gu[..c].iter().map(|v| dot(v, q).powi(2)).sum::<f64>())
            .sum();
        close(
            "top_overlap",
            r["ggn_class_means"]["top_overlap"].as_f64().unwrap(),
            captured / c as f64,
            1e-4,
        );

        // Empirical Fisher against the GGN, with the monitor's probes.
        let mut ef = vec![0.0; dim * dim];
        for gn in &g_n {
            for i in 0..dim {
                for j in 0..dim {
                    ef[i * dim + j] += gn[i] * gn[j] / probe.len() as f64;
                }
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let probes: Vec<f64> = (0..dim * 8)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect();
        let (mut num, mut den) = (0.0, 0.0);
        for v in probes.chunks(dim) {
            for i in 0..dim {
                let row = |a: &[f64]| dot(&a[i * dim..(i + 1) * dim], v);
                num += (row(&ef) - row(&ggn)).powi(2);
                den += row(&ggn).powi(2);
            }
        }
        close(
            "ef_ggn.frobenius",
            r["ef_ggn"]["frobenius"].as_f64().unwrap(),
            (num / den).sqrt(),
            1e-5,
        );
        let (_, eu) = eigen(&ef, dim);
        let overlap: f64 = eu[..c]
            .iter()
            .map(|a| gu[..c].iter().map(|b| dot(a, b).powi(2)).sum::<f64>())
            .sum::<f64>()
            / c as f64;
        close(
            "ef_ggn.overlap",
            r["ef_ggn"]["overlap"].as_f64().unwrap(),
            overlap,
            1e-4,
        );
        let lambda = 1e-2 * gv[0];
        let (x, y) = (
            damped_solve(&ef, dim, lambda, &g),
            damped_solve(&ggn, dim, lambda, &g),
        );
        let angle = (dot(&x, &y) / (dot(&x, &x) * dot(&y, &y)).sqrt())
            .clamp(-1.0, 1.0)
            .acos();
        close(
            "ef_ggn.step_angle",
            r["ef_ggn"]["step_angle"].as_f64().unwrap(),
            angle,
            1e-3,
        );

        let grid = numbers(&r["hess_density"]["grid"]);
        let values = numbers(&r["hess_density"]["values"]);
        let mass: f64 = grid
            .windows(2)
            .zip(values.windows(2))
            .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
            .sum();
        close("hess_density mass", mass, 1.0, 1e-2);
        assert!(
            grid[0] <= hv[dim - 1] && grid[grid.len() - 1] >= hv[0],
            "the grid covers the spectrum"
        );
    }
}

#[test]
fn configurations_have_cockpits_membership_and_schedules() {
    let names = |list: &str| MonitorConfig::parse(list, 1).unwrap().names();
    assert_eq!(
        names("economy"),
        [
            "loss",
            "grad_norm",
            "distance",
            "update_size",
            "alpha",
            "norm_test",
            "inner_test",
            "ortho_test",
            "grad_hist_1d"
        ]
    );
    assert_eq!(names("business").len(), 11);
    assert!(names("business").contains(&"tic_diag") && names("business").contains(&"hess_trace"));
    assert_eq!(names("full").len(), 13);
    assert!(names("full").contains(&"hess_max_ev") && names("full").contains(&"grad_hist_2d"));
    assert!(names("off").is_empty());
    let config = MonitorConfig::parse("economy,structure,hess_max_ev@4", 2).unwrap();
    let schedule = config.schedule(30);
    assert!(schedule.due(Instrument::Alpha, 2) && !schedule.due(Instrument::Alpha, 3));
    assert!(schedule.due(Instrument::HessMaxEv, 4) && !schedule.due(Instrument::HessMaxEv, 2));
    let checkpoints: Vec<usize> = (0..30)
        .filter(|&s| schedule.due(Instrument::HessTopEv, s))
        .collect();
    assert_eq!(checkpoints, [0, 10, 20, 29]);
    for bad in ["alpah", "economy@0", "loss@x"] {
        assert!(MonitorConfig::parse(bad, 1).is_err(), "{bad}");
    }
}

/// The reason `Monitor::check` refuses `list` on a model of `spec` with
/// `loss`, probed on `probe`.
fn refusal(spec: &str, input: usize, loss: &str, probe: Dataset, list: &str) -> String {
    let obj = Objective::from_config(&ObjectiveConfig {
        spec: spec.into(),
        input_shape: vec![input],
        loss: loss.into(),
        dtype: DType::F64,
        ..ObjectiveConfig::default()
    })
    .unwrap();
    let config = MonitorConfig::parse(list, 1).unwrap();
    let setup = MonitorSetup {
        config: &config,
        total_steps: 1,
        lr: LR,
        plain_sgd: true,
        probe: Some(probe),
        seed: 0,
    };
    Monitor::check(&obj, &setup).unwrap_err().to_string()
}

#[test]
fn class_means_need_classes() {
    let y = Targets::Values {
        values: vec![0.5; 16],
        width: 2,
    };
    let probe = Dataset::new(data(8, 1, 1.0).x, vec![6], y, "regression").unwrap();
    let err = refusal(
        "linear(6,5),tanh,linear(5,2)",
        6,
        "mse",
        probe,
        "ggn_class_means",
    );
    assert!(
        err.contains("class means need a classification loss"),
        "{err}"
    );
}

#[test]
fn top_eigenvalues_need_more_parameters_than_twice_the_classes() {
    let y = Targets::Classes {
        labels: vec![0, 1, 2],
        num_classes: 3,
    };
    let probe = Dataset::new(vec![0.1, 0.2, 0.3], vec![1], y, "tiny").unwrap();
    let err = refusal("linear(1,3)", 1, "cross_entropy", probe, "hess_top_ev");
    assert!(
        err.contains("need more than 6 parameters; the model has 6"),
        "{err}"
    );
}
