//! The example project in `flows/`: it checks clean, and every flow's syntax tree is
//! pinned by a snapshot so a parser change that alters meaning shows up in review.

use std::path::Path;
use std::process::Command;

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn example_project_checks_clean() {
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["check", "flows"])
        .current_dir(repo_root())
        .output()
        .expect("the rapport binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("no problems"), "{stdout}");
}

#[test]
fn example_flows_parse() {
    insta::glob!("../flows", "*.flow", |path| {
        let source = std::fs::read_to_string(path).expect("example flow is readable");
        let parsed = rapport_syntax::parse(&source);
        assert!(
            parsed.diagnostics.is_empty(),
            "{}: {:#?}",
            path.display(),
            parsed.diagnostics
        );
        insta::assert_debug_snapshot!(parsed.file);
    });
}
