//! `rapport run --store`, `rapport audit export`, `rapport forget` and `rapport purge`:
//! the commands on a durable store.

use std::fs::OpenOptions;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rapport_bundle::Retention;
use rapport_host::{DurableOptions, Input, Sink};
use rapport_store::{HostLock, SqliteStore, Store};

use crate::build::read_bundle;
use crate::run::print_counts;
use crate::RunArgs;

/// The path of a `sqlite:PATH` store URL.
fn store_path(url: &str) -> Result<PathBuf, String> {
    match url.strip_prefix("sqlite:") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(format!(
            "unknown store `{url}`: give `sqlite:PATH` (for example `--store sqlite:rapport.db`), or leave --store out to keep state in memory"
        )),
    }
}

/// Takes the store's host lock (held until dropped) and opens the store, creating it when
/// nothing exists at its path and `create` is set.
fn open_as_host(url: &str, create: bool) -> Result<(HostLock, SqliteStore), String> {
    let path = store_path(url)?;
    if !create && std::fs::symlink_metadata(&path).is_err() {
        return Err(rapport_store::StoreError::Missing { path }.to_string());
    }
    let lock = HostLock::acquire(&path).map_err(|e| e.to_string())?;
    let store = SqliteStore::open(&path, &lock).map_err(|e| e.to_string())?;
    Ok((lock, store))
}

/// Opens an existing store to read what its host committed, even while the host runs.
pub(crate) fn open_to_read(url: &str) -> Result<SqliteStore, String> {
    let path = store_path(url)?;
    SqliteStore::open_existing(&path).map_err(|e| e.to_string())
}

/// A file the durable host releases lines to: synced to disk before the store forgets
/// the lines.
/// (A device or a pipe, such as `/dev/null`, has nothing to sync.)
struct FileSink {
    out: BufWriter<std::fs::File>,
    regular: bool,
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Sink for FileSink {
    fn sync(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.regular {
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }
}

/// Standard output: what the reading process received is its to keep.
struct StdoutSink(BufWriter<std::io::Stdout>);

impl Write for StdoutSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Sink for StdoutSink {}

/// Opens an output for appending: a durable run adds to what earlier runs released. A
/// last line cut short by a crash is removed (it is still in the outbox and is released
/// again whole).
fn append(path: &Path) -> std::io::Result<Box<dyn Sink + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(StdoutSink(BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        ))));
    }
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let regular = f.metadata()?.is_file();
    let len = f.metadata()?.len();
    if regular && len > 0 {
        // Find the end of the last whole line.
        let mut keep = len;
        let mut chunk = vec![0u8; 4096];
        loop {
            let start = keep.saturating_sub(chunk.len() as u64);
            let n = (keep - start) as usize;
            f.seek(SeekFrom::Start(start))?;
            f.read_exact(&mut chunk[..n])?;
            if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
                keep = start + i as u64 + 1;
                break;
            }
            keep = start;
            if start == 0 {
                break;
            }
        }
        if keep < len {
            eprintln!(
                "note: `{}` ended in a line cut short by a crash ({} bytes); removed, it is released again whole",
                path.display(),
                len - keep
            );
            f.set_len(keep)?;
        }
    }
    Ok(Box::new(FileSink {
        out: BufWriter::with_capacity(1 << 16, f),
        regular,
    }))
}

pub(crate) fn run(bundle: rapport_bundle::Bundle, url: &str, args: &RunArgs) -> ExitCode {
    let started = Instant::now();
    let result = (|| -> Result<rapport_host::DurableReport, String> {
        // The lock is held until the run has ended and its retention is saved.
        let (lock, mut store) = open_as_host(url, true)?;
        // A bundle other than the store's is deployed onto it: contacts, consent,
        // opt-outs, audit and running runs carry over.
        let deployed =
            rapport_host::deploy::deploy(&mut store, bundle).map_err(|e| e.to_string())?;
        if deployed.changed {
            for change in &deployed.changes {
                eprintln!("deployed: {}", rapport_host::deploy::describe(change));
            }
        }
        let bundle = deployed.bundle;
        // For a later `rapport purge`; saved once the store has accepted the bundle.
        let retention = bundle.settings.retention;
        let input = match &args.events {
            Some(p) if p != Path::new("-") => Input::File(p.clone()),
            _ => Input::Stream(Box::new(std::io::stdin())),
        };
        let mut actions = append(&args.actions)
            .map_err(|e| format!("cannot write actions `{}`: {e}", args.actions.display()))?;
        let mut audit = match &args.audit {
            Some(p) => Some(
                append(p)
                    .map_err(|e| format!("cannot write the audit trail `{}`: {e}", p.display()))?,
            ),
            None => None,
        };
        let options = DurableOptions {
            batch: args.commit_every.max(1),
            cache: args.cache,
            max_clock_jump: args.max_clock_jump,
            started: crate::run::wall_clock(),
            max_line: args.max_line,
        };
        let stop = Arc::new(AtomicBool::new(false));
        watch_ctrl_c(stop.clone());
        let report = rapport_host::run_durable(
            bundle,
            store,
            input,
            actions.as_mut(),
            audit.as_mut().map(|a| a.as_mut() as &mut dyn Sink),
            &options,
            &stop,
        )
        .map_err(|e| e.to_string())?;
        SqliteStore::open(&store_path(url)?, &lock)
            .and_then(|mut s| s.save_retention(&retention))
            .map_err(|e| e.to_string())?;
        drop(lock);
        Ok(report)
    })();
    match result {
        Ok(report) => {
            if let Some(line) = report.resumed_after_line {
                eprintln!("resumed after line {line} of the events (committed by an earlier run)");
            }
            if report.purged > 0 {
                eprintln!(
                    "purged {} transcript lines older than the retention",
                    report.purged
                );
            }
            if report.counts.interrupted {
                eprintln!(
                    "interrupted: stopped reading; everything read was committed and released"
                );
            }
            eprintln!("store: {} commits", report.commits);
            print_counts(&report.counts, started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Sets `stop` on Ctrl-C (the durable loop checks it between lines). A run blocked
/// reading a quiet stdin has nothing uncommitted, so after a grace period the process
/// exits; even mid-commit that is as safe as a crash.
fn watch_ctrl_c(stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    stop.store(true, Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    eprintln!("interrupted while waiting for input: everything read was committed and released");
                    std::process::exit(0);
                }
            });
        });
}

