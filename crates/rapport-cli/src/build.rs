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
        eprintln!("error: {e}");
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
    bundle.validate().map_err(|e| {
        format!(
            "`{}` is damaged: {e}; rebuild it with `rapport build`",
            path.display()
        )
    })?;
    Ok(bundle)
}

/// Writes to stdout for `-`, else to a temporary file renamed into place, so a reader
/// never sees half a bundle. Only a regular, writable file is replaced: renaming over
/// `/dev/full`, a pipe or a read-only file would swap it for a bundle.
pub(crate) fn write_output(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"));
    }
    let refuse = |why: &str, help: &str| {
        Err(format!(
            "cannot write `{}`: {why}; nothing was written\n  help: {help}",
            path.display()
        ))
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot write `{}`: {e}", path.display())),
        Ok(meta) if meta.file_type().is_symlink() => {
            return refuse(
                "it is a symbolic link, which the bundle would replace",
                "give the path of the file itself",
            )
        }
        Ok(meta) if !meta.is_file() => {
            return refuse(
                &format!("it is {}, not a regular file", crate::files::kind(&meta)),
                "give the path of a file to write the bundle to, or `-o -` for stdout",
            )
        }
        Ok(meta) if meta.permissions().readonly() => {
            return refuse(
                "it is read-only",
                "make it writable (`chmod u+w`) if it should be replaced, or choose another path",
            )
        }
        Ok(_) => {}
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let fail = |e: std::io::Error| format!("cannot write `{}`: {e}", path.display());
    // `create_new` fails rather than follow or reuse whatever is at the temporary path.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(fail)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}
