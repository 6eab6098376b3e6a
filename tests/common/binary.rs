//! Running the `secondo` binary as a user does, and checking its failures.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `secondo` with `args`.
pub fn secondo(args: &[&str]) -> Output {
    secondo_with(args, &[])
}

/// Runs `secondo` with `args` and extra environment variables, in a fresh
/// working directory (what a command writes by default, such as `train`'s
/// `report/`, stays out of the repository and of other tests' way).
pub fn secondo_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().expect("temporary directory");
    Command::new(env!("CARGO_BIN_EXE_secondo"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd.path())
        .output()
        .expect("binary runs")
}

/// The command's standard error.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a bad-input failure: exit 2, one line on stderr containing
/// `needle`, nothing on stdout, and `out` not created.
pub fn assert_bad_input(o: &Output, needle: &str, out: &Path) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        o.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!out.exists(), "{} was left behind", out.display());
}

/// A path as the `&str` an argument list takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
