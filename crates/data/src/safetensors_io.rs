use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use secondo_tensor::memory;

use crate::dataset::{split_samples, Dataset, Targets};
use crate::error::{DataError, Result};
use crate::finite::check_finite;
use crate::safetensors_file::SafetensorsFile;

/// Metadata key holding the dataset name.
const NAME_KEY: &str = "name";
/// Metadata key holding the number of classes (class targets only).
const NUM_CLASSES_KEY: &str = "num_classes";

/// Loads a dataset from a safetensors file with tensors `x` and `y`.
///
/// * `x`: F32 or F64, first axis = samples; the remaining axes (at least one,
///   none of size zero) become `sample_shape`. Values must be finite.
/// * `y`: an integer type (U8, I8, U16, I16, U32, I32, U64, I64) of shape `[N]`
///   gives class indices, which must be non-negative; `num_classes` is the
///   largest label plus one, or the `num_classes` entry of the file's
///   metadata when present (as [`save_safetensors`] writes it). F32 or F64
///   of shape `[N]` or `[N, k, ...]` gives regression values of width
///   `k * ...` (1 for `[N]`), which must be finite.
///
/// The name comes from the metadata entry `name`, else the file stem.
/// Errors name the file, the tensor and, for bad values, the flat index of
/// the first one. The file is read as [`SafetensorsFile::read`] reads it:
/// sizes its header declares are checked against the file and the memory
/// available before its data is read.
///
/// ```
/// use secondo_data::{load_safetensors, save_safetensors};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("digits.safetensors");
/// let d = secondo_data::digits().select(&[0, 1, 2]).unwrap();
/// save_safetensors(&d, &path).unwrap();
/// assert_eq!(load_safetensors(&path).unwrap(), d);
/// ```
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Dataset> {
    load_safetensors_within(path.as_ref(), memory::available())
}

/// [`load_safetensors`] against a given amount of available memory.
pub(crate) fn load_safetensors_within(path: &Path, available: Option<u64>) -> Result<Dataset> {
    let origin = path.display().to_string();
    let file = SafetensorsFile::read_within(path, available)?;
    let metadata = file.metadata();
    let get = |name: &str| {
        file.tensor(name).ok_or_else(|| DataError::MissingTensor {
            path: path.to_path_buf(),
            tensor: name.into(),
        })
    };
    let wrong = |tensor: &str, found: String, expected: &str| DataError::WrongType {
        path: path.to_path_buf(),
        tensor: tensor.into(),
        found,
        expected: expected.into(),
    };

    let xt = get("x")?;
    let (n, sample_shape) = split_samples(path, "x", xt.shape())?;
    let x = floats(&xt).ok_or_else(|| wrong("x", format!("{:?}", xt.dtype()), "F32 or F64"))?;
    check_finite(&origin, "x", &x)?;

    let yt = get("y")?;
    let Some(&ny) = yt.shape().first() else {
        return Err(wrong("y", "a scalar".into(), "an array with a sample axis"));
    };
    if ny != n {
        return Err(DataError::SampleCountMismatch {
            origin,
            x: n,
            y: ny,
        });
    }
    let y = if let Some(values) = floats(&yt) {
        check_finite(&origin, "y", &values)?;
        let width = yt.shape()[1..].iter().product();
        if width == 0 {
            return Err(wrong(
                "y",
                format!("of shape {:?}", yt.shape()),
                "at least one value per sample",
            ));
        }
        Targets::Values { values, width }
    } else {
        let labels = ints(&yt)
            .ok_or_else(|| {
                wrong(
                    "y",
                    format!("{:?}", yt.dtype()),
                    "an integer type, F32 or F64",
                )
            })?
            .map_err(|index| DataError::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "tensor `y` has class label at flat index {index} too large for i64"
                ),
            })?;
        if yt.shape().len() != 1 {
            return Err(wrong(
                "y",
                format!("integer of shape {:?}", yt.shape()),
                "shape [N] for class labels",
            ));
        }
        if let Some(index) = labels.iter().position(|&l| l < 0) {
            return Err(DataError::NegativeLabel {
                origin,
                tensor: "y".into(),
                index,
                value: labels[index],
            });
        }
        let needed = labels.iter().max().map_or(0, |&m| m as u64 + 1);
        let num_classes = match metadata.get(NUM_CLASSES_KEY) {
            None => needed,
            Some(s) => match s.parse::<u64>() {
                Ok(k) if k >= needed => k,
                _ => {
                    return Err(DataError::Format {
                        path: path.to_path_buf(),
                        reason: format!(
                            "metadata num_classes `{s}` is not an integer of at least {needed} (largest label + 1)"
                        ),
                    })
                }
            },
        };
        let num_classes = usize::try_from(num_classes).map_err(|_| DataError::Format {
            path: path.to_path_buf(),
            reason: format!("num_classes {num_classes} does not fit in usize"),
        })?;
        Targets::Classes {
            labels,
            num_classes,
        }
    };

    let name = metadata.get(NAME_KEY).cloned().unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(|| origin.clone(), |s| s.to_string_lossy().into_owned())
    });
    Dataset::new(x, sample_shape.to_vec(), y, name)
}

