//! A sequential network from a model spec, built as a graph.

use secondo_graph::{Builder, Var};

use std::collections::HashMap;

use crate::layers::{Build, Forward, Mode};
use crate::spec::{ModelSpec, ParamInfo};
use crate::NnError;

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

    /// The network in evaluation mode applied to a batch `x` of shape `[N,
    /// input_shape...]`, with `params` as returned by [`Network::param_vars`].
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
        self.forward_with(x, params, Mode::Eval).map(|f| f.output)
    }

    /// The network in `mode` applied to a batch `x` of shape `[N,
    /// input_shape...]`, with `params` as returned by
    /// [`Network::param_vars`]: the output, the taps of the linear and
    /// ungrouped convolution layers (what Kronecker factors are built from),
    /// and in training mode the batch statistics and dropout masks. Buffers
    /// are input nodes named like the state_dict (`"1.running_mean"`).
    ///
    /// ```
    /// # use secondo_nn::{spec::ModelSpec, Mode, Network};
    /// # use secondo_graph::Builder;
    /// # use secondo_tensor::DType;
    /// let net = Network::new("linear(2,3),batchnorm1d(3),tanh,linear(3,1)".parse().unwrap(), &[2]).unwrap();
    /// let b = Builder::new(DType::F64);
    /// let built = net.forward_with(b.input("x", &[7, 2]), &net.param_vars(&b), Mode::Train).unwrap();
    /// assert_eq!(built.taps.len(), 2);
    /// assert_eq!(built.taps[1].input.shape(), vec![7, 3]);
    /// assert_eq!(built.stats[0].layer, "1");
    /// ```
    pub fn forward_with<'b>(
        &self,
        x: Var<'b>,
        params: &[Var<'b>],
        mode: Mode,
    ) -> Result<Forward<'b>, NnError> {
        if params.len() != self.params.len() {
            return Err(NnError::Targets(format!(
                "{} parameter nodes for {} parameters",
                params.len(),
                self.params.len()
            )));
        }
        let named: HashMap<&str, Var<'b>> = self
            .params
            .iter()
            .map(|p| p.name.as_str())
            .zip(params.iter().copied())
            .collect();
        let mut build = Build {
            builder: x.builder(),
            params: &named,
            mode,
            taps: Vec::new(),
            stats: Vec::new(),
            masks: Vec::new(),
        };
        let output = build.layers("", self.spec.layers(), x)?;
        x.builder().check()?;
        Ok(Forward {
            output,
            taps: build.taps,
            stats: build.stats,
            masks: build.masks,
        })
    }
}
