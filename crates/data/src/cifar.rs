//! CIFAR-10 and CIFAR-100 in their binary form (the `*-binary.tar.gz`
//! archives): files of fixed-size records, each its label byte(s) and then
//! 3,072 pixel bytes, the red, green and blue 32×32 planes row-major, which
//! is the `[3, 32, 32]` layout of a PyTorch image as it is.
//!
//! The files have no header: the record count comes from the file's length,
//! which is checked to be a whole number of records, and with it the memory
//! the load needs, before any pixel is read.

use std::path::{Path, PathBuf};

use secondo_tensor::memory::{self, bytes_of, ensure_fits_within};

use crate::dataset::{Dataset, Targets};
use crate::error::{DataError, Result};
use crate::input::{Input, DECODED_BYTES};

/// Pixel bytes of one record: 3 channels of 32×32.
const PIXELS: usize = 3 * 32 * 32;

/// The per-sample shape of CIFAR images.
const IMAGE_SHAPE: [usize; 3] = [3, 32, 32];

/// Bytes each decoded label takes (`i64`).
const LABEL_BYTES: usize = std::mem::size_of::<i64>();

/// Which dataset a batch file belongs to. The record layouts differ only by
/// one label byte, and a file's length can be a whole number of records of
/// both, so the archives' file names decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `data_batch_N.bin`, `test_batch.bin`: one label byte (10 classes).
    Cifar10,
    /// `train.bin`, `test.bin`: a coarse (20 superclasses) and a fine
    /// (100 classes) label byte.
    Cifar100,
}

impl Variant {
    /// The variant a file's name says, if it is one of the archives' names.
    fn of(path: &Path) -> Option<Variant> {
        match path.file_name()?.to_str()? {
            "test_batch.bin" => Some(Variant::Cifar10),
            "train.bin" | "test.bin" => Some(Variant::Cifar100),
            name => batch_number(name).map(|_| Variant::Cifar10),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Cifar10 => "CIFAR-10",
            Variant::Cifar100 => "CIFAR-100",
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }

    fn record_bytes(self) -> usize {
        self.label_bytes() + PIXELS
    }

    fn num_classes(self) -> usize {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }

    /// The class of a record (label bytes first; CIFAR-100's fine label),
    /// or what is wrong with its labels. A coarse label out of range is
    /// refused too: it means the file is not what its name says, or is
    /// damaged.
    fn class(self, record: &[u8]) -> std::result::Result<i64, String> {
        let (coarse, fine) = match self {
            Variant::Cifar10 => (None, record[0]),
            Variant::Cifar100 => (Some(record[0]), record[1]),
        };
        if let Some(coarse) = coarse.filter(|&c| c >= 20) {
            return Err(format!(
                "coarse label {coarse} is out of range for the 20 superclasses of {}",
                self.name()
            ));
        }
        if usize::from(fine) >= self.num_classes() {
            return Err(format!(
                "label {fine} is out of range for the {} classes of {}",
                self.num_classes(),
                self.name()
            ));
        }
        Ok(i64::from(fine))
    }
}

/// `N` of a CIFAR-10 training batch name `data_batch_N.bin`.
fn batch_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("data_batch_")?.strip_suffix(".bin")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The files a CIFAR path stands for and the variant they hold.
struct Source {
    variant: Variant,
    files: Vec<PathBuf>,
}

impl Source {
    /// A batch file, or a directory's training batches: CIFAR-10's
    /// `data_batch_N.bin` in the order of `N`, else CIFAR-100's `train.bin`.
    fn of(path: &Path) -> Result<Source> {
        let io = |error| DataError::Io {
            path: path.to_path_buf(),
            error,
        };
        if !std::fs::metadata(path).map_err(io)?.is_dir() {
            let variant = Variant::of(path).ok_or_else(|| DataError::Format {
                path: path.to_path_buf(),
                reason: "not a CIFAR batch file name: CIFAR-10's are data_batch_N.bin and \
                         test_batch.bin, CIFAR-100's train.bin and test.bin"
                    .into(),
            })?;
            return Ok(Source {
                variant,
                files: vec![path.to_path_buf()],
            });
        }
        let mut numbered = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            if let Some(n) = entry.file_name().to_str().and_then(batch_number) {
                numbered.push((n, entry.path()));
            }
        }
        numbered.sort();
        if !numbered.is_empty() {
            let files = numbered.into_iter().map(|(_, p)| p).collect();
            return Ok(Source {
                variant: Variant::Cifar10,
                files,
            });
        }
        let train = path.join("train.bin");
        if !train.is_file() {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                reason: "holds no CIFAR training batches (CIFAR-10's data_batch_N.bin \
                         or CIFAR-100's train.bin)"
                    .into(),
            });
        }
        Ok(Source {
            variant: Variant::Cifar100,
            files: vec![train],
        })
    }
}

