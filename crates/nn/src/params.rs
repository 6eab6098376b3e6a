//! Named parameter tensors in PyTorch's layout, PyTorch's default
//! initialisation, and safetensors files.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::Dtype;
use secondo_data::SafetensorsFile;
use secondo_tensor::{DType, Tensor};

use crate::spec::{ModelSpec, ParamKind};
use crate::NnError;

/// Named tensors in a fixed order (a model's `state_dict`).
///
/// ```
/// use secondo_nn::ParamStore;
/// use secondo_tensor::{DType, Tensor};
/// let mut p = ParamStore::new();
/// p.insert("0.weight", Tensor::zeros(vec![2, 3], DType::F32));
/// assert_eq!(p.get("0.weight").unwrap().shape(), &[2, 3]);
/// assert_eq!(p.names(), vec!["0.weight"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    entries: Vec<(String, Tensor)>,
    /// Non-trainable state (batch norms' running statistics), kept apart so
    /// that optimizers and gradients see parameters only.
    buffers: Vec<(String, Tensor)>,
    /// `num_batches_tracked` counters.
    counters: Vec<(String, i64)>,
}

impl ParamStore {
    /// An empty store.
    ///
    /// ```
    /// assert!(secondo_nn::ParamStore::new().is_empty());
    /// ```
    pub fn new() -> ParamStore {
        ParamStore::default()
    }

