//! Checker tests: for every check, `tests/check/NAME/fail/` is a project with that one
//! problem and `tests/check/NAME/pass/` the same project fixed. `rapport check
//! --deny-warnings` must fail on the first and pass on the second; both outputs are
//! snapshots, so a change in wording or place shows up in review.

use std::path::Path;
use std::process::Command;

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn check(dir: &Path) -> (i32, String) {
    let root = repo_root().canonicalize().unwrap_or_default();
    let rel = dir.strip_prefix(&root).unwrap_or(dir);
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["check", "--deny-warnings"])
        .arg(rel)
        .current_dir(repo_root())
        .env("NO_COLOR", "1")
        .output()
        .expect("the rapport binary runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn name_of(dir: &Path) -> String {
    dir.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn failing_projects_are_caught() {
    insta::glob!("check/*/fail/rapport.yaml", |file| {
        let dir = file.parent().unwrap_or(file);
        let (code, output) = check(dir);
        assert_eq!(code, 1, "{}: the check must fail\n{output}", dir.display());
        assert!(
            output.contains("RP0"),
            "{}: no diagnostic\n{output}",
            dir.display()
        );
        insta::assert_snapshot!(format!("{}-fail", name_of(dir)), output);
    });
}

#[test]
fn fixed_projects_pass() {
    insta::glob!("check/*/pass/rapport.yaml", |file| {
        let dir = file.parent().unwrap_or(file);
        let (code, output) = check(dir);
        assert_eq!(
            code,
            0,
            "{}: the fixed project must pass\n{output}",
            dir.display()
        );
        assert!(output.contains("no problems"), "{output}");
        insta::assert_snapshot!(format!("{}-pass", name_of(dir)), output);
    });
}
