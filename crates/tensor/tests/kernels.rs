//! Kernels against naive loops.

mod common;

use common::{random, values};
use secondo_tensor::{einsum, BinaryOp, DType, EinsumSpec, ReduceOp, Tensor, UnaryOp};

/// Naive einsum by looping over every letter assignment.
fn naive_einsum(spec: &str, ops: &[&Tensor]) -> Vec<f64> {
    let (lhs, out) = spec.split_once("->").unwrap();
    let terms: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
    let out: Vec<char> = out.chars().collect();
    let mut letters: Vec<(char, usize)> = Vec::new();
    for (t, op) in terms.iter().zip(ops) {
        for (c, &d) in t.iter().zip(op.shape()) {
            if !letters.iter().any(|l| l.0 == *c) {
                letters.push((*c, d));
            }
        }
    }
    let out_sizes: Vec<usize> = out
        .iter()
        .map(|c| letters.iter().find(|l| l.0 == *c).unwrap().1)
        .collect();
    let mut result = vec![0.0; out_sizes.iter().product()];
    let data: Vec<Vec<f64>> = ops.iter().map(|t| t.to_f64_vec()).collect();
    let total: usize = letters.iter().map(|l| l.1).product();
    for flat in 0..total {
        let mut rem = flat;
        let mut val = vec![0usize; letters.len()];
        for (i, l) in letters.iter().enumerate().rev() {
            val[i] = rem % l.1;
            rem /= l.1;
        }
        let idx = |c: char| val[letters.iter().position(|l| l.0 == c).unwrap()];
        let mut prod = 1.0;
        for (k, t) in terms.iter().enumerate() {
            let shape = ops[k].shape();
            let mut off = 0;
            for (j, c) in t.iter().enumerate() {
                off = off * shape[j] + idx(*c);
            }
            prod *= data[k][off];
        }
        let mut off = 0;
        for (j, c) in out.iter().enumerate() {
            off = off * out_sizes[j] + idx(*c);
        }
        result[off] += prod;
    }
    result
}

#[test]
fn einsum_matches_naive_loops() {
    let cases: &[(&str, &[&[usize]])] = &[
        ("ij,jk->ik", &[&[3, 4], &[4, 5]]),
        ("ni,oi->no", &[&[6, 4], &[3, 4]]),
        ("no,ni->oi", &[&[6, 3], &[6, 4]]),
        ("no,ni->noi", &[&[5, 3], &[5, 4]]),
        ("no,ni->ion", &[&[5, 3], &[5, 4]]),
        ("bij,bjk->bik", &[&[2, 3, 4], &[2, 4, 5]]),
        ("ibj,kjb->bki", &[&[3, 2, 4], &[5, 4, 2]]),
        ("ij,jk->ki", &[&[3, 4], &[4, 5]]),
        ("ij,kl->ijkl", &[&[2, 3], &[2, 2]]),
        ("ij,ij->", &[&[3, 4], &[3, 4]]),
        ("ij,ij->i", &[&[3, 4], &[3, 4]]),
        ("ijk,k->j", &[&[3, 4, 2], &[2]]),
        ("ij->ji", &[&[3, 4]]),
        ("ijk->ki", &[&[2, 3, 4]]),
        ("ij,jk,kl->il", &[&[2, 3], &[3, 4], &[4, 2]]),
        ("no,ni,no,ni->n", &[&[4, 3], &[4, 2], &[4, 3], &[4, 2]]),
        ("a,b->ab", &[&[3], &[4]]),
        ("abcd,cd->ab", &[&[2, 3, 4, 5], &[4, 5]]),
        ("abcd,dc->ba", &[&[2, 3, 4, 5], &[5, 4]]),
        // Products summed over leading axes (one pass per leading index).
        ("cnh,cnh->nh", &[&[3, 4, 5], &[3, 4, 5]]),
        ("abc,abc->c", &[&[2, 3, 4], &[2, 3, 4]]),
        ("ab,ab->ab", &[&[3, 4], &[3, 4]]),
        // Empty contractions: sums of nothing.
        ("ij,jk->ik", &[&[3, 0], &[0, 4]]),
        ("bij,bjk->bik", &[&[2, 3, 0], &[2, 0, 4]]),
    ];
    for (k, (spec, shapes)) in cases.iter().enumerate() {
        for dtype in [DType::F64, DType::F32] {
            let ops: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| random(s, (k * 10 + i) as u64, dtype))
                .collect();
            let refs: Vec<&Tensor> = ops.iter().collect();
            let got = einsum(spec, &refs).unwrap();
            let want = naive_einsum(spec, &refs);
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            for (g, w) in got.to_f64_vec().iter().zip(&want) {
                assert!(
                    (g - w).abs() <= tol * (1.0 + w.abs()),
                    "{spec} {dtype}: {g} vs {w}"
                );
            }
            assert_eq!(got.numel(), want.len(), "{spec}");
        }
    }
}

