use std::collections::HashMap;

use secondo_tensor::{Tensor, TensorError};

use rayon::prelude::*;

use crate::passes::{
    eliminate_common_subexpressions, fuse_convolutions, fuse_einsum_reductions,
    group_independent_contractions, prune,
};
use crate::prims::{conv, einsum, elementwise, leaves, movement, patches, pool, reduce, Family};
use crate::{Graph, GraphError, NodeId, Op};

/// Named tensors for a graph's inputs and parameters.
///
/// ```
/// use secondo_graph::Feeds;
/// use secondo_tensor::{DType, Tensor};
/// let mut f = Feeds::new();
/// f.insert("x", Tensor::zeros(vec![2], DType::F32));
/// assert!(f.get("x").is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Feeds {
    map: HashMap<String, Tensor>,
}

impl Feeds {
    /// No feeds.
    ///
    /// ```
    /// assert!(secondo_graph::Feeds::new().get("x").is_none());
    /// ```
    pub fn new() -> Feeds {
        Feeds::default()
    }

    /// Sets (or replaces) a named tensor.
    ///
    /// ```
    /// # use secondo_graph::Feeds;
    /// # use secondo_tensor::{DType, Tensor};
    /// let mut f = Feeds::new();
    /// f.insert("w", Tensor::zeros(vec![1], DType::F64));
    /// ```
    pub fn insert(&mut self, name: &str, t: Tensor) {
        self.map.insert(name.to_string(), t);
    }

    /// The tensor fed under a name.
    ///
    /// ```
    /// # use secondo_graph::Feeds;
    /// assert!(Feeds::new().get("w").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }
}

/// A graph compiled for repeated execution: pruned to what the outputs need,
/// common subexpressions merged, with each buffer released (or reused in place)
/// after its last use.
///
/// ```
/// use secondo_graph::{Builder, Executable, Feeds};
/// use secondo_tensor::{DType, Tensor};
/// let b = Builder::new(DType::F32);
/// let x = b.input("x", &[2]);
/// let y = (x * 3.0).sum_all();
/// let exe = Executable::compile(&b.finish().unwrap(), &[y.id()]).unwrap();
/// let mut f = Feeds::new();
/// f.insert("x", Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap());
/// assert_eq!(exe.run(&f).unwrap()[0].item(), 9.0);
/// ```
#[derive(Debug, Clone)]
pub struct Executable {
    graph: Graph,
    outputs: Vec<NodeId>,
    last_use: Vec<usize>,
    /// Ranges of consecutive nodes that run at the same time.
    side_by_side: Vec<std::ops::Range<usize>>,
}

impl Executable {
    /// Optimises the graph for `outputs` and plans buffer lifetimes.
    ///
    /// ```
    /// # use secondo_graph::{Executable, Graph};
    /// assert!(Executable::compile(&Graph::new(), &[3]).is_err());
    /// ```
    pub fn compile(graph: &Graph, outputs: &[NodeId]) -> Result<Executable, GraphError> {
        if let Some(&bad) = outputs.iter().find(|&&o| o >= graph.len()) {
            return Err(GraphError::UnknownNode(bad));
        }
        let (pruned, outs) = prune(graph, outputs);
        let (merged, outs) = eliminate_common_subexpressions(&pruned, &outs);
        let (fused, outs) = fuse_einsum_reductions(&merged, &outs);
        let (pruned, outs) = prune(&fused, &outs);
        let (convs, outs) = fuse_convolutions(&pruned, &outs);
        let (pruned, outs) = prune(&convs, &outs);
        let (graph, outputs, side_by_side) = group_independent_contractions(&pruned, &outs);
        let mut last_use = vec![0usize; graph.len()];
        for (i, node) in graph.nodes().iter().enumerate() {
            for &j in &node.inputs {
                last_use[j] = i;
            }
        }
        for &o in &outputs {
            last_use[o] = usize::MAX;
        }
        Ok(Executable {
            graph,
            outputs,
            last_use,
            side_by_side,
        })
    }

