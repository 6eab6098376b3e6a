//! How much memory work may take: the one check every command and reader
//! runs on its estimated peak before it allocates, so that work beyond memory
//! ends in one line instead of an allocation abort or the kernel's OOM killer.

use thiserror::Error;

/// Environment variable capping the memory secondo assumes it may use, in
/// bytes (an integer, optionally with a `K`, `M`, `G` or `T` suffix, powers
/// of 1000): for running beside other work, and for tests of the refusals.
pub const LIMIT_VARIABLE: &str = "SECONDO_MEMORY_LIMIT";

/// Work whose values alive at once would not fit in the memory available.
///
/// ```
/// use secondo_tensor::memory::{ensure_fits_within, OutOfMemory};
/// let err = ensure_fits_within("batch_grad", 48_800_000_000, Some(23_600_000_000)).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "batch_grad need 48.8 GB of memory at once, more than the 23.6 GB available"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{what} need {:.1} GB of memory at once, more than the {:.1} GB available",
    *.need as f64 / 1e9,
    *.available as f64 / 1e9
)]
pub struct OutOfMemory {
    /// What was asked for, in the user's terms (a flag, a file, a layer).
    pub what: String,
    /// Bytes it needs at once.
    pub need: u64,
    /// Bytes available.
    pub available: u64,
}

/// Memory this process may take now, in bytes: Linux's `MemAvailable`, capped
/// by [`LIMIT_VARIABLE`] when set; `None` where neither is known.
pub fn available() -> Option<u64> {
    let system = system_available();
    let cap = std::env::var(LIMIT_VARIABLE)
        .ok()
        .and_then(|v| parse_bytes(&v));
    match (system, cap) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

fn system_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Parses `123`, `4G`, `1.5T` (powers of 1000) into bytes.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 1e3),
        (i, 'M' | 'm') => (&text[..i], 1e6),
        (i, 'G' | 'g') => (&text[..i], 1e9),
        (i, 'T' | 't') => (&text[..i], 1e12),
        _ => (text, 1.0),
    };
    let value: f64 = number.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((value * scale) as u64)
}

/// Refuses work needing `bytes` at once when that is more than 90% of the
/// [`available`] memory (the rest goes to kernels' scratch space, the output
/// and the allocator's slack).
pub fn ensure_fits(what: impl Into<String>, bytes: u64) -> Result<(), OutOfMemory> {
    ensure_fits_within(what, bytes, available())
}

/// [`ensure_fits`] against a given amount of available memory (`None`: unknown,
/// nothing is refused).
///
/// ```
/// use secondo_tensor::memory::ensure_fits_within;
/// assert!(ensure_fits_within("grad", 1 << 20, Some(1 << 30)).is_ok());
/// // Within the available memory but without room for scratch space.
/// assert!(ensure_fits_within("batch_grad", 95, Some(100)).is_err());
/// assert!(ensure_fits_within("grad", 1 << 40, None).is_ok());
/// ```
pub fn ensure_fits_within(
    what: impl Into<String>,
    bytes: u64,
    available: Option<u64>,
) -> Result<(), OutOfMemory> {
    match available {
        Some(free) if bytes > free / 10 * 9 => Err(OutOfMemory {
            what: what.into(),
            need: bytes,
            available: free,
        }),
        _ => Ok(()),
    }
}

/// Bytes of `count` elements of `size` bytes each, saturating (declared sizes
/// in hostile files overflow `usize` products).
pub fn bytes_of(count: usize, size: usize) -> u64 {
    (count as u64).saturating_mul(size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_suffixes() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("4G"), Some(4_000_000_000));
        assert_eq!(parse_bytes("1.5t"), Some(1_500_000_000_000));
        assert_eq!(parse_bytes(" 2 M "), Some(2_000_000));
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes(""), None);
    }

    #[test]
    fn the_system_reports_some_memory() {
        assert!(system_available().is_none_or(|b| b > 0));
    }

    #[test]
    fn declared_sizes_saturate() {
        assert_eq!(bytes_of(usize::MAX, 8), u64::MAX);
        assert_eq!(bytes_of(3, 4), 12);
    }
}
