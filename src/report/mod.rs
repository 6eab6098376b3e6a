//! The training report: a monitored run (`DIR/run.json` and
//! `DIR/instruments.jsonl`, see shared/INTERFACES.md) rendered as one
//! self-contained HTML file laid out like Cockpit's dashboard.
//!
//! The file has inline CSS and inline SVG charts ([`crate::plot`]) and
//! nothing else: no script, no font, no image, no URL, so it opens from disk
//! anywhere and can be mailed or archived with the run. The same records
//! give the same bytes.
//!
//! ```
//! use serde_json::json;
//! let records: Vec<_> = (0..3)
//!     .map(|s| json!({"step": s, "epoch": 1, "lr": 0.1, "batch_size": 32, "loss": 2.0 / (1.0 + s as f64)}))
//!     .map(|v| v.as_object().unwrap().clone())
//!     .collect();
//! let html = secondo::report::render_html(None, &records);
//! assert!(html.contains(r#"data-instrument="loss""#) && html.contains("<polyline"));
//! assert!(!html.contains("data-instrument=\"alpha\""));
//! ```

mod data;
mod panels;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use data::Record;
use data::Run;

use crate::output::{Input, Output};
use crate::plot::escape;
use crate::Error;

/// The records' file inside a run directory.
pub const INSTRUMENTS: &str = "instruments.jsonl";
/// The run's metadata inside a run directory.
pub const RUN: &str = "run.json";
/// The report inside a run directory.
pub const REPORT: &str = "report.html";

/// Reads `instruments.jsonl`: one JSON object with an integer `step` per
/// line. A last line that does not parse is what an interrupted run leaves
/// behind, and is skipped; a bad line before it is an error naming the file
/// and the line. Blank lines are ignored.
pub fn read_records(path: &Path) -> Result<Vec<Record>, Error> {
    let bytes = std::fs::read(path).map_err(|e| invalid(path, e))?;
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .collect();
    let last = lines.len().saturating_sub(1);
    lines
        .iter()
        .enumerate()
        .filter_map(|(k, (n, line))| match parse_record(line) {
            Ok(record) => Some(Ok(record)),
            Err(_) if k == last => None,
            Err(e) => Some(Err(invalid(path, format!("line {}: {e}", n + 1)))),
        })
        .collect()
}

/// One line of `instruments.jsonl`.
fn parse_record(line: &[u8]) -> Result<Record, String> {
    match serde_json::from_slice(line).map_err(|e| format!("not valid JSON ({e})"))? {
        Value::Object(record) if record.get("step").is_some_and(Value::is_u64) => Ok(record),
        Value::Object(_) => Err("no integer \"step\"".into()),
        _ => Err("not a JSON object".into()),
    }
}

/// Reads `run.json`, if the run wrote one.
fn read_run(path: &Path) -> Result<Option<Value>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| invalid(path, format!("not valid JSON ({e})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(invalid(path, e)),
    }
}

/// Renders the run's metadata (`run.json`, if any) and records as the
/// report's HTML.
pub fn render_html(run: Option<&Value>, records: &[Record]) -> String {
    let steps = Run::new(records);
    let model = run.and_then(|r| r.get("model")).and_then(Value::as_str);
    let (groups, missing) = panels::render(&steps);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>secondo report{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        model.map(|m| format!(" — {}", escape(m))).unwrap_or_default()
    );
    html.push_str(&header(run, &steps));
    html.push_str("<main>\n");
    if records.is_empty() {
        html.push_str("<p class=\"empty\">No tracked steps yet.</p>\n");
    }
    html.push_str(&groups);
    if !missing.is_empty() && !records.is_empty() {
        let _ = writeln!(
            html,
            "<p class=\"missing\">Not tracked in this run: {}.</p>",
            escape(&missing.join(", "))
        );
    }
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

/// Renders `dir/instruments.jsonl` (with `dir/run.json` if present) into
/// `dir/report.html`, which appears whole or not at all; returns its path.
pub fn write_report(dir: &Path) -> Result<PathBuf, Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(invalid(dir, "not a directory")),
        Err(e) => return Err(invalid(dir, e)),
    }
    let jsonl = dir.join(INSTRUMENTS);
    let records = read_records(&jsonl)?;
    if records.is_empty() {
        return Err(invalid(&jsonl, "no tracked steps"));
    }
    let run = read_run(&dir.join(RUN))?;
    let target = dir.join(REPORT);
    let inputs = [Input {
        flag: "instruments",
        path: jsonl,
    }];
    let staged = Output::file(&target, "report", &inputs)?.stage()?;
    let file = staged.file_path();
    std::fs::write(&file, render_html(run.as_ref(), &records)).map_err(|e| invalid(&file, e))?;
    staged.commit()?;
    Ok(target)
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {why}", path.display()))
}

