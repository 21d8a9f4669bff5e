//! Reading a project from disk and running the front end and the checker on it: shared
//! by `check`, `build` and `graph`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rapport_check::{Checked, SourceFile};
use rapport_syntax::{parse, parse_settings, Diagnostic, Parsed, ParsedSettings};

use crate::files::{read_project_file, report_refused};
use crate::project::{find_projects, ProjectError};
use crate::render::FileReport;

/// A flow file read and parsed.
pub(crate) struct FlowSource {
    pub(crate) path: String,
    /// The text, without a byte-order mark (see `strip_bom`).
    pub(crate) source: String,
    pub(crate) bom: bool,
    pub(crate) parsed: Parsed,
}

/// A project read and parsed: its settings and its flow files.
pub(crate) struct LoadedProject {
    pub(crate) settings_path: String,
    pub(crate) settings_source: String,
    pub(crate) settings_bom: bool,
    pub(crate) settings: ParsedSettings,
    pub(crate) flows: Vec<FlowSource>,
}

pub(crate) struct Loaded {
    pub(crate) projects: Vec<LoadedProject>,
    /// Some file could not be read (reported on stderr); exit 2 at the end.
    pub(crate) io_failed: bool,
    pub(crate) read_time: Duration,
    pub(crate) parse_time: Duration,
}

/// Finds the projects for `paths`, reads their files (reporting unreadable ones on
/// stderr and going on; see `files` for which files are read) and parses everything on
/// every core.
pub(crate) fn load(paths: &[PathBuf]) -> Result<Loaded, ProjectError> {
    let projects = find_projects(paths)?;
    let t = Instant::now();
    let mut io_failed = false;
    let mut texts = Vec::new();
    for p in &projects {
        let mut read = |path: &PathBuf, named: bool| match read_project_file(path, &p.root) {
            Ok(s) => Some(s),
            Err(why) => {
                io_failed |= report_refused(path, &why, named);
                None
            }
        };
        // Without its settings a project cannot be checked: always an error.
        let settings = read(&p.settings_path, true);
        let flows: Vec<(String, String)> = p
            .flow_files
            .iter()
            .filter_map(|f| read(f, p.named.contains(f)).map(|s| (f.display().to_string(), s)))
            .collect();
        texts.push((p.settings_path.display().to_string(), settings, flows));
    }
    let read_time = t.elapsed();

    let t = Instant::now();
    let mut loaded = Vec::new();
    for (settings_path, settings_source, flows) in texts {
        let (settings_source, settings_bom) = strip_bom(settings_source.unwrap_or_default());
        let flows: Vec<(String, (String, bool))> = flows
            .into_iter()
            .map(|(path, text)| (path, strip_bom(text)))
            .collect();
        let settings = parse_settings(&settings_source);
        let parsed = parallel_map(&flows, |(_, (source, _))| parse(source));
        loaded.push(LoadedProject {
            settings_path,
            settings_source,
            settings_bom,
            settings,
            flows: flows
                .into_iter()
                .zip(parsed)
                .map(|((path, (source, bom)), parsed)| FlowSource {
                    path,
                    source,
                    bom,
                    parsed,
                })
                .collect(),
        });
    }
    Ok(Loaded {
        projects: loaded,
        io_failed,
        read_time,
        parse_time: t.elapsed(),
    })
}

/// The text without a leading byte-order mark, and whether it had one. Diagnostics are
/// found and drawn on the text without it, so lines and columns are those an editor
/// shows; only JSON byte offsets add its three bytes back (`FileReport::bom`).
pub(crate) fn strip_bom(text: String) -> (String, bool) {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => (rest.to_string(), true),
        None => (text, false),
    }
}

/// `load` for a command's paths (default: the current folder), with a failure reported
/// on stderr as the exit code to return (2).
pub(crate) fn load_or_report(paths: &[PathBuf]) -> Result<Loaded, std::process::ExitCode> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    load(&paths).map_err(|e| {
        eprintln!("error: {e}");
        std::process::ExitCode::from(2)
    })
}

impl LoadedProject {
    /// The flow files as the checker takes them.
    pub(crate) fn sources(&self) -> Vec<SourceFile<'_>> {
        self.flows
            .iter()
            .map(|f| SourceFile {
                path: &f.path,
                source: &f.source,
                ast: &f.parsed.file,
            })
            .collect()
    }

    /// Whether `rapport.yaml` has errors; checks against defaults would only mislead.
    pub(crate) fn settings_broken(&self) -> bool {
        self.settings.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Runs the checker (unless the settings are broken).
    pub(crate) fn check<'a>(&self, sources: &[SourceFile<'a>]) -> Option<Checked<'a>> {
        (!self.settings_broken()).then(|| rapport_check::check(&self.settings.settings, sources))
    }

    /// Every diagnostic of the project, one report per file, settings first.
    pub(crate) fn reports(&self, checked: Option<&Checked<'_>>) -> Vec<FileReport> {
        let mut reports = vec![FileReport::new(
            self.settings_path.clone(),
            self.settings_source.clone(),
            self.settings_bom,
            self.settings.diagnostics.clone(),
        )];
        for (i, f) in self.flows.iter().enumerate() {
            let mut diagnostics = f.parsed.diagnostics.clone();
            if let Some(c) = checked {
                diagnostics.extend(
                    c.diagnostics
                        .iter()
                        .filter(|d| d.file == i)
                        .map(|d| d.diagnostic.clone()),
                );
                diagnostics.sort_by_key(|d| d.span().map(|s| s.start).unwrap_or(0));
            }
            reports.push(FileReport::new(
                f.path.clone(),
                f.source.clone(),
                f.bom,
                diagnostics,
            ));
        }
        reports
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
