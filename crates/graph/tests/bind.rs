//! Binding some inputs folds what depends only on them into constants.

use secondo_graph::check::pseudo_random;
use secondo_graph::{Builder, Executable, Feeds};
use secondo_tensor::{DType, Tensor};

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), pseudo_random(n, seed)).unwrap()
}

/// A Hessian-vector product of a small two-layer network bound to its
/// weights and data gives the same products for every tangent, and holds
/// only the primal values the tangent part reads.
#[test]
fn bound_hessian_vector_products_equal_unbound_ones() {
    let b = Builder::new(DType::F64);
    let x = b.input("x", &[4, 3]);
    let w1 = b.param("w1", &[5, 3]);
    let w2 = b.param("w2", &[2, 5]);
    let h = b.einsum("ni,oi->no", &[x, w1]).tanh();
    let f = b.einsum("ni,oi->no", &[h, w2]);
    let loss = f.square().sum_all();
    let g = b.grad(loss, &[w1, w2]).unwrap();
    let (v1, v2) = (b.input("v1", &[5, 3]), b.input("v2", &[2, 5]));
    let hv = b.jvp(&g, &[w1, w2], &[v1, v2]).unwrap();
    let ids: Vec<usize> = hv.iter().map(|v| v.id()).collect();
    let exe = Executable::compile(&b.finish().unwrap(), &ids).unwrap();

    let mut fixed = Feeds::new();
    fixed.insert("x", tensor(&[4, 3], 1));
    fixed.insert("w1", tensor(&[5, 3], 2));
    fixed.insert("w2", tensor(&[2, 5], 3));
    let (bound, held) = exe.bind(&fixed).unwrap();
    assert!(held > 0);
    assert!(bound.graph().len() < exe.graph().len());
    for seed in [4, 5] {
        let mut all = fixed.clone();
        let mut tangents = Feeds::new();
        for (name, shape, s) in [("v1", [5, 3], seed), ("v2", [2, 5], seed + 10)] {
            all.insert(name, tensor(&shape, s));
            tangents.insert(name, tensor(&shape, s));
        }
        let want = exe.run(&all).unwrap();
        let got = bound.run(&tangents).unwrap();
        for (a, b) in want.iter().zip(&got) {
            assert_eq!(a.to_f64_vec(), b.to_f64_vec());
        }
    }
    // The bound inputs are no longer read; a wrongly shaped one is refused.
    let mut bad = Feeds::new();
    bad.insert("x", tensor(&[3, 3], 1));
    assert!(exe.bind(&bad).is_err());
}
