//! `rapport check`: read a project, parse everything, report every problem.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use crate::load::load_or_report;
use crate::render::{count, render, Format};
use crate::timings::Timings;
use crate::CheckArgs;

pub(crate) fn run(args: CheckArgs) -> ExitCode {
    let mut timings = Timings::default();
    let started = Instant::now();
    let loaded = match load_or_report(&args.paths) {
        Ok(l) => l,
        Err(code) => return code,
    };
    timings.add("read files", loaded.read_time);
    timings.add("parse", loaded.parse_time);

    let t = Instant::now();
    let mut reports = Vec::new();
    let mut flows = 0usize;
    for project in &loaded.projects {
        let sources = project.sources();
        let checked = project.check(&sources);
        if checked.is_none() && !project.flows.is_empty() {
            eprintln!(
                "note: `{}` has errors, so the flows were only parsed; fix it to check them fully",
                project.settings_path
            );
        }
        flows += project
            .flows
            .iter()
            .map(|f| f.parsed.file.flows.len())
            .sum::<usize>();
        reports.extend(project.reports(checked.as_ref()));
    }
    timings.add("check", t.elapsed());
    let io_failed = loaded.io_failed;

    let t = Instant::now();
    let color = args.format == Format::Human && std::io::stdout().is_terminal();
    let out = render(&reports, args.format, color);
    let (errors, warnings) = count(&reports);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    if args.format == Format::Human {
        let files = reports.len();
        let summary = match (errors, warnings) {
            (0, 0) => "no problems".to_string(),
            (_, 0) => plural(errors, "error"),
            (0, _) => plural(warnings, "warning"),
            _ => format!(
                "{} and {}",
                plural(errors, "error"),
                plural(warnings, "warning")
            ),
        };
        let _ = writeln!(
            stdout,
            "checked {} in {}: {summary}",
            plural(flows, "flow"),
            plural(files, "file"),
        );
    }
    let _ = stdout.flush();
    timings.add("report", t.elapsed());
    timings.add("total", started.elapsed());
    if args.timings {
        timings.print();
    }

    if io_failed {
        ExitCode::from(2)
    } else if errors > 0 || (args.deny_warnings && warnings > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
