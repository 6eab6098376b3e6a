//! `conv2d`: a convolution as patch extraction (`unfold`) and a contraction,
//! so that its derivatives, per-sample gradients and KFAC's patch matrices
//! all come from the graph transformations.

use secondo_graph::Var;
use secondo_tensor::Window2d;

use super::Build;
use crate::NnError;

/// The hyperparameters the forward pass needs.
pub(crate) struct Geometry {
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) dilation: usize,
    pub(crate) groups: usize,
}

/// The layer at `path` on `x` `[N, C, H, W]`, giving `[N, O, OH, OW]`. An
/// ungrouped convolution is one matrix product per sample, `W` times its
/// patches `[OH·OW, C·K·K]ᵀ`, written straight into the `[N, O, OH·OW]`
/// layout the next layer reads (a product over all samples and positions
/// followed by a permutation cost a copy of the output forward and of its
/// gradient backward), and records a tap on them; a grouped one contracts
/// per group.
pub(crate) fn forward<'b>(
    build: &mut Build<'b, '_>,
    path: &str,
    x: Var<'b>,
    g: Geometry,
) -> Result<Var<'b>, NnError> {
    let b = build.builder;
    let w = build.param(path, "weight")?;
    let window = Window2d::square(g.kernel, g.stride, g.padding, g.dilation);
    let patches = x.unfold(window, 0.0);
    let shape = patches.shape();
    let (n, oh, ow, c, k) = (shape[0], shape[1], shape[2], shape[3], g.kernel);
    let (o, l, i) = (w.shape()[0], oh * ow, c * k * k);
    let rows = patches.reshape(&[n, l, i]);
    let z = if g.groups == 1 {
        b.einsum("nli,oi->nol", &[rows, w.reshape(&[o, i])])
    } else {
        let gr = g.groups;
        let grouped = rows.reshape(&[n, l, gr, i / gr]);
        let wg = w.reshape(&[gr, o / gr, i / gr]);
        b.einsum("nlgi,goi->ngol", &[grouped, wg])
            .reshape(&[n, o, l])
    };
    let z = match build.maybe_param(path, "bias") {
        Some(bias) => z + bias.reshape(&[o, 1]).broadcast_to(&[n, o, l]),
        None => z,
    };
    if g.groups == 1 {
        build.tap(path, rows, z);
    }
    Ok(z.reshape(&[n, o, oh, ow]))
}
