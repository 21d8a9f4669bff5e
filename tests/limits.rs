//! The limits that keep `rapport` safe on hostile project folders (docs/language.md,
//! "Limits"): which files are read, how large, how deep, how much is printed, and where
//! `rapport build -o` writes. Each test builds its project in a scratch folder and runs
//! the binary as a user would.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SETTINGS: &str = "brand: Acme Shoes\nchannels:\n  whatsapp: { window: 24h }\n";

const FLOW: &str =
    "flow welcome {\n  start on message \"hi\"\n  state start { send \"Hello!\" end }\n}\n";

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a scratch folder");
    write(dir.path(), "rapport.yaml", SETTINGS);
    write(dir.path(), "welcome.flow", FLOW);
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("the scratch folder is writable");
}

/// Runs `rapport` in `dir`, killing it if it has not finished after a minute (a hang is
/// one of the failures tested for; nothing asserts how long a run takes).
fn rapport_in(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("RAPPORT_TEST_SECRET", "hunter2-do-not-print")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the rapport binary runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the output is collected")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(unix)]
fn symlink(target: &str, dir: &Path, name: &str) {
    std::os::unix::fs::symlink(target, dir.join(name)).expect("a symbolic link");
}

#[cfg(unix)]
fn fifo(dir: &Path, name: &str) {
    let status = Command::new("mkfifo")
        .arg(dir.join(name))
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
}

// ------------------------------------------------------------------ which files are read

#[cfg(unix)]
#[test]
fn a_link_out_of_the_project_is_skipped_with_a_warning_and_never_printed() {
    let dir = project();
    symlink("/proc/self/environ", dir.path(), "env.flow");
    let out = rapport_in(dir.path(), &["check", "."]);
    let all = text(&out);
    assert!(!all.contains("hunter2"), "a secret was printed:\n{all}");
    assert_eq!(out.status.code(), Some(0), "{all}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: skipped `./env.flow`")
            && err.contains("outside the project folder")
            && err.contains("help:"),
        "{all}"
    );
    assert!(all.contains("checked 1 flow"), "{all}");
}

#[cfg(unix)]
#[test]
fn a_link_out_of_the_project_named_on_the_command_line_is_an_error() {
    let dir = project();
    symlink("/proc/self/environ", dir.path(), "env.flow");
    let out = rapport_in(dir.path(), &["check", "env.flow"]);
    let all = text(&out);
    assert!(!all.contains("hunter2"), "a secret was printed:\n{all}");
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("error: cannot read `env.flow`"), "{all}");
}

#[cfg(unix)]
#[test]
fn a_link_inside_the_project_is_read() {
    let dir = project();
    std::fs::create_dir(dir.path().join("shared")).expect("a folder");
    write(
        &dir.path().join("shared"),
        "other.txt",
        &FLOW.replace("welcome", "other").replace("hi", "other"),
    );
    symlink("shared/other.txt", dir.path(), "other.flow");
    let out = rapport_in(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("checked 2 flows"), "{}", text(&out));
}

