//! `rapport fmt`: every `.flow` file of a project in its canonical form, comments kept.
//!
//! A file is rewritten only when all of this holds of the new text: it parses without
//! errors, it says the same thing (the canonical form of its flows, which is what versions
//! are hashed from, is unchanged), and it holds every comment of the old one. Otherwise
//! the file is left as it is and the problem reported. Files are replaced whole (written
//! beside, then renamed), so an interrupted run leaves each file old or new, never half.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use rapport_syntax::comments::notes;
use rapport_syntax::format::{format_file, format_file_with};
use rapport_syntax::parse;

use crate::load::{load_or_report, FlowSource};

pub(crate) struct FmtArgs {
    pub(crate) paths: Vec<std::path::PathBuf>,
    pub(crate) check: bool,
}

/// What formatting one file gave.
enum Outcome {
    Unchanged,
    /// The formatted text.
    Changed(String),
    /// Why the file is left as it is.
    Refused(String),
}

/// The formatted text of a flow file, checked to say the same thing with the same
/// comments.
fn format_source(flow: &FlowSource) -> Outcome {
    if flow.parsed.has_errors() {
        return Outcome::Refused(
            "it has syntax errors; run `rapport check` to see them, fix them, then format".into(),
        );
    }
    let Some(placed) = notes(&flow.source, &flow.parsed.file) else {
        return Outcome::Refused("it does not parse whole; run `rapport check` to see why".into());
    };
    let text = format_file_with(&flow.parsed.file, &placed);
    if text == flow.source {
        return Outcome::Unchanged;
    }
    // The guards: the same flows, the same comments.
    let again = parse(&text);
    let same_flows =
        !again.has_errors() && format_file(&again.file) == format_file(&flow.parsed.file);
    let same_comments = notes(&text, &again.file).is_some_and(|n| {
        let mut before = placed.all.clone();
        let mut after = n.all;
        before.sort();
        after.sort();
        before == after
    });
    if !(same_flows && same_comments) {
        return Outcome::Refused(
            "formatting it would change what it says or lose a comment; it is left as it is (please report this file)"
                .into(),
        );
    }
    Outcome::Changed(text)
}

/// Replaces `path` with `text`: written to a file beside it, synced, then renamed over it,
/// keeping its permissions. `read` is the text formatted: a file that holds anything else
/// by now (saved by an editor meanwhile) is left as it is.
fn replace(path: &Path, text: &str, read: &str) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(
            "it is a symbolic link; format the file it points to (replacing the link would leave the two different)"
                .into(),
        );
    }
    let now = std::fs::read(path).map_err(|e| format!("cannot read it again: {e}"))?;
    let now = String::from_utf8_lossy(&now);
    if now.strip_prefix('\u{feff}').unwrap_or(&now) != read {
        return Err("it changed while it was being formatted; run `rapport fmt` again".into());
    }
    write_beside(path, text).map_err(|e| format!("cannot write it: {e}"))
}

fn write_beside(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.rapport-fmt-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&temp, meta.permissions())?;
        }
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

pub(crate) fn run(args: FmtArgs) -> ExitCode {
    let loaded = match load_or_report(&args.paths) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut changed = 0usize;
    let mut seen = 0usize;
    let mut failed = false;
    for project in &loaded.projects {
        for flow in &project.flows {
            seen += 1;
            match format_source(flow) {
                Outcome::Unchanged => {}
                Outcome::Refused(why) => {
                    eprintln!("error: {}: not formatted: {why}", flow.path);
                    failed = true;
                }
                Outcome::Changed(_) if args.check => {
                    println!("{}", flow.path);
                    changed += 1;
                }
                Outcome::Changed(text) => {
                    let text = if flow.bom {
                        format!("\u{feff}{text}")
                    } else {
                        text
                    };
                    match replace(Path::new(&flow.path), &text, &flow.source) {
                        Ok(()) => {
                            println!("formatted {}", flow.path);
                            changed += 1;
                        }
                        Err(e) => {
                            eprintln!("error: {}: not formatted: {e}", flow.path);
                            failed = true;
                        }
                    }
                }
            }
        }
    }
    let files = |n: usize| if n == 1 { "file" } else { "files" };
    if args.check {
        if changed > 0 {
            eprintln!(
                "{changed} of {seen} {} would change; run `rapport fmt` to format them",
                files(seen)
            );
        } else if !failed {
            eprintln!("{seen} {} already formatted", files(seen));
        }
    } else {
        eprintln!(
            "{changed} of {seen} {} formatted, {} already were",
            files(seen),
            seen - changed
        );
    }
    if loaded.io_failed {
        ExitCode::from(2)
    } else if failed || (args.check && changed > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
