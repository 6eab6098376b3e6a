//! The table of primitive cases: for every primitive, example operands and a
//! function built on them, each driven through every rule check — finite
//! differences of `jvp` and `vjp`, `vmap` against a loop over samples for
//! every subset of batched operands, and `⟨u, J v⟩ = ⟨Jᵀ u, v⟩`.
//!
//! [`cases_for`] matches every [`Kind`] without a wildcard and [`kind`] maps
//! every [`Op`] (and every unary, binary, reduction and patch op inside one)
//! to its kind without one either, so a new primitive does not compile until
//! it has cases; [`ALL`] is generated with [`Kind`], so the test walks every
//! kind. A case must contain its kind (checked), so cases cannot be filed
//! under the wrong primitive.

use secondo_tensor::{BinaryOp, DType, ReduceOp, Tensor, UnaryOp, Window2d};

use crate::check::{
    jvp_error_on, transpose_error_on, vjp_error_on, vmap_error_on, Leaf, VMAP_SIZE,
};
use crate::{Builder, ConvOp, GraphError, Op, PatchOp, PoolOp, Var};

macro_rules! kinds {
    ($($kind:ident),* $(,)?) => {
        /// One primitive: an [`Op`] variant, split by the unary, binary,
        /// reduction or patch op it carries.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Kind { $($kind),* }

        /// Every kind, generated with the enum so that none is left out.
        const ALL: &[Kind] = &[$(Kind::$kind),*];
    };
}

kinds!(
    Input,
    Param,
    Constant,
    OneHot,
    Neg,
    Exp,
    Log,
    Tanh,
    Erf,
    Powf,
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Gt,
    Ge,
    Lt,
    Eq,
    Where,
    Sum,
    MaxOver,
    Reshape,
    Permute,
    Broadcast,
    Einsum,
    Unfold,
    Fold,
    MaxPool,
    PoolSelect,
    PoolScatter,
    ConvForward,
    ConvInputGrad,
    ConvWeightGrad,
    ConvSampleWeightGrad,
);

/// The kind of an op.
fn kind(op: &Op) -> Kind {
    match op {
        Op::Input(_) => Kind::Input,
        Op::Param(_) => Kind::Param,
        Op::Constant(_) => Kind::Constant,
        Op::OneHot(_) => Kind::OneHot,
        Op::Unary(u) => match u {
            UnaryOp::Neg => Kind::Neg,
            UnaryOp::Exp => Kind::Exp,
            UnaryOp::Log => Kind::Log,
            UnaryOp::Tanh => Kind::Tanh,
            UnaryOp::Erf => Kind::Erf,
            UnaryOp::Powf(_) => Kind::Powf,
        },
        Op::Binary(b) => match b {
            BinaryOp::Add => Kind::Add,
            BinaryOp::Sub => Kind::Sub,
            BinaryOp::Mul => Kind::Mul,
            BinaryOp::Div => Kind::Div,
            BinaryOp::Max => Kind::Max,
            BinaryOp::Gt => Kind::Gt,
            BinaryOp::Ge => Kind::Ge,
            BinaryOp::Lt => Kind::Lt,
            BinaryOp::Eq => Kind::Eq,
        },
        Op::Where => Kind::Where,
        Op::Reduce(r, _) => match r {
            ReduceOp::Sum => Kind::Sum,
            ReduceOp::Max => Kind::MaxOver,
        },
        Op::Reshape => Kind::Reshape,
        Op::Permute(_) => Kind::Permute,
        Op::Broadcast => Kind::Broadcast,
        Op::Einsum(_) => Kind::Einsum,
        Op::Patches(p) => match p {
            PatchOp::Unfold { .. } => Kind::Unfold,
            PatchOp::Fold { .. } => Kind::Fold,
        },
        Op::Pool(p) => match p {
            PoolOp::Max(_) => Kind::MaxPool,
            PoolOp::Select(_) => Kind::PoolSelect,
            PoolOp::Scatter(_) => Kind::PoolScatter,
        },
        Op::Conv(c) => match c {
            ConvOp::Forward(_) => Kind::ConvForward,
            ConvOp::InputGrad { .. } => Kind::ConvInputGrad,
            ConvOp::WeightGrad(_) => Kind::ConvWeightGrad,
            ConvOp::SampleWeightGrad(_) => Kind::ConvSampleWeightGrad,
        },
    }
}

