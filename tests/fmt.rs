//! `rapport fmt` through its front door: the golden file of `tests/fmt/`, `--check`, a
//! file it must refuse, and the repository's own flows.

mod common;

use common::{rapport, repo_root, s, temp_dir, text};

fn copy_golden(dir: &std::path::Path) {
    for f in ["rapport.yaml", "messy.flow"] {
        std::fs::copy(repo_root().join("tests/fmt").join(f), dir.join(f)).expect("copy");
    }
}

fn version(dir: &std::path::Path) -> String {
    let bundle = dir.join("bundle.json");
    let o = rapport(&["build", s(dir), "-o", s(&bundle)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).expect("bundle")).expect("json");
    b["flows"][0]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_messy_flow_is_formatted_to_the_golden_file_and_keeps_its_version() {
    let dir = temp_dir("fmt", "golden");
    copy_golden(&dir);
    let flow = dir.join("messy.flow");
    let before = std::fs::read_to_string(&flow).expect("read");
    let version_before = version(&dir);
    // --check lists the file, changes nothing, exits 1.
    let o = rapport(&["fmt", "--check", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), s(&flow));
    assert!(
        text(&o.stderr).contains("1 of 1 file would change"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(&flow).expect("read"), before);
    // fmt writes the golden file.
    let o = rapport(&["fmt", s(&dir)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let golden =
        std::fs::read_to_string(repo_root().join("tests/fmt/messy.formatted")).expect("golden");
    assert_eq!(std::fs::read_to_string(&flow).expect("read"), golden);
    // Formatting changed no version, and a second run changes nothing.
    assert_eq!(version(&dir), version_before);
    let o = rapport(&["fmt", "--check", s(&dir)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).is_empty());
    // Every comment of the original is in the formatted file.
    for line in before.lines() {
        if let Some(at) = line.find('#') {
            let comment = line[at..].trim_end();
            assert!(golden.contains(comment), "lost: {comment}");
        }
    }
}

#[test]
fn a_file_with_a_syntax_error_is_left_as_it_is() {
    let dir = temp_dir("fmt", "broken");
    copy_golden(&dir);
    let broken = "flow broken {\n  state a { send \"unclosed }\n}\n";
    std::fs::write(dir.join("broken.flow"), broken).expect("write");
    let o = rapport(&["fmt", s(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("broken.flow: not formatted: it has syntax errors; run `rapport check`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("broken.flow")).expect("read"),
        broken
    );
    // The other file was formatted all the same.
    let golden =
        std::fs::read_to_string(repo_root().join("tests/fmt/messy.formatted")).expect("golden");
    assert_eq!(
        std::fs::read_to_string(dir.join("messy.flow")).expect("read"),
        golden
    );
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("rapport-fmt")),
        "{names:?}"
    );
}

#[test]
fn the_repositorys_flows_are_formatted() {
    let o = rapport(&["fmt", "--check", "flows", "bench/funnel"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "run `rapport fmt flows bench/funnel`:\n{}",
        text(&o.stdout)
    );
}

#[test]
fn a_symbolic_link_is_left_as_it_is() {
    let dir = temp_dir("fmt", "link");
    copy_golden(&dir);
    std::fs::create_dir_all(dir.join("shared")).expect("dir");
    std::fs::rename(dir.join("messy.flow"), dir.join("shared/messy.src")).expect("move");
    std::os::unix::fs::symlink("shared/messy.src", dir.join("messy.flow")).expect("link");
    let o = rapport(&["fmt", s(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("messy.flow: not formatted: it is a symbolic link"),
        "{}",
        text(&o.stderr)
    );
    let meta = std::fs::symlink_metadata(dir.join("messy.flow")).expect("meta");
    assert!(meta.file_type().is_symlink(), "the link is still a link");
    assert_eq!(
        std::fs::read_to_string(dir.join("shared/messy.src")).expect("read"),
        std::fs::read_to_string(repo_root().join("tests/fmt/messy.flow")).expect("read")
    );
}