    /// Adds or replaces a tensor (new names go last).
    ///
    /// ```
    /// # use secondo_nn::ParamStore;
    /// # use secondo_tensor::{DType, Tensor};
    /// let mut p = ParamStore::new();
    /// p.insert("a", Tensor::zeros(vec![1], DType::F32));
    /// p.insert("a", Tensor::zeros(vec![2], DType::F32));
    /// assert_eq!(p.len(), 1);
    /// ```
    pub fn insert(&mut self, name: &str, t: Tensor) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = t,
            None => self.entries.push((name.to_string(), t)),
        }
    }

    /// The tensor of that name.
    ///
    /// ```
    /// assert!(secondo_nn::ParamStore::new().get("x").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|e| &e.1)
    }

    /// Names in order.
    ///
    /// ```
    /// assert!(secondo_nn::ParamStore::new().names().is_empty());
    /// ```
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// `(name, tensor)` pairs in order.
    ///
    /// ```
    /// assert_eq!(secondo_nn::ParamStore::new().iter().count(), 0);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Mutable tensors in order.
    ///
    /// ```
    /// assert_eq!(secondo_nn::ParamStore::new().tensors_mut().count(), 0);
    /// ```
    pub fn tensors_mut(&mut self) -> impl Iterator<Item = &mut Tensor> {
        self.entries.iter_mut().map(|(_, t)| t)
    }

    /// Number of tensors.
    ///
    /// ```
    /// assert_eq!(secondo_nn::ParamStore::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    ///
    /// ```
    /// assert!(secondo_nn::ParamStore::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of scalar values.
    ///
    /// ```
    /// # use secondo_nn::ParamStore;
    /// # use secondo_tensor::{DType, Tensor};
    /// let mut p = ParamStore::new();
    /// p.insert("w", Tensor::zeros(vec![2, 3], DType::F32));
    /// assert_eq!(p.numel(), 6);
    /// ```
    pub fn numel(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.numel()).sum()
    }

    /// All tensors converted to `dtype`.
    ///
    /// ```
    /// # use secondo_nn::ParamStore;
    /// # use secondo_tensor::{DType, Tensor};
    /// let mut p = ParamStore::new();
    /// p.insert("w", Tensor::zeros(vec![2], DType::F32));
    /// assert_eq!(p.to_dtype(DType::F64).get("w").unwrap().dtype(), DType::F64);
    /// ```
    pub fn to_dtype(&self, dtype: DType) -> ParamStore {
        ParamStore {
            entries: self
                .entries
                .iter()
                .map(|(n, t)| (n.clone(), t.to_dtype(dtype)))
                .collect(),
            buffers: self
                .buffers
                .iter()
                .map(|(n, t)| (n.clone(), t.to_dtype(dtype)))
                .collect(),
            counters: self.counters.clone(),
        }
    }

    /// PyTorch's default initialisation of the spec's parameters, seeded: weights and biases of
    /// linear and convolution layers uniform in ±1/√fan_in (Kaiming-uniform with
    /// a = √5), normalisation weights 1 and biases 0.
    ///
    /// ```
    /// use secondo_nn::{spec::ModelSpec, ParamStore};
    /// use secondo_tensor::DType;
    /// let spec: ModelSpec = "linear(4,3),relu,linear(3,2)".parse().unwrap();
    /// let a = ParamStore::init(&spec, 0, DType::F32);
    /// let b = ParamStore::init(&spec, 0, DType::F32);
    /// assert_eq!(a.get("2.weight").unwrap().to_f64_vec(), b.get("2.weight").unwrap().to_f64_vec());
    /// assert!(a.get("0.weight").unwrap().to_f64_vec().iter().all(|v| v.abs() <= 0.5));
    /// ```
    pub fn init(spec: &ModelSpec, seed: u64, dtype: DType) -> ParamStore {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut store = ParamStore::new();
        for p in spec.parameters() {
            let n: usize = p.shape.iter().product();
            let values: Vec<f64> = match p.fan_in {
                Some(fan_in) => uniform(&mut rng, n, fan_in_bound(fan_in)),
                None if p.kind == ParamKind::Weight => vec![1.0; n],
                None => vec![0.0; n],
            };
            let t =
                Tensor::from_f64(p.shape.clone(), &values, dtype).expect("length matches shape");
            store.insert(&p.name, t);
        }
        store.reset_buffers(spec, dtype);
        store
    }

    /// Running statistics as PyTorch starts them (mean 0, variance 1) and
    /// counters at 0.
    fn reset_buffers(&mut self, spec: &ModelSpec, dtype: DType) {
        self.buffers = spec
            .buffers()
            .into_iter()
            .map(|b| {
                let value = if b.kind == ParamKind::RunningVar {
                    1.0
                } else {
                    0.0
                };
                (b.name, Tensor::full(b.shape, value, dtype))
            })
            .collect();
        self.counters = spec.batch_counters().into_iter().map(|n| (n, 0)).collect();
    }

    /// The buffers (running statistics) in state_dict order.
    ///
    /// ```
    /// use secondo_nn::{spec::ModelSpec, ParamStore};
    /// use secondo_tensor::DType;
    /// let spec: ModelSpec = "linear(4,3),batchnorm1d(3)".parse().unwrap();
    /// let p = ParamStore::init(&spec, 0, DType::F64);
    /// let names: Vec<&str> = p.buffers().map(|(n, _)| n).collect();
    /// assert_eq!(names, ["1.running_mean", "1.running_var"]);
    /// assert_eq!(p.counter("1.num_batches_tracked"), Some(0));
    /// ```
    pub fn buffers(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.buffers.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Replaces the buffer of that name (new names go last).
    ///
    /// ```
    /// # use secondo_nn::ParamStore;
    /// # use secondo_tensor::{DType, Tensor};
    /// let mut p = ParamStore::new();
    /// p.insert_buffer("1.running_mean", Tensor::zeros(vec![3], DType::F32));
    /// assert_eq!(p.buffers().count(), 1);
    /// ```
    pub fn insert_buffer(&mut self, name: &str, t: Tensor) {
        match self.buffers.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = t,
            None => self.buffers.push((name.to_string(), t)),
        }
    }

    /// The buffer of that name.
    pub fn buffer(&self, name: &str) -> Option<&Tensor> {
        self.buffers.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The `num_batches_tracked` counter of that name.
    pub fn counter(&self, name: &str) -> Option<i64> {
        self.counters.iter().find(|(n, _)| n == name).map(|e| e.1)
    }

    /// Sets the `num_batches_tracked` counter of that name (new names go
    /// last).
    pub fn set_counter(&mut self, name: &str, count: i64) {
        match self.counters.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = count,
            None => self.counters.push((name.to_string(), count)),
        }
    }

    /// Adds one to every `num_batches_tracked` counter (after a training
    /// step, as PyTorch does in each batch norm's forward pass).
    pub fn count_batch(&mut self) {
        self.counters.iter_mut().for_each(|c| c.1 += 1);
    }

    /// Loads the parameters of `spec` from a safetensors file (PyTorch names
    /// and layout), converting to `dtype`. Missing tensors, wrong shapes,
    /// non-float dtypes and non-finite values are errors naming the tensor.
    /// Loading is strict, like PyTorch's `load_state_dict`: a tensor that is
    /// neither a parameter nor a buffer of the spec (nor a batch norm's
    /// `num_batches_tracked`) is an error naming it, so that weights saved for
    /// another model are not half-used in silence. Buffers are loaded and
    /// kept apart from the parameters (see [`ParamStore::buffers`]); a missing
    /// running statistic is an error naming it, a missing `num_batches_tracked`
    /// starts at 0.
    ///
    /// ```no_run
    /// use secondo_nn::{spec::ModelSpec, ParamStore};
    /// use secondo_tensor::DType;
    /// let spec: ModelSpec = "linear(4,3)".parse().unwrap();
    /// let p = ParamStore::load(std::path::Path::new("w.safetensors"), &spec, DType::F32)?;
    /// # Ok::<(), secondo_nn::NnError>(())
    /// ```
    pub fn load(path: &Path, spec: &ModelSpec, dtype: DType) -> Result<ParamStore, NnError> {
        let all = read_safetensors(path)?;
        ParamStore::from_named(&path.display().to_string(), &all, spec, dtype)
    }

    /// [`ParamStore::load`] from tensors already read (`file` names them in
    /// errors), e.g. the weights a Laplace posterior keeps beside itself.
    pub fn from_named(
        file: &str,
        all: &HashMap<String, Tensor>,
        spec: &ModelSpec,
        dtype: DType,
    ) -> Result<ParamStore, NnError> {
        let file = file.to_string();
        refuse_unexpected(&file, spec, all.keys())?;
        let mut store = ParamStore::new();
        for p in spec.parameters() {
            let t = all.get(&p.name).ok_or_else(|| NnError::MissingParameter {
                file: file.clone(),
                name: p.name.clone(),
            })?;
            check_tensor(&file, &p.name, &p.shape, t)?;
            store.insert(&p.name, t.to_dtype(dtype));
        }
        store.reset_buffers(spec, dtype);
        for b in spec.buffers() {
            let t = all.get(&b.name).ok_or_else(|| NnError::MissingParameter {
                file: file.clone(),
                name: b.name.clone(),
            })?;
            check_tensor(&file, &b.name, &b.shape, t)?;
            store.insert_buffer(&b.name, t.to_dtype(dtype));
        }
        for c in store.counters.iter_mut() {
            if let Some(t) = all.get(&c.0) {
                check_tensor(&file, &c.0, &[], t)?;
                c.1 = t.item() as i64;
            }
        }
        Ok(store)
    }

    /// Writes all tensors to a safetensors file atomically (a temporary file
    /// renamed into place, so no partial file is ever left).
    ///
    /// ```
    /// # use secondo_nn::ParamStore;
    /// # use secondo_tensor::{DType, Tensor};
    /// let mut p = ParamStore::new();
    /// p.insert("0.weight", Tensor::full(vec![2, 2], 0.5, DType::F32));
    /// let path = std::env::temp_dir().join("secondo-doc-params.safetensors");
    /// p.save(&path).unwrap();
    /// let back = secondo_nn::read_safetensors(&path).unwrap();
    /// assert_eq!(back.get("0.weight").unwrap().to_f64_vec(), vec![0.5; 4]);
    /// # std::fs::remove_file(path).unwrap();
    /// ```
    pub fn save(&self, path: &Path) -> Result<(), NnError> {
        let counters: Vec<(&str, i64)> = self
            .counters
            .iter()
            .map(|(n, c)| (n.as_str(), *c))
            .collect();
        crate::write_state(
            path,
            self.iter().chain(self.buffers()),
            &counters,
            &HashMap::new(),
        )
    }
}

