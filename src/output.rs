//! Outputs that appear whole or not at all, and never over an input.
//!
//! Every command writes through one [`Output`]: checked before any work (the
//! directory exists, an existing target is a regular file, no target is one of
//! the command's inputs), written into a staging directory beside the target,
//! and renamed into place at the end. A failure, a full disk or a signal
//! ([`remove_staged`], called by the binary's signal and out-of-memory
//! handlers) leaves nothing behind but what was there before. Files are
//! created with the process's umask, like any other program's.
//!
//! ```
//! use secondo::output::Output;
//! let dir = tempfile::tempdir().unwrap();
//! let target = dir.path().join("w.safetensors");
//! let out = Output::file(&target, "--out", &[]).unwrap();
//! let staged = out.stage().unwrap();
//! std::fs::write(staged.path("w.safetensors"), b"bytes").unwrap();
//! assert!(!target.exists()); // nothing shows until the commit
//! staged.commit().unwrap();
//! assert_eq!(std::fs::read(&target).unwrap(), b"bytes");
//! assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::Error;

/// Staging directories not yet committed, for [`remove_staged`].
static STAGED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Distinguishes the staging directories of one process.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// An input of the command, by the flag that named it, which an output must
/// not replace.
#[derive(Debug, Clone)]
pub struct Input {
    /// The flag, e.g. `--data`.
    pub flag: &'static str,
    /// The file.
    pub path: PathBuf,
}

/// Where a command will write: one file, or named files in a directory.
#[derive(Debug, Clone)]
pub struct Output {
    /// The file, or the directory of the files.
    target: PathBuf,
    /// The files' names inside the directory; `None` for a single file.
    files: Option<Vec<String>>,
    /// Whether the directory is replaced whole on commit (a snapshot, such
    /// as a checkpoint) rather than its files one by one.
    whole: bool,
}

impl Output {
    /// One output file, named by `flag`; checked against `inputs` now.
    pub fn file(path: &Path, flag: &str, inputs: &[Input]) -> Result<Output, Error> {
        let out = Output {
            target: path.to_path_buf(),
            files: None,
            whole: false,
        };
        out.check(flag, inputs)?;
        Ok(out)
    }

    /// Files `names` in directory `dir` (created if absent), named by `flag`;
    /// checked against `inputs` now.
    pub fn dir(dir: &Path, names: &[&str], flag: &str, inputs: &[Input]) -> Result<Output, Error> {
        let out = Output {
            target: dir.to_path_buf(),
            files: Some(names.iter().map(|n| n.to_string()).collect()),
            whole: false,
        };
        out.check(flag, inputs)?;
        Ok(out)
    }

