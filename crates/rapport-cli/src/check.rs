//! `rapport check`: read a project, parse everything, report every problem.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rapport_syntax::{parse, parse_settings, Severity};

use crate::project::find_projects;
use crate::render::{render, FileReport, Format};
use crate::CheckArgs;

pub(crate) fn run(args: CheckArgs) -> ExitCode {
    let mut timings = Timings::default();
    let started = Instant::now();
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let projects = match find_projects(&paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    timings.add("find files", started.elapsed());

    // Read everything first (I/O), then parse on every core: files are independent.
    let t = Instant::now();
    let mut io_failed = false;
    let mut sources: Vec<(String, String, bool)> = Vec::new();
    for project in &projects {
        let files = std::iter::once((&project.settings_path, true))
            .chain(project.flow_files.iter().map(|f| (f, false)));
        for (path, is_settings) in files {
            match std::fs::read_to_string(path) {
                Ok(source) => sources.push((path.display().to_string(), source, is_settings)),
                Err(e) => {
                    eprintln!(
                        "error: cannot read `{}`: {e} (project files must be UTF-8 text)",
                        path.display()
                    );
                    io_failed = true;
                }
            }
        }
    }
    let read_time = t.elapsed();

    let t = Instant::now();
    let parsed = parallel_map(&sources, |(_, source, is_settings)| {
        if *is_settings {
            (0, parse_settings(source).diagnostics)
        } else {
            let p = parse(source);
            (p.file.flows.len(), p.diagnostics)
        }
    });
    let parse_time = t.elapsed();
    let flows: usize = parsed.iter().map(|(n, _)| n).sum();
    let reports: Vec<FileReport> = sources
        .into_iter()
        .zip(parsed)
        .map(|((path, source, _), (_, diagnostics))| FileReport {
            path,
            source,
            diagnostics,
        })
        .collect();
    timings.add("read files", read_time);
    timings.add("parse", parse_time);

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

fn count(reports: &[FileReport]) -> (usize, usize) {
    let all = reports.iter().flat_map(|r| &r.diagnostics);
    let errors = all
        .clone()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = all.filter(|d| d.severity == Severity::Warning).count();
    (errors, warnings)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[derive(Default)]
struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    fn add(&mut self, phase: &'static str, d: Duration) {
        self.0.push((phase, d));
    }

    fn print(&self) {
        for (phase, d) in &self.0 {
            eprintln!("{phase:>12}: {:>9.2} ms", d.as_secs_f64() * 1000.0);
        }
    }
}

/// `f` over `items` on every available core, results in the order of `items`.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}
