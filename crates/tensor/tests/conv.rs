//! The fused convolution kernels against their definitions: `unfold`, a
//! contraction and `fold` (themselves checked against index loops).

mod common;

use common::random;
use secondo_tensor::{
    conv_forward, conv_input_grad, conv_sample_weight_grads, conv_weight_grad, einsum, fold,
    in_thread_pools, unfold, DType, Tensor, Window2d,
};

fn window(k: [usize; 2], s: [usize; 2], p: [usize; 2], d: [usize; 2]) -> Window2d {
    Window2d {
        kernel: k,
        stride: s,
        padding: p,
        dilation: d,
    }
}

/// Images, output channels and windows covering stride, padding, dilation,
/// non-square kernels, batches beyond the weight gradient's runs (11) and
/// images processed in several blocks of rows (32 channels of 64×64); the
/// unit-stride ones with at least 16 channels take the tap-by-tap path.
fn geometries() -> Vec<([usize; 4], usize, Window2d)> {
    vec![
        ([3, 2, 7, 6], 4, window([3, 3], [1, 1], [1, 1], [1, 1])),
        ([3, 16, 7, 6], 4, window([3, 3], [1, 1], [1, 1], [1, 1])),
        ([2, 17, 7, 6], 2, window([2, 3], [1, 1], [0, 2], [2, 1])),
        ([2, 3, 9, 8], 5, window([2, 3], [2, 1], [0, 1], [1, 2])),
        ([11, 2, 5, 5], 3, window([3, 2], [2, 3], [1, 0], [2, 1])),
        ([2, 1, 6, 6], 2, window([1, 1], [2, 2], [0, 0], [1, 1])),
        ([2, 32, 64, 64], 3, window([3, 3], [1, 1], [1, 1], [1, 1])),
    ]
}

/// The patches `[N, L, C·KH·KW]` of `x`.
fn rows(x: &Tensor, w: &Window2d) -> Tensor {
    let p = unfold(x, w, 0.0).unwrap();
    let s = p.shape().to_vec();
    p.reshape(vec![s[0], s[1] * s[2], s[3] * s[4] * s[5]])
        .unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    for (g, w) in got.to_f64_vec().iter().zip(want.to_f64_vec()) {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "{what}: {g} vs {w}"
        );
    }
}

#[test]
fn fused_kernels_equal_unfold_contract_fold() {
    for (k, (image, o, w)) in geometries().into_iter().enumerate() {
        let seed = 10 * k as u64;
        let x = random(&image, seed, DType::F64);
        let p = rows(&x, &w);
        let (l, i) = (p.shape()[1], p.shape()[2]);
        let weight = random(&[o, i], seed + 1, DType::F64);
        let g = random(&[image[0], o, l], seed + 2, DType::F64);
        let what = format!("{image:?} {w:?}");

        let forward = einsum("nli,oi->nol", &[&p, &weight]).unwrap();
        assert_close(&conv_forward(&x, &weight, &w).unwrap(), &forward, &what);

        let weight_grad = einsum("nol,nli->oi", &[&g, &p]).unwrap();
        assert_close(&conv_weight_grad(&g, &x, &w).unwrap(), &weight_grad, &what);

        let sample_grads = einsum("nol,nli->noi", &[&g, &p]).unwrap();
        let got = conv_sample_weight_grads(&g, &x, &w).unwrap();
        assert_close(&got, &sample_grads, &what);

        let patches_grad = einsum("nol,oi->nli", &[&g, &weight]).unwrap();
        let s = unfold(&x, &w, 0.0).unwrap().shape().to_vec();
        let input_grad = fold(&patches_grad.reshape(s).unwrap(), &w, [image[2], image[3]]).unwrap();
        assert_close(
            &conv_input_grad(&g, &weight, &w, &image).unwrap(),
            &input_grad,
            &what,
        );
    }
}

#[test]
fn fused_kernels_do_not_depend_on_the_thread_count() {
    for (k, (image, o, w)) in geometries().into_iter().enumerate().take(5) {
        let x = random(&image, k as u64, DType::F32);
        let p = rows(&x, &w);
        let weight = random(&[o, p.shape()[2]], 2, DType::F32);
        let g = random(&[image[0], o, p.shape()[1]], 3, DType::F32);
        let bits = |t: Tensor| -> Vec<u32> {
            t.to_f64_vec()
                .iter()
                .map(|&v| (v as f32).to_bits())
                .collect()
        };
        let runs = in_thread_pools(&[1, 2, 3], || {
            (
                bits(conv_forward(&x, &weight, &w).unwrap()),
                bits(conv_weight_grad(&g, &x, &w).unwrap()),
                bits(conv_sample_weight_grads(&g, &x, &w).unwrap()),
                bits(conv_input_grad(&g, &weight, &w, &image).unwrap()),
            )
        });
        assert!(runs.iter().all(|r| *r == runs[0]), "{image:?} {w:?}");
    }
}

#[test]
fn mismatched_operands_are_refused() {
    let w = window([3, 3], [1, 1], [0, 0], [1, 1]);
    let x = random(&[2, 3, 5, 5], 1, DType::F64);
    let e = conv_forward(&x, &random(&[4, 26], 2, DType::F64), &w).unwrap_err();
    assert!(e.to_string().contains("weight is [4, 27]"), "{e}");
    let e = conv_weight_grad(&random(&[2, 4, 8], 3, DType::F64), &x, &w).unwrap_err();
    assert!(e.to_string().contains("output is [2, 4, 9]"), "{e}");
    let e = conv_sample_weight_grads(&random(&[2, 4, 8], 3, DType::F64), &x, &w).unwrap_err();
    assert!(e.to_string().contains("output is [2, 4, 9]"), "{e}");
    assert!(conv_forward(
        &random(&[3, 5, 5], 1, DType::F64),
        &random(&[4, 27], 2, DType::F64),
        &w
    )
    .is_err());
    let small = window([7, 7], [1, 1], [0, 0], [1, 1]);
    assert!(conv_input_grad(
        &random(&[2, 4, 1], 3, DType::F64),
        &random(&[4, 147], 2, DType::F64),
        &small,
        &[2, 3, 5, 5]
    )
    .is_err());
}