#[cfg(unix)]
#[test]
fn a_fifo_is_skipped_without_blocking() {
    let dir = project();
    fifo(dir.path(), "x.flow");
    let out = rapport_in(dir.path(), &["check", "."]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("warning: skipped `./x.flow`: it is a named pipe (FIFO), not a regular file"),
        "{all}"
    );
    // Named on the command line, it is an error.
    let out = rapport_in(dir.path(), &["check", "x.flow"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[cfg(unix)]
#[test]
fn rapport_yaml_and_test_files_follow_the_same_rule() {
    let dir = tempfile::tempdir().expect("a scratch folder");
    write(dir.path(), "welcome.flow", FLOW);
    symlink("/proc/self/environ", dir.path(), "rapport.yaml");
    let out = rapport_in(dir.path(), &["check", "welcome.flow"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
    assert!(
        text(&out).contains("cannot read `./rapport.yaml`"),
        "{}",
        text(&out)
    );

    let dir = project();
    fifo(dir.path(), "welcome.test.yaml");
    let out = rapport_in(dir.path(), &["test", "."]);
    let all = text(&out);
    assert!(all.contains("warning: skipped"), "{all}");
    assert!(all.contains("welcome.test.yaml"), "{all}");
}

#[cfg(unix)]
#[test]
fn dev_zero_is_never_read_to_the_end() {
    let dir = project();
    symlink("/dev/zero", dir.path(), "z.flow");
    let out = rapport_in(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("skipped `./z.flow`"), "{}", text(&out));
}

#[test]
fn a_flow_larger_than_4_mib_is_an_error() {
    let dir = project();
    let big = format!("{FLOW}{}", "# padding\n".repeat(430_000));
    write(dir.path(), "big.flow", &big);
    let out = rapport_in(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot read `./big.flow`: it is larger than 4 MiB"),
        "{}",
        text(&out)
    );
}

// ------------------------------------------------------------------ rendering

#[test]
fn an_error_past_column_65536_is_printed_plainly_without_a_panic() {
    let dir = project();
    let wide = format!(
        "flow wide {{\n  start on message \"wide\"\n  state a {{ send \"{}\" oops }}\n}}\n",
        "x".repeat(70_000)
    );
    write(dir.path(), "wide.flow", &wide);
    let out = rapport_in(dir.path(), &["check", "wide.flow"]);
    let all = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        &all[..all.len().min(2000)]
    );
    assert!(!all.contains("panicked"), "{}", &all[..all.len().min(2000)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("wide.flow:3:70021: RP0001 "),
        "{}",
        &stdout[..stdout.len().min(2000)]
    );
    assert!(stdout.contains("  help: "), "{stdout}");
    assert!(
        stdout.len() < 2000,
        "no 70,000-character snippet: {} bytes",
        stdout.len()
    );
}

// ------------------------------------------------------------------ byte-order mark

#[test]
fn a_flow_starting_with_a_byte_order_mark_checks_clean() {
    let dir = project();
    write(dir.path(), "welcome.flow", &format!("\u{feff}{FLOW}"));
    write(dir.path(), "rapport.yaml", &format!("\u{feff}{SETTINGS}"));
    let out = rapport_in(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("no problems"), "{}", text(&out));
}

// ------------------------------------------------------------------ nesting

#[test]
fn deeply_nested_rapport_yaml_is_refused_before_parsing() {
    let dir = project();
    let n = 100_000;
    write(
        dir.path(),
        "rapport.yaml",
        &format!("brand: {}{}\n", "[".repeat(n), "]".repeat(n)),
    );
    let out = rapport_in(dir.path(), &["check", "."]);
    let all = text(&out);
    let head = &all[..all.len().min(3000)];
    assert_eq!(out.status.code(), Some(1), "{head}");
    assert!(head.contains("RP0101"), "{head}");
    assert!(head.contains("nests more than 64 levels deep"), "{head}");
    assert!(head.contains("rapport.yaml:1:71"), "{head}");
}

#[test]
fn deeply_nested_test_yaml_is_a_broken_file() {
    let dir = project();
    let n = 100_000;
    write(
        dir.path(),
        "welcome.test.yaml",
        &format!("cases: {}{}\n", "[".repeat(n), "]".repeat(n)),
    );
    let out = rapport_in(dir.path(), &["test", "."]);
    let all = text(&out);
    let head = &all[..all.len().min(3000)];
    assert_eq!(out.status.code(), Some(1), "{head}");
    assert!(head.contains("welcome.test.yaml"), "{head}");
    assert!(
        head.contains("welcome.test.yaml:1: nests more than 64 levels deep"),
        "{head}"
    );
}

// ------------------------------------------------------------------ how much is shown

/// A flow whose one `send` uses `n` unknown tokens: `n` RP0202 errors in one file.
fn unknown_tokens(n: usize) -> String {
    let tokens: String = (0..n).map(|i| format!("{{t{i}}}")).collect();
    format!(
        "flow wide {{\n  start on message \"wide\"\n  state a {{ send \"{tokens}\" end }}\n}}\n"
    )
}

#[test]
fn five_diagnostics_of_a_code_are_shown_per_file_and_the_rest_counted() {
    let dir = project();
    write(dir.path(), "wide.flow", &unknown_tokens(20));
    let out = rapport_in(dir.path(), &["check", "."]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("× unknown token").count(), 5, "{stdout}");
    assert!(
        stdout.contains("note: and 15 more like this (RP0202) in ./wide.flow"),
        "{stdout}"
    );
    assert!(stdout.contains("2 flows in 3 files: 20 errors"), "{stdout}");

    let out = rapport_in(dir.path(), &["check", ".", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["errors"], 20, "{doc:#}");
    assert_eq!(doc["diagnostics"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        doc["omitted"],
        serde_json::json!([{"file": "./wide.flow", "code": "RP0202", "severity": "error", "count": 15}])
    );

    let out = rapport_in(dir.path(), &["check", ".", "--format", "github"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("::error ").count(), 5, "{stdout}");
    assert!(
        stdout.contains("::notice file=./wide.flow,title=RP0202 error::and 15 more like this (RP0202) in this file"),
        "{stdout}"
    );
}

#[test]
fn a_trigger_shared_by_many_flows_is_one_short_diagnostic_per_flow() {
    let dir = project();
    for i in 0..40 {
        write(
            dir.path(),
            &format!("f{i:02}.flow"),
            &FLOW.replace("welcome", &format!("f{i:02}")),
        );
    }
    let out = rapport_in(dir.path(), &["check", "."]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // One per flow but the first, each naming three others and counting the rest.
    assert!(
        stdout.contains(": 40 errors"),
        "{}",
        &stdout[stdout.len().saturating_sub(300)..]
    );
    assert!(
        stdout.contains("flow `welcome` starts on the same input as 40 other flows"),
        "{stdout}"
    );
    assert!(stdout.contains(" and 37 more\n"), "{stdout}");
    assert!(stdout.len() < 40 * 1500, "{} bytes", stdout.len());
}

#[test]
fn a_long_loop_is_named_by_its_ends() {
    let dir = project();
    let states: String = (0..100)
        .map(|i| format!("  state s{i} {{ send \"x\" -> s{} }}\n", (i + 1) % 100))
        .collect();
    write(
        dir.path(),
        "welcome.flow",
        &format!("flow welcome {{\n  start on message \"hi\"\n{states}}}\n"),
    );
    let out = rapport_in(dir.path(), &["check", "."]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("`s4` → … 91 more … → `s96`"), "{stdout}");
    assert_eq!(stdout.matches("goes on at once").count(), 5, "{stdout}");
}

// ------------------------------------------------------------------ build -o

#[cfg(unix)]
#[test]
fn build_refuses_to_replace_what_is_not_a_regular_writable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = project();
    fifo(dir.path(), "pipe.json");
    write(dir.path(), "locked.json", "keep me\n");
    let locked = dir.path().join("locked.json");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    std::fs::create_dir(dir.path().join("folder.json")).expect("a folder");
    // Not `-o /dev/full` itself: run by an older rapport as root, this test would
    // replace the system's device.
    symlink("/dev/full", dir.path(), "full.json");

    for (target, why) in [
        (
            "full.json",
            "it is a symbolic link, which the bundle would replace",
        ),
        ("pipe.json", "it is a named pipe (FIFO), not a regular file"),
        ("folder.json", "it is a folder, not a regular file"),
        ("locked.json", "it is read-only"),
    ] {
        let out = rapport_in(dir.path(), &["build", ".", "-o", target]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{target}: {all}");
        assert!(
            all.contains(&format!("cannot write `{target}`: {why}")),
            "{all}"
        );
        assert!(all.contains("help:"), "{all}");
    }
    let link = std::fs::symlink_metadata(dir.path().join("full.json")).expect("the link");
    assert!(link.file_type().is_symlink(), "the link is still a link");
    let pipe = std::fs::symlink_metadata(dir.path().join("pipe.json")).expect("the pipe");
    assert!(!pipe.is_file(), "the pipe is still a pipe");
    assert_eq!(
        std::fs::read_to_string(&locked).ok().as_deref(),
        Some("keep me\n")
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("the folder")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn build_replaces_a_regular_file_and_writes_to_stdout() {
    let dir = project();
    write(dir.path(), "bundle.json", "old\n");
    let out = rapport_in(dir.path(), &["build", ".", "-o", "bundle.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written = std::fs::read_to_string(dir.path().join("bundle.json")).expect("the bundle");
    assert!(written.contains("\"welcome\""), "{written}");
    let out = rapport_in(dir.path(), &["build", ".", "-o", "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), written);
}
