//! `rapport build`: check a project and write its compiled bundle.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use rapport_bundle::Bundle;

use crate::load::load_or_report;
use crate::render::{count, render, Format};
use crate::timings::Timings;
use crate::BuildArgs;

pub(crate) fn run(args: BuildArgs) -> ExitCode {
    let started = Instant::now();
    let mut timings = Timings::default();
    let loaded = match load_or_report(&args.paths) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if loaded.io_failed {
        return ExitCode::from(2);
    }
    let [project] = loaded.projects.as_slice() else {
        eprintln!(
            "error: `rapport build` makes one bundle from one project; give one project folder"
        );
        return ExitCode::from(2);
    };
    timings.add("read files", loaded.read_time);
    timings.add("parse", loaded.parse_time);
    let t = Instant::now();
    let sources = project.sources();
    let checked = project.check(&sources);
    timings.add("check", t.elapsed());
    let reports = project.reports(checked.as_ref());
    let (errors, _) = count(&reports);
    if reports.iter().any(|r| !r.diagnostics.is_empty()) {
        eprint!("{}", render(&reports, Format::Human, false));
    }
    let Some(checked) = checked.filter(|_| errors == 0) else {
        eprintln!("error: the project has {errors} error(s); no bundle was written (run `rapport check` for details)");
        return ExitCode::from(1);
    };
    let t = Instant::now();
    let mut bundle = rapport_check::compile(&project.settings.settings, &sources, &checked);
    timings.add("compile", t.elapsed());
    if let Some(baseline) = &args.baseline {
        match read_bundle(baseline) {
            Ok(old) => bundle.carry_previous(&old),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let t = Instant::now();
    let mut json = match serde_json::to_string_pretty(&bundle) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot encode the bundle: {e}");
            return ExitCode::from(2);
        }
    };
    json.push('\n');
    timings.add("encode", t.elapsed());
    let t = Instant::now();
    if let Err(e) = write_output(&args.output, json.as_bytes()) {
        eprintln!("error: cannot write `{}`: {e}", args.output.display());
        return ExitCode::from(2);
    }
    timings.add("write", t.elapsed());
    timings.add("total", started.elapsed());
    if args.timings {
        timings.print();
    }
    if args.output != Path::new("-") {
        eprintln!(
            "wrote {} ({} flows, format {})",
            args.output.display(),
            bundle.flows.len(),
            bundle.format
        );
    }
    ExitCode::SUCCESS
}

/// Reads a bundle written by `rapport build`.
pub(crate) fn read_bundle(path: &Path) -> Result<Bundle, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let bundle: Bundle = serde_json::from_str(&text)
        .map_err(|e| format!("`{}` is not a Rapport bundle: {e}", path.display()))?;
    if bundle.format != rapport_bundle::FORMAT {
        return Err(format!(
            "`{}` has bundle format {}, this rapport reads format {}; rebuild it with this version",
            path.display(),
            bundle.format,
            rapport_bundle::FORMAT
        ));
    }
    Ok(bundle)
}

/// Writes to stdout for `-`, else to a temporary file renamed into place, so a reader
/// never sees half a bundle.
fn write_output(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return out.flush();
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
