//! UI tests: one broken input per folder under `tests/ui/`, its rendered diagnostics
//! (colour-free, as `rapport check` prints them) as the insta snapshot.
//!
//! `tests/ui/flow/NAME/` holds a `rapport.yaml` and an `input.flow`;
//! `tests/ui/yaml/NAME/` holds a broken `rapport.yaml`. Every case must fail (exit 1).

use std::path::Path;
use std::process::Command;

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs `rapport check` on a fixture folder, from the repository root so paths in the
/// output are short and the same on every machine.
fn check(dir: &Path) -> (i32, String) {
    let rel = dir
        .strip_prefix(repo_root().canonicalize().unwrap_or_default())
        .unwrap_or(dir);
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("check")
        .arg(rel)
        .current_dir(repo_root())
        .env("NO_COLOR", "1")
        .output()
        .expect("the rapport binary runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn run_case(file: &Path) {
    let dir = file.parent().unwrap_or(file);
    let (code, output) = check(dir);
    assert_eq!(
        code,
        1,
        "{}: a broken input must fail the check with exit code 1\n{output}",
        dir.display()
    );
    assert!(
        output.contains("RP0"),
        "{}: no diagnostic code in the output\n{output}",
        dir.display()
    );
    // Named after the fixture, e.g. `ui__flow-unterminated_string.snap`.
    let kind = dir
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    insta::with_settings!({ prepend_module_to_snapshot => true, input_file => file }, {
        insta::assert_snapshot!(format!("{kind}-{name}"), output);
    });
}

#[test]
fn broken_flows() {
    insta::glob!("ui/flow/*/input.flow", run_case);
}

#[test]
fn broken_settings() {
    insta::glob!("ui/yaml/*/rapport.yaml", run_case);
}
