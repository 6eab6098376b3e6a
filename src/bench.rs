//! Benchmark helpers: repeated timing and the PyTorch reference run.
//! Timings are only ever reported as ratios to baselines measured in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Median and best wall time of repeated runs, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Median over the repeats.
    pub median: f64,
    /// Fastest repeat.
    pub min: f64,
}

/// Times `f` `repeats` times after `warmup` untimed runs.
///
/// ```
/// let t = secondo::bench::time(2, 5, || { std::hint::black_box(1 + 1); });
/// assert!(t.min <= t.median);
/// ```
pub fn time(warmup: usize, repeats: usize, mut f: impl FnMut()) -> Timing {
    time_paired(warmup, repeats, &mut f, &mut || {}).0
}

/// Times `f` and `baseline` alternately, one call of each per round, after
/// `warmup` untimed rounds. Both see the same state of the machine, so on a
/// machine whose speed drifts by tens of percent within minutes (shared
/// cloud cores) their ratio is far steadier than that of figures taken one
/// after the other.
///
/// ```
/// let (a, b) = secondo::bench::time_paired(
///     1,
///     5,
///     &mut || std::thread::sleep(std::time::Duration::from_millis(2)),
///     &mut || std::thread::sleep(std::time::Duration::from_millis(1)),
/// );
/// assert!(a.median > b.median);
/// ```
pub fn time_paired(
    warmup: usize,
    repeats: usize,
    f: &mut dyn FnMut(),
    baseline: &mut dyn FnMut(),
) -> (Timing, Timing) {
    for _ in 0..warmup {
        f();
        baseline();
    }
    let seconds = |g: &mut dyn FnMut()| {
        let start = Instant::now();
        g();
        start.elapsed().as_secs_f64()
    };
    let (mut a, mut b): (Vec<f64>, Vec<f64>) = (0..repeats.max(1))
        .map(|_| (seconds(&mut *f), seconds(&mut *baseline)))
        .unzip();
    (Timing::of(&mut a), Timing::of(&mut b))
}

impl Timing {
    fn of(samples: &mut [f64]) -> Timing {
        samples.sort_by(f64::total_cmp);
        Timing {
            median: samples[samples.len() / 2],
            min: samples[0],
        }
    }
}

/// The Python interpreter to run the PyTorch reference with: `.venv/bin/python`
/// when it exists, else `python3`.
pub fn default_python() -> PathBuf {
    let venv = Path::new(".venv/bin/python");
    if venv.exists() {
        venv.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

/// Runs `scripts/reference/bench_torch.py` with `args` and returns its JSON
/// output, or `None` (with the reason) when PyTorch or the script is missing.
pub fn torch_reference(python: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
    let script = Path::new("scripts/reference/bench_torch.py");
    if !script.exists() {
        return Err(format!(
            "{} not found (run from the repository root)",
            script.display()
        ));
    }
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("failed");
        return Err(format!("PyTorch reference unavailable: {last}"));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON from the reference: {e}"))
}