    /// The optimised graph that runs.
    ///
    /// ```
    /// # use secondo_graph::{Builder, Executable};
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let x = b.input("x", &[2]);
    /// let exe = Executable::compile(&b.finish().unwrap(), &[x.id()]).unwrap();
    /// assert_eq!(exe.graph().len(), 1);
    /// ```
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The nodes of [`Executable::graph`] whose values [`Executable::run`]
    /// returns, in order.
    ///
    /// ```
    /// # use secondo_graph::{Builder, Executable};
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let total = b.input("x", &[3, 2]).sum(&[0]);
    /// let exe = Executable::compile(&b.finish().unwrap(), &[total.id()]).unwrap();
    /// assert_eq!(exe.graph().node(exe.outputs()[0]).shape, vec![2]);
    /// ```
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    /// The ranges of consecutive nodes of [`Executable::graph`] that run at the
    /// same time (independent large contractions; see
    /// [`crate::passes::group_independent_contractions`]).
    ///
    /// ```
    /// # use secondo_graph::{Builder, Executable};
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let x = b.input("x", &[256, 256]);
    /// let y = b.einsum("ij,jk->ik", &[x, x]);
    /// let z = b.einsum("ij,kj->ik", &[x, x]);
    /// let exe = Executable::compile(&b.finish().unwrap(), &[y.id(), z.id()]).unwrap();
    /// assert_eq!(exe.side_by_side(), &[1..3]);
    /// ```
    pub fn side_by_side(&self) -> &[std::ops::Range<usize>] {
        &self.side_by_side
    }

