//! Curvature matrices of the loss over a whole dataset, as linear operators.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use secondo_data::Dataset;
use secondo_graph::{Executable, Feeds};
use secondo_nn::ParamStore;
use secondo_tensor::memory::{bytes_of, ensure_fits};
use secondo_tensor::Tensor;

use crate::objective::batch_feeds;
use crate::program::{compile, Product, COTANGENT, TANGENT};
use crate::sampling::sample_targets;
use crate::{CurvatureError, Objective};

/// Which curvature matrix.
///
/// ```
/// use secondo_curvature::Curvature;
/// assert_eq!("ggn".parse::<Curvature>().unwrap(), Curvature::Ggn);
/// assert!("hessain".parse::<Curvature>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curvature {
    /// The Hessian of the loss.
    Hessian,
    /// The generalized Gauss-Newton matrix `Σ_n J_nᵀ H_n J_n` (exact).
    Ggn,
    /// The Fisher, estimated with `samples` targets per input drawn from the
    /// model's predictive distribution (seeded).
    FisherMc {
        /// Monte-Carlo samples per input.
        samples: usize,
        /// Seed of the draws.
        seed: u64,
    },
    /// The empirical Fisher `Σ_n g_n g_nᵀ` (per-sample gradients with the data's targets).
    EmpiricalFisher,
}

impl FromStr for Curvature {
    type Err = CurvatureError;
    fn from_str(s: &str) -> Result<Self, CurvatureError> {
        match s {
            "hessian" => Ok(Curvature::Hessian),
            "ggn" => Ok(Curvature::Ggn),
            "fisher" => Ok(Curvature::FisherMc {
                samples: 1,
                seed: 0,
            }),
            "ef" => Ok(Curvature::EmpiricalFisher),
            other => Err(CurvatureError::Invalid(format!(
                "unknown curvature '{other}' (expected hessian, ggn, fisher or ef)"
            ))),
        }
    }
}

impl fmt::Display for Curvature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Curvature::Hessian => f.write_str("hessian"),
            Curvature::Ggn => f.write_str("ggn"),
            Curvature::FisherMc { samples, .. } => write!(f, "fisher ({samples} MC samples)"),
            Curvature::EmpiricalFisher => f.write_str("ef"),
        }
    }
}

/// One batch of the dataset as tensors, with its Monte-Carlo targets.
struct BatchData {
    x: Tensor,
    y: Tensor,
    sampled: Vec<Tensor>,
    /// The product program bound to the parameters, this batch and each of
    /// its targets (`y`, or each sampled target): only the tangent part runs
    /// per product. Empty when that would hold more than [`BIND_BUDGET`].
    bound: Vec<Executable>,
    /// The numbers the bound programs hold (beyond the parameters and data).
    kept: usize,
}

impl BatchData {
    /// The targets its products run with: the sampled ones (MC Fisher), else `y`.
    fn targets(&self) -> &[Tensor] {
        if self.sampled.is_empty() {
            std::slice::from_ref(&self.y)
        } else {
            &self.sampled
        }
    }
}

/// Most numbers the bound programs of one operator may hold (the primal
/// forward and backward values of every batch, beyond the parameters and
/// data they share): 2²⁶, 256 MiB in f32.
const BIND_BUDGET: usize = 1 << 26;

