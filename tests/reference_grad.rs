//! Gradients equal PyTorch autograd's on committed fixtures
//! (scripts/reference/make_fixtures.py): every activation, loss and reduction.

mod common;

use common::{fixtures, relative_error, Fixture};
use secondo_tensor::DType;

#[test]
fn gradients_match_pytorch() {
    for path in fixtures("grad") {
        let f = Fixture::load(&path);
        let objective = f.objective();
        let params = f.params(&objective);
        let (x, y) = f.data();
        let n = x.shape()[0];
        let out = objective
            .program(n, true)
            .unwrap()
            .run(&params, x, y)
            .unwrap();
        let tol = if f.dtype() == DType::F32 { 1e-5 } else { 1e-10 };
        let want_loss = f.tensor("loss").item();
        assert!(
            (out.loss - want_loss).abs() <= tol * want_loss.abs().max(1.0),
            "{}: loss {} vs {want_loss}",
            path.display(),
            out.loss
        );
        for (info, g) in objective.network.params().iter().zip(&out.grads) {
            let want = f.tensor(&format!("grad/{}", info.name));
            let err = relative_error(g, &want.to_dtype(f.dtype()));
            assert!(
                err < tol,
                "{} {}: relative error {err:e}",
                path.display(),
                info.name
            );
        }
    }
}

#[test]
fn f32_and_f64_fixtures_both_present() {
    let names: Vec<String> = fixtures("grad")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"mlp_f32.safetensors".to_string()));
    assert!(names.contains(&"mlp_f64.safetensors".to_string()));
}
