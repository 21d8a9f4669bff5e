//! The `rapport` command's contract: exit codes, output formats, finding the project.

use std::path::Path;
use std::process::{Command, Output};

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn rapport(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(args)
        .current_dir(repo_root())
        .env("NO_COLOR", "1")
        .output()
        .expect("the rapport binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const BROKEN: &str = "tests/ui/flow/multiple_broken_states";

#[test]
fn json_format_is_one_document_with_positions() {
    let out = rapport(&["check", BROKEN, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    let diags = doc["diagnostics"].as_array().expect("a diagnostics array");
    assert!(diags.len() >= 2, "every broken state is reported: {doc:#}");
    assert_eq!(doc["errors"].as_u64(), Some(diags.len() as u64));
    for d in diags {
        assert!(d["code"].as_str().is_some_and(|c| c.starts_with("RP")));
        assert!(d["line"].as_u64().is_some_and(|l| l > 0));
        assert!(d["column"].as_u64().is_some_and(|c| c > 0));
        assert!(d["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("input.flow")));
    }
}

#[test]
fn github_format_prints_annotations() {
    let out = rapport(&["check", BROKEN, "--format", "github"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    for line in lines {
        assert!(
            line.starts_with("::error file=tests/ui/flow/multiple_broken_states/input.flow,line="),
            "{line}"
        );
        assert!(line.contains(",col="), "{line}");
        assert!(line.contains("::"), "{line}");
    }
}

#[test]
fn a_missing_path_is_a_usage_error() {
    let out = rapport(&["check", "no/such/folder"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn a_folder_without_rapport_yaml_says_so_and_points_at_a_project() {
    let out = rapport(&["check", "."]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("has no rapport.yaml"), "{err}");
    assert!(err.contains("flows"), "suggests the example project: {err}");
}

#[test]
fn a_flow_file_finds_its_project_above() {
    let out = rapport(&["check", "flows/welcome.flow"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("checked 1 flow in 2 files"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn help_explains_check_with_examples() {
    let out = rapport(&["check", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("rapport check flows/"), "{text}");
    assert!(text.contains("--format"), "{text}");
}

#[test]
fn timings_are_printed_on_request() {
    let out = rapport(&["check", "flows", "--timings"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("parse:"), "{}", stderr(&out));
}

#[test]
fn rollout_bucket_matches_unleash() {
    // Unleash's specification: user 122 in group AB12A is inside a 50% rollout.
    let out = rapport(&["rollout", "bucket", "--group", "AB12A", "122"]);
    assert_eq!(out.status.code(), Some(0));
    let bucket: u32 = stdout(&out).trim().parse().expect("a number");
    assert!((1..=50).contains(&bucket), "{bucket}");
    let out = rapport(&["rollout", "bucket", "cart_recovery", "c1"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out)
        .trim()
        .parse::<u32>()
        .is_ok_and(|b| (1..=100).contains(&b)));
}