/// Products large enough to be split: by output blocks, and along a sum
/// much longer than the outputs (a convolution's weight gradient, with an
/// odd length so the last slice is shorter).
#[test]
fn large_gemm_matches_naive() {
    let cases: &[(&str, &[usize], &[usize])] = &[
        ("ij,jk->ik", &[70, 90], &[90, 60]),
        ("ij,jk->ik", &[7, 3001], &[3001, 9]),
        ("nol,nli->oi", &[16, 24, 301], &[16, 301, 50]),
    ];
    for &(spec, sa, sb) in cases {
        let a = random(sa, 1, DType::F64);
        let b = random(sb, 2, DType::F64);
        let got = einsum(spec, &[&a, &b]).unwrap().to_f64_vec();
        let want = naive_einsum(spec, &[&a, &b]);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-10 * w.abs().max(1.0),
                "{spec}: {g} vs {w}"
            );
        }
    }
}

/// One operand times its own transpose takes the symmetric path (half the
/// products, mirrored): it equals the naive loops and is exactly symmetric,
/// at sizes below, at and across the recursion's leaf size.
#[test]
fn symmetric_products_match_naive_loops() {
    let cases: &[(&str, &[usize], usize)] = &[
        ("ni,nj->ij", &[7, 5], 5),
        ("ni,nj->ij", &[30, 96], 96),
        ("ni,nj->ij", &[19, 97], 97),
        ("ni,nj->ij", &[11, 250], 250),
        ("kno,knp->op", &[3, 4, 130], 130),
        ("in,jn->ij", &[200, 9], 200),
    ];
    for (k, &(spec, shape, m)) in cases.iter().enumerate() {
        let a = random(shape, 40 + k as u64, DType::F64);
        let got = einsum(spec, &[&a, &a]).unwrap().to_f64_vec();
        let want = naive_einsum(spec, &[&a, &a]);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{spec} {shape:?}");
        }
        for i in 0..m {
            for j in 0..i {
                assert_eq!(got[i * m + j], got[j * m + i], "{spec} {shape:?}");
            }
        }
    }
}

#[test]
fn einsum_rejects_bad_operands() {
    let a = random(&[2, 3], 1, DType::F64);
    let b = random(&[4, 5], 1, DType::F64);
    assert!(einsum("ij,jk->ik", &[&a, &b]).is_err());
    assert!(einsum("ij->ik", &[&a]).is_err());
    assert!(einsum("ijk->i", &[&a]).is_err());
    let c = random(&[3, 2], 1, DType::F32);
    assert!(einsum("ij,jk->ik", &[&a, &c]).is_err());
}

