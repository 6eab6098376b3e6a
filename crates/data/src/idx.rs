use std::path::Path;

use secondo_tensor::memory::{self, bytes_of};

use crate::dataset::{split_samples, Dataset, Targets};
use crate::error::{DataError, Result};
use crate::finite::check_finite;
use crate::input::{Input, DECODED_BYTES};

/// Element values of an IDX file, widened.
enum IdxValues {
    /// `0x08` unsigned bytes.
    Bytes(Vec<u8>),
    /// `0x09` i8, `0x0B` i16, `0x0C` i32.
    Ints(Vec<i64>),
    /// `0x0D` f32, `0x0E` f64.
    Floats(Vec<f64>),
}

/// A decoded IDX file.
struct IdxArray {
    shape: Vec<usize>,
    values: IdxValues,
    type_name: &'static str,
}

/// Loads an image/label pair of IDX files (the MNIST / Fashion-MNIST format),
/// raw or gzip-compressed (detected by the gzip magic bytes, whatever the
/// file name).
///
/// The images file holds `N` samples (its first axis), the rest of its shape
/// (at least one axis, none of size zero) becomes `sample_shape`, where
/// grayscale images `[H, W]` gain a channel axis: MNIST's `[N, 28, 28]` loads
/// as `[N, 1, 28, 28]`, the `[C, H, W]` samples convolutions take (see
/// [`with_channel_axis`]). Unsigned-byte pixels are scaled
/// to `[0, 1]` by `/ 255`; signed-integer and float element types are kept as
/// they are (floats must be finite). The labels file is one-dimensional with
/// `N` non-negative integers; `num_classes` is the largest label plus one.
/// The dataset is named after the images file.
///
/// Errors name the file and what is wrong: unreadable, bad magic, unknown
/// element type, truncated or with trailing bytes, corrupt gzip, image and
/// label counts that differ, negative labels, and sizes declared beyond the
/// memory available (checked from the header, before the data is read).
///
/// ```
/// use secondo_data::load_idx_pair;
/// let dir = tempfile::tempdir().unwrap();
/// // 2 images of 1x2 pixels, unsigned bytes
/// let images = [&[0u8, 0, 0x08, 3][..], &[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2], &[0, 255, 51, 102]].concat();
/// let labels = [&[0u8, 0, 0x08, 1][..], &[0, 0, 0, 2], &[1, 0]].concat();
/// std::fs::write(dir.path().join("img"), images).unwrap();
/// std::fs::write(dir.path().join("lbl"), labels).unwrap();
/// let d = load_idx_pair(dir.path().join("img"), dir.path().join("lbl")).unwrap();
/// assert_eq!(d.sample_shape, vec![1, 1, 2]);
/// assert_eq!(d.x, vec![0.0, 1.0, 0.2, 0.4]);
/// assert_eq!(d.num_classes(), Some(2));
/// ```
pub fn load_idx_pair(
    images_path: impl AsRef<Path>,
    labels_path: impl AsRef<Path>,
) -> Result<Dataset> {
    load_idx_pair_within(
        images_path.as_ref(),
        labels_path.as_ref(),
        memory::available(),
    )
}