/// A curvature matrix of the loss reduced over a whole dataset (curvlinops'
/// convention), restricted to a group of parameters (a diagonal block), applied
/// matrix-free. Vectors are flat `f64`: the group's parameters in order, each
/// row-major. The parameters and data are fixed, so the operator evaluates the
/// forward and backward pass of every batch once, at construction, and each
/// product computes only what depends on the vector (about half the work;
/// see [`CurvatureOperator::without_kept_values`]).
///
/// ```
/// use secondo_curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
/// use secondo_nn::ParamStore;
/// use secondo_tensor::DType;
/// let obj = Objective::from_config(&ObjectiveConfig {
///     spec: "linear(64,10)".into(), input_shape: vec![64], dtype: DType::F64, ..Default::default()
/// }).unwrap();
/// let params = ParamStore::init(obj.network.spec(), 0, DType::F64);
/// let data = secondo_data::digits().select(&(0..10).collect::<Vec<_>>()).unwrap();
/// let ggn = CurvatureOperator::new(&obj, &params, &data, 4, Curvature::Ggn, Some(&["0.bias"])).unwrap();
/// assert_eq!(ggn.dim(), 10);
/// let m = ggn.to_dense().unwrap();
/// assert!((m[1] - m[10]).abs() < 1e-14); // symmetric
/// ```
pub struct CurvatureOperator {
    objective: Objective,
    params: ParamStore,
    kind: Curvature,
    batch_size: usize,
    group: Vec<usize>,
    batches: Vec<BatchData>,
    programs: HashMap<usize, Executable>,
    jacobians: HashMap<(usize, bool), Executable>,
    scale: f64,
    products: Cell<usize>,
}

