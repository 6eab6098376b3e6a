//! `secondo report` and `secondo::report` on the synthetic monitored run of
//! tests/fixtures/report (every instrument of the monitor's schema over 30
//! steps, structure measurements at 3 checkpoints, some nulls; written by
//! its generate.py): every panel drawn with data, one self-contained file,
//! the same bytes twice, and bad input refused in one line.

mod common;

use std::path::{Path, PathBuf};

use common::binary::{assert_bad_input, s, secondo, stderr};
use secondo::report::{read_records, render_html, write_report, Record};

/// The `data-instrument` of every panel the full fixture must draw, in order.
const PANELS: &[&str] = &[
    "alpha",
    "distance update_size",
    "grad_norm",
    "norm_test inner_test ortho_test",
    "grad_hist_1d",
    "grad_hist_2d",
    "mean_gsnr",
    "cabs",
    "early_stopping",
    "hess_max_ev",
    "hess_trace",
    "tic_diag tic_trace",
    "lr batch_size",
    "loss",
    "hess_top_ev ggn_top_ev",
    "ggn_class_means",
    "grad_top_space",
    "top_space_rotation",
    "ef_ggn",
    "hess_density",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/report")
        .join(name)
}

/// A run directory holding the fixture's run.json and `instruments` as its
/// instruments.jsonl.
fn run_dir(instruments: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("run.json"), dir.path().join("run.json")).unwrap();
    std::fs::write(dir.path().join("instruments.jsonl"), instruments).unwrap();
    dir
}

fn fixture_lines() -> String {
    std::fs::read_to_string(fixture("instruments.jsonl")).unwrap()
}

/// `secondo report DIR`, checked to succeed; the report's text.
fn report(dir: &Path) -> String {
    let o = secondo(&["report", s(dir)]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = dir.join("report.html");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(s(&out)), "{stdout}");
    std::fs::read_to_string(out).unwrap()
}

/// An element of the page: its name, the text of its start tag and its content.
struct Element<'a> {
    name: &'a str,
    tag: &'a str,
    inner: &'a str,
}

/// Elements that have no end tag in HTML.
const VOID: &[&str] = &["meta", "input", "br", "img", "link"];

/// Every element of `html`, checked to nest properly (each end tag closes
/// the element opened last; nothing left open).
fn elements(html: &str) -> Vec<Element<'_>> {
    let mut open: Vec<(&str, &str, usize)> = Vec::new();
    let mut done = Vec::new();
    let mut at = 0;
    while let Some(start) = html[at..].find('<').map(|i| at + i) {
        let end = start + html[start..].find('>').expect("tag closed");
        let tag = &html[start + 1..end];
        at = end + 1;
        if tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let (opened, open_tag, content) = open
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(
                opened, name,
                "<{opened}> closed by </{name}> at byte {start}"
            );
            done.push(Element {
                name: opened,
                tag: open_tag,
                inner: &html[content..start],
            });
            continue;
        }
        let name = tag.split([' ', '/']).next().unwrap();
        if tag.ends_with('/') || VOID.contains(&name) {
            done.push(Element {
                name,
                tag,
                inner: "",
            });
        } else if name == "style" {
            // CSS may hold '>' (child selectors): skip to the end tag.
            let close = at + html[at..].find("</style>").unwrap();
            done.push(Element {
                name,
                tag,
                inner: &html[at..close],
            });
            at = close + "</style>".len();
        } else {
            open.push((name, tag, at));
        }
    }
    assert!(
        open.is_empty(),
        "left open: {:?}",
        open.iter().map(|o| o.0).collect::<Vec<_>>()
    );
    done
}

/// The value of attribute `name` in a start tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let from = tag.find(&key)? + key.len();
    Some(&tag[from..from + tag[from..].find('"')?])
}

/// The panels of a page, in order: their `data-instrument` and content.
fn panels(html: &str) -> Vec<(String, String)> {
    let mut found: Vec<(usize, String, String)> = elements(html)
        .into_iter()
        .filter(|e| e.name == "div" && attribute(e.tag, "class") == Some("panel"))
        .map(|e| {
            let position = e.inner.as_ptr() as usize - html.as_ptr() as usize;
            (
                position,
                attribute(e.tag, "data-instrument").unwrap().to_string(),
                e.inner.to_string(),
            )
        })
        .collect();
    found.sort_by_key(|p| p.0);
    found.into_iter().map(|(_, i, inner)| (i, inner)).collect()
}

/// How many marks (lines, dots, bars, heat-map cells) a panel draws, each
/// checked to have finite coordinates.
fn marks(panel: &str) -> usize {
    let drawn: Vec<Element> = elements(panel)
        .into_iter()
        .filter(|e| {
            matches!(e.name, "polyline" | "circle")
                || (e.name == "rect" && matches!(attribute(e.tag, "class"), Some("bar" | "cell")))
        })
        .collect();
    for mark in &drawn {
        for key in ["points", "cx", "cy", "x", "y", "width", "height"] {
            let Some(value) = attribute(mark.tag, key) else {
                continue;
            };
            for number in value.split([' ', ',']) {
                let v: f64 = number
                    .parse()
                    .unwrap_or_else(|_| panic!("{key}=\"{value}\" in {}", mark.tag));
                assert!(v.is_finite(), "{}", mark.tag);
            }
        }
    }
    drawn.len()
}