    /// A directory of files `names` that is replaced as a whole by every
    /// commit, so that a reader finds the old snapshot or the new one and
    /// never a mix (one atomic exchange of the two directories on Linux);
    /// refuses, naming `flag`, an existing directory that holds other files,
    /// which the replacement would remove.
    pub fn snapshot_dir(
        dir: &Path,
        names: &[&str],
        flag: &str,
        inputs: &[Input],
    ) -> Result<Output, Error> {
        let out = Output {
            whole: true,
            ..Output::dir(dir, names, flag, inputs)?
        };
        let foreign = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| !names.iter().any(|n| e.file_name() == *n));
        if let Some(e) = foreign {
            return Err(Error::Invalid(format!(
                "{flag} {}: holds '{}', which is not a checkpoint's; name a new directory",
                dir.display(),
                e.file_name().to_string_lossy()
            )));
        }
        Ok(out)
    }

    /// The final paths of every file this output writes.
    fn paths(&self) -> Vec<PathBuf> {
        match &self.files {
            None => vec![self.target.clone()],
            Some(names) => names.iter().map(|n| self.target.join(n)).collect(),
        }
    }

    /// The target's own name: the single file's, or the directory's.
    fn name(&self) -> String {
        self.target
            .file_name()
            .map_or("output".into(), |n| n.to_string_lossy().into_owned())
    }

    /// The directory the staging directory goes into: the target's parent.
    fn parent(&self) -> &Path {
        self.target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    fn check(&self, flag: &str, inputs: &[Input]) -> Result<(), Error> {
        let invalid =
            |why: String| Error::Invalid(format!("{flag} {}: {why}", self.target.display()));
        let parent = self.parent();
        match std::fs::metadata(parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(invalid(format!(
                    "'{}' is not a directory",
                    parent.display()
                )))
            }
            Err(_) => {
                return Err(invalid(format!(
                    "directory '{}' does not exist",
                    parent.display()
                )))
            }
        }
        if self.files.is_some() {
            if let Ok(m) = std::fs::metadata(&self.target) {
                if !m.is_dir() {
                    return Err(invalid("exists and is not a directory".into()));
                }
            }
        }
        for path in self.paths() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                return Err(invalid(format!(
                    "'{}' exists and is not a regular file (outputs replace regular files only)",
                    path.display()
                )));
            }
            if let Some(input) = inputs.iter().find(|i| same_file(&path, &i.path)) {
                return Err(invalid(format!(
                    "'{}' is also the input {} {}; write the output elsewhere",
                    path.display(),
                    input.flag,
                    input.path.display()
                )));
            }
        }
        Ok(())
    }

    /// Creates the checked output directory (if missing) for files that
    /// grow while a run goes, such as a monitor's log: they are readable at
    /// every step, which matters more for them than appearing whole.
    pub fn create_dir(&self) -> Result<PathBuf, Error> {
        std::fs::create_dir_all(&self.target).map_err(|e| io_error(&self.target, e))?;
        Ok(self.target.clone())
    }

    /// Creates the staging directory beside the target; files written into
    /// [`Staged::path`] appear at their targets on [`Staged::commit`].
    pub fn stage(&self) -> Result<Staged, Error> {
        let dir = self.parent().join(format!(
            ".{}.secondo-{}-{}",
            self.name(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(|e| io_error(&dir, e))?;
        STAGED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dir.clone());
        Ok(Staged {
            output: self.clone(),
            dir,
        })
    }
}

/// An output being written; removed unless committed.
#[derive(Debug)]
pub struct Staged {
    output: Output,
    dir: PathBuf,
}

impl Staged {
    /// Where to write the file `name` (one of the output's files, or the
    /// single file's own name).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where to write a single-file output.
    pub fn file_path(&self) -> PathBuf {
        self.dir.join(self.output.name())
    }

    /// Puts every file in place: a new directory by one rename of the staging
    /// directory, files by one rename each.
    pub fn commit(self) -> Result<(), Error> {
        let target = &self.output.target;
        match &self.output.files {
            None => rename(&self.file_path(), target)?,
            Some(_) if !target.exists() => rename(&self.dir, target)?,
            // The old directory lands where the staging one was, which the
            // drop removes.
            Some(_) if self.output.whole => exchange(&self.dir, target)?,
            Some(names) => {
                for name in names {
                    rename(&self.dir.join(name), &target.join(name))?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut staged = STAGED.lock().unwrap_or_else(|p| p.into_inner());
        staged.retain(|d| d != &self.dir);
    }
}

/// Removes every staging directory not yet committed: for the binary's
/// handlers of signals and allocation failures, which end the process
/// without running destructors.
pub fn remove_staged() {
    let staged = STAGED.lock().unwrap_or_else(|p| p.into_inner());
    for dir in staged.iter() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::rename(from, to).map_err(|e| io_error(to, e))
}

/// Swaps two directories in one step (Linux's `renameat2` with
/// `RENAME_EXCHANGE`); elsewhere, moves `to` aside and `from` into its place.
fn exchange(from: &Path, to: &Path) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
        };
        let (a, b) = (c(from)?, c(to)?);
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        let done = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if done == 0 {
            return Ok(());
        }
        Err(io_error(to, io::Error::last_os_error()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let aside = from.with_extension("old");
        rename(to, &aside)?;
        rename(from, to)?;
        rename(&aside, from)
    }
}

fn io_error(path: &Path, e: io::Error) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

/// Whether two paths name the same existing file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(x), Ok(y)) if x == y
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_uncommitted_output_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let out = Output::dir(&tmp.path().join("s"), &["a.json", "b.svg"], "--out", &[]).unwrap();
        let staged = out.stage().unwrap();
        std::fs::write(staged.path("a.json"), "{}").unwrap();
        drop(staged);
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn a_directory_output_appears_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("s");
        let out = Output::dir(&target, &["a.json", "b.svg"], "--out", &[]).unwrap();
        let staged = out.stage().unwrap();
        std::fs::write(staged.path("a.json"), "{}").unwrap();
        std::fs::write(staged.path("b.svg"), "<svg/>").unwrap();
        staged.commit().unwrap();
        assert_eq!(names(tmp.path()), ["s"]);
        assert_eq!(names(&target), ["a.json", "b.svg"]);
        // Into an existing directory, other files kept.
        std::fs::write(target.join("mine.txt"), "keep").unwrap();
        let staged = out.stage().unwrap();
        std::fs::write(staged.path("a.json"), "[]").unwrap();
        std::fs::write(staged.path("b.svg"), "<svg/>").unwrap();
        staged.commit().unwrap();
        assert_eq!(names(&target), ["a.json", "b.svg", "mine.txt"]);
        assert_eq!(
            std::fs::read_to_string(target.join("a.json")).unwrap(),
            "[]"
        );
        assert_eq!(names(tmp.path()), ["s"]);
    }

    #[test]
    fn a_snapshot_directory_is_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("c");
        let out = Output::snapshot_dir(&target, &["a", "b"], "--checkpoint", &[]).unwrap();
        for round in ["1", "2"] {
            let staged = out.stage().unwrap();
            std::fs::write(staged.path("a"), round).unwrap();
            staged.commit().unwrap();
            assert_eq!(names(tmp.path()), ["c"]);
            assert_eq!(names(&target), ["a"]);
            assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), round);
        }
        std::fs::write(target.join("mine.txt"), "keep").unwrap();
        let err = Output::snapshot_dir(&target, &["a", "b"], "--checkpoint", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds 'mine.txt'"), "{err}");
    }

    #[test]
    fn outputs_over_inputs_or_special_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d.safetensors");
        std::fs::write(&data, "x").unwrap();
        let inputs = [Input {
            flag: "--data",
            path: data.clone(),
        }];
        let err = Output::file(&data, "--out", &inputs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is also the input --data"), "{err}");
        let err = Output::file(Path::new("/dev/null"), "--out", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = Output::file(&data.join("w.safetensors"), "--out", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a directory"), "{err}");
        let err = Output::file(&tmp.path().join("no/w"), "--out", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = Output::dir(&data, &["a"], "--out", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }

    #[test]
    fn staged_directories_are_removed_on_request() {
        let tmp = tempfile::tempdir().unwrap();
        let out = Output::file(&tmp.path().join("w"), "--out", &[]).unwrap();
        let staged = out.stage().unwrap();
        std::fs::write(staged.file_path(), "x").unwrap();
        remove_staged();
        assert!(names(tmp.path()).is_empty());
    }
}
