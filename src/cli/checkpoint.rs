//! `secondo train --checkpoint-every E [--checkpoint DIR]` and `--resume DIR`.
//!
//! A checkpoint is a directory of three files, replaced whole at every
//! checkpoint (`Output::snapshot_dir`): `weights.safetensors` (parameters and
//! buffers, as `--out` writes them), `state.safetensors` (the position in
//! the data order and every optimizer's state, `secondo::state`) and
//! `checkpoint.json` (the epoch, the step and the run's arguments). A resume
//! refuses a checkpoint whose training arguments differ from the run's:
//! only the flags below in [`MAY_DIFFER`] (the number of epochs, where
//! outputs go, what the monitor tracks) may change.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use secondo::nn::ParamStore;
use secondo::output::{Input, Output};
use secondo::state::State;
use secondo::Objective;
use serde::Serialize;
use serde_json::Value;

use super::common::at_least_one;

/// The files of a checkpoint directory.
pub const FILES: &[&str] = &[
    "weights.safetensors",
    "state.safetensors",
    "checkpoint.json",
];

/// What `checkpoint.json` says it is, so that another JSON file is not taken for one.
const FORMAT: &str = "secondo-checkpoint/1";

/// The arguments of `train` a resumed run may change: how long it runs,
/// where its outputs go and what the monitor (an observer) tracks.
const MAY_DIFFER: &[&str] = &[
    "epochs",
    "out",
    "monitor",
    "track_every",
    "report",
    "probe_samples",
    "checkpoint_every",
    "checkpoint",
    "resume",
];

#[derive(Debug, Args, Serialize)]
pub struct CheckpointArgs {
    /// Write a checkpoint every E epochs (weights, batch-norm statistics, every optimizer's state, the position in the data order and the arguments), replacing the last one whole; --resume continues from it.
    #[arg(long, value_name = "E", value_parser = at_least_one)]
    checkpoint_every: Option<usize>,
    /// Directory of the checkpoints of --checkpoint-every [default: beside --out, W.safetensors → W.checkpoint].
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// Continue from a checkpoint's epoch to --epochs, taking the steps the run would have taken: the same arguments (all but --epochs, --out, --checkpoint*, --report and the monitor's) give byte-identical weights.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
}

impl CheckpointArgs {
    /// The checkpoint output, checked before any work; `None` without
    /// `--checkpoint-every`.
    pub fn output(
        &self,
        out: &Path,
        inputs: &[Input],
    ) -> anyhow::Result<Option<(Output, PathBuf)>> {
        let Some(_) = self.checkpoint_every else {
            if self.checkpoint.is_some() {
                bail!("--checkpoint needs --checkpoint-every");
            }
            return Ok(None);
        };
        let dir = self
            .checkpoint
            .clone()
            .unwrap_or_else(|| out.with_extension("checkpoint"));
        let output = Output::snapshot_dir(&dir, FILES, "--checkpoint", inputs)?;
        Ok(Some((output, dir)))
    }

    /// Whether checkpoints are written or resumed from.
    pub fn used(&self) -> bool {
        self.checkpoint_every.is_some() || self.checkpoint.is_some() || self.resume.is_some()
    }

    /// Epochs between checkpoints.
    pub fn every(&self) -> Option<usize> {
        self.checkpoint_every
    }

    /// The checkpoint `--resume` names, checked against the run's
    /// arguments `args` (as [`Serialize`] gives them).
    pub fn resume(&self, args: &Value) -> anyhow::Result<Option<Resume>> {
        self.resume
            .as_ref()
            .map(|dir| Resume::open(dir, args))
            .transpose()
    }
}

/// A checkpoint being resumed from.
pub struct Resume {
    pub dir: PathBuf,
    /// Epochs and steps done.
    pub epoch: usize,
    pub step: usize,
    /// The training state, read whole (the directory may be replaced by
    /// this run's own checkpoints).
    pub state: State,
}

impl Resume {
    /// Reads `dir`'s `checkpoint.json` and state, refusing, on one line
    /// naming the flag or the file, arguments that differ from `args`.
    fn open(dir: &Path, args: &Value) -> anyhow::Result<Resume> {
        if !dir.is_dir() {
            bail!("--resume {}: no such checkpoint directory", dir.display());
        }
        let path = dir.join("checkpoint.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("--resume {}", path.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .ok()
            .filter(|d: &Value| d["format"] == FORMAT)
            .with_context(|| format!("--resume {}: not a secondo checkpoint", path.display()))?;
        let count = |key: &str| {
            doc[key]
                .as_u64()
                .map(|n| n as usize)
                .with_context(|| format!("--resume {}: '{key}' is not a count", path.display()))
        };
        let (epoch, step) = (count("epoch")?, count("step")?);
        refuse_differences(dir, &doc["args"], args)?;
        let state = State::read(&dir.join("state.safetensors"))?;
        Ok(Resume {
            dir: dir.to_path_buf(),
            epoch,
            step,
            state,
        })
    }

    /// The checkpoint's weights for `objective`, loaded strictly.
    pub fn weights(&self, objective: &Objective) -> anyhow::Result<ParamStore> {
        let path = self.dir.join("weights.safetensors");
        let spec = objective.network.spec();
        Ok(ParamStore::load(&path, spec, objective.dtype)?)
    }
}

/// The arguments that must match, as a JSON object.
fn training_arguments(args: &Value) -> serde_json::Map<String, Value> {
    let mut map = args.as_object().cloned().unwrap_or_default();
    map.retain(|k, _| !MAY_DIFFER.contains(&k.as_str()));
    map
}

/// Refuses, naming the first flag that differs, a checkpoint of other
/// training arguments.
fn refuse_differences(dir: &Path, saved: &Value, args: &Value) -> anyhow::Result<()> {
    let (saved, now) = (training_arguments(saved), training_arguments(args));
    let mut keys: Vec<&String> = saved.keys().chain(now.keys()).collect();
    keys.sort();
    let shown = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "not given".to_string(),
        Some(v) => v.to_string(),
    };
    if let Some(k) = keys.into_iter().find(|k| saved.get(*k) != now.get(*k)) {
        bail!(
            "--resume {}: --{} differs from the checkpoint's ({} there, {} here)",
            dir.display(),
            k.replace('_', "-"),
            shown(saved.get(k)),
            shown(now.get(k))
        );
    }
    Ok(())
}

/// Writes one checkpoint of the run with arguments `args` through `output`.
pub fn write(
    output: &Output,
    args: &Value,
    (epoch, step): (usize, usize),
    params: &ParamStore,
    state: &State,
) -> Result<(), secondo::Error> {
    let staged = output.stage()?;
    params.save(&staged.path("weights.safetensors"))?;
    state.write(&staged.path("state.safetensors"))?;
    let doc = serde_json::json!({ "format": FORMAT, "epoch": epoch, "step": step, "args": args });
    let path = staged.path("checkpoint.json");
    let text = serde_json::to_string_pretty(&doc).expect("JSON of plain values") + "\n";
    std::fs::write(&path, text)
        .map_err(|e| secondo::Error::Invalid(format!("{}: {e}", path.display())))?;
    staged.commit()
}