/// The checks every page passes: well nested, self-contained, nothing
/// undefined drawn; returns its panels.
fn check_page(html: &str) -> Vec<(String, String)> {
    assert!(html.starts_with("<!DOCTYPE html>"));
    for banned in [
        "http://", "https://", "src=", "href=", "url(", "@import", "<script", "<img",
    ] {
        assert!(!html.contains(banned), "the page has {banned}");
    }
    for svg in elements(html).iter().filter(|e| e.name == "svg") {
        for banned in ["NaN", "inf"] {
            assert!(!svg.inner.contains(banned), "{banned} in {}", svg.inner);
        }
    }
    let panels = panels(html);
    for (instruments, inner) in &panels {
        assert!(
            inner.contains("<h3>") && inner.contains("class=\"how\""),
            "{instruments}"
        );
        assert!(marks(inner) > 0, "panel {instruments} draws nothing");
    }
    panels
}

fn instruments(panels: &[(String, String)]) -> Vec<&str> {
    panels.iter().map(|p| p.0.as_str()).collect()
}

fn records(lines: &str) -> Vec<Record> {
    let dir = run_dir(lines);
    read_records(&dir.path().join("instruments.jsonl")).unwrap()
}

#[test]
fn the_full_run_draws_every_panel_with_data() {
    let dir = run_dir(&fixture_lines());
    let html = report(dir.path());
    assert_eq!(instruments(&check_page(&html)), PANELS);
    assert!(!html.contains("Not tracked in this run"));
    for fact in [
        "linear(64,256),relu,linear(256,10)",
        "sgd",
        "94.44 %",
        "30 (0–29)",
        "finished",
    ] {
        assert!(html.contains(fact), "header lacks {fact}");
    }
    // The command writes what the library renders, and renders it the same twice.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("run.json")).unwrap()).unwrap();
    let records = records(&fixture_lines());
    assert_eq!(render_html(Some(&run), &records), html);
    assert_eq!(
        render_html(Some(&run), &records),
        render_html(Some(&run), &records)
    );
    let again = write_report(dir.path()).unwrap();
    assert_eq!(std::fs::read_to_string(again).unwrap(), html);
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["instruments.jsonl", "report.html", "run.json"]);
}

#[test]
fn a_run_with_only_the_loss_draws_only_the_loss() {
    let lines: String = (0..5)
        .map(|s| format!("{{\"step\":{s},\"loss\":{}}}\n", 1.0 / (1.0 + s as f64)))
        .collect();
    let panels = check_page(&render_html(None, &records(&lines)));
    assert_eq!(instruments(&panels), ["loss"]);
    // With the per-step keys every record has, the hyperparameters join it.
    let lines: String = (0..5)
        .map(|s| format!("{{\"step\":{s},\"epoch\":1,\"lr\":0.1,\"batch_size\":8,\"loss\":null}}\n{{\"step\":{s},\"loss\":2.5}}\n"))
        .collect();
    let html = render_html(None, &records(&lines));
    assert_eq!(instruments(&check_page(&html)), ["lr batch_size", "loss"]);
    assert!(
        html.contains("Not tracked in this run: Step size α"),
        "{html}"
    );
}

#[test]
fn undefined_values_are_not_drawn() {
    // A panel whose instrument is null everywhere is not drawn; nulls and
    // arrays with a null elsewhere leave out their points only.
    let lines: String = fixture_lines()
        .lines()
        .map(|l| {
            let mut r: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(l).unwrap();
            r.insert("hess_max_ev".into(), serde_json::Value::Null);
            r.insert("grad_norm".into(), serde_json::json!([1.0, null]));
            serde_json::to_string(&r).unwrap() + "\n"
        })
        .collect();
    let panels = check_page(&render_html(None, &records(&lines)));
    let drawn = instruments(&panels);
    assert!(
        !drawn.contains(&"hess_max_ev") && !drawn.contains(&"grad_norm"),
        "{drawn:?}"
    );
    assert_eq!(drawn.len(), PANELS.len() - 2);
}

#[test]
fn a_truncated_last_line_is_skipped() {
    let full = fixture_lines();
    let cut = full.len() - full.lines().last().unwrap().len() / 2;
    let dir = run_dir(&full[..cut]);
    let html = report(dir.path());
    assert_eq!(instruments(&check_page(&html)), PANELS);
    assert!(html.contains("29 (0–28)"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let full = fixture_lines();
    let mut lines: Vec<&str> = full.lines().collect();
    lines[4] = "{\"step\": 4, \"loss\": ";
    let dir = run_dir(&(lines.join("\n") + "\n"));
    let out = dir.path().join("report.html");
    assert_bad_input(
        &secondo(&["report", s(dir.path())]),
        "instruments.jsonl: line 5",
        &out,
    );
    let err = write_report(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("line 5: not valid JSON") && !err.contains('\n'),
        "{err}"
    );

    std::fs::write(
        dir.path().join("instruments.jsonl"),
        "{\"loss\": 1}\n{\"step\": 1}\n",
    )
    .unwrap();
    assert_bad_input(
        &secondo(&["report", s(dir.path())]),
        "line 1: no integer \"step\"",
        &out,
    );
    std::fs::write(dir.path().join("instruments.jsonl"), "\n").unwrap();
    assert_bad_input(
        &secondo(&["report", s(dir.path())]),
        "no tracked steps",
        &out,
    );
    std::fs::write(dir.path().join("instruments.jsonl"), &full).unwrap();
    std::fs::write(dir.path().join("run.json"), "{\"model\": ").unwrap();
    assert_bad_input(
        &secondo(&["report", s(dir.path())]),
        "run.json: not valid JSON",
        &out,
    );
    std::fs::remove_file(dir.path().join("instruments.jsonl")).unwrap();
    assert_bad_input(
        &secondo(&["report", s(dir.path())]),
        "instruments.jsonl",
        &out,
    );
    let missing = dir.path().join("nowhere");
    assert_bad_input(
        &secondo(&["report", s(&missing)]),
        "nowhere",
        &missing.join("report.html"),
    );
}
