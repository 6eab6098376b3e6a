//! The benchmark's link to the PyTorch reference, with a stand-in for Python
//! that speaks the `bench_torch.py --serve-grad` protocol.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secondo::bench::TorchGradient;

/// An executable shell script in `dir` standing in for `python`.
fn fake_python(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// One test: scripts written while another test spawns a child can be
/// "text file busy" when executed.
#[test]
fn torch_gradient_steps_alternate_in_blocks() {
    let dir = tempfile::tempdir().unwrap();
    // Every step takes 4 ms, except the first of a block (not counted).
    let python = fake_python(
        dir.path(),
        "serves",
        r#"echo ready
while read k; do
  line="1.0"; i=1
  while [ $i -lt $k ]; do line="$line 4.0"; i=$((i+1)); done
  echo "$line"
done"#,
    );
    let mut server = TorchGradient::start(&python, &[]).unwrap();
    let mut calls = 0;
    let (ours, theirs) = server
        .paired_with(30, &mut || {
            calls += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
        })
        .unwrap();
    assert!(calls >= 30 && calls % 10 == 0, "{calls} calls");
    assert_eq!(theirs.median, 0.004);
    assert_eq!(theirs.min, 0.004);
    assert!(ours.min >= 0.001 && ours.median < 0.004);

    // A reference that fails is an error, not a panic.
    let silent = fake_python(dir.path(), "fails", "exit 1");
    assert!(TorchGradient::start(&silent, &[]).is_err());
    let stops = fake_python(dir.path(), "stops", "echo ready; read k; echo 1.0 oops");
    let mut server = TorchGradient::start(&stops, &[]).unwrap();
    let err = server.paired_with(5, &mut || {}).unwrap_err();
    assert!(err.contains("oops"), "{err}");
    let missing = dir.path().join("no-such-python");
    assert!(TorchGradient::start(&missing, &[]).is_err());
}