impl CurvatureOperator {
    /// The operator of `kind` for `params` on `data` evaluated in batches of
    /// `batch_size`, restricted to the parameters named in `group` (all when
    /// `None`).
    pub fn new(
        objective: &Objective,
        params: &ParamStore,
        data: &Dataset,
        batch_size: usize,
        kind: Curvature,
        group: Option<&[&str]>,
    ) -> Result<CurvatureOperator, CurvatureError> {
        if batch_size == 0 {
            return Err(CurvatureError::Invalid(
                "batch size must be at least 1".into(),
            ));
        }
        if data.is_empty() {
            return Err(CurvatureError::Invalid(format!(
                "data '{}' has no samples",
                data.name
            )));
        }
        if let Curvature::FisherMc { samples: 0, .. } = kind {
            return Err(CurvatureError::Invalid(
                "the Fisher needs at least 1 MC sample".into(),
            ));
        }
        objective.check_targets(&data.y)?;
        let names: Vec<&str> = objective
            .network
            .params()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let group: Vec<usize> = match group {
            None => (0..names.len()).collect(),
            Some(g) => g
                .iter()
                .map(|n| {
                    names.iter().position(|m| m == n).ok_or_else(|| {
                        CurvatureError::Invalid(format!(
                            "unknown parameter '{n}' (the model has: {})",
                            names.join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Self::bind(
            objective,
            params,
            data,
            batch_size,
            kind,
            group,
            HashMap::new(),
        )
    }

    /// The operator at other parameters and data (e.g. the next training
    /// step's), reusing the compiled programs of the batch sizes it shares.
    ///
    /// ```
    /// use secondo_curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
    /// use secondo_nn::ParamStore;
    /// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default() }).unwrap();
    /// let p = ParamStore::init(obj.network.spec(), 0, obj.dtype);
    /// let data = secondo_data::digits().select(&(0..8).collect::<Vec<_>>()).unwrap();
    /// let h = CurvatureOperator::new(&obj, &p, &data, 8, Curvature::Hessian, None).unwrap();
    /// let q = ParamStore::init(obj.network.spec(), 1, obj.dtype);
    /// let other = data.select(&[3, 1, 4, 1, 5, 2, 6, 7]).unwrap();
    /// let moved = h.rebound(&q, &other).unwrap();
    /// let fresh = CurvatureOperator::new(&obj, &q, &other, 8, Curvature::Hessian, None).unwrap();
    /// let v = vec![0.5; moved.dim()];
    /// assert_eq!(moved.apply(&v).unwrap(), fresh.apply(&v).unwrap());
    /// ```
    pub fn rebound(
        self,
        params: &ParamStore,
        data: &Dataset,
    ) -> Result<CurvatureOperator, CurvatureError> {
        if data.is_empty() {
            return Err(CurvatureError::Invalid(format!(
                "data '{}' has no samples",
                data.name
            )));
        }
        self.objective.check_targets(&data.y)?;
        Self::bind(
            &self.objective,
            params,
            data,
            self.batch_size,
            self.kind,
            self.group,
            self.programs,
        )
    }

    /// The operator over `data` in batches of `batch_size`, with the
    /// programs of `programs` and those it compiles for the batch sizes
    /// missing.
    fn bind(
        objective: &Objective,
        params: &ParamStore,
        data: &Dataset,
        batch_size: usize,
        kind: Curvature,
        group: Vec<usize>,
        mut programs: HashMap<usize, Executable>,
    ) -> Result<CurvatureOperator, CurvatureError> {
        let product = match kind {
            Curvature::Hessian => Product::Hessian,
            Curvature::Ggn => Product::Ggn,
            Curvature::FisherMc { .. } | Curvature::EmpiricalFisher => Product::OuterGradients,
        };
        let mut rng = match kind {
            Curvature::FisherMc { seed, .. } => ChaCha8Rng::seed_from_u64(seed),
            _ => ChaCha8Rng::seed_from_u64(0),
        };
        let full = batch_size.min(data.len());
        for n in [full, data.len() % full] {
            if n > 0 && !programs.contains_key(&n) {
                programs.insert(n, compile(objective, product, n, &group)?);
            }
        }
        ensure_operator_fits(objective, data, kind, &programs)?;
        let mut batches = Vec::new();
        for batch in data.batches(batch_size)? {
            let (x, y) = objective.batch_tensors(&batch)?;
            let n = batch.len();
            let sampled = match kind {
                Curvature::FisherMc { samples, .. } => {
                    let out = objective
                        .curvature_program(n)?
                        .run(params, x.clone(), y.clone())?;
                    (0..samples)
                        .map(|_| sample_targets(objective.loss.kind, &out.output, &mut rng))
                        .collect()
                }
                _ => Vec::new(),
            };
            batches.push(BatchData {
                x,
                y,
                sampled,
                bound: Vec::new(),
                kept: 0,
            });
        }
        bind_batches(&mut batches, &programs, params)?;
        let scale = objective
            .loss
            .scale(&[data.len(), objective.network.output_shape()[0]]);
        Ok(CurvatureOperator {
            objective: objective.clone(),
            params: params.clone(),
            kind,
            batch_size,
            group,
            batches,
            programs,
            jacobians: HashMap::new(),
            scale,
            products: Cell::new(0),
        })
    }

    /// Dimension: the number of scalar parameters in the group.
    pub fn dim(&self) -> usize {
        self.group_shapes()
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    /// The same operator without the values it keeps between products: each
    /// product then recomputes the forward and backward pass of every batch
    /// (about twice the work, none of the memory). Operators whose kept
    /// values would exceed 2²⁶ numbers never keep them.
    ///
    /// ```
    /// use secondo_curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
    /// use secondo_nn::ParamStore;
    /// use secondo_tensor::DType;
    /// let obj = Objective::from_config(&ObjectiveConfig {
    ///     spec: "linear(64,10)".into(), input_shape: vec![64], dtype: DType::F64, ..Default::default()
    /// }).unwrap();
    /// let params = ParamStore::init(obj.network.spec(), 0, DType::F64);
    /// let data = secondo_data::digits().split(0.05, 0).unwrap().1;
    /// let op = CurvatureOperator::new(&obj, &params, &data, 32, Curvature::Ggn, None).unwrap();
    /// assert!(op.kept_values() > 0);
    /// let v = vec![0.5; op.dim()];
    /// let kept = op.apply(&v).unwrap();
    /// let op = op.without_kept_values();
    /// assert_eq!(op.kept_values(), 0);
    /// let recomputed = op.apply(&v).unwrap();
    /// assert!(kept.iter().zip(&recomputed).all(|(a, b)| (a - b).abs() < 1e-12));
    /// ```
    pub fn without_kept_values(mut self) -> CurvatureOperator {
        self.batches.iter_mut().for_each(|b| {
            b.bound.clear();
            b.kept = 0;
        });
        self
    }

    /// How many numbers the operator keeps between products (see
    /// [`CurvatureOperator::without_kept_values`] for an example).
    pub fn kept_values(&self) -> usize {
        self.batches.iter().map(|b| b.kept).sum()
    }

    /// Floating-point operations of the contractions in one product, over
    /// every batch and sampled target ([`secondo_graph::Graph::flops`]):
    /// about half as many while the operator keeps the primal values.
    ///
    /// ```
    /// use secondo_curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
    /// use secondo_nn::ParamStore;
    /// let obj = Objective::from_config(&ObjectiveConfig {
    ///     spec: "linear(64,32),relu,linear(32,10)".into(), input_shape: vec![64], ..Default::default()
    /// }).unwrap();
    /// let params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
    /// let data = secondo_data::digits().select(&(0..100).collect::<Vec<_>>()).unwrap();
    /// let op = CurvatureOperator::new(&obj, &params, &data, 100, Curvature::Ggn, None).unwrap();
    /// let kept = op.flops_per_product();
    /// assert!(kept > 0 && kept < op.without_kept_values().flops_per_product());
    /// ```
    pub fn flops_per_product(&self) -> u64 {
        self.batches
            .iter()
            .map(|batch| {
                if batch.bound.is_empty() {
                    let draws = batch.targets().len() as u64;
                    draws * self.programs[&batch.x.shape()[0]].graph().flops()
                } else {
                    batch.bound.iter().map(|e| e.graph().flops()).sum()
                }
            })
            .sum()
    }

    /// Which matrix this is.
    pub fn kind(&self) -> Curvature {
        self.kind
    }

    /// The element type its products are computed in (the objective's).
    ///
    /// ```
    /// use secondo_curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
    /// use secondo_nn::ParamStore;
    /// let obj = Objective::from_config(&ObjectiveConfig {
    ///     spec: "linear(64,10)".into(), input_shape: vec![64], ..Default::default()
    /// }).unwrap();
    /// let params = ParamStore::init(obj.network.spec(), 0, obj.dtype);
    /// let data = secondo_data::digits();
    /// let op = CurvatureOperator::new(&obj, &params, &data, 256, Curvature::Ggn, None).unwrap();
    /// assert_eq!(op.dtype(), secondo_tensor::DType::F32);
    /// ```
    pub fn dtype(&self) -> secondo_tensor::DType {
        self.objective.dtype
    }

    /// Names of the parameters in the group, in order.
    pub fn parameter_names(&self) -> Vec<String> {
        let all = self.objective.network.params();
        self.group.iter().map(|&i| all[i].name.clone()).collect()
    }

    /// Matrix-vector products done so far (one per vector per pass over the data).
    pub fn products(&self) -> usize {
        self.products.get()
    }

    fn group_shapes(&self) -> Vec<Vec<usize>> {
        let all = self.objective.network.params();
        self.group.iter().map(|&i| all[i].shape.clone()).collect()
    }

    /// Splits a flat vector into the group's tensors.
    fn split(&self, v: &[f64]) -> Result<Vec<Tensor>, CurvatureError> {
        if v.len() != self.dim() {
            return Err(CurvatureError::Invalid(format!(
                "vector of length {}, expected {}",
                v.len(),
                self.dim()
            )));
        }
        let mut out = Vec::new();
        let mut at = 0;
        for s in self.group_shapes() {
            let n: usize = s.iter().product();
            out.push(
                Tensor::from_f64(s, &v[at..at + n], self.objective.dtype).expect("sizes match"),
            );
            at += n;
        }
        Ok(out)
    }

    fn feeds(&self, batch: &BatchData, y: &Tensor, tangents: &[Tensor]) -> Feeds {
        let mut feeds = batch_feeds(&self.params, &batch.x, y);
        self.add_tangents(&mut feeds, tangents);
        feeds
    }

    fn add_tangents(&self, feeds: &mut Feeds, tangents: &[Tensor]) {
        for (name, t) in self.parameter_names().iter().zip(tangents) {
            feeds.insert(&format!("{TANGENT}{name}"), t.clone());
        }
    }

    /// One product on one batch, with its targets number `which` (see
    /// [`BatchData::targets`]).
    fn run_product(
        &self,
        batch: &BatchData,
        which: usize,
        tangents: &[Tensor],
    ) -> Result<Vec<Tensor>, CurvatureError> {
        Ok(match batch.bound.get(which) {
            Some(exe) => {
                let mut feeds = Feeds::new();
                self.add_tangents(&mut feeds, tangents);
                exe.run(&feeds)?
            }
            None => {
                let y = &batch.targets()[which];
                self.programs[&batch.x.shape()[0]].run(&self.feeds(batch, y, tangents))?
            }
        })
    }

    /// The product of the matrix with a flat vector.
    pub fn apply(&self, v: &[f64]) -> Result<Vec<f64>, CurvatureError> {
        let tangents = self.split(v)?;
        let mut acc = vec![0.0; v.len()];
        let mut add = |outs: Vec<Tensor>, weight: f64| {
            let mut at = 0;
            for t in outs {
                t.accumulate_into(&mut acc[at..at + t.numel()], weight);
                at += t.numel();
            }
        };
        for batch in &self.batches {
            // Sampled targets average their products.
            let draws = batch.targets().len();
            for which in 0..draws {
                add(
                    self.run_product(batch, which, &tangents)?,
                    self.scale / draws as f64,
                );
            }
        }
        self.products.set(self.products.get() + 1);
        Ok(acc)
    }

    /// The product in parameter-list form: one tensor per parameter of the
    /// group (in order and shape), returned the same way in `f64`.
    pub fn apply_tensors(&self, v: &[Tensor]) -> Result<Vec<Tensor>, CurvatureError> {
        let shapes = self.group_shapes();
        if v.len() != shapes.len()
            || v.iter()
                .zip(&shapes)
                .any(|(t, s)| t.shape() != s.as_slice())
        {
            let got: Vec<&[usize]> = v.iter().map(|t| t.shape()).collect();
            return Err(CurvatureError::Invalid(format!(
                "tensors of shapes {got:?}, expected {shapes:?}"
            )));
        }
        let flat: Vec<f64> = v.iter().flat_map(|t| t.to_f64_vec()).collect();
        let out = self.apply(&flat)?;
        let mut at = 0;
        Ok(shapes
            .into_iter()
            .map(|s| {
                let n: usize = s.iter().product();
                at += n;
                Tensor::from_vec(s, out[at - n..at].to_vec()).expect("sizes match")
            })
            .collect())
    }

    /// Products with `k` vectors stored one after another (`v.len() == dim·k`).
    pub fn apply_block(&self, v: &[f64], k: usize) -> Result<Vec<f64>, CurvatureError> {
        let d = self.dim();
        if v.len() != d * k {
            return Err(CurvatureError::Invalid(format!(
                "block of length {}, expected {d}·{k}",
                v.len()
            )));
        }
        let mut out = Vec::with_capacity(d * k);
        for col in v.chunks(d.max(1)).take(k) {
            out.extend(self.apply(col)?);
        }
        Ok(out)
    }

    /// The dense matrix (row-major, `dim × dim`), built column by column.
    pub fn to_dense(&self) -> Result<Vec<f64>, CurvatureError> {
        let d = self.dim();
        let mut m = vec![0.0; d * d];
        let mut e = vec![0.0; d];
        for j in 0..d {
            e[j] = 1.0;
            let col = self.apply(&e)?;
            e[j] = 0.0;
            for i in 0..d {
                m[i * d + j] = col[i];
            }
        }
        Ok(m)
    }

    fn jacobian_program(
        &mut self,
        n: usize,
        transpose: bool,
    ) -> Result<&Executable, CurvatureError> {
        if !self.jacobians.contains_key(&(n, transpose)) {
            let product = if transpose {
                Product::JacobianTranspose
            } else {
                Product::Jacobian
            };
            let exe = compile(&self.objective, product, n, &self.group)?;
            self.jacobians.insert((n, transpose), exe);
        }
        Ok(&self.jacobians[&(n, transpose)])
    }

    /// The Jacobian of the network outputs on every sample times a flat parameter
    /// vector: row-major `[N, C]`.
    pub fn jacobian_vector(&mut self, v: &[f64]) -> Result<Vec<f64>, CurvatureError> {
        let tangents = self.split(v)?;
        let mut out = Vec::new();
        for i in 0..self.batches.len() {
            let n = self.batches[i].x.shape()[0];
            self.jacobian_program(n, false)?;
            let feeds = self.feeds(&self.batches[i], &self.batches[i].y, &tangents);
            let r = self.jacobians[&(n, false)].run(&feeds)?;
            out.extend(r[0].to_f64_vec());
        }
        Ok(out)
    }

    /// The transposed Jacobian times output-space vectors `u` (row-major `[N, C]`).
    pub fn jacobian_transpose_vector(&mut self, u: &[f64]) -> Result<Vec<f64>, CurvatureError> {
        let c = self.objective.network.output_shape()[0];
        let total: usize = self.batches.iter().map(|b| b.x.shape()[0]).sum();
        if u.len() != total * c {
            return Err(CurvatureError::Invalid(format!(
                "output vector of length {}, expected {total}·{c}",
                u.len()
            )));
        }
        let mut acc = vec![0.0; self.dim()];
        let mut at = 0;
        for i in 0..self.batches.len() {
            let n = self.batches[i].x.shape()[0];
            self.jacobian_program(n, true)?;
            // Jᵀu has no parameter-space tangent to feed.
            let mut feeds = self.feeds(&self.batches[i], &self.batches[i].y, &[]);
            let slice = &u[at * c..(at + n) * c];
            feeds.insert(
                COTANGENT,
                Tensor::from_f64(vec![n, c], slice, self.objective.dtype).expect("n·c"),
            );
            at += n;
            let mut k = 0;
            for t in self.jacobians[&(n, true)].run(&feeds)? {
                for x in t.to_f64_vec() {
                    acc[k] += x;
                    k += 1;
                }
            }
        }
        Ok(acc)
    }
}

/// Refuses, before anything is evaluated, an operator whose data, sampled
/// targets, kept values and one product at a time would not fit in memory.
fn ensure_operator_fits(
    objective: &Objective,
    data: &Dataset,
    kind: Curvature,
    programs: &HashMap<usize, Executable>,
) -> Result<(), CurvatureError> {
    let size = objective.dtype.size_bytes();
    let width: usize = objective.network.output_shape().iter().product();
    let features: usize = data.sample_shape.iter().product();
    let draws = match kind {
        Curvature::FisherMc { samples, .. } => samples,
        _ => 0,
    };
    let per_sample = features
        .saturating_add(width)
        .saturating_add(width.saturating_mul(draws));
    let product = programs.values().map(|p| p.peak_bytes()).max().unwrap_or(0);
    // Binding keeps at most the budget, and at most one product's values per
    // batch and target.
    let batches = data
        .len()
        .div_ceil(programs.keys().max().copied().unwrap_or(1));
    let kept = bytes_of(BIND_BUDGET, size)
        .min(product.saturating_mul(batches.saturating_mul(draws.max(1)) as u64));
    let need = bytes_of(data.len().saturating_mul(per_sample), size)
        .saturating_add(kept)
        .saturating_add(product);
    let what = format!("the {kind} of {} samples", data.len());
    Ok(ensure_fits(what, need)?)
}

/// Binds every batch's product program to the parameters, the batch and each
/// of its targets, while the values held stay within [`BIND_BUDGET`];
/// otherwise leaves all batches unbound (each product then recomputes the
/// forward and backward pass).
fn bind_batches(
    batches: &mut [BatchData],
    programs: &HashMap<usize, Executable>,
    params: &ParamStore,
) -> Result<(), CurvatureError> {
    let mut held = 0;
    let mut bound = Vec::with_capacity(batches.len());
    for batch in batches.iter() {
        let before = held;
        let exe = &programs[&batch.x.shape()[0]];
        let mut programs = Vec::with_capacity(batch.targets().len());
        for y in batch.targets() {
            let (program, values) = exe.bind(&batch_feeds(params, &batch.x, y))?;
            held += values;
            if held > BIND_BUDGET {
                return Ok(());
            }
            programs.push(program);
        }
        bound.push((programs, held - before));
    }
    for (batch, (programs, kept)) in batches.iter_mut().zip(bound) {
        batch.bound = programs;
        batch.kept = kept;
    }
    Ok(())
}