/// Checks one loaded tensor's shape and values.
fn check_tensor(file: &str, name: &str, shape: &[usize], t: &Tensor) -> Result<(), NnError> {
    let bad = |reason: String| NnError::BadTensor {
        file: file.to_owned(),
        name: name.to_owned(),
        reason,
    };
    if t.shape() != shape {
        return Err(bad(format!(
            "expected shape {shape:?}, got {:?}",
            t.shape()
        )));
    }
    if let Some(i) = t.first_non_finite() {
        return Err(bad(format!("non-finite value at flat index {i}")));
    }
    Ok(())
}

/// Refuses tensors of a weights file that are not part of `spec`'s state.
fn refuse_unexpected<'a>(
    file: &str,
    spec: &ModelSpec,
    names: impl Iterator<Item = &'a String>,
) -> Result<(), NnError> {
    let state: HashSet<String> = spec
        .parameters()
        .into_iter()
        .chain(spec.buffers())
        .map(|p| p.name)
        .collect();
    let mut unexpected: Vec<String> = names
        .filter(|name| !state.contains(*name) && !spec.is_ignored_state_entry(name))
        .cloned()
        .collect();
    if unexpected.is_empty() {
        return Ok(());
    }
    unexpected.sort();
    Err(NnError::UnexpectedTensors {
        file: file.to_string(),
        names: unexpected,
    })
}

