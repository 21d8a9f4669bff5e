//! `rapport run`: execute a bundle against a stream of JSONL events, writing actions and
//! the audit trail as JSONL.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use rapport_engine::{decode, Action, ActionKind, Engine};

use crate::build::read_bundle;
use crate::RunArgs;

/// Counts printed at the end of a run (and pinned by the funnel test).
#[derive(Debug, Default)]
struct Counts {
    events: u64,
    rejected: u64,
    actions: BTreeMap<String, u64>,
    suppressed: BTreeMap<String, u64>,
    not_enrolled: BTreeMap<String, u64>,
}

impl Counts {
    fn action(&mut self, a: &Action) {
        let kind = match a.kind {
            ActionKind::Send if a.template.is_some() => "template",
            ActionKind::Send if a.policy.is_some() => "policy",
            k => k.as_str(),
        };
        *self.actions.entry(kind.to_string()).or_default() += 1;
    }

    /// The engine's tallies of suppressions and refused enrolments.
    fn tallies(&mut self, engine: &Engine) {
        for (kind, reason, n) in engine.tallies() {
            let bucket = match kind {
                "suppressed" => &mut self.suppressed,
                _ => &mut self.not_enrolled,
            };
            *bucket.entry(reason.to_string()).or_default() += n;
        }
    }

    fn print(&self, seconds: f64) {
        eprintln!(
            "processed {} events in {seconds:.2}s ({:.0} events/s), {} rejected",
            self.events,
            self.events as f64 / seconds.max(1e-9),
            self.rejected
        );
        let list = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        eprintln!("actions: {}", list(&self.actions));
        eprintln!("suppressed: {}", list(&self.suppressed));
        eprintln!("not enrolled: {}", list(&self.not_enrolled));
    }
}

fn open_out(path: &Path) -> std::io::Result<Box<dyn Write>> {
    Ok(if path == Path::new("-") {
        Box::new(BufWriter::with_capacity(1 << 16, std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::with_capacity(1 << 16, File::create(path)?))
    })
}

pub(crate) fn run(args: RunArgs) -> ExitCode {
    let bundle = match read_bundle(&args.bundle) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.io_floor {
        return run_hosted(bundle, &args);
    }
    let input: Box<dyn BufRead> = match &args.events {
        Some(p) if p != Path::new("-") => match File::open(p) {
            Ok(f) => Box::new(BufReader::with_capacity(1 << 16, f)),
            Err(e) => {
                eprintln!("error: cannot read events `{}`: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        _ => Box::new(BufReader::with_capacity(1 << 16, std::io::stdin().lock())),
    };
    let mut actions = match open_out(&args.actions) {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "error: cannot write actions `{}`: {e}",
                args.actions.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut audit: Option<Box<dyn Write>> = match &args.audit {
        Some(p) => match open_out(p) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("error: cannot write the audit trail `{}`: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let started = Instant::now();
    let mut engine = Engine::new(bundle);
    engine.record_audit(audit.is_some());
    let mut counts = Counts::default();
    let mut buf = Vec::with_capacity(512);
    let result = (|| -> std::io::Result<()> {
        for (n, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            counts.events += 1;
            if args.io_floor {
                // The floor: decode, write one line, nothing else.
                if let Ok(event) = decode(&line, &engine.bundle().settings) {
                    buf.clear();
                    serde_json::to_writer(
                        &mut buf,
                        &serde_json::json!({ "id": event.id, "at": event.at }),
                    )?;
                    buf.push(b'\n');
                    actions.write_all(&buf)?;
                }
                continue;
            }
            let out = match decode(&line, &engine.bundle().settings) {
                Ok(event) => engine.step(&event),
                Err(rejected) => {
                    counts.rejected += 1;
                    eprintln!("line {}: rejected: {}", n + 1, rejected.reason);
                    if let Some(w) = audit.as_mut() {
                        let record = serde_json::json!({
                            "kind": "rejected",
                            "actor": "system",
                            "line": n + 1,
                            "id": rejected.id,
                            "contact": rejected.contact,
                            "reason": rejected.reason,
                        });
                        serde_json::to_writer(&mut *w, &record)?;
                        w.write_all(b"\n")?;
                    }
                    continue;
                }
            };
            for a in &out.actions {
                counts.action(a);
                buf.clear();
                serde_json::to_writer(&mut buf, a)?;
                buf.push(b'\n');
                actions.write_all(&buf)?;
            }
            for a in &out.audit {
                if let Some(w) = audit.as_mut() {
                    serde_json::to_writer(&mut *w, a)?;
                    w.write_all(b"\n")?;
                }
            }
        }
        actions.flush()?;
        if let Some(w) = audit.as_mut() {
            w.flush()?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    counts.tallies(&engine);
    counts.print(started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}

/// The real run: the tokio host, contacts sharded over worker tasks, Ctrl-C drains.
fn run_hosted(bundle: rapport_bundle::Bundle, args: &RunArgs) -> ExitCode {
    use tokio::io::{AsyncBufRead, AsyncWrite, BufReader as TBufReader, BufWriter as TBufWriter};
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = runtime.block_on(async {
        let input: Box<dyn AsyncBufRead + Unpin + Send> = match &args.events {
            Some(p) if p != Path::new("-") => match tokio::fs::File::open(p).await {
                Ok(f) => Box::new(TBufReader::with_capacity(1 << 16, f)),
                Err(e) => return Err(format!("cannot read events `{}`: {e}", p.display())),
            },
            _ => Box::new(TBufReader::with_capacity(1 << 16, tokio::io::stdin())),
        };
        let open = |p: PathBuf| async move {
            let w: Box<dyn AsyncWrite + Unpin + Send> = if p == Path::new("-") {
                Box::new(TBufWriter::with_capacity(1 << 16, tokio::io::stdout()))
            } else {
                Box::new(TBufWriter::with_capacity(
                    1 << 16,
                    tokio::fs::File::create(&p).await?,
                ))
            };
            Ok::<_, std::io::Error>(w)
        };
        let actions = open(args.actions.clone())
            .await
            .map_err(|e| format!("cannot write actions `{}`: {e}", args.actions.display()))?;
        let audit = match &args.audit {
            Some(p) => Some(
                open(p.clone())
                    .await
                    .map_err(|e| format!("cannot write the audit trail `{}`: {e}", p.display()))?,
            ),
            None => None,
        };
        let options = rapport_host::Options {
            shards: args.shards,
            audit: audit.is_some(),
        };
        let stop = async {
            // Ctrl-C stops reading; everything read is still processed and written.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        rapport_host::run(bundle, input, actions, audit, options, stop)
            .await
            .map_err(|e| e.to_string())
    });
    // A read from stdin may still be blocked in its thread (Ctrl-C with stdin open): do
    // not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(c) => {
            let counts = Counts {
                events: c.events,
                rejected: c.rejected,
                actions: c.actions,
                suppressed: c.suppressed,
                not_enrolled: c.not_enrolled,
            };
            if c.interrupted {
                eprintln!(
                    "interrupted: stopped reading; everything read was processed and written"
                );
            }
            counts.print(started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