/// Saves a dataset as safetensors: `x` as F64 of shape `[N, sample_shape...]`,
/// `y` as I64 `[N]` (classes) or F64 `[N, width]` (regression), with the name
/// and number of classes in the metadata. Runs [`Dataset::validate`] first.
///
/// ```
/// use secondo_data::{load_safetensors, save_safetensors, Dataset, Targets};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("reg.safetensors");
/// let d = Dataset::new(
///     vec![1.0, 2.0],
///     vec![1],
///     Targets::Values { values: vec![0.5, -0.5], width: 1 },
///     "reg",
/// )
/// .unwrap();
/// save_safetensors(&d, &path).unwrap();
/// assert_eq!(load_safetensors(&path).unwrap(), d);
/// ```
pub fn save_safetensors(data: &Dataset, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    data.validate()?;
    let n = data.len();
    let x_shape: Vec<usize> = std::iter::once(n)
        .chain(data.sample_shape.iter().copied())
        .collect();
    let x_bytes: Vec<u8> = data.x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut metadata = HashMap::from([(NAME_KEY.to_string(), data.name.clone())]);
    let (y_dtype, y_shape, y_bytes) = match &data.y {
        Targets::Classes {
            labels,
            num_classes,
        } => {
            metadata.insert(NUM_CLASSES_KEY.to_string(), num_classes.to_string());
            (
                Dtype::I64,
                vec![n],
                labels
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            )
        }
        Targets::Values { values, width } => (
            Dtype::F64,
            vec![n, *width],
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    };
    let invalid = |e: safetensors::SafeTensorError| DataError::Format {
        path: path.to_path_buf(),
        reason: format!("cannot encode as safetensors: {e}"),
    };
    let x_view = TensorView::new(Dtype::F64, x_shape, &x_bytes).map_err(invalid)?;
    let y_view = TensorView::new(y_dtype, y_shape, &y_bytes).map_err(invalid)?;
    let bytes =
        safetensors::serialize([("x", x_view), ("y", y_view)], Some(metadata)).map_err(invalid)?;
    std::fs::write(path, bytes).map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// The values of an F32 or F64 tensor, widened; `None` for other types.
fn floats(t: &TensorView<'_>) -> Option<Vec<f64>> {
    let d = t.data();
    match t.dtype() {
        Dtype::F32 => Some(
            d.chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        Dtype::F64 => Some(
            d.chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        _ => None,
    }
}

/// The values of an integer tensor as i64; `None` for non-integer types,
/// `Some(Err(index))` for the first U64 value above `i64::MAX`.
fn ints(t: &TensorView<'_>) -> Option<std::result::Result<Vec<i64>, usize>> {
    let d = t.data();
    let v: Vec<i64> = match t.dtype() {
        Dtype::U8 => d.iter().map(|&b| i64::from(b)).collect(),
        Dtype::I8 => d.iter().map(|&b| i64::from(b as i8)).collect(),
        Dtype::U16 => d
            .chunks_exact(2)
            .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::I16 => d
            .chunks_exact(2)
            .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::U32 => d
            .chunks_exact(4)
            .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::U64 => {
            let mut out = Vec::with_capacity(d.len() / 8);
            for (i, c) in d.chunks_exact(8).enumerate() {
                let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                match i64::try_from(v) {
                    Ok(v) => out.push(v),
                    Err(_) => return Some(Err(i)),
                }
            }
            out
        }
        _ => return None,
    };
    Some(Ok(v))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    struct Tmp(tempfile::TempDir);

    impl Tmp {
        fn new() -> Self {
            Tmp(tempfile::tempdir().unwrap())
        }
        /// Writes a file holding the given (name, dtype, shape, bytes) tensors.
        fn file(
            &self,
            name: &str,
            tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
            meta: Option<HashMap<String, String>>,
        ) -> PathBuf {
            let views: Vec<(&str, TensorView<'_>)> = tensors
                .iter()
                .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
                .collect();
            let p = self.0.path().join(name);
            std::fs::write(&p, safetensors::serialize(views, meta).unwrap()).unwrap();
            p
        }
    }

    fn le32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn le64(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn loads_f32_x_and_integer_labels() {
        let t = Tmp::new();
        let p = t.file(
            "toy.safetensors",
            &[
                (
                    "x",
                    Dtype::F32,
                    vec![3, 1, 2],
                    le32(&[0.5, 1.0, 2.0, 3.0, -1.0, 0.25]),
                ),
                ("y", Dtype::U8, vec![3], vec![2, 0, 4]),
            ],
            None,
        );
        let d = load_safetensors(&p).unwrap();
        assert_eq!(d.name, "toy");
        assert_eq!(d.sample_shape, vec![1, 2]);
        assert_eq!(d.x, vec![0.5, 1.0, 2.0, 3.0, -1.0, 0.25]);
        assert_eq!(
            d.y,
            Targets::Classes {
                labels: vec![2, 0, 4],
                num_classes: 5
            }
        );
        for (dtype, bytes) in [
            (Dtype::I8, vec![2u8, 0, 4]),
            (
                Dtype::I16,
                [2i16, 0, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                Dtype::U16,
                [2u16, 0, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                Dtype::I32,
                [2i32, 0, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                Dtype::U32,
                [2u32, 0, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                Dtype::I64,
                [2i64, 0, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                Dtype::U64,
                [2u64, 0, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        ] {
            let p = t.file(
                "ints.safetensors",
                &[
                    ("x", Dtype::F64, vec![3, 1], le64(&[1.0, 2.0, 3.0])),
                    ("y", dtype, vec![3], bytes),
                ],
                None,
            );
            let d = load_safetensors(&p).unwrap();
            assert_eq!(d.y.num_classes(), Some(5), "{dtype:?}");
            assert_eq!(d.sample_shape, vec![1]);
        }
    }

    #[test]
    fn float_y_is_regression() {
        let t = Tmp::new();
        let p = t.file(
            "r.safetensors",
            &[
                ("x", Dtype::F64, vec![2, 1], le64(&[1.0, 2.0])),
                (
                    "y",
                    Dtype::F32,
                    vec![2, 3],
                    le32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                ),
            ],
            None,
        );
        let d = load_safetensors(&p).unwrap();
        assert_eq!(
            d.y,
            Targets::Values {
                values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                width: 3
            }
        );
        let p = t.file(
            "r1.safetensors",
            &[
                ("x", Dtype::F64, vec![2, 1], le64(&[1.0, 2.0])),
                ("y", Dtype::F64, vec![2], le64(&[7.0, 8.0])),
            ],
            None,
        );
        assert_eq!(
            load_safetensors(&p).unwrap().y,
            Targets::Values {
                values: vec![7.0, 8.0],
                width: 1
            }
        );
    }

    #[test]
    fn round_trip_keeps_num_classes_and_name() {
        let t = Tmp::new();
        let p = t.0.path().join("d.safetensors");
        let d = crate::digits()
            .select(&[0, 1])
            .unwrap()
            .with_sample_shape(vec![1, 8, 8])
            .unwrap();
        save_safetensors(&d, &p).unwrap();
        let back = load_safetensors(&p).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.num_classes(), Some(10));
        let meta = HashMap::from([("num_classes".to_string(), "2".to_string())]);
        let p = t.file(
            "m.safetensors",
            &[
                ("x", Dtype::F64, vec![1, 1], le64(&[1.0])),
                ("y", Dtype::U8, vec![1], vec![5]),
            ],
            Some(meta),
        );
        let e = load_safetensors(&p).unwrap_err().to_string();
        assert!(e.contains("metadata num_classes `2`"), "{e}");
        let mut bad = d.clone();
        bad.x[3] = f64::NAN;
        assert!(save_safetensors(&bad, &p).is_err());
        assert!(matches!(
            save_safetensors(&d, t.0.path().join("no/dir/f")),
            Err(DataError::Io { .. })
        ));
    }

    #[test]
    fn errors_name_file_tensor_and_index() {
        let t = Tmp::new();
        let x = ("x", Dtype::F64, vec![3, 1], le64(&[1.0, 2.0, 3.0]));
        let y = (
            "y",
            Dtype::I64,
            vec![3],
            [0i64, 1, 2]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );

        let p = t.file("noy.safetensors", std::slice::from_ref(&x), None);
        let e = load_safetensors(&p).unwrap_err();
        assert!(matches!(&e, DataError::MissingTensor { tensor, .. } if tensor == "y"));
        assert_eq!(
            e.to_string(),
            format!("{}: missing tensor `y`", p.display())
        );
        let p = t.file("nox.safetensors", std::slice::from_ref(&y), None);
        assert!(
            matches!(load_safetensors(&p), Err(DataError::MissingTensor { tensor, .. }) if tensor == "x")
        );

        let p = t.file(
            "int-x.safetensors",
            &[("x", Dtype::I32, vec![3, 1], vec![0; 12]), y.clone()],
            None,
        );
        let e = load_safetensors(&p).unwrap_err().to_string();
        assert!(e.ends_with("tensor `x` is I32, expected F32 or F64"), "{e}");
        let p = t.file(
            "bool-y.safetensors",
            &[x.clone(), ("y", Dtype::BOOL, vec![3], vec![0; 3])],
            None,
        );
        assert!(matches!(
            load_safetensors(&p),
            Err(DataError::WrongType { .. })
        ));
        let p = t.file(
            "2d-lbl.safetensors",
            &[x.clone(), ("y", Dtype::U8, vec![3, 1], vec![0; 3])],
            None,
        );
        assert!(matches!(
            load_safetensors(&p),
            Err(DataError::WrongType { .. })
        ));
        let p = t.file(
            "scalar-x.safetensors",
            &[("x", Dtype::F64, vec![], le64(&[1.0])), y.clone()],
            None,
        );
        assert!(matches!(
            load_safetensors(&p),
            Err(DataError::WrongType { .. })
        ));
        for (name, shape) in [
            ("flat-x.safetensors", vec![3]),
            ("empty-x.safetensors", vec![3, 0]),
        ] {
            let bytes = le64(&[1.0, 2.0, 3.0][..shape.iter().product()]);
            let p = t.file(name, &[("x", Dtype::F64, shape, bytes), y.clone()], None);
            let e = load_safetensors(&p).unwrap_err();
            assert!(
                matches!(&e, DataError::WrongType { tensor, .. } if tensor == "x"),
                "{e}"
            );
            assert!(e.to_string().starts_with(&p.display().to_string()), "{e}");
            assert!(e.to_string().contains("at least one feature"), "{e}");
        }
        let p = t.file(
            "zero-width.safetensors",
            &[x.clone(), ("y", Dtype::F64, vec![3, 0], vec![])],
            None,
        );
        assert!(matches!(
            load_safetensors(&p),
            Err(DataError::WrongType { .. })
        ));

        let p = t.file(
            "n.safetensors",
            &[x.clone(), ("y", Dtype::U8, vec![2], vec![0, 1])],
            None,
        );
        let e = load_safetensors(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: x has 3 samples but y has 2", p.display())
        );

        let p = t.file(
            "neg.safetensors",
            &[
                x.clone(),
                (
                    "y",
                    Dtype::I16,
                    vec![3],
                    [0i16, 1, -1].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
            ],
            None,
        );
        let e = load_safetensors(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::NegativeLabel {
                    index: 2,
                    value: -1,
                    ..
                }
            ),
            "{e}"
        );
        let p = t.file(
            "big.safetensors",
            &[
                x.clone(),
                (
                    "y",
                    Dtype::U64,
                    vec![3],
                    [0u64, u64::MAX, 1]
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                ),
            ],
            None,
        );
        assert!(load_safetensors(&p)
            .unwrap_err()
            .to_string()
            .contains("flat index 1 too large"));

        let p = t.file(
            "nanx.safetensors",
            &[
                (
                    "x",
                    Dtype::F32,
                    vec![3, 2],
                    le32(&[0.0, 1.0, 2.0, f32::INFINITY, 0.0, 0.0]),
                ),
                y.clone(),
            ],
            None,
        );
        let e = load_safetensors(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: tensor `x` has non-finite value inf at flat index 3",
                p.display()
            )
        );
        let p = t.file(
            "nany.safetensors",
            &[
                x.clone(),
                ("y", Dtype::F64, vec![3], le64(&[0.0, 1.0, f64::NAN])),
            ],
            None,
        );
        assert!(
            matches!(load_safetensors(&p), Err(DataError::NonFinite { index: 2, tensor, .. }) if tensor == "y")
        );

        let good = t.file("good.safetensors", &[x, y], None);
        let bytes = std::fs::read(&good).unwrap();
        for (cut, says) in [
            (0, "not a valid safetensors file"),
            (5, "not a valid safetensors file"),
            (20, "not a valid safetensors file"),
            (bytes.len() - 1, "truncated"),
        ] {
            let p = t.0.path().join(format!("cut{cut}.safetensors"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = load_safetensors(&p).unwrap_err();
            assert!(
                matches!(&e, DataError::Format { path, .. } if *path == p),
                "{e}"
            );
            assert!(e.to_string().contains(says), "{e}");
        }
        let mut garbage = bytes.clone();
        garbage[8] = b'!'; // the JSON header's opening brace
        std::fs::write(&good, &garbage).unwrap();
        assert!(matches!(
            load_safetensors(&good),
            Err(DataError::Format { .. })
        ));
        assert!(matches!(
            load_safetensors(t.0.path().join("absent")),
            Err(DataError::Io { .. })
        ));
    }
}
