//! What the tests that drive the `rapport` binary share: where the repository is, running
//! the binary from there, scratch folders.
#![allow(dead_code)] // each test file uses some of these

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub(crate) fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `rapport ARGS` run from the repository root, with no input, to completion.
pub(crate) fn rapport(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("the rapport binary runs")
}

/// An empty scratch folder for one test (`prefix` names the test file).
pub(crate) fn temp_dir(prefix: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rapport-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The bundle of a project folder, built into `dir`.
pub(crate) fn build(project: &str, dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle.json");
    let o = rapport(&["build", project, "-o", s(&bundle)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    bundle
}

/// The project folder `project` (of the repository) copied into `dir/name`, with `edit`
/// applied to the text of each of its files (`rapport.yaml` and the `.flow` files; `edit`
/// gets the file name too), then built: returns the bundle `dir/name.json`.
pub(crate) fn build_variant(
    project: &str,
    dir: &Path,
    name: &str,
    edit: impl Fn(&str, String) -> String,
) -> PathBuf {
    let copy = dir.join(name);
    std::fs::create_dir_all(&copy).expect("project folder");
    let source = repo_root().join(project);
    for entry in std::fs::read_dir(&source).expect("project") {
        let file = entry.expect("entry").file_name();
        let file = file.to_str().expect("utf-8 name");
        if file == "rapport.yaml" || file.ends_with(".flow") {
            let text = std::fs::read_to_string(source.join(file)).expect("read");
            std::fs::write(copy.join(file), edit(file, text)).expect("write");
        }
    }
    let bundle = dir.join(format!("{name}.json"));
    let o = rapport(&["build", s(&copy), "-o", s(&bundle)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    bundle
}