pub(crate) fn export(url: &str, contact: &str) -> ExitCode {
    let result =
        open_to_read(url).and_then(|mut s| s.export_contact(contact).map_err(|e| e.to_string()));
    match result {
        Ok(Some(v)) => {
            match serde_json::to_string_pretty(&v) {
                Ok(text) => outln!("{text}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("the store holds nothing about contact `{contact}`");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn forget(url: &str, contact: &str) -> ExitCode {
    // Refused while a host runs on the store: it holds the contact in memory and would
    // write it back.
    match open_as_host(url, false)
        .and_then(|(_lock, mut s)| s.forget(contact).map_err(|e| e.to_string()))
    {
        Ok(f) => {
            if f.found {
                outln!(
                    "erased contact `{contact}`: state, {} timers, {} transcript lines, {} audit records, {} unreleased actions",
                    f.timers,
                    f.transcript,
                    f.audit,
                    f.outbox
                );
            } else {
                outln!("the store held nothing about contact `{contact}`");
            }
            if f.wal_busy {
                eprintln!("warning: another process has the store open; older copies of the erased rows may stay in its write-ahead log until it closes the store");
            }
            if f.opted_out_kept_as_hash {
                outln!("kept on the opt-out list as a salted hash: this contact is never messaged again");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn purge(url: &str, bundle: Option<&Path>) -> ExitCode {
    let result = (|| -> Result<rapport_store::Purged, String> {
        let (_lock, mut store) = open_as_host(url, false)?;
        let retention = match bundle {
            Some(b) => read_bundle(b)?.settings.retention,
            None => store
                .saved_retention()
                .map_err(|e| e.to_string())?
                .unwrap_or(Retention {
                    transcripts: 180 * 86_400,
                    transactional: 365 * 86_400,
                }),
        };
        store.purge(&retention).map_err(|e| e.to_string())
    })();
    match result {
        Ok(p) => {
            match p.now {
                Some(now) => outln!(
                    "purged {} transcript lines older than the retention (counted back from {})",
                    p.transcript,
                    rapport_engine::format_time(now)
                ),
                None => outln!("the store has processed no events yet: nothing to purge"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn rollout_status(url: &str, bundle: &Path) -> ExitCode {
    let result = (|| -> Result<String, String> {
        let bundle = read_bundle(bundle)?;
        let store = open_to_read(url)?;
        let Some(global) = store.engine_state().map_err(|e| e.to_string())? else {
            return Ok(
                "the store has processed no events yet: every flow is at its first stage\n".into(),
            );
        };
        let g: serde_json::Value = serde_json::from_str(&global)
            .map_err(|e| format!("the store is damaged: unreadable engine state: {e}"))?;
        let versions = g["versions"].as_array().cloned().unwrap_or_default();
        let stats = g["stats"].as_array().cloned().unwrap_or_default();
        let mut out = format!(
            "{:<20} {:<14} {:<24} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}\n",
            "flow",
            "version",
            "stage",
            "enrolled",
            "finished",
            "opted out",
            "handoffs",
            "errors",
            "converted"
        );
        for (v, st) in versions.iter().zip(&stats) {
            let name = v[0].as_str().unwrap_or("?");
            let version = v[1].as_str().unwrap_or("?");
            let current = bundle
                .flows
                .iter()
                .find(|f| f.name == name && f.version == version);
            let stage = match current {
                None => "previous version".to_string(),
                Some(f) => match f.rollout.as_ref().filter(|r| r.stages.len() > 1) {
                    None => "100% (no rollout)".to_string(),
                    Some(r) => {
                        let i = st["stage"].as_u64().unwrap_or(0) as usize;
                        let pct = r.stages.get(i).copied().unwrap_or(10_000);
                        let halted = if st["halted"].as_bool() == Some(true) {
                            ", halted"
                        } else {
                            ""
                        };
                        format!(
                            "{}% ({}/{}){halted}",
                            f64::from(pct) / 100.0,
                            i + 1,
                            r.stages.len()
                        )
                    }
                },
            };
            let n = |k: &str| st[k].as_u64().unwrap_or(0);
            out.push_str(&format!(
                "{:<20} {:<14} {:<24} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}\n",
                name,
                version,
                stage,
                n("enrolled"),
                n("finished"),
                n("opted_out"),
                n("handoffs"),
                n("errors"),
                n("converted")
            ));
        }
        Ok(out)
    })();
    match result {
        Ok(text) => {
            out!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