fn fan_in_bound(fan_in: usize) -> f64 {
    1.0 / (fan_in.max(1) as f64).sqrt()
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

/// Reads every float tensor of a safetensors file; integer tensors are
/// converted to floats. Errors name the file. The file is read by
/// [`SafetensorsFile::read`], which checks the sizes its header declares
/// against the file and the memory available before reading its data.
///
/// ```no_run
/// let tensors = secondo_nn::read_safetensors(std::path::Path::new("results.safetensors"))?;
/// # Ok::<(), secondo_nn::NnError>(())
/// ```
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, NnError> {
    read_safetensors_with_metadata(path).map(|(t, _)| t)
}

/// String metadata of a safetensors file.
pub type Metadata = HashMap<String, String>;

/// [`read_safetensors`] plus the file's string metadata.
///
/// ```no_run
/// let (tensors, meta) = secondo_nn::read_safetensors_with_metadata(std::path::Path::new("f.safetensors"))?;
/// println!("{:?}", meta.get("spec"));
/// # Ok::<(), secondo_nn::NnError>(())
/// ```
pub fn read_safetensors_with_metadata(
    path: &Path,
) -> Result<(HashMap<String, Tensor>, Metadata), NnError> {
    let file = path.display().to_string();
    let st = SafetensorsFile::read(path)?;
    let metadata = st.metadata();
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
                .collect(),
            other => {
                return Err(NnError::BadTensor {
                    file: file.clone(),
                    name,
                    reason: format!("unsupported dtype {other:?} (expected F32, F64, I32 or I64)"),
                })
            }
        };
        let dtype = if view.dtype() == Dtype::F32 {
            DType::F32
        } else {
            DType::F64
        };
        let t = Tensor::from_f64(shape, &values, dtype).map_err(|e| NnError::BadTensor {
            file: file.clone(),
            name: name.clone(),
            reason: e.to_string(),
        })?;
        out.insert(name, t);
    }
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ModelSpec {
        text.parse().unwrap()
    }

    /// Saves the initial weights of `model` plus `extra` zero tensors.
    fn weights(dir: &tempfile::TempDir, model: &str, extra: &[&str]) -> std::path::PathBuf {
        let mut store = ParamStore::init(&spec(model), 0, DType::F32);
        for name in extra {
            store.insert(name, Tensor::zeros(vec![2], DType::F32));
        }
        let path = dir.path().join("w.safetensors");
        store.save(&path).unwrap();
        path
    }

    fn load_error(path: &Path, model: &str) -> String {
        let e = ParamStore::load(path, &spec(model), DType::F32)
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    }

    #[test]
    fn unexpected_tensors_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = weights(&dir, "linear(3,2)", &["extra", "head.weight"]);
        assert_eq!(
            load_error(&path, "linear(3,2)"),
            format!(
                "{}: unexpected tensors 'extra', 'head.weight', which the model has no parameter or buffer for",
                path.display()
            )
        );
        let path = weights(&dir, "linear(3,2)", &[]);
        let e = load_error(&path, "linear(3,2,bias=false)");
        assert!(
            e.ends_with(
                "unexpected tensors '0.bias', which the model has no parameter or buffer for"
            ),
            "{e}"
        );
    }

    #[test]
    fn many_unexpected_tensors_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let path = weights(&dir, "relu", &extra);
        let e = load_error(&path, "relu");
        assert!(
            e.ends_with("unexpected tensors 't0', 't1', 't2', 't3', 't4' and 3 more, which the model has no parameter or buffer for"),
            "{e}"
        );
    }

    #[test]
    fn buffers_are_expected() {
        let dir = tempfile::tempdir().unwrap();
        let model = "linear(2,2),batchnorm1d(2)";
        let mut store = ParamStore::init(&spec(model), 0, DType::F64);
        let path = dir.path().join("w.safetensors");
        store.save(&path).unwrap();
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back["1.num_batches_tracked"].shape(), &[] as &[usize]);
        let loaded = ParamStore::load(&path, &spec(model), DType::F64).unwrap();
        assert_eq!(loaded.names(), ["0.weight", "0.bias", "1.weight", "1.bias"]);
        assert_eq!(
            loaded.buffer("1.running_var").unwrap().to_f64_vec(),
            [1.0, 1.0]
        );
        // Weights without the running statistics cannot evaluate the batch norm.
        store.buffers.clear();
        store.counters.clear();
        store.save(&path).unwrap();
        let e = load_error(&path, model);
        assert!(e.contains("1.running_mean"), "{e}");
    }

    #[test]
    fn residual_blocks_are_initialised_like_pytorch() {
        let text =
            "conv2d(3,8,k=3,bias=false),residual(conv2d(8,8,k=3,p=1,groups=2),batchnorm2d(8)\
                    |conv2d(8,8,k=1,bias=false),layernorm(1)),flatten,linear(8,2)";
        let model = spec(text);
        let store = ParamStore::init(&model, 0, DType::F64);
        let names: Vec<&str> = store.names();
        assert_eq!(
            names,
            [
                "0.weight",
                "1.body.0.weight",
                "1.body.0.bias",
                "1.body.1.weight",
                "1.body.1.bias",
                "1.shortcut.0.weight",
                "1.shortcut.1.weight",
                "1.shortcut.1.bias",
                "3.weight",
                "3.bias",
            ]
        );
        let values = |name: &str| store.get(name).unwrap().to_f64_vec();
        let within = |name: &str, fan_in: f64| {
            let bound = 1.0 / fan_in.sqrt();
            let v = values(name);
            assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
            assert!(v.iter().any(|x| x.abs() > bound / 2.0), "{name}");
        };
        assert_eq!(store.get("1.body.0.weight").unwrap().shape(), &[8, 4, 3, 3]);
        within("1.body.0.weight", 36.0);
        within("1.body.0.bias", 36.0);
        within("1.shortcut.0.weight", 8.0);
        assert_eq!(values("1.body.1.weight"), [1.0; 8]);
        assert_eq!(values("1.body.1.bias"), [0.0; 8]);
        assert_eq!(values("1.shortcut.1.weight"), [1.0]);
        assert_eq!(values("1.shortcut.1.bias"), [0.0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut saved = store.clone();
        saved.insert_buffer(
            "1.body.1.running_mean",
            Tensor::full(vec![8], 0.25, DType::F64),
        );
        saved.count_batch();
        saved.save(&path).unwrap();
        let loaded = ParamStore::load(&path, &model, DType::F64).unwrap();
        assert_eq!(loaded.names(), names);
        let buffers: Vec<&str> = loaded.buffers().map(|(n, _)| n).collect();
        assert_eq!(buffers, ["1.body.1.running_mean", "1.body.1.running_var"]);
        assert_eq!(
            loaded.buffer("1.body.1.running_mean").unwrap().to_f64_vec(),
            [0.25; 8]
        );
        assert_eq!(loaded.counter("1.body.1.num_batches_tracked"), Some(1));
        saved.insert(
            "1.shortcut.1.running_mean",
            Tensor::zeros(vec![1], DType::F32),
        );
        saved.save(&path).unwrap();
        let e = load_error(&path, text);
        assert!(
            e.contains("unexpected tensors '1.shortcut.1.running_mean'"),
            "{e}"
        );
    }

    #[test]
    fn endless_devices_fail_at_once_in_one_line() {
        for device in ["/dev/zero", "/dev/urandom"] {
            let path = Path::new(device);
            if path.exists() {
                let e = load_error(path, "linear(3,2)");
                assert!(
                    e.starts_with(&format!("{device}: not a valid safetensors file")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn read_errors_are_said_once() {
        let e = ParamStore::load(Path::new("/no/such/w"), &spec("relu"), DType::F32).unwrap_err();
        assert!(std::error::Error::source(&e).is_none(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "/no/such/w: No such file or directory (os error 2)"
        );
    }
}