/// FLOP counts follow the pairwise order the evaluation takes: squares formed
/// on the way are elementwise (not counted), a chain is contracted from its
/// end with the smaller result, an operand against itself counts each mirrored pair once.
#[test]
fn einsum_flops_follow_the_evaluation_order() {
    let flops = |spec: &str, shapes: &[&[usize]], ids: &[usize]| {
        spec.parse::<EinsumSpec>()
            .unwrap()
            .flops(shapes, ids)
            .unwrap()
    };
    let (b, o, i) = (9u64, 20u64, 30u64);
    let squares = flops(
        "bao,bai,bco,bci->oi",
        &[&[9, 1, 20], &[9, 1, 30], &[9, 1, 20], &[9, 1, 30]],
        &[0, 1, 2, 1],
    );
    assert_eq!(squares, 2 * b * o * i);
    // (2×3)(3×50)(50×4): the smaller result first, (3×50)(50×4) = 3×4.
    assert_eq!(
        flops("ij,jk,kl->il", &[&[2, 3], &[3, 50], &[50, 4]], &[0, 1, 2]),
        2 * (3 * 50 * 4 + 2 * 3 * 4)
    );
    assert_eq!(
        flops("ni,nj->ij", &[&[7, 16], &[7, 16]], &[3, 3]),
        2 * (16 * 17 / 2) * 7
    );
    assert_eq!(
        flops("ni,nj->ij", &[&[7, 16], &[7, 16]], &[3, 4]),
        2 * 16 * 16 * 7
    );
    assert_eq!(flops("ni,ni->ni", &[&[7, 16], &[7, 16]], &[0, 1]), 0);
    let spec: EinsumSpec = "ij,jk->ik".parse().unwrap();
    assert!(spec.flops(&[&[2, 3], &[3, 4]], &[0]).is_err());
    assert!(spec.flops(&[&[2, 3], &[4, 4]], &[0, 1]).is_err());
}

#[test]
fn reductions_over_any_axes() {
    let t = random(&[3, 4, 5], 7, DType::F64);
    let v = t.to_f64_vec();
    let s = ReduceOp::Sum.apply(&t, &[0, 2]).unwrap();
    for j in 0..4 {
        let want: f64 = (0..3)
            .flat_map(|i| (0..5).map(move |k| (i, k)))
            .map(|(i, k)| v[i * 20 + j * 5 + k])
            .sum();
        assert!((s.to_f64_vec()[j] - want).abs() < 1e-12);
    }
    let m = ReduceOp::Max.apply(&t, &[1]).unwrap();
    assert_eq!(m.shape(), &[3, 5]);
    for i in 0..3 {
        for k in 0..5 {
            let want = (0..4)
                .map(|j| v[i * 20 + j * 5 + k])
                .fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(m.to_f64_vec()[i * 5 + k], want);
        }
    }
    assert!(ReduceOp::Sum.apply(&t, &[3]).is_err());
    assert!(ReduceOp::Sum.apply(&t, &[1, 1]).is_err());
}

#[test]
fn elementwise_and_shape_ops() {
    let t = random(&[300, 300], 3, DType::F64);
    let e = UnaryOp::Exp.apply(t.clone());
    for (a, b) in t.to_f64_vec().iter().zip(e.to_f64_vec()) {
        assert_eq!(a.exp(), b);
    }
    let d = BinaryOp::Sub.apply(t.clone(), t.clone()).unwrap();
    assert!(d.to_f64_vec().iter().all(|&x| x == 0.0));
    let p = t.permute(&[1, 0]).unwrap();
    assert_eq!(p.to_f64_vec()[1], t.to_f64_vec()[300]);
    let b = Tensor::from_vec(vec![3, 1], vec![1.0f64, 2.0, 3.0]).unwrap();
    assert_eq!(
        b.broadcast_to(&[2, 3, 2]).unwrap().to_f64_vec(),
        vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    );
    assert!(b.broadcast_to(&[2, 2]).is_err());
    assert!(t.permute(&[0, 0]).is_err());
    assert!(BinaryOp::Add
        .apply(t.clone(), t.to_dtype(DType::F32))
        .is_err());
}

