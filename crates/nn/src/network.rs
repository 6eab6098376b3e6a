//! A sequential network from a model spec, built as a graph.

use secondo_graph::{Builder, Var};

use crate::spec::{self, Layer, ModelSpec, ParamInfo};
use crate::{activation, NnError};

/// A sequential network: its spec, per-sample input shape and parameters.
///
/// ```
/// use secondo_graph::Builder;
/// use secondo_nn::{spec::ModelSpec, Network};
/// use secondo_tensor::DType;
/// let spec: ModelSpec = "linear(4,8),relu,linear(8,3)".parse().unwrap();
/// let net = Network::new(spec, &[4]).unwrap();
/// assert_eq!(net.output_shape(), &[3]);
/// let b = Builder::new(DType::F32);
/// let x = b.input("x", &[5, 4]);
/// let params = net.param_vars(&b);
/// assert_eq!(net.forward(x, &params).unwrap().shape(), vec![5, 3]);
/// ```
#[derive(Debug, Clone)]
pub struct Network {
    spec: ModelSpec,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    params: Vec<ParamInfo>,
}

impl Network {
    /// Checks that the layers fit together on per-sample inputs of `input_shape`
    /// and that every layer can be built.
    ///
    /// ```
    /// use secondo_nn::{spec::ModelSpec, Network};
    /// let spec: ModelSpec = "linear(4,8),linear(9,3)".parse().unwrap();
    /// assert!(Network::new(spec, &[4]).is_err());
    /// ```
    pub fn new(spec: ModelSpec, input_shape: &[usize]) -> Result<Network, NnError> {
        let shapes = spec.output_shapes(input_shape)?;
        for (index, l) in spec.layers().iter().enumerate() {
            if matches!(
                l.layer,
                Layer::Conv2d { .. }
                    | Layer::MaxPool2d { .. }
                    | Layer::AvgPool2d { .. }
                    | Layer::AdaptiveAvgPool2d { .. }
                    | Layer::BatchNorm1d { .. }
                    | Layer::BatchNorm2d { .. }
                    | Layer::LayerNorm { .. }
                    | Layer::Residual { .. }
            ) {
                return Err(NnError::Unsupported {
                    index,
                    text: spec::one_line(&l.text),
                    reason: "this layer is not supported yet (dense layers and activations are)"
                        .into(),
                });
            }
        }
        let output_shape = shapes
            .last()
            .cloned()
            .unwrap_or_else(|| input_shape.to_vec());
        Ok(Network {
            params: spec.parameters(),
            spec,
            input_shape: input_shape.to_vec(),
            output_shape,
        })
    }