/// [`load_idx_pair`] against a given amount of available memory for each file.
pub(crate) fn load_idx_pair_within(
    images_path: &Path,
    labels_path: &Path,
    available: Option<u64>,
) -> Result<Dataset> {
    let images = read_idx(images_path, available)?;
    let labels = read_idx(labels_path, available)?;
    let (n, sample_shape) = split_samples(images_path, "images", &images.shape)?;
    if labels.shape.len() != 1 {
        return Err(DataError::WrongType {
            path: labels_path.to_path_buf(),
            tensor: "labels".into(),
            found: format!("of shape {:?}", labels.shape),
            expected: "a one-dimensional array".into(),
        });
    }
    if labels.shape[0] != n {
        return Err(DataError::Format {
            path: images_path.to_path_buf(),
            reason: format!(
                "has {n} images but {} has {} labels",
                labels_path.display(),
                labels.shape[0]
            ),
        });
    }

    let x = match images.values {
        IdxValues::Bytes(b) => b.into_iter().map(|v| f64::from(v) / 255.0).collect(),
        IdxValues::Ints(v) => v.into_iter().map(|v| v as f64).collect(),
        IdxValues::Floats(v) => {
            check_finite(&images_path.display().to_string(), "images", &v)?;
            v
        }
    };
    let labels: Vec<i64> = match labels.values {
        IdxValues::Bytes(b) => b.into_iter().map(i64::from).collect(),
        IdxValues::Ints(v) => v,
        IdxValues::Floats(_) => {
            return Err(DataError::WrongType {
                path: labels_path.to_path_buf(),
                tensor: "labels".into(),
                found: labels.type_name.into(),
                expected: "an integer element type".into(),
            })
        }
    };
    if let Some(index) = labels.iter().position(|&l| l < 0) {
        return Err(DataError::NegativeLabel {
            origin: labels_path.display().to_string(),
            tensor: "labels".into(),
            index,
            value: labels[index],
        });
    }
    let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let name = images_path.file_name().map_or_else(
        || images_path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    Dataset::new(
        x,
        with_channel_axis(sample_shape),
        Targets::Classes {
            labels,
            num_classes,
        },
        name,
    )
}

/// The sample shape of IDX images: grayscale images `[H, W]` become one-channel
/// `[1, H, W]`, so that a convolution takes MNIST as it is, as PyTorch's
/// `torchvision` datasets give it; other ranks (flat features `[F]`, images
/// that already have channels) are kept. Models whose first layer is linear
/// still take them: the command line views the samples as flat features for
/// such a spec.
fn with_channel_axis(sample_shape: &[usize]) -> Vec<usize> {
    match sample_shape {
        [h, w] => vec![1, *h, *w],
        other => other.to_vec(),
    }
}

/// The name and byte size of an IDX element type code.
fn element_type(code: u8) -> Option<(&'static str, usize)> {
    match code {
        0x08 => Some(("unsigned byte", 1)),
        0x09 => Some(("signed byte", 1)),
        0x0B => Some(("i16", 2)),
        0x0C => Some(("i32", 4)),
        0x0D => Some(("f32", 4)),
        0x0E => Some(("f64", 8)),
        _ => None,
    }
}

/// Reads and decodes one IDX file, raw or gzip: the header first, then
/// exactly the data bytes it declares once they are known to fit the file
/// and, with their values widened to `f64`, the `available` memory.
fn read_idx(path: &Path, available: Option<u64>) -> Result<IdxArray> {
    let mut input = Input::open_maybe_gzip(path)?;
    let header = read_header(&mut input)?;
    let count = header
        .shape
        .iter()
        .fold(1usize, |n, &d| n.saturating_mul(d));
    let declared = bytes_of(count, header.size);
    let need = declared.saturating_add(bytes_of(count, DECODED_BYTES));
    let described = format!("shape {:?} of {}", header.shape, header.type_name);
    let data = input.read_declared(declared, need, &described, available)?;
    Ok(IdxArray {
        values: decode(header.code, data),
        shape: header.shape,
        type_name: header.type_name,
    })
}

/// What an IDX header declares.
struct Header {
    code: u8,
    type_name: &'static str,
    /// Bytes per element.
    size: usize,
    shape: Vec<usize>,
}

/// Reads the magic bytes and the dimensions (at most 4 + 4 * 255 bytes).
fn read_header(input: &mut Input) -> Result<Header> {
    let magic = input.read_up_to(4)?;
    let &[zero, also_zero, code, ndim] = magic.as_slice() else {
        return Err(input.error(format!(
            "truncated: {} bytes, an IDX header needs at least 4",
            magic.len()
        )));
    };
    if zero != 0 || also_zero != 0 {
        return Err(input.error(format!(
            "bad magic {zero:02x} {also_zero:02x} {code:02x} {ndim:02x}: not an IDX file"
        )));
    }
    let Some((type_name, size)) = element_type(code) else {
        return Err(input.error(format!("unknown IDX element type code 0x{code:02x}")));
    };
    let ndim = usize::from(ndim);
    let dims = input.read_up_to(4 * ndim as u64)?;
    if dims.len() < 4 * ndim {
        return Err(input.error(format!(
            "truncated: header declares {ndim} dimensions ({} bytes) but the file has {} bytes",
            4 + 4 * ndim,
            4 + dims.len()
        )));
    }
    let shape = dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    Ok(Header {
        code,
        type_name,
        size,
        shape,
    })
}

/// The big-endian elements of type `code` ([`element_type`]), widened.
fn decode(code: u8, data: Vec<u8>) -> IdxValues {
    match code {
        0x08 => IdxValues::Bytes(data),
        0x09 => IdxValues::Ints(data.iter().map(|&b| i64::from(b as i8)).collect()),
        0x0B => IdxValues::Ints(
            data.chunks_exact(2)
                .map(|c| i64::from(i16::from_be_bytes([c[0], c[1]])))
                .collect(),
        ),
        0x0C => IdxValues::Ints(
            data.chunks_exact(4)
                .map(|c| i64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        0x0D => IdxValues::Floats(
            data.chunks_exact(4)
                .map(|c| f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        _ => IdxValues::Floats(
            data.chunks_exact(8)
                .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn idx(type_code: u8, shape: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, type_code, shape.len() as u8];
        for d in shape {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
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

    fn mnist_like() -> (Vec<u8>, Vec<u8>) {
        // 3 images of 2x2
        let pixels: Vec<u8> = vec![0, 255, 51, 102, 1, 2, 3, 4, 255, 255, 0, 0];
        (idx(0x08, &[3, 2, 2], &pixels), idx(0x08, &[3], &[7, 0, 9]))
    }

    #[test]
    fn raw_and_gzip_load_the_same() {
        let f = Files::new();
        let (img, lbl) = mnist_like();
        let raw = load_idx_pair(f.write("img", &img), f.write("lbl", &lbl)).unwrap();
        assert_eq!(raw.len(), 3);
        assert_eq!(raw.sample_shape, vec![1, 2, 2]);
        assert_eq!(&raw.x[..4], &[0.0, 1.0, 0.2, 0.4]);
        assert_eq!(raw.x[5], 2.0 / 255.0);
        assert_eq!(
            raw.y,
            Targets::Classes {
                labels: vec![7, 0, 9],
                num_classes: 10
            }
        );
        assert_eq!(raw.name, "img");
        // gzip detected by magic, not by name; mix gzip and raw
        let gz_img = f.write("img-gz", &gz(&img));
        let d = load_idx_pair(&gz_img, f.write("lbl.gz", &gz(&lbl))).unwrap();
        assert_eq!(d.x, raw.x);
        assert_eq!(d.y, raw.y);
    }

    #[test]
    fn grayscale_images_gain_a_channel_axis_and_other_ranks_stay() {
        let f = Files::new();
        let lbl = f.write("lbl", &idx(0x08, &[2], &[0, 1]));
        for (dims, sample_shape) in [
            (vec![2, 6], vec![6]),
            (vec![2, 2, 3], vec![1, 2, 3]),
            (vec![2, 3, 1, 2], vec![3, 1, 2]),
        ] {
            let images = f.write("img", &idx(0x08, &dims, &[9; 12]));
            let d = load_idx_pair(&images, &lbl).unwrap();
            assert_eq!(d.sample_shape, sample_shape, "{dims:?}");
            assert_eq!(d.x, vec![9.0 / 255.0; 12]);
        }
    }

    #[test]
    fn other_element_types() {
        let f = Files::new();
        let floats: Vec<u8> = [0.5f32, -1.25]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let doubles: Vec<u8> = [0.5f64, 3.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let shorts: Vec<u8> = [-300i16, 7].iter().flat_map(|v| v.to_be_bytes()).collect();
        let ints: Vec<u8> = [1i32, 70_000]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let lbl = f.write("lbl", &idx(0x0C, &[2], &ints));
        let d = load_idx_pair(f.write("a", &idx(0x0D, &[2, 1], &floats)), &lbl).unwrap();
        assert_eq!(d.x, vec![0.5, -1.25]);
        assert_eq!(d.num_classes(), Some(70_001));
        let d = load_idx_pair(f.write("b", &idx(0x0E, &[2, 1], &doubles)), &lbl).unwrap();
        assert_eq!(
            (d.x.clone(), d.sample_shape.clone()),
            (vec![0.5, 3.0], vec![1])
        );
        let d = load_idx_pair(f.write("c", &idx(0x0B, &[2, 1], &shorts)), &lbl).unwrap();
        assert_eq!(d.x, vec![-300.0, 7.0]);
        let d = load_idx_pair(f.write("d", &idx(0x09, &[2, 1], &[0xff, 3])), &lbl).unwrap();
        assert_eq!(d.x, vec![-1.0, 3.0]);
    }

    #[test]
    fn errors_name_the_file_and_problem() {
        let f = Files::new();
        let (img, lbl) = mnist_like();
        let good_img = f.write("good-img", &img);
        let good_lbl = f.write("good-lbl", &lbl);

        let truncated = f.write("trunc", &img[..img.len() - 3]);
        let e = load_idx_pair(&truncated, &good_lbl)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&truncated.display().to_string()), "{e}");
        assert!(
            e.contains(
                "truncated: 12 data bytes declared for shape [3, 2, 2] of unsigned byte, found 9"
            ),
            "{e}"
        );

        let short_header = f.write("short", &img[..10]);
        let e = load_idx_pair(&short_header, &good_lbl)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated: header declares 3 dimensions"), "{e}");
        let tiny = f.write("tiny", &[0, 0]);
        assert!(load_idx_pair(&tiny, &good_lbl)
            .unwrap_err()
            .to_string()
            .contains("truncated"));

        let trunc_gz = gz(&img);
        let trunc_gz = f.write("trunc.gz", &trunc_gz[..trunc_gz.len() - 10]);
        let e = load_idx_pair(&trunc_gz, &good_lbl).unwrap_err();
        assert!(
            matches!(&e, DataError::Format { path, .. } if *path == trunc_gz),
            "{e}"
        );
        assert!(e.to_string().contains("gzip"), "{e}");

        let bad_magic = f.write("bad-magic", b"\x89PNG\r\n\x1a\n");
        let e = load_idx_pair(&bad_magic, &good_lbl)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad magic 89 50 4e 47"), "{e}");
        let bad_type = f.write("bad-type", &idx(0x0A, &[1], &[0]));
        let e = load_idx_pair(&bad_type, &good_lbl).unwrap_err().to_string();
        assert!(e.contains("unknown IDX element type code 0x0a"), "{e}");

        let trailing = f.write("trailing", &[lbl.as_slice(), &[1]].concat());
        let e = load_idx_pair(&good_img, &trailing).unwrap_err().to_string();
        assert!(e.contains("1 unexpected bytes"), "{e}");

        let four = f.write("four", &idx(0x08, &[4], &[0, 1, 2, 3]));
        let e = load_idx_pair(&good_img, &four).unwrap_err().to_string();
        assert!(e.contains("has 3 images but"), "{e}");
        assert!(e.contains("has 4 labels"), "{e}");

        let neg = f.write("neg", &idx(0x09, &[3], &[0, 0xfe, 1]));
        let e = load_idx_pair(&good_img, &neg).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::NegativeLabel {
                    index: 1,
                    value: -2,
                    ..
                }
            ),
            "{e}"
        );

        let float_lbl = f.write("flbl", &idx(0x0D, &[3], &[0; 12]));
        assert!(matches!(
            load_idx_pair(&good_img, &float_lbl),
            Err(DataError::WrongType { .. })
        ));
        let lbl_2d = f.write("lbl2d", &idx(0x08, &[3, 1], &[0, 1, 2]));
        assert!(matches!(
            load_idx_pair(&good_img, &lbl_2d),
            Err(DataError::WrongType { .. })
        ));
        let scalar = f.write("scalar", &idx(0x08, &[], &[5]));
        assert!(load_idx_pair(&scalar, &good_lbl).is_err());

        let nan: Vec<u8> = [0.0f32, f32::NAN, 1.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let nan = f.write("nan", &idx(0x0D, &[3, 1], &nan));
        let e = load_idx_pair(&nan, &good_lbl).unwrap_err();
        assert!(matches!(e, DataError::NonFinite { index: 1, .. }), "{e}");

        let huge = f.write("huge", &idx(0x0E, &[u32::MAX, u32::MAX, u32::MAX], &[]));
        assert!(load_idx_pair(&huge, &good_lbl).is_err());

        let missing = f.dir.path().join("missing");
        assert!(matches!(
            load_idx_pair(&good_img, &missing),
            Err(DataError::Io { .. })
        ));
    }

    #[test]
    fn images_need_a_feature_axis() {
        let f = Files::new();
        let (_, lbl) = mnist_like();
        let lbl = f.write("lbl", &lbl);
        for (name, shape, data) in [
            ("flat", vec![3], &[1, 2, 3][..]),
            ("empty", vec![3, 0], &[]),
        ] {
            let path = f.write(name, &idx(0x08, &shape, data));
            let e = load_idx_pair(&path, &lbl).unwrap_err();
            assert!(
                matches!(&e, DataError::WrongType { tensor, .. } if tensor == "images"),
                "{e}"
            );
            assert!(
                e.to_string().starts_with(&path.display().to_string()),
                "{e}"
            );
        }
    }

    /// 468,750,000 images of 28x28 declared (367.5 GB), almost none present.
    fn huge_header() -> Vec<u8> {
        idx(0x08, &[468_750_000, 28, 28], &[0; 1000])
    }

    #[test]
    fn a_gzip_header_declaring_more_than_memory_is_refused_before_reading() {
        let f = Files::new();
        let (_, lbl) = mnist_like();
        let lbl = f.write("lbl", &lbl);
        let images = f.write("huge.gz", &gz(&huge_header()));
        let e = load_idx_pair_within(&images, &lbl, Some(8_000_000_000)).unwrap_err();
        assert!(matches!(e, DataError::Memory(_)), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: the values of shape [468750000, 28, 28] of unsigned byte would need 3307.5 GB of memory at once, more than the 8.0 GB available",
                images.display()
            )
        );
    }

    #[test]
    fn a_raw_header_declaring_more_than_the_file_is_refused_before_reading() {
        let f = Files::new();
        let (_, lbl) = mnist_like();
        let images = f.write("huge", &huge_header());
        let e = load_idx_pair_within(&images, &f.write("lbl", &lbl), None).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "truncated: 367500000000 data bytes declared for shape [468750000, 28, 28] of unsigned byte, found 1000"
            ),
            "{e}"
        );
    }

    #[test]
    fn streams_are_read_no_further_than_declared() {
        let f = Files::new();
        let (img, lbl) = mnist_like();
        let lbl = f.write("lbl", &lbl);
        let longer = f.write("longer.gz", &gz(&[img.as_slice(), &[9; 100]].concat()));
        let e = load_idx_pair(&longer, &lbl).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "unexpected bytes after the 12 data bytes of shape [3, 2, 2] of unsigned byte"
            ),
            "{e}"
        );
        let shorter = f.write("shorter.gz", &gz(&img[..img.len() - 2]));
        let e = load_idx_pair(&shorter, &lbl).unwrap_err().to_string();
        assert!(e.contains("truncated: 12 data bytes declared"), "{e}");
        for device in ["/dev/zero", "/dev/urandom"] {
            if Path::new(device).exists() {
                let e = load_idx_pair(device, &lbl).unwrap_err().to_string();
                assert!(e.starts_with(device) && !e.contains('\n'), "{e}");
            }
        }
    }
}
