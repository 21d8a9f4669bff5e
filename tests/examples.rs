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

fn rapport(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("the rapport binary runs")
}

#[test]
fn the_bundle_is_byte_for_byte_deterministic() {
    let dir = std::env::temp_dir().join(format!("rapport-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let first = dir.join("first.json");
    let second = dir.join("second.json");
    for out in [&first, &second] {
        let o = rapport(&["build", "flows", "-o", out.to_str().expect("utf-8 path")]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let a = std::fs::read(&first).expect("first bundle");
    let b = std::fs::read(&second).expect("second bundle");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(a == b, "two builds of the same sources differ");
    let text = String::from_utf8(a).expect("the bundle is UTF-8 JSON");
    insta::assert_snapshot!("example_bundle", text);
}

#[test]
fn mermaid_graph_of_each_example_flow() {
    let o = rapport(&["build", "flows", "-o", "-"]);
    let bundle: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("bundle JSON on stdout");
    let names: Vec<String> = bundle["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        let g = rapport(&["graph", &name, "flows"]);
        assert_eq!(
            g.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&g.stderr)
        );
        let text = String::from_utf8_lossy(&g.stdout).into_owned();
        assert!(text.starts_with("flowchart TD"), "{text}");
        insta::assert_snapshot!(format!("mermaid_{name}"), text);
    }
}

#[test]
fn graph_of_an_unknown_flow_suggests_the_right_name() {
    let o = rapport(&["graph", "cart_recovry", "flows"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did you mean `cart_recovery`"), "{err}");
}

#[test]
fn docs_show_the_current_graphs() {
    let page = std::fs::read_to_string(repo_root().join("docs/flows.md")).expect("docs/flows.md");
    for section in page.split("\n## ").skip(1) {
        let name = section.lines().next().unwrap_or("").trim();
        let block = section
            .split("```mermaid\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or("");
        let g = rapport(&["graph", name, "flows"]);
        assert_eq!(
            String::from_utf8_lossy(&g.stdout),
            block,
            "docs/flows.md is out of date for `{name}`: regenerate it (see the top of the page)"
        );
    }
}
