//! secondo as a library: BackPACK's quantities and a Hessian-vector product
//! on a batch of the embedded digits (the README's example).
//!
//! Run with `cargo run --release --example library`.

use secondo::curvature::{compute_quantities, Curvature, CurvatureOperator, Quantity};
use secondo::nn::ParamStore;
use secondo::{Objective, ObjectiveConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    secondo::allocator::keep_freed_memory();
    let objective = Objective::from_config(&ObjectiveConfig {
        spec: "linear(64,32),relu,linear(32,10)".into(),
        input_shape: vec![64],
        ..ObjectiveConfig::default()
    })?;
    let params = ParamStore::init(objective.network.spec(), 0, objective.dtype);
    let digits = secondo::data::digits();
    let batch = digits.batches(128)?.next().ok_or("no batch")?;
    let (x, y) = objective.batch_tensors(&batch)?;

    // Any subset of quantities, computed together from one graph.
    let quantities = [Quantity::Variance, Quantity::DiagGgnExact, Quantity::Kflr];
    for (name, value) in compute_quantities(&objective, &params, &x, &y, &quantities, None)? {
        println!("{name:<28} shape {:?}", value.shape());
    }

    // The Hessian of the loss on the whole dataset (1,797 samples, batches of
    // 128) as a linear operator.
    let hessian =
        CurvatureOperator::new(&objective, &params, &digits, 128, Curvature::Hessian, None)?;
    let v = vec![1.0; params.numel()];
    let hv = hessian.apply(&v)?;
    println!(
        "vᵀHv = {:.6}",
        v.iter().zip(&hv).map(|(a, b)| a * b).sum::<f64>()
    );
    Ok(())
}
