//! Safetensors files read with their declared sizes checked first: the one
//! reader behind datasets ([`load_safetensors`](crate::load_safetensors)) and
//! weights (secondo-nn), so that both refuse hostile files the same way.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo, TensorView};
use secondo_tensor::memory::{self, bytes_of};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::error::{DataError, Result};
use crate::input::{Input, DECODED_BYTES};

/// Largest JSON header accepted, in bytes: the limit the safetensors format
/// sets, and the bound on what is read before any size is checked.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Bytes of the little-endian header length that starts every file.
const LEN_BYTES: u64 = 8;

/// The header entry holding string metadata rather than a tensor.
const METADATA_KEY: &str = "__metadata__";

/// A safetensors file in memory: its validated header and data bytes.
///
/// Reading checks, before the data is read, that the header is at most
/// [`MAX_HEADER_LEN`] bytes, that it names no entry twice, that its tensors
/// tile the data exactly, that the file holds exactly the data it declares
/// (for regular files; other inputs are read no further than one byte past
/// it), and that the raw bytes and the values decoded to `f64` fit in memory.
///
/// ```
/// use secondo_data::SafetensorsFile;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("d.safetensors");
/// secondo_data::save_safetensors(&secondo_data::digits().select(&[0, 1]).unwrap(), &path).unwrap();
/// let file = SafetensorsFile::read(&path).unwrap();
/// assert_eq!(file.tensor("x").unwrap().shape(), &[2, 64]);
/// assert_eq!(file.metadata().get("num_classes").map(String::as_str), Some("10"));
/// ```
#[derive(Debug)]
pub struct SafetensorsFile {
    header: Metadata,
    data: Vec<u8>,
}

impl SafetensorsFile {
    /// Reads a file, checking the memory its load needs against
    /// [`memory::available`].
    pub fn read(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        SafetensorsFile::read_within(path, memory::available())
    }

    /// [`SafetensorsFile::read`] against a given amount of available memory
    /// (`None`: unknown, nothing is refused for memory).
    ///
    /// ```
    /// use secondo_data::{DataError, SafetensorsFile};
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("d.safetensors");
    /// secondo_data::save_safetensors(&secondo_data::digits(), &path).unwrap();
    /// let err = SafetensorsFile::read_within(&path, Some(1_000_000)).unwrap_err();
    /// assert!(matches!(err, DataError::Memory(_)), "{err}");
    /// ```
    pub fn read_within(path: impl AsRef<Path>, available: Option<u64>) -> Result<SafetensorsFile> {
        let mut input = Input::open(path.as_ref())?;
        let header = read_header(&mut input)?;
        let declared = header.data_len() as u64;
        let values = header
            .tensors()
            .values()
            .fold(0usize, |sum, t| sum.saturating_add(numel(t)));
        let need = declared.saturating_add(bytes_of(values, DECODED_BYTES));
        let described = format!("the {} tensors of its header", header.tensors().len());
        let data = input.read_declared(declared, need, &described, available)?;
        Ok(SafetensorsFile { header, data })
    }

    /// The tensor of that name, if the file has one.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.header.info(name).map(|info| self.view(info))
    }

    /// Every tensor with its name, in the order of their data.
    pub fn tensors(&self) -> Vec<(String, TensorView<'_>)> {
        self.header
            .offset_keys()
            .into_iter()
            .filter_map(|name| self.tensor(&name).map(|view| (name, view)))
            .collect()
    }

    /// The header's string metadata (empty when it has none).
    pub fn metadata(&self) -> HashMap<String, String> {
        self.header.metadata().clone().unwrap_or_default()
    }

    fn view(&self, info: &TensorInfo) -> TensorView<'_> {
        let (start, end) = info.data_offsets;
        TensorView::new(info.dtype, info.shape.clone(), &self.data[start..end])
            .expect("the header was validated against the data")
    }
}

