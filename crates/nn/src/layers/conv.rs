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
/// ungrouped convolution is one matrix product per sample, `W [O, C·K·K]`
/// times the patches `[C·K·K, OH·OW]`, and records a tap on them; a grouped
/// one contracts per group.
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
    let (n, c, k) = (shape[0], shape[1], g.kernel);
    let (oh, ow) = (shape[4], shape[5]);
    let o = w.shape()[0];
    let z = if g.groups == 1 {
        let rows = patches.reshape(&[n, c * k * k, oh * ow]);
        let z = b.einsum("nil,oi->nol", &[rows, w.reshape(&[o, c * k * k])]);
        let z = match build.maybe_param(path, "bias") {
            Some(bias) => z + bias.reshape(&[o, 1]).broadcast_to(&[o, oh * ow]),
            None => z,
        };
        build.tap(path, rows, z);
        z
    } else {
        let gr = g.groups;
        let grouped = patches.reshape(&[n, gr, c / gr, k, k, oh, ow]);
        let wg = w.reshape(&[gr, o / gr, c / gr, k, k]);
        let z = b
            .einsum("ngcabij,gocab->ngoij", &[grouped, wg])
            .reshape(&[n, o, oh * ow]);
        match build.maybe_param(path, "bias") {
            Some(bias) => z + bias.reshape(&[o, 1]).broadcast_to(&[o, oh * ow]),
            None => z,
        }
    };
    Ok(z.reshape(&[n, o, oh, ow]))
}
