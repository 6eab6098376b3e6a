//! Products give the same bits whatever the size of the rayon pool they run
//! in: at sizes above the parallel threshold, at odd sizes, with either output
//! dimension the larger, batched, and symmetric (docs/ARCHITECTURE.md,
//! "Determinism").

mod common;

use common::random;
use secondo_tensor::{einsum, in_thread_pools, DType, Tensor};

const POOLS: [usize; 4] = [1, 2, 3, 4];

/// The bits of every element.
fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec().iter().map(|x| x.to_bits()).collect()
}

/// Asserts that `spec` on `operands` gives the same bits in every pool of [`POOLS`].
fn assert_thread_independent(spec: &str, operands: &[&Tensor]) {
    let results = in_thread_pools(&POOLS, || bits(&einsum(spec, operands).unwrap()));
    for (threads, r) in POOLS.iter().zip(&results).skip(1) {
        let shapes: Vec<&[usize]> = operands.iter().map(|t| t.shape()).collect();
        assert!(
            r == &results[0],
            "{spec} {shapes:?} {}: {threads} threads differ from 1",
            operands[0].dtype()
        );
    }
}

#[test]
fn products_do_not_depend_on_the_thread_count() {
    let cases: &[(&str, &[&[usize]])] = &[
        // A layer's forward pass and its weight gradient (transposed operands).
        ("ni,io->no", &[&[128, 784], &[784, 256]]),
        ("no,ni->oi", &[&[128, 256], &[128, 784]]),
        // Odd sizes, the rows or the columns the larger.
        ("ij,jk->ik", &[&[97, 131], &[131, 203]]),
        ("ij,jk->ik", &[&[1003, 67], &[67, 33]]),
        ("ij,kj->ik", &[&[61, 515], &[29, 515]]),
        ("ij,jk->ik", &[&[128, 1000], &[1000, 10]]),
        // A convolution's unfolded patches times its kernel.
        ("nkp,ok->nop", &[&[16, 27, 196], &[32, 27]]),
        // Its weight gradient: a sum much longer than the outputs.
        ("nol,nli->oi", &[&[16, 24, 301], &[16, 301, 50]]),
        ("ij,jk->ik", &[&[7, 3001], &[3001, 9]]),
        // A matrix times a vector, and batched products.
        ("ij,j->i", &[&[700, 501], &[501]]),
        ("i,ij->j", &[&[501], &[501, 700]]),
        ("bij,bjk->bik", &[&[6, 64, 48], &[6, 48, 80]]),
        ("bij,bjk->bik", &[&[2, 130, 70], &[2, 70, 90]]),
    ];
    for (k, (spec, shapes)) in cases.iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            let ops: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| random(s, (10 * k + i) as u64, dtype))
                .collect();
            let refs: Vec<&Tensor> = ops.iter().collect();
            assert_thread_independent(spec, &refs);
        }
    }
}

#[test]
fn symmetric_products_do_not_depend_on_the_thread_count() {
    for (k, shape) in [[128, 300], [77, 259], [40, 97]].iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            let a = random(shape, 100 + k as u64, dtype);
            assert_thread_independent("ni,nj->ij", &[&a, &a]);
        }
    }
}