type Build = Box<dyn for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a>>;

/// A function of operands of the given shapes that exercises one primitive.
struct Case {
    name: &'static str,
    shapes: Vec<Vec<usize>>,
    /// How the operands are created (inputs, except for the parameter case).
    leaf: Leaf,
    build: Build,
}

/// A case on input operands.
fn case(
    name: &'static str,
    shapes: &[&[usize]],
    build: impl for<'a> Fn(&'a Builder, &[Var<'a>]) -> Var<'a> + 'static,
) -> Case {
    Case {
        name,
        shapes: shapes.iter().map(|s| s.to_vec()).collect(),
        leaf: Builder::input,
        build: Box::new(build),
    }
}

/// `op` applied to the operands as they are, bypassing the Builder's
/// broadcasting: the shorter operands the passes leave behind (a bias over
/// a batch's trailing axes, a condition over a `vmap`ped branch).
fn raw<'a>(b: &'a Builder, op: Op, operands: &[Var<'a>]) -> Var<'a> {
    b.push(op, operands.iter().map(|v| v.id()).collect(), None)
}

/// A padded, strided pooling window (3×3, stride 2, padding 1).
const POOL: Window2d = Window2d {
    kernel: [3, 3],
    stride: [2, 2],
    padding: [1, 1],
    dilation: [1, 1],
};

/// A window exercising every parameter: a non-square kernel, stride,
/// padding and dilation (on a 5×6 image: 3×4 positions).
const ODD: Window2d = Window2d {
    kernel: [2, 3],
    stride: [2, 1],
    padding: [1, 1],
    dilation: [1, 2],
};

/// The cases of one kind.
fn cases_for(kind: Kind) -> Vec<Case> {
    match kind {
        Kind::Input => vec![
            case("input", &[&[3, 2]], |_, x| x[0]),
            case("scalar input", &[&[]], |_, x| x[0]),
        ],
        Kind::Param => vec![Case {
            leaf: Builder::param,
            ..case("parameters", &[&[3], &[3]], |_, x| x[0] * x[1])
        }],
        Kind::Constant => vec![case(
            "scalar, full and constant",
            &[&[], &[4], &[]],
            |b, x| {
                let c =
                    b.constant(Tensor::from_vec(vec![4], vec![1.0f64, -2.0, 0.5, 3.0]).unwrap());
                (x[0] * c + x[1]) / (x[2] + 2.0)
            },
        )],
        Kind::OneHot => vec![
            case("one-hot weights", &[&[3, 3]], |b, x| {
                let labels = b.constant(Tensor::from_vec(vec![3], vec![2.0f64, 0.0, 1.0]).unwrap());
                (labels.one_hot(3) * x[0]).sum(&[1])
            }),
            case("one-hot of computed labels", &[&[3], &[3, 2]], |b, x| {
                (x[0].gt(b.scalar(0.0)).one_hot(2) * x[1]).sum(&[1])
            }),
            case("one-hot of a scalar label", &[&[], &[3]], |b, x| {
                x[0].gt(b.scalar(0.0)).one_hot(3) * x[1]
            }),
        ],
        Kind::Neg => vec![case("neg", &[&[3, 2]], |_, x| -x[0])],
        Kind::Exp => vec![
            case("exp", &[&[3, 2]], |_, x| x[0].exp()),
            case("exp of a scalar", &[&[]], |_, x| x[0].exp()),
        ],
        Kind::Log => vec![case("log", &[&[3, 2]], |_, x| (x[0].square() + 0.5).log())],
        Kind::Tanh => vec![case("tanh", &[&[3, 2]], |_, x| x[0].tanh())],
        Kind::Erf => vec![case("erf", &[&[3, 2]], |_, x| x[0].erf())],
        Kind::Powf => vec![
            case("cube", &[&[3, 2]], |_, x| x[0].powf(3.0)),
            case("square", &[&[4]], |_, x| x[0].square()),
            case("sqrt", &[&[4]], |_, x| (x[0].square() + 1.0).sqrt()),
            case("pow -1.5", &[&[4]], |_, x| (x[0].square() + 1.0).powf(-1.5)),
            case("pow 1", &[&[4]], |_, x| x[0].powf(1.0)),
            case("pow 0", &[&[4]], |_, x| x[0].powf(0.0) * x[0]),
        ],
        Kind::Add => vec![
            case("add", &[&[3, 2], &[3, 2]], |_, x| x[0] + x[1]),
            case("broadcast add", &[&[3, 2], &[2]], |_, x| x[0] + x[1]),
            case("scalars", &[&[], &[]], |_, x| x[0] * x[1] + x[1]),
        ],
        Kind::Sub => vec![
            case("sub", &[&[3, 2], &[3, 2]], |_, x| x[0] - x[1]),
            case("scalar operand", &[&[3, 2], &[]], |_, x| x[0] * x[1] - x[1]),
        ],
        Kind::Mul => vec![
            case("mul", &[&[3, 2], &[3, 2]], |_, x| x[0] * x[1]),
            case("broadcast mul", &[&[3, 1], &[1, 4]], |_, x| x[0] * x[1]),
            // The last axis is as long as the batch: a batched scalar
            // broadcast without first becoming [B, 1] would align with it.
            case("scalar next to [2, B]", &[&[], &[2, VMAP_SIZE]], |_, x| {
                x[0] * x[1]
            }),
            case("operand over trailing axes", &[&[3, 4], &[4]], |b, x| {
                raw(b, Op::Binary(BinaryOp::Mul), &[x[0], x[1]])
            }),
            case(
                "first operand over trailing axes",
                &[&[4], &[3, 4]],
                |b, x| raw(b, Op::Binary(BinaryOp::Mul), &[x[0], x[1]]),
            ),
        ],
        Kind::Div => vec![
            case("div", &[&[3, 2], &[3, 2]], |_, x| {
                x[0] / (x[1].square() + 0.5)
            }),
            case("scalar numerator", &[&[3, 2], &[]], |_, x| {
                x[1] / (x[0].square() + 1.0)
            }),
        ],
        Kind::Max => vec![
            case("max", &[&[3, 2], &[3, 2]], |_, x| x[0].max(x[1])),
            case("abs", &[&[5]], |_, x| x[0].abs()),
        ],
        Kind::Gt => vec![case("gt mask", &[&[5], &[5]], |_, x| x[0] * x[0].gt(x[1]))],
        Kind::Ge => vec![case("ge mask", &[&[5], &[5]], |_, x| {
            x[1] * x[0].binary(BinaryOp::Ge, x[1])
        })],
        Kind::Lt => vec![case("lt mask", &[&[5], &[5]], |_, x| {
            x[1] * x[0].binary(BinaryOp::Lt, x[1])
        })],
        Kind::Eq => vec![case("eq mask", &[&[5], &[5]], |_, x| x[0].eq(x[1]) + x[0])],
        Kind::Where => vec![
            case("where", &[&[6], &[6]], |b, x| {
                b.select(x[0].gt(x[1]), x[0].exp(), x[1].square())
            }),
            case("where scalar", &[&[6], &[]], |b, x| {
                b.select(x[0].gt(b.scalar(0.0)), x[0], x[1])
            }),
            case("where scalar condition", &[&[], &[4], &[]], |b, x| {
                b.select(x[0].gt(b.scalar(0.0)), x[1], x[2])
            }),
            case(
                "where with an unbatched scalar condition",
                &[&[], &[]],
                |b, x| b.select(x[0].gt(b.scalar(0.0)), x[1], b.scalar(2.0)),
            ),
            case("where of scalars", &[&[], &[]], |b, x| {
                b.select(x[0].gt(x[1]), x[0], x[1])
            }),
            case("condition over trailing axes", &[&[2], &[3, 2]], |b, x| {
                let c = x[0].gt(b.scalar(0.0));
                raw(b, Op::Where, &[c, x[1], b.scalar(0.0)])
            }),
        ],
        Kind::Sum => vec![
            case("sum axis 0", &[&[3, 4]], |_, x| x[0].sum(&[0])),
            case("sum axes 0, 2", &[&[2, 3, 4]], |_, x| x[0].sum(&[0, 2])),
            case("sum all", &[&[2, 3]], |_, x| x[0].sum_all()),
            case("mean", &[&[2, 3]], |_, x| x[0].mean(&[1])),
        ],
        Kind::MaxOver => vec![
            case("max over", &[&[3, 4]], |_, x| x[0].max_over(&[1])),
            case("softmax", &[&[5]], |_, x| {
                let e = (x[0] - x[0].max_over(&[0])).exp();
                e / e.sum_all()
            }),
        ],
        Kind::Reshape => vec![
            case("reshape", &[&[3, 4]], |_, x| x[0].reshape(&[6, 2]).exp()),
            case("reshape a scalar", &[&[]], |_, x| x[0].reshape(&[1, 1])),
        ],
        Kind::Permute => vec![case("permute", &[&[2, 3, 4]], |_, x| {
            x[0].permute(&[2, 0, 1]).tanh()
        })],
        Kind::Broadcast => vec![
            case("broadcast", &[&[3, 1]], |_, x| {
                x[0].broadcast_to(&[2, 3, 4]).tanh()
            }),
            case("broadcast leading axes", &[&[4], &[2, 3, 4]], |_, x| {
                x[0].broadcast_to(&[2, 3, 4]) * x[1]
            }),
            case("broadcast a scalar", &[&[]], |_, x| {
                x[0].broadcast_to(&[2, 3])
            }),
        ],
        Kind::Einsum => {
            let einsum = |name, spec: &'static str, shapes: &[&[usize]]| {
                case(name, shapes, move |b, x| b.einsum(spec, x))
            };
            vec![
                einsum("matmul", "ij,jk->ik", &[&[3, 4], &[4, 2]]),
                einsum("letter a taken", "ab,bc->ca", &[&[3, 4], &[4, 2]]),
                einsum("linear", "ni,oi->no", &[&[5, 3], &[2, 3]]),
                einsum("outer per sample", "no,ni->noi", &[&[3, 2], &[3, 4]]),
                einsum("private summed letter", "ij,k->i", &[&[3, 2], &[4]]),
                einsum(
                    "three operands",
                    "ij,jk,kl->il",
                    &[&[2, 3], &[3, 2], &[2, 2]],
                ),
                einsum("unary", "ijk->ki", &[&[2, 3, 4]]),
                einsum("full contraction", "i,i->", &[&[4], &[4]]),
                case("same operand twice", &[&[3, 2]], |b, x| {
                    b.einsum("ij,ij->i", &[x[0], x[0]])
                }),
            ]
        }
        Kind::Unfold => vec![
            case("unfold", &[&[2, 5, 6]], |_, x| {
                x[0].unfold(ODD, -1.5).tanh()
            }),
            case(
                "unfold with -inf padding, then max",
                &[&[2, 5, 5]],
                |_, x| {
                    let p = x[0].unfold(Window2d::square(3, 2, 1, 1), f64::NEG_INFINITY);
                    p.reshape(&[3, 3, 2, 9]).max_over(&[3]).square()
                },
            ),
            case(
                "convolution as unfold + einsum",
                &[&[2, 3, 4, 4], &[2, 3, 3, 3]],
                |b, x| {
                    let p = x[0].unfold(Window2d::square(3, 1, 1, 2), 0.0);
                    b.einsum("nijcab,ocab->noij", &[p, x[1]]).tanh()
                },
            ),
        ],
        Kind::Fold => vec![case("fold", &[&[3, 4, 2, 2, 3]], |_, x| {
            x[0].fold(ODD, [5, 6]).tanh()
        })],
        Kind::MaxPool => vec![
            case("max pool, padded", &[&[2, 5, 6]], |_, x| {
                x[0].max_pool(POOL).square()
            }),
            case("max pool, overlapping", &[&[2, 2, 5, 5]], |_, x| {
                x[0].max_pool(Window2d::square(3, 1, 0, 1)).tanh()
            }),
        ],
        Kind::PoolSelect => vec![
            case("select", &[&[2, 5, 6], &[2, 5, 6]], |b, x| {
                raw(b, Op::Pool(PoolOp::Select(POOL)), x).tanh()
            }),
            case(
                "select, the input repeated",
                &[&[2, 5, 6], &[3, 2, 5, 6]],
                |b, x| raw(b, Op::Pool(PoolOp::Select(POOL)), x) * x[1].max_pool(POOL),
            ),
        ],
        Kind::PoolScatter => vec![
            case("scatter", &[&[2, 5, 6], &[2, 3, 3]], |b, x| {
                raw(b, Op::Pool(PoolOp::Scatter(POOL)), x).tanh()
            }),
            case(
                "scatter, overlapping",
                &[&[2, 4, 4], &[3, 2, 2, 2]],
                |b, x| {
                    let w = Window2d::square(3, 1, 0, 1);
                    raw(b, Op::Pool(PoolOp::Scatter(w)), x).square()
                },
            ),
        ],
        Kind::ConvForward => vec![
            case("conv, odd window", &[&[2, 2, 5, 6], &[3, 12]], |b, x| {
                raw(b, Op::Conv(ConvOp::Forward(ODD)), x).tanh()
            }),
            case("conv, 3x3 padded", &[&[2, 3, 4, 4], &[2, 27]], |b, x| {
                let w = Window2d::square(3, 1, 1, 1);
                raw(b, Op::Conv(ConvOp::Forward(w)), x).tanh()
            }),
        ],
        Kind::ConvInputGrad => vec![case(
            "conv input gradient",
            &[&[2, 3, 12], &[3, 12]],
            |b, x| {
                let op = ConvOp::InputGrad {
                    window: ODD,
                    image: [5, 6],
                };
                raw(b, Op::Conv(op), x).tanh()
            },
        )],
        Kind::ConvWeightGrad => vec![case(
            "conv weight gradient",
            &[&[2, 3, 12], &[2, 2, 5, 6]],
            |b, x| raw(b, Op::Conv(ConvOp::WeightGrad(ODD)), x).tanh(),
        )],
        Kind::ConvSampleWeightGrad => vec![case(
            "conv per-sample weight gradients",
            &[&[2, 3, 12], &[2, 2, 5, 6]],
            |b, x| raw(b, Op::Conv(ConvOp::SampleWeightGrad(ODD)), x).tanh(),
        )],
    }
}

/// Central differences in f64 with a step of 1e-6 are good to about 1e-9.
const FD_TOL: f64 = 1e-7;
/// `vmap` and the loop differ only in the kernels' summation order.
const VMAP_TOL: f64 = 1e-12;
/// The two inner products round differently.
const TRANSPOSE_TOL: f64 = 1e-12;

/// The checks a case fails, one line each.
fn failures(kind: Kind, c: &Case) -> Vec<String> {
    let shapes: Vec<&[usize]> = c.shapes.iter().map(|s| s.as_slice()).collect();
    let f = &*c.build;
    let mut failed = Vec::new();
    let b = Builder::new(DType::F64);
    let xs: Vec<Var> = shapes.iter().map(|s| (c.leaf)(&b, "x", s)).collect();
    f(&b, &xs);
    if !b.graph().nodes().iter().any(|n| self::kind(&n.op) == kind) {
        failed.push(format!("{kind:?} '{}': builds no {kind:?} node", c.name));
    }
    let mut expect = |what: String, err: Result<f64, GraphError>, tol: f64| match err {
        Ok(e) if e < tol => {}
        Ok(e) => failed.push(format!("{kind:?} '{}': {what} error {e:e}", c.name)),
        Err(e) => failed.push(format!("{kind:?} '{}': {what}: {e}", c.name)),
    };
    for seed in 1..4 {
        let jvp = jvp_error_on(c.leaf, f, &shapes, seed);
        expect(format!("jvp (seed {seed})"), jvp, FD_TOL);
        let vjp = vjp_error_on(c.leaf, f, &shapes, seed);
        expect(format!("vjp (seed {seed})"), vjp, FD_TOL);
        let transpose = transpose_error_on(c.leaf, f, &shapes, seed);
        expect(format!("transpose (seed {seed})"), transpose, TRANSPOSE_TOL);
    }
    expect(
        "vmap".into(),
        vmap_error_on(c.leaf, f, &shapes, 1),
        VMAP_TOL,
    );
    failed
}

#[test]
fn every_primitive_passes_every_rule_check() {
    let mut failed = Vec::new();
    for &kind in ALL {
        let cases = cases_for(kind);
        if cases.is_empty() {
            failed.push(format!("{kind:?} has no cases"));
        }
        for c in &cases {
            failed.extend(failures(kind, c));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
