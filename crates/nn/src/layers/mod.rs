//! Building a model spec's layers as graph nodes, one module per layer
//! family: a layer's forward pass in training and evaluation mode, and the
//! nodes its curvature fast paths hook onto ([`LayerTap`]). Layers without
//! a fast path are differentiated by the generic transformations.

pub(crate) mod activation;
mod conv;
mod linear;
mod norm;
mod pool;

use std::collections::HashMap;

use secondo_graph::{Builder, Var};

use crate::spec::{Layer, LayerSpec};
use crate::NnError;

/// How normalization and dropout layers behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Running statistics, no dropout: each sample's output depends on that
    /// sample only (PyTorch's `model.eval()`).
    #[default]
    Eval,
    /// Batch statistics but no dropout: the function curvature operators
    /// see with `--batchnorm train` (curvlinops' convention: a deterministic
    /// function in which the batch couples the samples).
    BatchStatistics,
    /// Batch statistics and dropout masks (PyTorch's `model.train()`).
    Train,
}

impl Mode {
    /// Whether batch norms normalize with the batch's statistics.
    pub fn uses_batch_statistics(self) -> bool {
        self != Mode::Eval
    }
}

/// What a Kronecker-factored curvature block of a layer is built from: the
/// layer's input rows and its output, with a spatial axis for convolutions.
#[derive(Debug, Clone)]
pub struct LayerTap<'b> {
    /// The layer's state_dict path (`"2"`, `"3.body.0"`); its parameters are
    /// `"<layer>.weight"` and `"<layer>.bias"`.
    pub layer: String,
    /// Input rows: `[N, in]` for a linear layer; for a convolution the
    /// unfolded patches `[N, L, in·K·K]` at its `L` output positions.
    pub input: Var<'b>,
    /// The output, bias included: `[N, out]` (linear) or `[N, out, L]`
    /// (convolution, before it is shaped `[N, out, OH, OW]`).
    pub output: Var<'b>,
}

impl LayerTap<'_> {
    /// Whether the tap has a spatial axis (a convolution).
    pub fn is_spatial(&self) -> bool {
        self.input.shape().len() == 3
    }
}

/// A batch-norm layer's batch statistics in training mode, from which the
/// running statistics are updated.
#[derive(Debug, Clone)]
pub struct BatchStats<'b> {
    /// The layer's state_dict path.
    pub layer: String,
    /// Per-channel batch mean.
    pub mean: Var<'b>,
    /// Per-channel unbiased batch variance (what PyTorch's running variance
    /// averages).
    pub var: Var<'b>,
    /// How many values each channel's statistics are over.
    pub count: usize,
}

/// A dropout layer's mask input in training mode: 0/1 values of `shape`,
/// fed under `name`, kept with probability `1 − p`.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutMask {
    /// The input node's name.
    pub name: String,
    /// The mask's shape (the layer's input, batch axis included).
    pub shape: Vec<usize>,
    /// Drop probability.
    pub p: f64,
}

/// A built forward pass.
#[derive(Debug, Clone)]
pub struct Forward<'b> {
    /// The network's output.
    pub output: Var<'b>,
    /// Linear and (ungrouped) convolution layers' taps, in order.
    pub taps: Vec<LayerTap<'b>>,
    /// Batch-norm batch statistics (training mode only).
    pub stats: Vec<BatchStats<'b>>,
    /// Dropout masks to feed (training mode only).
    pub masks: Vec<DropoutMask>,
}

/// The state of one forward build: where parameters come from, the mode,
/// and what has been collected so far.
pub(crate) struct Build<'b, 'n> {
    pub(crate) builder: &'b Builder,
    pub(crate) params: &'n HashMap<&'n str, Var<'b>>,
    pub(crate) mode: Mode,
    pub(crate) taps: Vec<LayerTap<'b>>,
    pub(crate) stats: Vec<BatchStats<'b>>,
    pub(crate) masks: Vec<DropoutMask>,
}

