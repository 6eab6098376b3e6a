//! Benchmark helpers: repeated timing and the PyTorch reference run.
//! Timings are only ever reported as ratios to baselines measured in the same run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
    let (mut a, mut b): (Vec<f64>, Vec<f64>) = (0..repeats.max(1))
        .map(|_| (seconds(&mut *f), seconds(&mut *baseline)))
        .unzip();
    (Timing::of(&mut a), Timing::of(&mut b))
}

/// Wall time of one call of `f`, in seconds.
fn seconds(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// PyTorch's gradient step on the benchmark model, served in blocks of
/// back-to-back steps by `scripts/reference/bench_torch.py --serve-grad` and
/// timed in that process, so that blocks of its steps can alternate with
/// blocks of ours: the ratio of the two is then as steady as
/// [`time_paired`]'s, where medians taken by separate runs at different
/// moments carry the machine's drift.
///
/// ```no_run
/// use secondo::bench::TorchGradient;
/// let python = std::path::Path::new(".venv/bin/python");
/// let mut torch = TorchGradient::start(python, &["--problem", "mlp"]).expect("PyTorch installed");
/// let (ours, theirs) = torch
///     .paired_with(100, &mut || { /* one gradient step of ours */ })
///     .expect("the server keeps answering");
/// println!("our step / PyTorch's: {:.2}", ours.median / theirs.median);
/// ```
pub struct TorchGradient {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// Steps per block of [`TorchGradient::paired_with`].
const BLOCK: usize = 10;
/// Steps at the start of each block that are not counted: the other
/// process's threads may still be spinning, and the caches hold its data.
const BLOCK_SETTLE: usize = 2;

impl TorchGradient {
    /// Starts the server with `python` (and the script's `args`, e.g. the
    /// problem) and waits until it has warmed up.
    pub fn start(python: &Path, args: &[&str]) -> Result<TorchGradient, String> {
        let mut child = Command::new(python)
            .arg(reference_script(TORCH_SCRIPT)?)
            .args(args)
            .arg("--serve-grad")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to the PyTorch reference".into());
        };
        let mut server = TorchGradient {
            child,
            input,
            output: BufReader::new(output),
        };
        match server.line()?.as_str() {
            "ready" => Ok(server),
            other => Err(format!("PyTorch reference said '{other}'")),
        }
    }

    /// Medians of `f` (timed here) and of PyTorch's step (timed there) over
    /// at least `repeats` steps each, in alternating blocks of back-to-back
    /// steps (each in its steady state).
    pub fn paired_with(
        &mut self,
        repeats: usize,
        f: &mut dyn FnMut(),
    ) -> Result<(Timing, Timing), String> {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        while a.len() < repeats.max(1) {
            let ours: Vec<f64> = (0..BLOCK).map(|_| seconds(f)).collect();
            a.extend_from_slice(&ours[BLOCK_SETTLE..]);
            b.extend_from_slice(&self.block()?[BLOCK_SETTLE..]);
        }
        Ok((Timing::of(&mut a), Timing::of(&mut b)))
    }

    /// [`BLOCK`] PyTorch gradient steps back to back; their wall times in seconds.
    fn block(&mut self) -> Result<Vec<f64>, String> {
        writeln!(self.input, "{BLOCK}").map_err(|e| format!("PyTorch reference: {e}"))?;
        let line = self.line()?;
        let times: Vec<f64> = line
            .split_whitespace()
            .map(|ms| ms.parse::<f64>().map(|ms| ms / 1e3))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("PyTorch reference said '{line}'"))?;
        if times.len() == BLOCK {
            Ok(times)
        } else {
            Err(format!("PyTorch reference said '{line}'"))
        }
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.output.read_line(&mut line) {
            Ok(0) => Err("the PyTorch reference stopped".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(format!("PyTorch reference: {e}")),
        }
    }
}

impl Drop for TorchGradient {
    fn drop(&mut self) {
        // Stop the server now (it would also end at the end of its input).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    python_reference(python, TORCH_SCRIPT, args)
}

/// Runs the reference script `script` (a file of `scripts/reference/`) with
/// `args` and returns its JSON output, or `None` (with the reason) when its
/// libraries or the script are missing.
pub fn python_reference(
    python: &Path,
    script: &str,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let out = Command::new(python)
        .arg(reference_script(script)?)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("failed");
        return Err(format!("{script} unavailable: {last}"));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON from the reference: {e}"))
}

/// The PyTorch / BackPACK / curvlinops timing script.
const TORCH_SCRIPT: &str = "bench_torch.py";

/// `scripts/reference/<name>`, when run from the repository root.
fn reference_script(name: &str) -> Result<PathBuf, String> {
    let script = Path::new("scripts/reference").join(name);
    if script.exists() {
        Ok(script)
    } else {
        Err(format!(
            "{} not found (run from the repository root)",
            script.display()
        ))
    }
}
