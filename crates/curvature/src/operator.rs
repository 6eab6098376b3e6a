//! Curvature matrices of the loss over a whole dataset, as linear operators.

use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use secondo_data::Dataset;
use secondo_graph::{Executable, Feeds};
use secondo_linalg::symmetrized;
use secondo_nn::ParamStore;
use secondo_tensor::memory::{bytes_of, ensure_fits};
use secondo_tensor::Tensor;

use crate::objective::batch_feeds;
use crate::program::{compile, Product, COTANGENT, STACKED_TANGENTS, TANGENT};
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
}

/// One batch's product program bound to the parameters, the batch and each
/// of its targets (`y`, or each sampled target): only the tangent part runs
/// per product.
struct Bound {
    programs: Vec<Executable>,
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
/// forward and backward pass of every batch once, at its first product, and
/// each product computes only what depends on the vector (about half the
/// work; see [`CurvatureOperator::without_kept_values`]). An operator that
/// only gives bilinear forms ([`CurvatureOperator::gram`]) never evaluates
/// them.
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
    /// Per batch, its bound product programs; empty where they would hold
    /// more than [`BIND_BUDGET`] or without kept values. Bound at the first
    /// product, not at construction: what only takes Jacobian products or
    /// bilinear forms never pays for them.
    bound: OnceCell<Vec<Bound>>,
    /// The compiled programs by batch size and product: the operator's
    /// product for every batch size at construction, the others (Jacobian
    /// products, bilinear forms) at their first use.
    programs: HashMap<(usize, Product), Executable>,
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
    /// programs of `programs` and the products it compiles for the batch
    /// sizes missing.
    fn bind(
        objective: &Objective,
        params: &ParamStore,
        data: &Dataset,
        batch_size: usize,
        kind: Curvature,
        group: Vec<usize>,
        mut programs: HashMap<(usize, Product), Executable>,
    ) -> Result<CurvatureOperator, CurvatureError> {
        let product = product_of(kind);
        let mut rng = match kind {
            Curvature::FisherMc { seed, .. } => ChaCha8Rng::seed_from_u64(seed),
            _ => ChaCha8Rng::seed_from_u64(0),
        };
        let full = batch_size.min(data.len());
        for n in [full, data.len() % full] {
            if n > 0 && !programs.contains_key(&(n, product)) {
                programs.insert((n, product), compile(objective, product, n, &group)?);
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
            batches.push(BatchData { x, y, sampled });
        }
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
            bound: OnceCell::new(),
            programs,
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
    /// assert_eq!(op.kept_values(), 0); // bound at the first product
    /// let v = vec![0.5; op.dim()];
    /// let kept = op.apply(&v).unwrap();
    /// assert!(op.kept_values() > 0);
    /// let op = op.without_kept_values();
    /// assert_eq!(op.kept_values(), 0);
    /// let recomputed = op.apply(&v).unwrap();
    /// assert!(kept.iter().zip(&recomputed).all(|(a, b)| (a - b).abs() < 1e-12));
    /// ```
    pub fn without_kept_values(mut self) -> CurvatureOperator {
        self.bound = OnceCell::from(Vec::new());
        self
    }

    /// How many numbers the operator keeps between products, none before the
    /// first (see [`CurvatureOperator::without_kept_values`] for an example).
    pub fn kept_values(&self) -> usize {
        self.bound
            .get()
            .map_or(0, |b| b.iter().map(|b| b.kept).sum())
    }

    /// The bound product programs of every batch (empty: none), bound now
    /// if this is the first product.
    fn bound(&self) -> Result<&[Bound], CurvatureError> {
        if self.bound.get().is_none() {
            let product = product_of(self.kind);
            let bound = bind_batches(&self.batches, &self.programs, product, &self.params)?;
            let _ = self.bound.set(bound);
        }
        Ok(self.bound.get().expect("set above"))
    }

    /// Floating-point operations of the contractions in one product, over
    /// every batch and sampled target ([`secondo_graph::Graph::flops`]):
    /// about half as many once the operator keeps the primal values (after
    /// its first product).
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
    /// op.apply(&vec![1.0; op.dim()]).unwrap();
    /// let kept = op.flops_per_product();
    /// assert!(kept > 0 && kept < op.without_kept_values().flops_per_product());
    /// ```
    pub fn flops_per_product(&self) -> u64 {
        let bound = self.bound.get().map_or(&[][..], Vec::as_slice);
        self.batches
            .iter()
            .enumerate()
            .map(|(i, batch)| match bound.get(i) {
                Some(b) => b.programs.iter().map(|e| e.graph().flops()).sum(),
                None => {
                    let draws = batch.targets().len() as u64;
                    draws * self.product_program(batch).graph().flops()
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
        self.add_named(feeds, TANGENT, tangents);
    }

    /// Feeds the group's tensors `ts` under `prefix` and each parameter's name.
    fn add_named(&self, feeds: &mut Feeds, prefix: &str, ts: &[Tensor]) {
        for (name, t) in self.parameter_names().iter().zip(ts) {
            feeds.insert(&format!("{prefix}{name}"), t.clone());
        }
    }

    fn product_program(&self, batch: &BatchData) -> &Executable {
        &self.programs[&(batch.x.shape()[0], product_of(self.kind))]
    }

    /// One product on batch number `i`, with its targets number `which`
    /// (see [`BatchData::targets`]).
    fn run_product(
        &self,
        i: usize,
        which: usize,
        tangents: &[Tensor],
    ) -> Result<Vec<Tensor>, CurvatureError> {
        let batch = &self.batches[i];
        Ok(
            match self.bound()?.get(i).and_then(|b| b.programs.get(which)) {
                Some(exe) => {
                    let mut feeds = Feeds::new();
                    self.add_tangents(&mut feeds, tangents);
                    exe.run(&feeds)?
                }
                None => {
                    let y = &batch.targets()[which];
                    self.product_program(batch)
                        .run(&self.feeds(batch, y, tangents))?
                }
            },
        )
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
        for (i, batch) in self.batches.iter().enumerate() {
            // Sampled targets average their products.
            let draws = batch.targets().len();
            for which in 0..draws {
                add(
                    self.run_product(i, which, &tangents)?,
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

    /// The program of `product` for batches of `n`, compiled at its first use.
    fn program(&mut self, n: usize, product: Product) -> Result<&Executable, CurvatureError> {
        if !self.programs.contains_key(&(n, product)) {
            let exe = compile(&self.objective, product, n, &self.group)?;
            self.programs.insert((n, product), exe);
        }
        Ok(&self.programs[&(n, product)])
    }

    /// The bilinear form of the matrix on the vectors `vs`: the `k × k`
    /// matrix (row-major, symmetric) of `vᵢᵀ C vⱼ`, in the reduction of
    /// [`CurvatureOperator::apply`]. The GGN's is `(J vᵢ)ᵀ H_f (J vⱼ)` with
    /// the loss Hessian `H_f` in output space, the Fisher's and empirical
    /// Fisher's `Σ_n (∇ℓ_n · vᵢ)(∇ℓ_n · vⱼ)`: Jacobian-vector products of
    /// all `k` vectors in one forward pass per batch and target (vectorized
    /// over the vectors), without the `k` vector-Jacobian products that
    /// `vᵢᵀ apply(vⱼ)` would take, and without the kept values (one pass
    /// computes the primal values once for every vector). The Hessian's
    /// needs second derivatives of the network and comes from `k` products.
    ///
    /// ```
    /// use secondo_curvature::{Curvature, CurvatureOperator, Objective, ObjectiveConfig};
    /// use secondo_nn::ParamStore;
    /// use secondo_tensor::DType;
    /// let obj = Objective::from_config(&ObjectiveConfig {
    ///     spec: "linear(64,3),tanh,linear(3,10)".into(), input_shape: vec![64], dtype: DType::F64, ..Default::default()
    /// }).unwrap();
    /// let params = ParamStore::init(obj.network.spec(), 0, DType::F64);
    /// let data = secondo_data::digits().select(&(0..20).collect::<Vec<_>>()).unwrap();
    /// let mut ggn = CurvatureOperator::new(&obj, &params, &data, 8, Curvature::Ggn, None).unwrap();
    /// let (u, v) = (vec![0.5; ggn.dim()], (0..ggn.dim()).map(|i| i as f64 / 100.0).collect::<Vec<_>>());
    /// let g = ggn.gram(&[&u, &v]).unwrap();
    /// let uv: f64 = u.iter().zip(ggn.apply(&v).unwrap()).map(|(a, b)| a * b).sum();
    /// assert!((g[1] - uv).abs() < 1e-12 * uv.abs() && g[1] == g[2]);
    /// ```
    pub fn gram(&mut self, vs: &[&[f64]]) -> Result<Vec<f64>, CurvatureError> {
        let k = vs.len();
        let d = self.dim();
        if let Some((i, v)) = vs.iter().enumerate().find(|(_, v)| v.len() != d) {
            return Err(CurvatureError::Invalid(format!(
                "vector {i} of length {}, expected {d}",
                v.len()
            )));
        }
        let mut gram = vec![0.0; k * k];
        if k == 0 {
            return Ok(gram);
        }
        let product = match self.kind {
            Curvature::Ggn => Product::GgnGram(k),
            Curvature::FisherMc { .. } | Curvature::EmpiricalFisher => {
                Product::OuterGradientsGram(k)
            }
            Curvature::Hessian => {
                let products = vs
                    .iter()
                    .map(|v| self.apply(v))
                    .collect::<Result<Vec<_>, _>>()?;
                for (i, v) in vs.iter().enumerate() {
                    for (j, p) in products.iter().enumerate() {
                        gram[i * k + j] = v.iter().zip(p).map(|(a, b)| a * b).sum();
                    }
                }
                return Ok(symmetrized(&gram, k, 1.0));
            }
        };
        let stacked = self.stack(vs);
        for i in 0..self.batches.len() {
            let n = self.batches[i].x.shape()[0];
            self.program(n, product)?;
            let batch = &self.batches[i];
            // Sampled targets average their forms, as their products.
            let draws = batch.targets().len();
            for y in batch.targets() {
                let mut feeds = batch_feeds(&self.params, &batch.x, y);
                self.add_named(&mut feeds, STACKED_TANGENTS, &stacked);
                let form = &self.programs[&(n, product)].run(&feeds)?[0];
                form.accumulate_into(&mut gram, self.scale / draws as f64);
            }
        }
        Ok(symmetrized(&gram, k, 1.0))
    }

    /// The group's tensors of the vectors `vs` (each of length `dim`),
    /// stacked: `[k, ...]` per parameter.
    fn stack(&self, vs: &[&[f64]]) -> Vec<Tensor> {
        let mut at = 0;
        self.group_shapes()
            .into_iter()
            .map(|s| {
                let n: usize = s.iter().product();
                let values: Vec<f64> = vs.iter().flat_map(|v| &v[at..at + n]).copied().collect();
                at += n;
                let mut shape = vec![vs.len()];
                shape.extend(s);
                Tensor::from_f64(shape, &values, self.objective.dtype).expect("sizes match")
            })
            .collect()
    }

    /// The Jacobian of the network outputs on every sample times a flat parameter
    /// vector: row-major `[N, C]`.
    pub fn jacobian_vector(&mut self, v: &[f64]) -> Result<Vec<f64>, CurvatureError> {
        let tangents = self.split(v)?;
        let mut out = Vec::new();
        for i in 0..self.batches.len() {
            let n = self.batches[i].x.shape()[0];
            self.program(n, Product::Jacobian)?;
            let feeds = self.feeds(&self.batches[i], &self.batches[i].y, &tangents);
            let r = self.programs[&(n, Product::Jacobian)].run(&feeds)?;
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
            self.program(n, Product::JacobianTranspose)?;
            // Jᵀu has no parameter-space tangent to feed.
            let mut feeds = self.feeds(&self.batches[i], &self.batches[i].y, &[]);
            let slice = &u[at * c..(at + n) * c];
            feeds.insert(
                COTANGENT,
                Tensor::from_f64(vec![n, c], slice, self.objective.dtype).expect("n·c"),
            );
            at += n;
            let mut k = 0;
            for t in self.programs[&(n, Product::JacobianTranspose)].run(&feeds)? {
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
    programs: &HashMap<(usize, Product), Executable>,
) -> Result<(), CurvatureError> {
    let products = programs.iter().filter(|((_, p), _)| *p == product_of(kind));
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
    let product = products
        .clone()
        .map(|(_, p)| p.peak_bytes())
        .max()
        .unwrap_or(0);
    // Binding keeps at most the budget, and at most one product's values per
    // batch and target.
    let batches = data
        .len()
        .div_ceil(products.map(|((n, _), _)| *n).max().unwrap_or(1));
    let kept = bytes_of(BIND_BUDGET, size)
        .min(product.saturating_mul(batches.saturating_mul(draws.max(1)) as u64));
    let need = bytes_of(data.len().saturating_mul(per_sample), size)
        .saturating_add(kept)
        .saturating_add(product);
    let what = format!("the {kind} of {} samples", data.len());
    Ok(ensure_fits(what, need)?)
}

/// The product program of a kind of matrix.
fn product_of(kind: Curvature) -> Product {
    match kind {
        Curvature::Hessian => Product::Hessian,
        Curvature::Ggn => Product::Ggn,
        Curvature::FisherMc { .. } | Curvature::EmpiricalFisher => Product::OuterGradients,
    }
}

/// Every batch's `product` program bound to the parameters, the batch and
/// each of its targets, while the values held stay within [`BIND_BUDGET`];
/// otherwise none (each product then recomputes the forward and backward
/// pass).
fn bind_batches(
    batches: &[BatchData],
    programs: &HashMap<(usize, Product), Executable>,
    product: Product,
    params: &ParamStore,
) -> Result<Vec<Bound>, CurvatureError> {
    let mut held = 0;
    let mut bound = Vec::with_capacity(batches.len());
    for batch in batches {
        let before = held;
        let exe = &programs[&(batch.x.shape()[0], product)];
        let mut programs = Vec::with_capacity(batch.targets().len());
        for y in batch.targets() {
            let (program, values) = exe.bind(&batch_feeds(params, &batch.x, y))?;
            held += values;
            if held > BIND_BUDGET {
                return Ok(Vec::new());
            }
            programs.push(program);
        }
        bound.push(Bound {
            programs,
            kept: held - before,
        });
    }
    Ok(bound)
}
