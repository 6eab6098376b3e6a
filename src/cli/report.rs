//! `secondo report`.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Directory of a monitored run (`train --report DIR`): reads
    /// instruments.jsonl and run.json there, writes report.html beside them.
    dir: PathBuf,
}

pub fn run(a: ReportArgs) -> anyhow::Result<()> {
    let path = secondo::report::write_report(&a.dir)?;
    println!("wrote {}", path.display());
    Ok(())
}