/// A condition over trailing axes picks as if broadcast over the leading ones,
/// with tensor or single-element branches, at sizes that run serially and in
/// parallel; a condition that is not a suffix of the result's shape is refused.
#[test]
fn select_repeats_a_condition_over_leading_axes() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4, 5], &[4, 5]),
        (&[3, 200, 160], &[200, 160]),
        (&[2, 300, 200], &[2, 300, 200]),
    ];
    for (k, &(full, trailing)) in cases.iter().enumerate() {
        let n: usize = trailing.iter().product();
        let mask: Vec<f64> = values(n, 7 + k as u64)
            .iter()
            .map(|&v| f64::from(v > 0.0))
            .collect();
        let cond = Tensor::from_f64(trailing.to_vec(), &mask, DType::F64).unwrap();
        let a = random(full, 8, DType::F64);
        let b = random(full, 9, DType::F64);
        let s = Tensor::scalar(-3.0, DType::F64);
        for (x, y) in [(&a, &b), (&a, &s), (&s, &b)] {
            let got = Tensor::select(&cond, x, y).unwrap();
            assert_eq!(got.shape(), full);
            let (xv, yv) = (x.to_f64_vec(), y.to_f64_vec());
            let at = |v: &[f64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            for (i, &g) in got.to_f64_vec().iter().enumerate() {
                let want = if mask[i % n] != 0.0 {
                    at(&xv, i)
                } else {
                    at(&yv, i)
                };
                assert_eq!(g, want, "{full:?} at {i}");
            }
        }
    }
    let a = random(&[3, 4, 5], 8, DType::F64);
    let not_suffix = random(&[3, 4], 10, DType::F64);
    assert!(Tensor::select(&not_suffix, &a, &a).is_err());
}

/// An operand over trailing axes repeats over the other's leading axes, on
/// either side, at sizes that run serially and in parallel.
#[test]
fn binary_ops_repeat_an_operand_over_leading_axes() {
    for (k, (full, trailing)) in [
        (vec![3, 4, 5], vec![4, 5]),
        (vec![300, 1, 256], vec![1, 256]),
    ]
    .into_iter()
    .enumerate()
    {
        let big = random(&full, 20 + k as u64, DType::F64);
        let small = random(&trailing, 30 + k as u64, DType::F64);
        let (bv, sv) = (big.to_f64_vec(), small.to_f64_vec());
        let n = sv.len();
        for op in [BinaryOp::Sub, BinaryOp::Div, BinaryOp::Max] {
            let f = |x: f64, y: f64| match op {
                BinaryOp::Sub => x - y,
                BinaryOp::Div => x / y,
                _ => x.max(y),
            };
            let left = op.apply(big.clone(), small.clone()).unwrap();
            let right = op.apply(small.clone(), big.clone()).unwrap();
            assert_eq!(left.shape(), full.as_slice());
            assert_eq!(right.shape(), full.as_slice());
            for (i, (l, r)) in left.to_f64_vec().iter().zip(right.to_f64_vec()).enumerate() {
                assert_eq!(*l, f(bv[i], sv[i % n]), "{op:?} {full:?} at {i}");
                assert_eq!(r, f(sv[i % n], bv[i]), "{op:?} {full:?} at {i}");
            }
        }
    }
}

/// Single elements with different numbers of axes give a result with the
/// most axes, as the graph's shape rules say.
#[test]
fn single_elements_keep_the_most_axes() {
    let one = |shape: &[usize]| Tensor::full(shape.to_vec(), 2.0, DType::F64);
    let got = BinaryOp::Mul.apply(one(&[1, 1]), one(&[1, 1, 1])).unwrap();
    assert_eq!(got.shape(), &[1, 1, 1]);
    let got = BinaryOp::Mul.apply(one(&[1, 1, 1]), one(&[1])).unwrap();
    assert_eq!(got.shape(), &[1, 1, 1]);
    let got = Tensor::select(&one(&[1, 1]), &one(&[1, 1, 1]), &one(&[])).unwrap();
    assert_eq!(got.shape(), &[1, 1, 1]);
    let got = Tensor::select(&one(&[1, 1]), &one(&[]), &one(&[])).unwrap();
    assert_eq!(got.shape(), &[1, 1]);
}