/// The run's facts: what was trained how, how far, and how well.
fn header(run: Option<&Value>, steps: &Run) -> String {
    let field = |k: &str| run.and_then(|r| r.get(k)).filter(|v| !v.is_null());
    let final_ = |k: &str| {
        field("final")
            .and_then(|f| f.get(k))
            .filter(|v| !v.is_null())
    };
    let mut facts: Vec<(&str, String)> = Vec::new();
    let mut add = |label, value: Option<String>| {
        if let Some(v) = value {
            facts.push((label, v));
        }
    };
    add("model", field("model").map(text));
    add(
        "data",
        field("data").map(|d| data_summary(d, field("samples"), field("classes"))),
    );
    add("optimizer", field("optimizer").map(text));
    add("learning rate", field("lr").map(text));
    add("batch size", field("batch_size").map(text));
    add("epochs", field("epochs").map(text));
    add("steps", field("steps").map(text));
    add(
        "tracked steps",
        steps
            .span()
            .map(|(a, b)| format!("{} ({a}–{b})", steps.len())),
    );
    add(
        "status",
        field("finished").and_then(Value::as_bool).map(status),
    );
    for (label, key) in [
        ("train loss", "train_loss"),
        ("train accuracy", "train_accuracy"),
        ("test loss", "test_loss"),
        ("test accuracy", "test_accuracy"),
    ] {
        let percent = key.ends_with("accuracy");
        add(
            label,
            final_(key)
                .and_then(data::number)
                .map(|v| quantity(v, percent)),
        );
    }
    let mut html = String::from("<header>\n<h1>secondo training report</h1>\n<dl class=\"run\">\n");
    for (label, value) in facts {
        // Spec strings are long: the model gets a wider cell.
        let class = if label == "model" {
            " class=\"wide\""
        } else {
            ""
        };
        let _ = writeln!(
            html,
            "<div{class}><dt>{label}</dt><dd>{}</dd></div>",
            escape(&value)
        );
    }
    if run.is_none() {
        html.push_str("<div><dt>run</dt><dd>no run.json</dd></div>\n");
    }
    html.push_str("</dl>\n</header>\n");
    html
}

/// A JSON value as header text: strings without quotes, numbers as written.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |v| quantity(v, false)),
        other => other.to_string(),
    }
}

/// `digits (1437 samples, 10 classes)`.
fn data_summary(data: &Value, samples: Option<&Value>, classes: Option<&Value>) -> String {
    let details: Vec<String> = [(samples, "samples"), (classes, "classes")]
        .into_iter()
        .filter_map(|(v, unit)| v.map(|v| format!("{} {unit}", text(v))))
        .collect();
    if details.is_empty() {
        text(data)
    } else {
        format!("{} ({})", text(data), details.join(", "))
    }
}

fn status(finished: bool) -> String {
    if finished {
        "finished".into()
    } else {
        "running or interrupted".into()
    }
}

/// A number with a fixed precision: integers whole, percentages with two
/// decimals, others with four significant digits.
fn quantity(v: f64, percent: bool) -> String {
    if percent {
        format!("{:.2} %", 100.0 * v)
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if (1e-3..1e5).contains(&v.abs()) {
        let decimals = (3 - v.abs().log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

/// The page's style: a grid of white panels in coloured groups (Cockpit
/// gives each group a colour), charts scaled to the panel's width.
const CSS: &str = r#"body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#eef0f3;color:#222}
header{background:#1f2a44;color:#fff;padding:14px 24px}
header h1{margin:0 0 10px;font-size:20px;font-weight:600}
dl.run{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px 18px;margin:0}
dl.run dt{font-size:11px;text-transform:uppercase;letter-spacing:.05em;opacity:.7}
dl.run dd{margin:0;font-size:14px;overflow-wrap:anywhere}
dl.run .wide{grid-column:span 2}
main{padding:4px 24px 24px}
section.group{margin-top:16px;padding:8px 12px 12px;border-radius:8px}
section.step{background:#e3ecf7}
section.gradients{background:#f7ece0}
section.curvature{background:#e4f2e4}
section.training{background:#ebe6f3}
section.structure{background:#f3e4e6}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.1em;color:#444;margin:2px 0 8px}
.grid{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:12px}
.panel{background:#fff;border-radius:6px;padding:10px 12px;box-shadow:0 1px 2px rgba(0,0,0,.15)}
.panel h3{margin:0;font-size:15px}
.how{font-size:12px;color:#555;margin:4px 0 6px;line-height:1.35}
.panel svg{width:100%;height:auto;display:block;margin-top:4px}
.note,.panel label{font-size:12px;color:#333;margin:2px 0 0}
.log{display:none}
.logswitch:checked~.lin{display:none}
.logswitch:checked~.log{display:block}
.missing,.empty{font-size:13px;color:#555;margin-top:16px}
@media (max-width:1100px){.grid{grid-template-columns:minmax(0,1fr)}}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_have_a_fixed_precision() {
        assert_eq!(quantity(0.001, false), "0.001000");
        assert_eq!(quantity(900.0, false), "900");
        assert_eq!(quantity(0.12346, false), "0.1235");
        assert_eq!(quantity(2e-5, false), "2.000e-5");
        assert_eq!(quantity(0.9731, true), "97.31 %");
    }
}