/// The files [`load_cifar`] reads for `path`: the file itself, or a
/// directory's training batches, so that a caller can tell its outputs from
/// its inputs before loading.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// for name in ["data_batch_2.bin", "data_batch_10.bin", "data_batch_1.bin", "test_batch.bin"] {
///     std::fs::write(dir.path().join(name), []).unwrap();
/// }
/// let files = secondo_data::cifar_files(dir.path()).unwrap();
/// let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap()).collect();
/// assert_eq!(names, ["data_batch_1.bin", "data_batch_2.bin", "data_batch_10.bin"]);
/// ```
pub fn cifar_files(path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    Ok(Source::of(path.as_ref())?.files)
}

/// Loads CIFAR-10 or CIFAR-100 binary batches: one file, or a directory's
/// training batches (see [`cifar_files`]; the test set is the file
/// `test_batch.bin` or `test.bin`).
///
/// The variant comes from the archives' file names: `data_batch_N.bin` and
/// `test_batch.bin` are CIFAR-10 (records of 1 label byte and 3,072 pixel
/// bytes, 10 classes), `train.bin` and `test.bin` CIFAR-100 (a coarse and a
/// fine label byte, then the pixels; the fine label is the class, 100
/// classes). Samples have shape `[3, 32, 32]` (channels R, G, B), pixels
/// scaled to `[0, 1]` by `/ 255` as in [`load_idx_pair`](crate::load_idx_pair).
/// The dataset is named after the file or directory.
///
/// Errors name the file and what is wrong: unreadable, not a regular file,
/// empty, a length that is not a whole number of records, a label out of
/// range (with its record's index), another file name, a directory without
/// training batches, and data beyond the memory available (checked from the
/// files' lengths, before any is read).
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("test_batch.bin");
/// // two CIFAR-10 records: label 3 and white pixels, label 9 and black ones
/// let records = [vec![3u8], vec![255; 3072], vec![9], vec![0; 3072]].concat();
/// std::fs::write(&path, records).unwrap();
/// let d = secondo_data::load_cifar(&path).unwrap();
/// assert_eq!(d.sample_shape, vec![3, 32, 32]);
/// assert_eq!((d.x[0], d.x[3072]), (1.0, 0.0));
/// assert_eq!(d.y, secondo_data::Targets::Classes { labels: vec![3, 9], num_classes: 10 });
/// ```
pub fn load_cifar(path: impl AsRef<Path>) -> Result<Dataset> {
    load_cifar_within(path.as_ref(), memory::available())
}

/// [`load_cifar`] against a given amount of available memory.
pub(crate) fn load_cifar_within(path: &Path, available: Option<u64>) -> Result<Dataset> {
    let source = Source::of(path)?;
    let variant = source.variant;
    let mut batches = source
        .files
        .iter()
        .map(|f| BatchFile::open(f, variant))
        .collect::<Result<Vec<_>>>()?;
    let records = batches.iter().map(|b| b.records).sum::<usize>();
    let largest = batches.iter().map(|b| b.bytes).max().unwrap_or(0);
    // The decoded samples and labels, and the raw bytes of one file at a time.
    let decoded = bytes_of(records, PIXELS * DECODED_BYTES + LABEL_BYTES);
    let what = format!(
        "{}: the values of {records} {} records",
        path.display(),
        variant.name()
    );
    ensure_fits_within(what, decoded.saturating_add(largest), available)?;
    let mut x = Vec::new();
    let mut labels = Vec::new();
    if x.try_reserve_exact(records * PIXELS).is_err() || labels.try_reserve_exact(records).is_err()
    {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("cannot allocate the values of {records} records"),
        });
    }
    for batch in &mut batches {
        batch.read_into(variant, &mut x, &mut labels)?;
    }
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    Dataset::new(
        x,
        IMAGE_SHAPE.to_vec(),
        Targets::Classes {
            labels,
            num_classes: variant.num_classes(),
        },
        name,
    )
}