    /// The most bytes of values alive at once while [`Executable::run`] runs:
    /// fed inputs, constants, intermediate values until their last use, and
    /// the results, from the nodes' shapes alone (kernels' scratch space
    /// aside), so known before any data exists.
    ///
    /// ```
    /// # use secondo_graph::{Builder, Executable};
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F64);
    /// let x = b.input("x", &[1000]);
    /// let total = x.exp().sum_all();
    /// let exe = Executable::compile(&b.finish().unwrap(), &[total.id()]).unwrap();
    /// assert_eq!(exe.peak_bytes(), 2 * 8000); // x and exp(x), then x and the sum
    /// ```
    pub fn peak_bytes(&self) -> u64 {
        let bytes = |k: NodeId| {
            let node = self.graph.node(k);
            node.shape
                .iter()
                .fold(node.dtype.size_bytes() as u64, |b, &d| {
                    b.saturating_mul(d as u64)
                })
        };
        let mut freed = vec![false; self.graph.len()];
        let (mut live, mut peak) = (0u64, 0u64);
        for group in self.steps() {
            live = group.clone().fold(live, |l, k| l.saturating_add(bytes(k)));
            peak = peak.max(live);
            for k in group {
                for &j in &self.graph.node(k).inputs {
                    if self.last_use[j] == k && !freed[j] {
                        freed[j] = true;
                        live = live.saturating_sub(bytes(j));
                    }
                }
            }
        }
        peak
    }

    /// The steps [`Executable::run`] takes, in order: each range of nodes
    /// runs side by side, every other node alone.
    fn steps(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let mut groups = self.side_by_side.iter().peekable();
        let mut i = 0;
        std::iter::from_fn(move || {
            if i >= self.graph.len() {
                return None;
            }
            let group = match groups.peek() {
                Some(g) if g.start == i => groups.next().expect("peeked").clone(),
                _ => i..i + 1,
            };
            i = group.end;
            Some(group)
        })
    }

    /// Evaluates, once, every node that depends only on the inputs and
    /// parameters in `fixed` (and on constants), and returns an executable in
    /// which those nodes are constants. Running it feeds only the remaining
    /// inputs and computes only what depends on them: a curvature product
    /// bound to its parameters and batch recomputes just its tangent part.
    /// Also returns how many numbers the new constants hold beyond the fed
    /// tensors themselves (which they share).
    ///
    /// ```
    /// # use secondo_graph::{Builder, Executable, Feeds};
    /// # use secondo_tensor::{DType, Tensor};
    /// let b = Builder::new(DType::F64);
    /// let (x, v) = (b.input("x", &[2]), b.input("v", &[2]));
    /// let y = (x.exp() * v).sum_all();
    /// let exe = Executable::compile(&b.finish().unwrap(), &[y.id()]).unwrap();
    /// let mut fixed = Feeds::new();
    /// fixed.insert("x", Tensor::from_vec(vec![2], vec![0.0f64, 0.0]).unwrap());
    /// let (bound, held) = exe.bind(&fixed).unwrap();
    /// assert_eq!(held, 2); // exp(x)
    /// let mut rest = Feeds::new();
    /// rest.insert("v", Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap());
    /// assert_eq!(bound.run(&rest).unwrap()[0].item(), 3.0);
    /// ```
    pub fn bind(&self, fixed: &Feeds) -> Result<(Executable, usize), GraphError> {
        let g = &self.graph;
        let mut bound = vec![false; g.len()];
        for (i, node) in g.nodes().iter().enumerate() {
            bound[i] = match &node.op {
                Op::Input(name) | Op::Param(name) => fixed.get(name).is_some(),
                _ => node.inputs.iter().all(|&j| bound[j]),
            };
        }
        // What the rest of the graph (or the caller) reads of the bound part.
        let mut needed = vec![false; g.len()];
        for (i, node) in g.nodes().iter().enumerate() {
            if !bound[i] {
                node.inputs.iter().for_each(|&j| needed[j] |= bound[j]);
            }
        }
        self.outputs.iter().for_each(|&o| needed[o] |= bound[o]);
        let folded: Vec<NodeId> = (0..g.len())
            .filter(|&i| needed[i] && !matches!(g.node(i).op, Op::Constant(_)))
            .collect();
        let values = Executable::compile(g, &folded)?.run(fixed)?;
        let mut value = folded
            .iter()
            .copied()
            .zip(values)
            .collect::<HashMap<_, _>>();
        let mut graph = Graph::new();
        let mut map = vec![usize::MAX; g.len()];
        let mut held = 0;
        for (i, node) in g.nodes().iter().enumerate() {
            let (op, inputs) = match value.remove(&i) {
                Some(t) => {
                    if !matches!(node.op, Op::Input(_) | Op::Param(_)) {
                        held += t.numel();
                    }
                    (Op::Constant(t), Vec::new())
                }
                None if bound[i] && !needed[i] => continue,
                None => (
                    node.op.clone(),
                    node.inputs.iter().map(|&j| map[j]).collect(),
                ),
            };
            map[i] = graph.push(op, inputs, Some(node.shape.clone()), node.dtype)?;
        }
        let outputs: Vec<NodeId> = self.outputs.iter().map(|&o| map[o]).collect();
        Ok((Executable::compile(&graph, &outputs)?, held))
    }

    /// Runs the graph on the feeds and returns the outputs in order.
    ///
    /// ```
    /// # use secondo_graph::{Builder, Executable, Feeds};
    /// # use secondo_tensor::DType;
    /// let b = Builder::new(DType::F32);
    /// let x = b.input("x", &[2]);
    /// let exe = Executable::compile(&b.finish().unwrap(), &[x.id()]).unwrap();
    /// let err = exe.run(&Feeds::new()).unwrap_err();
    /// assert_eq!(err.to_string(), "input 'x': not fed");
    /// ```
    pub fn run(&self, feeds: &Feeds) -> Result<Vec<Tensor>, GraphError> {
        self.run_inner(feeds, None)
    }

    /// Like [`Executable::run`], also returning the wall time of every node in
    /// seconds (indexed like [`Executable::graph`]'s nodes) for profiling.
    ///
    /// ```
    /// # use secondo_graph::{Builder, Executable, Feeds};
    /// # use secondo_tensor::{DType, Tensor};
    /// let b = Builder::new(DType::F32);
    /// let x = b.input("x", &[2]);
    /// let y = x.exp();
    /// let exe = Executable::compile(&b.finish().unwrap(), &[y.id()]).unwrap();
    /// let mut f = Feeds::new();
    /// f.insert("x", Tensor::zeros(vec![2], DType::F32));
    /// let (_, times) = exe.run_timed(&f).unwrap();
    /// assert_eq!(times.len(), exe.graph().len());
    /// ```
    pub fn run_timed(&self, feeds: &Feeds) -> Result<(Vec<Tensor>, Vec<f64>), GraphError> {
        let mut times = vec![0.0; self.graph.len()];
        let out = self.run_inner(feeds, Some(&mut times))?;
        Ok((out, times))
    }

    fn run_inner(
        &self,
        feeds: &Feeds,
        times: Option<&mut Vec<f64>>,
    ) -> Result<Vec<Tensor>, GraphError> {
        // Run on a worker of the rayon pool: the kernels' parallel parts then
        // share the pool with the sequential ones instead of competing with
        // idle workers spinning for work (measured in docs/PERFORMANCE.md).
        let mut result = None;
        rayon::scope(|_| result = Some(self.run_steps(feeds, times)));
        result.expect("scope ran")
    }

    fn run_steps(
        &self,
        feeds: &Feeds,
        mut times: Option<&mut Vec<f64>>,
    ) -> Result<Vec<Tensor>, GraphError> {
        let mut values: Vec<Option<Tensor>> = vec![None; self.graph.len()];
        for group in self.steps() {
            let args: Vec<Vec<Tensor>> = group
                .clone()
                .map(|k| self.take_args(k, &mut values))
                .collect();
            let timed = times.is_some();
            let run = |(k, args): (NodeId, Vec<Tensor>)| {
                let start = timed.then(std::time::Instant::now);
                let value = self.eval(k, args, feeds);
                (value, start.map_or(0.0, |s| s.elapsed().as_secs_f64()))
            };
            let work: Vec<(NodeId, Vec<Tensor>)> = group.clone().zip(args).collect();
            let results: Vec<(Result<Tensor, EvalError>, f64)> = if group.len() == 1 {
                work.into_iter().map(run).collect()
            } else {
                work.into_par_iter().map(run).collect()
            };
            for (k, (value, seconds)) in group.clone().zip(results) {
                let node = self.graph.node(k);
                let run_err = |reason: String| GraphError::Run {
                    node: k,
                    op: node.op.to_string(),
                    reason,
                };
                let value = value.map_err(|e| match e {
                    EvalError::Graph(g) => g,
                    EvalError::Kernel(t) => run_err(t.to_string()),
                })?;
                // A kernel disagreeing with the graph's shape rules is a bug:
                // stop here rather than fail (or compute nonsense) downstream.
                if value.shape() != node.shape.as_slice() {
                    return Err(run_err(format!(
                        "computed shape {:?}, the graph says {:?}",
                        value.shape(),
                        node.shape
                    )));
                }
                if let Some(t) = times.as_deref_mut() {
                    t[k] = seconds;
                }
                values[k] = Some(value);
            }
        }
        Ok(self
            .outputs
            .iter()
            .map(|&o| values[o].clone().expect("outputs are kept"))
            .collect())
    }

    /// The operands of node `i`, taken out of `values` at their last use.
    fn take_args(&self, i: NodeId, values: &mut [Option<Tensor>]) -> Vec<Tensor> {
        let node = self.graph.node(i);
        let mut args = Vec::with_capacity(node.inputs.len());
        for (pos, &j) in node.inputs.iter().enumerate() {
            let last_here = self.last_use[j] == i && !node.inputs[pos + 1..].contains(&j);
            let v = if last_here {
                values[j].take()
            } else {
                values[j].clone()
            };
            args.push(v.expect("operands are computed before use"));
        }
        args
    }

    /// The value of node `i` from its operands, by its family's evaluation.
    fn eval(&self, i: NodeId, args: Vec<Tensor>, feeds: &Feeds) -> Result<Tensor, EvalError> {
        let node = self.graph.node(i);
        Ok(match node.op.family() {
            Family::Leaf(leaf) => return leaves::eval(leaf, &args, node, feeds),
            Family::Elementwise(e) => elementwise::eval(e, args)?,
            Family::Reduce(r, axes) => reduce::eval(r, axes, &args)?,
            Family::Movement(m) => movement::eval(m, &args, &node.shape)?,
            Family::Einsum(spec) => einsum::eval(spec, &args)?,
            Family::Patches(p) => patches::eval(p, &args)?,
            Family::Pool(p) => pool::eval(p, &args)?,
            Family::Conv(c) => conv::eval(c, &args)?,
        })
    }
}

/// Why a node could not be evaluated: a feed (reported as it is) or a kernel
/// (reported with the node).
pub(crate) enum EvalError {
    Graph(GraphError),
    Kernel(TensorError),
}

impl From<TensorError> for EvalError {
    fn from(e: TensorError) -> Self {
        EvalError::Kernel(e)
    }
}
