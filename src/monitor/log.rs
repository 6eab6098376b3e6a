//! A monitored run's directory: `run.json` (what ran) and
//! `instruments.jsonl` (one record per tracked step, appended and flushed
//! as each finishes, so that an interrupted run leaves a readable log).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Record;
use crate::output::Output;
use crate::Error;

/// The files of a report directory.
pub const FILES: &[&str] = &["instruments.jsonl", "run.json", "report.html"];

/// An open run directory.
pub struct RunLog {
    dir: PathBuf,
    jsonl: BufWriter<File>,
    records: usize,
}

impl RunLog {
    /// Creates the checked directory `output` with `run` as `run.json` and
    /// an empty `instruments.jsonl`.
    ///
    /// ```
    /// use secondo::monitor::log::{RunLog, FILES};
    /// use secondo::output::Output;
    /// let dir = tempfile::tempdir().unwrap();
    /// let out = Output::dir(&dir.path().join("report"), FILES, "--report", &[]).unwrap();
    /// let mut log = RunLog::create(&out, &serde_json::json!({"model": "linear(2,2)"})).unwrap();
    /// let mut r = secondo::monitor::Record::new();
    /// r.insert("step".into(), 0.into());
    /// log.append(&[r]).unwrap();
    /// let text = std::fs::read_to_string(dir.path().join("report/instruments.jsonl")).unwrap();
    /// assert_eq!(text, "{\"step\":0}\n");
    /// ```
    pub fn create(output: &Output, run: &Value) -> Result<RunLog, Error> {
        let dir = output.create_dir()?;
        write_run(&dir, run)?;
        let path = dir.join("instruments.jsonl");
        let file = File::create(&path).map_err(|e| io_error(&path, e))?;
        Ok(RunLog {
            dir,
            jsonl: BufWriter::new(file),
            records: 0,
        })
    }

    /// Reopens `output`'s log for a run resumed at step `from` (`secondo
    /// train --resume`): `run.json` replaced, the records of the steps
    /// before `from` kept and the resumed run's appended after them. The
    /// records of later steps, from a run that went on past its checkpoint,
    /// are dropped, so that every step has one record.
    pub fn resume(output: &Output, run: &Value, from: usize) -> Result<RunLog, Error> {
        let path = output.create_dir()?.join("instruments.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_error(&path, e)),
        };
        let before = |line: &&str| {
            let record: Option<Value> = serde_json::from_str(line).ok();
            record
                .and_then(|r| r["step"].as_u64())
                .is_some_and(|s| s < from as u64)
        };
        let kept: Vec<&str> = text.lines().filter(before).collect();
        let mut log = RunLog::create(output, run)?;
        for line in &kept {
            writeln!(log.jsonl, "{line}").map_err(|e| io_error(&path, e))?;
        }
        log.jsonl.flush().map_err(|e| io_error(&path, e))?;
        log.records = kept.len();
        Ok(log)
    }

    /// Appends records, one line each, and flushes them to disk.
    pub fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        let path = self.dir.join("instruments.jsonl");
        for r in records {
            serde_json::to_writer(&mut self.jsonl, r)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            self.jsonl
                .write_all(b"\n")
                .map_err(|e| io_error(&path, e))?;
        }
        self.jsonl.flush().map_err(|e| io_error(&path, e))?;
        self.records += records.len();
        Ok(())
    }

    /// Replaces `run.json` (e.g. with the final evaluation).
    pub fn update_run(&self, run: &Value) -> Result<(), Error> {
        write_run(&self.dir, run)
    }

    /// Records written so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `run.json` whole (staged, then renamed into place).
fn write_run(dir: &Path, run: &Value) -> Result<(), Error> {
    let path = dir.join("run.json");
    let staged = Output::file(&path, "--report", &[])?.stage()?;
    let text = serde_json::to_string_pretty(run).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(staged.file_path(), text + "\n").map_err(|e| io_error(&path, e))?;
    staged.commit()
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}
