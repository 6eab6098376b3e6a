use std::io::Read;

use flate2::read::GzDecoder;

use crate::dataset::{Dataset, Targets};
use crate::error::{DataError, Result};

/// scikit-learn's `sklearn/datasets/data/digits.csv.gz`, byte for byte
/// (see `assets/README.md`).
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../assets/digits.csv.gz");

const SAMPLES: usize = 1797;
const PIXELS: usize = 64;
const CLASSES: usize = 10;

/// scikit-learn's bundled digits dataset (UCI Optical Recognition of
/// Handwritten Digits, test part): 1,797 grayscale 8×8 images with integer
/// pixel values `0..=16` (stored as `f64`, unscaled), 10 classes.
///
/// `sample_shape` is `[64]`; use [`Dataset::with_sample_shape`] for
/// `[1, 8, 8]`. The data ships inside the library, so this needs no file.
///
/// # Panics
///
/// Only if the embedded asset were corrupt, which the crate's tests rule out.
///
/// ```
/// let d = secondo_data::digits();
/// assert_eq!((d.len(), d.num_features(), d.num_classes()), (1797, 64, Some(10)));
/// assert_eq!(&d.x[..8], &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]);
/// ```
pub fn digits() -> Dataset {
    match parse_digits(DIGITS_CSV_GZ) {
        Ok(d) => d,
        Err(e) => panic!("embedded digits asset is corrupt: {e}"),
    }
}

/// Decodes the gzip-compressed CSV: one row per image, 64 pixel values then
/// the label.
fn parse_digits(gz: &[u8]) -> Result<Dataset> {
    let bad = |reason: String| DataError::Invalid(format!("embedded digits.csv.gz: {reason}"));
    let mut text = String::new();
    GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    let mut x = Vec::with_capacity(SAMPLES * PIXELS);
    let mut labels = Vec::with_capacity(SAMPLES);
    for (row, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let mut count = 0;
        for (col, field) in line.split(',').enumerate() {
            let v: u8 = field.trim().parse().map_err(|_| {
                bad(format!(
                    "row {row} column {col}: `{field}` is not an integer"
                ))
            })?;
            if col < PIXELS {
                if v > 16 {
                    return Err(bad(format!("row {row} column {col}: pixel {v} > 16")));
                }
                x.push(f64::from(v));
            } else {
                labels.push(i64::from(v));
            }
            count += 1;
        }
        if count != PIXELS + 1 {
            return Err(bad(format!(
                "row {row} has {count} fields, expected {}",
                PIXELS + 1
            )));
        }
    }
    if labels.len() != SAMPLES {
        return Err(bad(format!("{} rows, expected {SAMPLES}", labels.len())));
    }
    Dataset::new(
        x,
        vec![PIXELS],
        Targets::Classes {
            labels,
            num_classes: CLASSES,
        },
        "digits",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learn() {
        let d = digits();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.x.len(), 1797 * 64);
        assert_eq!(d.sample_shape, vec![64]);
        let Targets::Classes {
            labels,
            num_classes,
        } = &d.y
        else {
            panic!("digits are classes");
        };
        assert_eq!(*num_classes, 10);
        let mut counts = [0usize; 10];
        for &l in labels {
            counts[l as usize] += 1;
        }
        // sklearn: np.bincount(load_digits().target)
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        // sklearn: load_digits().images[0]
        #[rustfmt::skip]
        let first: [f64; 64] = [
            0., 0., 5., 13., 9., 1., 0., 0.,
            0., 0., 13., 15., 10., 15., 5., 0.,
            0., 3., 15., 2., 0., 11., 8., 0.,
            0., 4., 12., 0., 0., 8., 8., 0.,
            0., 5., 8., 0., 0., 9., 8., 0.,
            0., 4., 11., 0., 1., 12., 7., 0.,
            0., 2., 14., 5., 10., 12., 0., 0.,
            0., 0., 6., 13., 10., 0., 0., 0.,
        ];
        assert_eq!(&d.x[..64], &first);
        assert_eq!(&labels[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(labels[1796], 8);
        assert_eq!(d.x.iter().copied().fold(0.0, f64::max), 16.0);
        assert_eq!(d.x.iter().sum::<f64>(), 561_718.0);
    }

    #[test]
    fn corrupt_asset_is_an_error() {
        assert!(parse_digits(&DIGITS_CSV_GZ[..1000]).is_err());
        assert!(parse_digits(b"not gzip").is_err());
    }
}