impl<'b> Build<'b, '_> {
    /// The parameter node `<path>.<kind>`.
    pub(crate) fn param(&self, path: &str, kind: &str) -> Result<Var<'b>, NnError> {
        let name = format!("{path}.{kind}");
        self.params
            .get(name.as_str())
            .copied()
            .ok_or_else(|| NnError::Targets(format!("no parameter node for {name}")))
    }

    /// The optional parameter `<path>.<kind>`.
    pub(crate) fn maybe_param(&self, path: &str, kind: &str) -> Option<Var<'b>> {
        self.params.get(format!("{path}.{kind}").as_str()).copied()
    }

    /// The buffer `<path>.<kind>` as an input node of `shape`.
    pub(crate) fn buffer(&self, path: &str, kind: &str, shape: &[usize]) -> Var<'b> {
        self.builder.input(&format!("{path}.{kind}"), shape)
    }

    /// Records a tap for the layer at `path`.
    pub(crate) fn tap(&mut self, path: &str, input: Var<'b>, output: Var<'b>) {
        self.taps.push(LayerTap {
            layer: path.to_owned(),
            input,
            output,
        });
    }

    /// Applies `layers` in turn to `x`; the layer at index `i` has path
    /// `<prefix>i` (`prefix` empty at the top level, else ending in a dot).
    pub(crate) fn layers(
        &mut self,
        prefix: &str,
        layers: &[LayerSpec],
        mut x: Var<'b>,
    ) -> Result<Var<'b>, NnError> {
        for (index, spec) in layers.iter().enumerate() {
            x = self.layer(&format!("{prefix}{index}"), &spec.layer, x)?;
        }
        Ok(x)
    }

    /// One layer at `path` applied to `x` (`[N, ...]`).
    fn layer(&mut self, path: &str, layer: &Layer, x: Var<'b>) -> Result<Var<'b>, NnError> {
        if let Layer::Dropout { p } = layer {
            return Ok(self.dropout(path, x, *p));
        }
        if let Some(y) = activation::activation(layer, x) {
            return Ok(y);
        }
        Ok(match layer {
            Layer::Linear { .. } => linear::forward(self, path, x)?,
            Layer::Conv2d {
                kernel,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => conv::forward(
                self,
                path,
                x,
                conv::Geometry {
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                    dilation: *dilation,
                    groups: *groups,
                },
            )?,
            Layer::MaxPool2d {
                kernel,
                stride,
                padding,
            } => pool::max(x, *kernel, *stride, *padding),
            Layer::AvgPool2d {
                kernel,
                stride,
                padding,
            } => pool::average(x, *kernel, *stride, *padding),
            Layer::AdaptiveAvgPool2d { size } => pool::adaptive_average(x, *size),
            Layer::Flatten => {
                let shape = x.shape();
                x.reshape(&[shape[0], shape[1..].iter().product()])
            }
            Layer::BatchNorm1d { .. } | Layer::BatchNorm2d { .. } => {
                norm::batch_norm(self, path, x)?
            }
            Layer::LayerNorm { .. } => norm::layer_norm(self, path, x)?,
            Layer::Residual { body, shortcut } => {
                let main = self.layers(&format!("{path}.body."), body, x)?;
                let other = match shortcut {
                    Some(layers) => self.layers(&format!("{path}.shortcut."), layers, x)?,
                    None => x,
                };
                main + other
            }
            other => {
                return Err(NnError::Targets(format!(
                    "layer {path} `{other}` has no forward pass"
                )))
            }
        })
    }

    /// Dropout: in training mode `x ⊙ mask / (1 − p)` with a fed 0/1 mask;
    /// the identity otherwise.
    fn dropout(&mut self, path: &str, x: Var<'b>, p: f64) -> Var<'b> {
        if self.mode != Mode::Train || p == 0.0 {
            return x;
        }
        let mask = DropoutMask {
            name: format!("{path}.dropout_mask"),
            shape: x.shape(),
            p,
        };
        let m = self.builder.input(&mask.name, &mask.shape);
        self.masks.push(mask);
        x * m * (1.0 / (1.0 - p))
    }
}

#[cfg(test)]
mod tests {
    use secondo_graph::{Builder, Executable, Feeds};
    use secondo_tensor::{DType, Tensor};

    use crate::{Mode, Network};

    /// Dropout scales the kept units by `1/(1 − p)` in training (PyTorch's
    /// inverted dropout) and is the identity otherwise.
    #[test]
    fn dropout_masks_and_rescales_only_in_training() {
        let net = Network::new("dropout(0.25)".parse().unwrap(), &[4]).unwrap();
        for (mode, want) in [
            (Mode::Train, vec![0.0, 2.0 / 0.75, 0.0, 4.0 / 0.75]),
            (Mode::BatchStatistics, vec![1.0, 2.0, 3.0, 4.0]),
            (Mode::Eval, vec![1.0, 2.0, 3.0, 4.0]),
        ] {
            let b = Builder::new(DType::F64);
            let built = net.forward_with(b.input("x", &[1, 4]), &[], mode).unwrap();
            assert_eq!(built.masks.len(), usize::from(mode == Mode::Train));
            let exe = Executable::compile(&b.finish().unwrap(), &[built.output.id()]).unwrap();
            let mut feeds = Feeds::new();
            feeds.insert(
                "x",
                Tensor::from_vec(vec![1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
            );
            for m in &built.masks {
                assert_eq!((m.name.as_str(), m.p), ("0.dropout_mask", 0.25));
                feeds.insert(
                    &m.name,
                    Tensor::from_vec(vec![1, 4], vec![0.0, 1.0, 0.0, 1.0]).unwrap(),
                );
            }
            assert_eq!(exe.run(&feeds).unwrap()[0].to_f64_vec(), want, "{mode:?}");
        }
    }
}