    /// The spec.
    ///
    /// ```
    /// # use secondo_nn::{spec::ModelSpec, Network};
    /// let net = Network::new("linear(2,1)".parse().unwrap(), &[2]).unwrap();
    /// assert_eq!(net.spec().to_string(), "linear(2,1)");
    /// ```
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Per-sample input shape.
    ///
    /// ```
    /// # use secondo_nn::{spec::ModelSpec, Network};
    /// let net = Network::new("linear(2,1)".parse().unwrap(), &[2]).unwrap();
    /// assert_eq!(net.input_shape(), &[2]);
    /// ```
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Per-sample output shape.
    ///
    /// ```
    /// # use secondo_nn::{spec::ModelSpec, Network};
    /// let net = Network::new("linear(2,1)".parse().unwrap(), &[2]).unwrap();
    /// assert_eq!(net.output_shape(), &[1]);
    /// ```
    pub fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    /// Parameters in `state_dict` order.
    ///
    /// ```
    /// # use secondo_nn::{spec::ModelSpec, Network};
    /// let net = Network::new("linear(2,1)".parse().unwrap(), &[2]).unwrap();
    /// assert_eq!(net.params()[1].name, "0.bias");
    /// ```
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// One parameter node per parameter, in order.
    ///
    /// ```
    /// # use secondo_nn::{spec::ModelSpec, Network};
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let net = Network::new("linear(2,1)".parse().unwrap(), &[2]).unwrap();
    /// let b = Builder::new(DType::F64);
    /// assert_eq!(net.param_vars(&b).len(), 2);
    /// ```
    pub fn param_vars<'b>(&self, b: &'b Builder) -> Vec<Var<'b>> {
        self.params
            .iter()
            .map(|p| b.param(&p.name, &p.shape))
            .collect()
    }

    /// The network applied to a batch `x` of shape `[N, input_shape...]`, with
    /// `params` as returned by [`Network::param_vars`].
    ///
    /// ```
    /// # use secondo_nn::{spec::ModelSpec, Network};
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let net = Network::new("linear(2,3),tanh".parse().unwrap(), &[2]).unwrap();
    /// let b = Builder::new(DType::F64);
    /// let y = net.forward(b.input("x", &[7, 2]), &net.param_vars(&b)).unwrap();
    /// assert_eq!(y.shape(), vec![7, 3]);
    /// ```
    pub fn forward<'b>(&self, x: Var<'b>, params: &[Var<'b>]) -> Result<Var<'b>, NnError> {
        self.forward_with_taps(x, params).map(|(out, _)| out)
    }

    /// [`Network::forward`], also returning the input and output node of every
    /// linear layer (what Kronecker factors are built from).
    ///
    /// ```
    /// # use secondo_nn::{spec::ModelSpec, Network};
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let net = Network::new("linear(2,3),tanh,linear(3,1)".parse().unwrap(), &[2]).unwrap();
    /// let b = Builder::new(DType::F64);
    /// let (_, taps) = net.forward_with_taps(b.input("x", &[7, 2]), &net.param_vars(&b)).unwrap();
    /// assert_eq!(taps.len(), 2);
    /// assert_eq!(taps[1].input.shape(), vec![7, 3]);
    /// ```
    pub fn forward_with_taps<'b>(
        &self,
        x: Var<'b>,
        params: &[Var<'b>],
    ) -> Result<(Var<'b>, Vec<LayerTap<'b>>), NnError> {
        let b = x.builder();
        let mut taps = Vec::new();
        let mut h = x;
        let mut next = 0;
        let mut take = || {
            let p = params.get(next).copied();
            next += 1;
            p.ok_or_else(|| NnError::Targets("fewer parameter nodes than parameters".into()))
        };
        for (index, l) in self.spec.layers().iter().enumerate() {
            if let Some(y) = activation(&l.layer, h) {
                h = y;
                continue;
            }
            h = match &l.layer {
                Layer::Linear { bias, .. } => {
                    let w = take()?;
                    let rank = h.shape().len();
                    let batch: String = "abcdefgh".chars().take(rank.saturating_sub(1)).collect();
                    let z = b.einsum(&format!("{batch}i,oi->{batch}o"), &[h, w]);
                    let z = if *bias { z + take()? } else { z };
                    taps.push(LayerTap {
                        layer: index,
                        input: h,
                        output: z,
                    });
                    z
                }
                Layer::Flatten => {
                    let shape = h.shape();
                    h.reshape(&[shape[0], shape[1..].iter().product()])
                }
                other => {
                    return Err(NnError::Unsupported {
                        index: 0,
                        text: format!("{other:?}"),
                        reason: "not supported yet".into(),
                    })
                }
            };
        }
        b.check()?;
        Ok((h, taps))
    }
}

/// The input and output nodes of one linear layer in a built network.
#[derive(Debug, Clone, Copy)]
pub struct LayerTap<'b> {
    /// Index of the layer in the spec (its parameters are `"<layer>.weight"`, `"<layer>.bias"`).
    pub layer: usize,
    /// The layer's input, `[N, in]`.
    pub input: Var<'b>,
    /// The layer's output (after the bias), `[N, out]`.
    pub output: Var<'b>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_that_cannot_be_built_yet_are_refused_in_one_line() {
        for (spec, input, message) in [
            (
                "linear(4,4),residual(linear(4,4),\nrelu)",
                &[4][..],
                "layer 1 `residual(linear(4,4), relu)`: this layer is not supported yet (dense layers and activations are)",
            ),
            (
                "conv2d(1,2,k=1,groups=1),adaptiveavgpool2d(1)",
                &[1, 3, 3],
                "layer 0 `conv2d(1,2,k=1,groups=1)`: this layer is not supported yet (dense layers and activations are)",
            ),
            (
                "adaptiveavgpool2d(1)",
                &[1, 3, 3],
                "layer 0 `adaptiveavgpool2d(1)`: this layer is not supported yet (dense layers and activations are)",
            ),
        ] {
            let parsed: ModelSpec = spec.parse().unwrap();
            let e = Network::new(parsed, input).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
    }
}
