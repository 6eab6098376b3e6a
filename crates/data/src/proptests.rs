//! Random damage to valid IDX, CIFAR and safetensors files: every load either
//! succeeds or fails with a one-line message, and never panics, aborts on an
//! allocation or reads past what the header declares.

use std::io::Write;
use std::path::PathBuf;

use flate2::write::GzEncoder;
use flate2::Compression;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::cifar::load_cifar_within;
use crate::idx::load_idx_pair_within;
use crate::safetensors_io::load_safetensors_within;
use crate::{digits, save_safetensors, Result};

/// Memory the damaged files may claim: small enough that no declared size
/// that passes the check is a burden on the machine running the tests.
const AVAILABLE: Option<u64> = Some(1_000_000_000);

/// One edit of a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    Overwrite(Index, u8),
    /// A new declared size: the safetensors header length, or an IDX
    /// dimension.
    Declare(Index, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (any::<Index>(), declared_size()).prop_map(|(i, n)| Mutation::Declare(i, n)),
    ]
}

/// Sizes near the edges: tiny, around the file's, huge and overflowing.
fn declared_size() -> impl Strategy<Value = u64> {
    prop_oneof![0..4096u64, Just(u64::MAX), Just(1 << 60), any::<u64>()]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..4)
}

/// Where a declared size lives in a file's format.
#[derive(Clone, Copy)]
enum Format {
    /// A little-endian u64 header length in the first 8 bytes.
    Safetensors,
    /// Big-endian u32 dimensions after the 4-byte magic.
    Idx,
    /// No header: the file's length gives the record count (CIFAR).
    Headerless,
}

fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation], format: Format) {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Flip(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), b),
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            Mutation::Overwrite(i, b) if len > 0 => bytes[i.index(len)] = b,
            Mutation::Declare(i, n) => declare(bytes, format, i, n),
            _ => {}
        }
    }
}

fn declare(bytes: &mut [u8], format: Format, i: Index, n: u64) {
    let (at, value) = match format {
        Format::Safetensors => (0, n.to_le_bytes().to_vec()),
        Format::Idx => {
            let dims = bytes.get(3).map_or(1, |&d| usize::from(d).max(1));
            (4 + 4 * i.index(dims), (n as u32).to_be_bytes().to_vec())
        }
        Format::Headerless => return,
    };
    for (k, b) in value.into_iter().enumerate() {
        if let Some(slot) = bytes.get_mut(at + k) {
            *slot = b;
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Passes a load that succeeded or failed in one line.
fn one_line<T>(result: Result<T>) -> std::result::Result<(), TestCaseError> {
    if let Err(e) = result {
        let message = e.to_string();
        prop_assert!(!message.contains('\n'), "{message}");
    }
    Ok(())
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn valid_safetensors() -> Vec<u8> {
    let scratch = Scratch::new();
    let path = scratch.dir.path().join("d.safetensors");
    save_safetensors(&digits().select(&[0, 1, 2]).unwrap(), &path).unwrap();
    std::fs::read(path).unwrap()
}

/// Three 2x2 images of unsigned bytes and their labels.
fn valid_idx() -> (Vec<u8>, Vec<u8>) {
    let images = [
        &[0u8, 0, 0x08, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2][..],
        &[7; 12],
    ]
    .concat();
    let labels = vec![0, 0, 0x08, 1, 0, 0, 0, 3, 1, 0, 2];
    (images, labels)
}

/// Two CIFAR-100 records (coarse and fine label, then 3,072 pixels).
fn valid_cifar100() -> Vec<u8> {
    [&[4u8, 40][..], &[9; 3072], &[19, 99], &[200; 3072]].concat()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn damaged_safetensors_load_or_fail_in_one_line(m in mutations()) {
        let scratch = Scratch::new();
        let mut bytes = valid_safetensors();
        apply(&mut bytes, &m, Format::Safetensors);
        one_line(load_safetensors_within(&scratch.write("d.safetensors", &bytes), AVAILABLE))?;
    }

    #[test]
    fn damaged_idx_load_or_fail_in_one_line(
        images in mutations(),
        labels in mutations(),
        damaged_gzip in mutations(),
    ) {
        let scratch = Scratch::new();
        let (mut img, mut lbl) = valid_idx();
        apply(&mut img, &images, Format::Idx);
        apply(&mut lbl, &labels, Format::Idx);
        let raw = (scratch.write("img", &img), scratch.write("lbl", &lbl));
        one_line(load_idx_pair_within(&raw.0, &raw.1, AVAILABLE))?;
        let gz = (scratch.write("img.gz", &gzip(&img)), scratch.write("lbl.gz", &gzip(&lbl)));
        one_line(load_idx_pair_within(&gz.0, &gz.1, AVAILABLE))?;
        let mut zipped = gzip(&valid_idx().0);
        apply(&mut zipped, &damaged_gzip, Format::Idx);
        one_line(load_idx_pair_within(&scratch.write("bad.gz", &zipped), &gz.1, AVAILABLE))?;
    }

    #[test]
    fn damaged_cifar_loads_or_fails_in_one_line(m in mutations()) {
        let scratch = Scratch::new();
        let mut bytes = valid_cifar100();
        apply(&mut bytes, &m, Format::Headerless);
        one_line(load_cifar_within(&scratch.write("train.bin", &bytes), AVAILABLE))?;
        one_line(load_cifar_within(&scratch.write("test_batch.bin", &bytes), AVAILABLE))?;
    }
}
