//! The `secondo` command line: see `secondo --help` and shared/INTERFACES.md.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: cli::guard::Guarded = cli::guard::Guarded;

fn main() -> ExitCode {
    secondo::allocator::keep_freed_memory();
    cli::guard::install();
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("{}", parser_error_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            let interrupted = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(secondo::Error::Interrupted(_))));
            // 128 + SIGINT, as a shell reports a program ended by Ctrl-C.
            ExitCode::from(if interrupted { 130 } else { 2 })
        }
    }
}

/// The error and its causes on one line, each said once: a cause whose text
/// its wrapper already quotes is left out.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// A parser error on one line: its message and the arguments it lists,
/// without the usage block and the pointer to `--help`.
fn parser_error_line(rendered: &str) -> String {
    let message = rendered
        .split("\nUsage:")
        .next()
        .unwrap_or(rendered)
        .split("\n\nFor more information")
        .next()
        .unwrap_or(rendered);
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    lines.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_errors_fit_on_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --model <MODEL>\n  --out <OUT>\n\nUsage: secondo quantities --model <MODEL>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            parser_error_line(rendered),
            "error: the following required arguments were not provided: --model <MODEL> --out <OUT>"
        );
        let rendered = "error: invalid value '0' for '--batch <BATCH>': must be at least 1\n\nFor more information, try '--help'.\n";
        assert_eq!(
            parser_error_line(rendered),
            "error: invalid value '0' for '--batch <BATCH>': must be at least 1"
        );
    }
}