/// Scalars in a tensor, saturating (hostile shapes overflow).
fn numel(info: &TensorInfo) -> usize {
    info.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// A format error: the file is not valid safetensors, and why.
fn corrupt(input: &Input, why: impl fmt::Display) -> DataError {
    input.error(format!("not a valid safetensors file: {why}"))
}

/// Reads the header length and the JSON header, refusing lengths over
/// [`MAX_HEADER_LEN`] or past the end of a regular file before reading them.
fn read_header(input: &mut Input) -> Result<Metadata> {
    let len = read_header_len(input)?;
    if let Some(remaining) = input.remaining().filter(|&r| r < len) {
        let why = format!("header length {len} but only {remaining} bytes follow it");
        return Err(corrupt(input, why));
    }
    let json = input.read_up_to(len)?;
    if (json.len() as u64) < len {
        let why = format!(
            "header length {len} but only {} bytes follow it",
            json.len()
        );
        return Err(corrupt(input, why));
    }
    let entries: Entries = serde_json::from_slice(&json).map_err(|e| corrupt(input, e))?;
    entries.into_metadata().map_err(|e| corrupt(input, e))
}

/// The shortest header: `{}`, the JSON object of a file with no tensors.
const MIN_HEADER_LEN: u64 = 2;

/// The 8-byte little-endian header length, between [`MIN_HEADER_LEN`] and
/// [`MAX_HEADER_LEN`].
fn read_header_len(input: &mut Input) -> Result<u64> {
    let bytes = input.read_up_to(LEN_BYTES)?;
    let Ok(bytes) = <[u8; LEN_BYTES as usize]>::try_from(bytes.as_slice()) else {
        let why = format!("{} bytes, fewer than the 8-byte header length", bytes.len());
        return Err(corrupt(input, why));
    };
    let len = u64::from_le_bytes(bytes);
    if len > MAX_HEADER_LEN {
        let why = format!("header length {len} is over the {MAX_HEADER_LEN}-byte limit");
        return Err(corrupt(input, why));
    }
    if len < MIN_HEADER_LEN {
        let why = format!("header length {len} is too short for a JSON header");
        return Err(corrupt(input, why));
    }
    Ok(len)
}

/// The header's entries as written, refusing a name that appears twice:
/// a plain map would keep the last silently, and the format's own check then
/// blames the lost tensor's offsets.
struct Entries {
    metadata: Option<HashMap<String, String>>,
    tensors: Vec<(String, TensorInfo)>,
}

impl Entries {
    /// The validated header: tensors in data order, tiling it exactly.
    fn into_metadata(mut self) -> std::result::Result<Metadata, safetensors::SafeTensorError> {
        self.tensors.sort_by_key(|(_, info)| info.data_offsets);
        Metadata::new(self.metadata, self.tensors)
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of tensors")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
        let mut seen = HashSet::new();
        let mut entries = Entries {
            metadata: None,
            tensors: Vec::new(),
        };
        while let Some(name) = map.next_key::<String>()? {
            if !seen.insert(name.clone()) {
                let name = name.escape_debug();
                return Err(de::Error::custom(format!(
                    "the name `{name}` appears twice in the header"
                )));
            }
            if name == METADATA_KEY {
                entries.metadata = Some(map.next_value()?);
            } else {
                entries.tensors.push((name, map.next_value()?));
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::PathBuf;

    use super::*;
    use crate::DataError;

    /// A file of a JSON header and `data_len` zero bytes, with the header's
    /// length in front.
    fn raw(header: &str, data_len: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + data_len, 0);
        out
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn message(result: Result<SafetensorsFile>) -> String {
        let e = result.unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    }

    const TWO: &str = r#"{"x":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"y":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}}"#;

    #[test]
    fn reads_tensors_in_data_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = SafetensorsFile::read(write(&dir, "ok", &raw(TWO, 10))).unwrap();
        let names: Vec<String> = file.tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x", "y"]);
        assert_eq!(file.tensor("y").unwrap().data(), &[0, 0]);
        assert!(file.tensor("z").is_none());
        assert!(file.metadata().is_empty());
    }

    #[test]
    fn header_lengths_are_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let huge = write(&dir, "huge", &(1u64 << 60).to_le_bytes());
        let e = message(SafetensorsFile::read(&huge));
        assert!(e.starts_with(&huge.display().to_string()), "{e}");
        assert!(
            e.ends_with("header length 1152921504606846976 is over the 100000000-byte limit"),
            "{e}"
        );
        let past = write(&dir, "past", &[&1000u64.to_le_bytes()[..], b"{}"].concat());
        let e = message(SafetensorsFile::read(&past));
        assert!(
            e.ends_with("header length 1000 but only 2 bytes follow it"),
            "{e}"
        );
        let e = message(SafetensorsFile::read(write(&dir, "short", &[1, 2, 3])));
        assert!(
            e.ends_with("3 bytes, fewer than the 8-byte header length"),
            "{e}"
        );
    }

    #[test]
    fn data_must_match_the_declared_size() {
        let dir = tempfile::tempdir().unwrap();
        let e = message(SafetensorsFile::read(write(&dir, "cut", &raw(TWO, 9))));
        assert!(
            e.ends_with(
                "truncated: 10 data bytes declared for the 2 tensors of its header, found 9"
            ),
            "{e}"
        );
        let e = message(SafetensorsFile::read(write(&dir, "long", &raw(TWO, 13))));
        assert!(
            e.ends_with(
                "3 unexpected bytes after the 10 data bytes of the 2 tensors of its header"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_name_given_twice_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"y":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"y":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#;
        let e = message(SafetensorsFile::read(write(&dir, "twice", &raw(header, 3))));
        assert!(
            e.contains("the name `y` appears twice in the header"),
            "{e}"
        );
        assert!(!e.contains("offset"), "{e}");
    }

    #[test]
    fn a_sparse_file_declaring_more_than_memory_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        // 6 GB of data, consistent with its header, on disk as a sparse file.
        let header = r#"{"x":{"dtype":"F32","shape":[1000000000,1],"data_offsets":[0,4000000000]},"y":{"dtype":"I64","shape":[250000000],"data_offsets":[4000000000,6000000000]}}"#;
        let path = write(&dir, "sparse", &raw(header, 0));
        let len = 8 + header.len() as u64 + 6_000_000_000;
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        let start = std::time::Instant::now();
        let e = SafetensorsFile::read_within(&path, Some(10_000_000_000)).unwrap_err();
        assert!(start.elapsed().as_secs() < 2, "{:?}", start.elapsed());
        assert!(matches!(e, DataError::Memory(_)), "{e}");
        // 6 GB raw + 1.25e9 values as f64 = 16 GB.
        assert_eq!(
            e.to_string(),
            format!(
                "{}: the values of the 2 tensors of its header would need 16.0 GB of memory at once, more than the 10.0 GB available",
                path.display()
            )
        );
    }

    #[test]
    fn endless_devices_fail_at_once_in_one_line() {
        for device in ["/dev/zero", "/dev/urandom"] {
            if Path::new(device).exists() {
                let e = message(SafetensorsFile::read(device));
                assert!(
                    e.starts_with(&format!("{device}: not a valid safetensors file")),
                    "{e}"
                );
            }
        }
        if Path::new("/dev/zero").exists() {
            let e = message(SafetensorsFile::read("/dev/zero"));
            assert!(
                e.ends_with("header length 0 is too short for a JSON header"),
                "{e}"
            );
        }
    }

    #[test]
    fn io_errors_are_said_once() {
        let e = SafetensorsFile::read("/no/such/file").unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e}");
        assert!(std::error::Error::source(&e).is_none(), "{e}");
        assert_eq!(
            e.to_string(),
            "/no/such/file: No such file or directory (os error 2)"
        );
    }
}
