//! Writing safetensors files byte for byte the same on every run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use secondo_tensor::{DType, Tensor};

use crate::NnError;

/// Writes named tensors (in their own dtypes) and string metadata to the
/// safetensors file `path`, streaming each tensor's own bytes (no second copy
/// in memory). The header is written here rather than by the `safetensors`
/// crate, whose metadata map comes out in a different order on every run: the
/// header's keys are sorted, so the same tensors and metadata give the same
/// bytes. A failed write removes the file; placing it atomically beside other
/// outputs is `secondo::output`'s job.
///
/// ```
/// use std::collections::HashMap;
/// use secondo_tensor::{DType, Tensor};
/// let t = Tensor::zeros(vec![3], DType::F64);
/// let path = std::env::temp_dir().join("secondo-doc-write.safetensors");
/// let meta = HashMap::from([("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())]);
/// secondo_nn::write_safetensors(&path, [("grad/0.bias", &t)], &meta).unwrap();
/// let (tensors, read) = secondo_nn::read_safetensors_with_metadata(&path).unwrap();
/// assert_eq!(tensors["grad/0.bias"].shape(), &[3]);
/// assert_eq!(read, meta);
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn write_safetensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &HashMap<String, String>,
) -> Result<(), NnError> {
    write_state(path, tensors, &[], metadata)
}

/// [`write_safetensors`] plus integer scalars stored as `I64` (PyTorch's
/// `num_batches_tracked` counters).
///
/// ```
/// use std::collections::HashMap;
/// use secondo_tensor::{DType, Tensor};
/// let t = Tensor::zeros(vec![2], DType::F32);
/// let path = std::env::temp_dir().join("secondo-doc-state.safetensors");
/// secondo_nn::write_state(&path, [("1.running_mean", &t)], &[("1.num_batches_tracked", 3)], &HashMap::new()).unwrap();
/// let back = secondo_nn::read_safetensors(&path).unwrap();
/// assert_eq!(back["1.num_batches_tracked"].item(), 3.0);
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn write_state<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    counters: &[(&str, i64)],
    metadata: &HashMap<String, String>,
) -> Result<(), NnError> {
    let mut records: Vec<Record> = tensors
        .into_iter()
        .map(|(name, t)| Record {
            name,
            dtype: match t.dtype() {
                DType::F32 => "F32",
                DType::F64 => "F64",
            },
            shape: t.shape(),
            bytes: little_endian_bytes(t),
        })
        .chain(counters.iter().map(|&(name, count)| Record {
            name,
            dtype: "I64",
            shape: &[],
            bytes: std::borrow::Cow::Owned(count.to_le_bytes().to_vec()),
        }))
        .collect();
    // Widest elements first, as the safetensors crate lays them out: every
    // tensor then starts aligned to its element size.
    records.sort_by_key(|r| std::cmp::Reverse(r.width()));
    let header = header(&records, metadata);
    let written = write_file(path, &header, &records);
    written.map_err(|e| {
        let _ = std::fs::remove_file(path);
        NnError::File {
            file: path.display().to_string(),
            reason: e.to_string(),
        }
    })
}

/// One tensor as it is stored.
struct Record<'a> {
    name: &'a str,
    dtype: &'static str,
    shape: &'a [usize],
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl Record<'_> {
    /// Bytes per element.
    fn width(&self) -> usize {
        if self.dtype == "F32" {
            4
        } else {
            8
        }
    }
}

/// The JSON header, padded with spaces to a multiple of 8 bytes.
fn header(records: &[Record], metadata: &HashMap<String, String>) -> Vec<u8> {
    let mut doc = serde_json::Map::new();
    let mut offset = 0usize;
    for r in records {
        let end = offset + r.bytes.len();
        doc.insert(
            r.name.to_string(),
            serde_json::json!({ "dtype": r.dtype, "shape": r.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    if !metadata.is_empty() {
        let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
        doc.insert("__metadata__".into(), serde_json::json!(sorted));
    }
    let mut bytes = serde_json::Value::Object(doc).to_string().into_bytes();
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    bytes
}

fn write_file(path: &Path, header: &[u8], records: &[Record]) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(header)?;
    for r in records {
        file.write_all(&r.bytes)?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The little-endian bytes of `t`'s elements: its own memory on
/// little-endian machines, a copy elsewhere.
fn little_endian_bytes(t: &Tensor) -> std::borrow::Cow<'_, [u8]> {
    fn bytes<T: Copy, const N: usize>(v: &[T], le: fn(T) -> [u8; N]) -> std::borrow::Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            // SAFETY: f32 and f64 have no padding and every byte of them is
            // initialised; u8 needs no alignment; the length covers `v` exactly.
            let raw = unsafe {
                std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v))
            };
            std::borrow::Cow::Borrowed(raw)
        } else {
            std::borrow::Cow::Owned(v.iter().flat_map(|&x| le(x)).collect())
        }
    }
    match t.dtype() {
        DType::F32 => bytes(t.as_slice::<f32>().expect("f32"), f32::to_le_bytes),
        DType::F64 => bytes(t.as_slice::<f64>().expect("f64"), f64::to_le_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tensors_and_metadata_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![1], vec![3.0f64]).unwrap();
        let meta: HashMap<String, String> =
            (0..20).map(|i| (format!("k{i}"), i.to_string())).collect();
        let mut files = Vec::new();
        for i in 0..3 {
            // A fresh map each time: its iteration order differs between maps.
            let meta: HashMap<String, String> = meta.clone().into_iter().collect();
            let path = dir.path().join(format!("{i}.safetensors"));
            write_safetensors(&path, [("a", &a), ("b", &b)], &meta).unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert_eq!(files[0], files[1]);
        assert_eq!(files[0], files[2]);
        let header_len = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0);
        // f64 first: 8 bytes of b, then 8 of a.
        assert_eq!(files[0].len(), 8 + header_len + 16);
        assert_eq!(
            &files[0][8 + header_len..8 + header_len + 8],
            &3.0f64.to_le_bytes()
        );
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let t = Tensor::zeros(vec![1], DType::F32);
        let err = write_safetensors(
            Path::new("/proc/no-such/f.safetensors"),
            [("t", &t)],
            &HashMap::new(),
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .starts_with("/proc/no-such/f.safetensors: "));
    }
}