/// An opened batch file whose length is a whole, non-zero number of records.
struct BatchFile {
    input: Input,
    bytes: u64,
    records: usize,
}

impl BatchFile {
    fn open(path: &Path, variant: Variant) -> Result<BatchFile> {
        let input = Input::open(path)?;
        let Some(bytes) = input.remaining() else {
            return Err(input.error(
                "not a regular file: a CIFAR batch file's length gives its number of records"
                    .into(),
            ));
        };
        if bytes == 0 {
            return Err(input.error(format!("empty: no {} records", variant.name())));
        }
        let record = variant.record_bytes() as u64;
        let records = usize::try_from(bytes / record)
            .ok()
            .filter(|_| bytes % record == 0);
        let Some(records) = records else {
            return Err(input.error(format!(
                "{bytes} bytes are not a whole number of {} records of {record} bytes \
                 ({} label byte{} and {PIXELS} pixel bytes each)",
                variant.name(),
                variant.label_bytes(),
                if variant.label_bytes() == 1 { "" } else { "s" },
            )));
        };
        Ok(BatchFile {
            input,
            bytes,
            records,
        })
    }

    /// Reads the records, appending their pixels to `x` and their classes to
    /// `labels`. The memory of every file of a load was checked at once,
    /// before the first is read, so none is checked here.
    fn read_into(
        &mut self,
        variant: Variant,
        x: &mut Vec<f64>,
        labels: &mut Vec<i64>,
    ) -> Result<()> {
        let described = format!("{} {} records", self.records, variant.name());
        let data = self
            .input
            .read_declared(self.bytes, self.bytes, &described, None)?;
        for (index, record) in data.chunks_exact(variant.record_bytes()).enumerate() {
            let class = variant
                .class(record)
                .map_err(|why| self.input.error(format!("record {index}: {why}")))?;
            labels.push(class);
            let pixels = &record[variant.label_bytes()..];
            x.extend(pixels.iter().map(|&p| f64::from(p) / 255.0));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with these label bytes and every pixel `pixel`.
    fn record(label: &[u8], pixel: u8) -> Vec<u8> {
        [label, &[pixel; PIXELS]].concat()
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Files {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }

    fn message(path: &Path) -> String {
        load_cifar(path).unwrap_err().to_string()
    }

    #[test]
    fn cifar10_records_are_label_then_channel_major_pixels() {
        let f = Files::new();
        let mut first = record(&[7], 0);
        // red at (0, 0), green at (0, 1), blue at (31, 31)
        first[1] = 255;
        first[1 + 1024 + 1] = 51;
        first[1 + 2048 + 1023] = 102;
        let path = f.write("data_batch_1.bin", &[first, record(&[0], 255)].concat());
        let d = load_cifar(&path).unwrap();
        assert_eq!((d.len(), d.sample_shape.clone()), (2, vec![3, 32, 32]));
        assert_eq!(d.name, "data_batch_1.bin");
        assert_eq!(
            d.y,
            Targets::Classes {
                labels: vec![7, 0],
                num_classes: 10
            }
        );
        assert_eq!((d.x[0], d.x[1024 + 1], d.x[2048 + 1023]), (1.0, 0.2, 0.4));
        assert_eq!(d.x.iter().take(PIXELS).filter(|&&v| v != 0.0).count(), 3);
        assert!(d.x[PIXELS..].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn cifar100_uses_the_fine_label() {
        let f = Files::new();
        for name in ["train.bin", "test.bin"] {
            let path = f.write(name, &[record(&[19, 99], 3), record(&[0, 42], 0)].concat());
            let d = load_cifar(&path).unwrap();
            assert_eq!(
                d.y,
                Targets::Classes {
                    labels: vec![99, 42],
                    num_classes: 100
                }
            );
            assert_eq!(d.x[..PIXELS], [3.0 / 255.0; PIXELS]);
        }
    }

    #[test]
    fn a_directory_loads_its_training_batches_in_order() {
        let f = Files::new();
        for (name, label) in [
            ("data_batch_2.bin", 2),
            ("data_batch_10.bin", 9),
            ("data_batch_1.bin", 1),
            ("test_batch.bin", 0),
            ("data_batch_x.bin", 5),
            ("readme.html", 5),
        ] {
            f.write(name, &record(&[label], label));
        }
        let d = load_cifar(f.dir.path()).unwrap();
        assert_eq!(
            d.y,
            Targets::Classes {
                labels: vec![1, 2, 9],
                num_classes: 10
            }
        );
        assert_eq!(d.x[PIXELS], 2.0 / 255.0);
        let name = f.dir.path().file_name().unwrap().to_string_lossy();
        assert_eq!(d.name, name);

        let hundred = Files::new();
        hundred.write("train.bin", &record(&[1, 50], 0));
        hundred.write("test.bin", &record(&[1, 60], 0));
        let d = load_cifar(hundred.dir.path()).unwrap();
        assert_eq!(
            d.y,
            Targets::Classes {
                labels: vec![50],
                num_classes: 100
            }
        );
    }

    #[test]
    fn malformed_files_name_the_file_and_the_problem() {
        let f = Files::new();
        let cases = [
            ("data_batch_1.bin", vec![], "empty: no CIFAR-10 records"),
            (
                "data_batch_2.bin",
                [record(&[1], 0), vec![0; 10]].concat(),
                "3083 bytes are not a whole number of CIFAR-10 records of 3073 bytes (1 label byte and 3072 pixel bytes each)",
            ),
            (
                "train.bin",
                record(&[1], 0),
                "3073 bytes are not a whole number of CIFAR-100 records of 3074 bytes (2 label bytes and 3072 pixel bytes each)",
            ),
            (
                "test_batch.bin",
                [record(&[9], 0), record(&[10], 0)].concat(),
                "record 1: label 10 is out of range for the 10 classes of CIFAR-10",
            ),
            (
                "test.bin",
                record(&[3, 100], 0),
                "record 0: label 100 is out of range for the 100 classes of CIFAR-100",
            ),
            (
                "test.bin",
                [record(&[19, 0], 0), record(&[20, 0], 0)].concat(),
                "record 1: coarse label 20 is out of range for the 20 superclasses of CIFAR-100",
            ),
            (
                "batch.bin",
                record(&[1], 0),
                "not a CIFAR batch file name: CIFAR-10's are data_batch_N.bin and test_batch.bin, CIFAR-100's train.bin and test.bin",
            ),
        ];
        for (name, bytes, problem) in cases {
            let path = f.write(name, &bytes);
            assert_eq!(message(&path), format!("{}: {problem}", path.display()));
        }
        let missing = f.dir.path().join("data_batch_3.bin");
        assert!(matches!(load_cifar(&missing), Err(DataError::Io { path, .. }) if path == missing));
        let empty_dir = Files::new();
        assert_eq!(
            message(empty_dir.dir.path()),
            format!(
                "{}: holds no CIFAR training batches (CIFAR-10's data_batch_N.bin or CIFAR-100's train.bin)",
                empty_dir.dir.path().display()
            )
        );
        // a bad batch in a directory is named, not the directory
        let dir = Files::new();
        dir.write("data_batch_1.bin", &record(&[1], 0));
        let bad = dir.write("data_batch_2.bin", &record(&[1], 0)[1..]);
        assert!(message(dir.dir.path()).starts_with(&format!("{}: 3072 bytes", bad.display())));
    }

    #[test]
    fn devices_are_refused_in_one_line() {
        let dir = Files::new();
        let zero = dir.dir.path().join("test_batch.bin");
        if std::os::unix::fs::symlink("/dev/zero", &zero).is_ok() {
            assert_eq!(
                message(&zero),
                format!(
                    "{}: not a regular file: a CIFAR batch file's length gives its number of records",
                    zero.display()
                )
            );
        }
    }

    #[test]
    fn batches_beyond_memory_are_refused_before_reading() {
        let f = Files::new();
        let path = f.write(
            "data_batch_1.bin",
            &[record(&[1], 0), record(&[2], 0)].concat(),
        );
        // 2 records: 2 * (3072 * 8 + 8) decoded bytes and 6146 raw ones.
        let e = load_cifar_within(&path, Some(50_000)).unwrap_err();
        assert!(
            matches!(e, DataError::Memory(ref m) if m.need == 55_314),
            "{e}"
        );
        assert!(
            e.to_string().starts_with(&format!(
                "{}: the values of 2 CIFAR-10 records would need",
                path.display()
            )),
            "{e}"
        );
        assert!(load_cifar_within(&path, Some(70_000)).is_ok());
    }
}
