//! `rapport run`: execute a bundle against a stream of JSONL events, writing actions and
//! the audit trail as JSONL.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use rapport_engine::decode;
use rapport_host::Counts;

use crate::build::read_bundle;
use crate::RunArgs;

/// The counts printed at the end of a run (and pinned by the funnel test).
pub(crate) fn print_counts(counts: &Counts, seconds: f64) {
    eprintln!(
        "processed {} events in {seconds:.2}s ({:.0} events/s), {} rejected, {} duplicates",
        counts.events,
        counts.events as f64 / seconds.max(1e-9),
        counts.rejected,
        counts.duplicates
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
    eprintln!("actions: {}", list(&counts.actions));
    eprintln!("suppressed: {}", list(&counts.suppressed));
    eprintln!("not enrolled: {}", list(&counts.not_enrolled));
}

pub(crate) fn run(args: RunArgs) -> ExitCode {
    let bundle = match read_bundle(&args.bundle) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.io_floor {
        io_floor(&bundle, &args)
    } else if let Some(store) = &args.store {
        crate::durable::run(bundle, store, &args)
    } else {
        run_hosted(bundle, &args)
    }
}

/// The benchmark baseline of bench/WORKLOAD.md: read and decode every line, write one
/// line per event, nothing else.
fn io_floor(bundle: &rapport_bundle::Bundle, args: &RunArgs) -> ExitCode {
    let started = Instant::now();
    let result = (|| -> std::io::Result<u64> {
        let input: Box<dyn BufRead> = match &args.events {
            Some(p) if p != Path::new("-") => {
                Box::new(BufReader::with_capacity(1 << 16, File::open(p)?))
            }
            _ => Box::new(BufReader::with_capacity(1 << 16, std::io::stdin().lock())),
        };
        let mut out: Box<dyn Write> = if args.actions == Path::new("-") {
            Box::new(BufWriter::with_capacity(1 << 16, std::io::stdout().lock()))
        } else {
            Box::new(BufWriter::with_capacity(
                1 << 16,
                File::create(&args.actions)?,
            ))
        };
        let mut input = input;
        let mut events = 0;
        let mut buf = Vec::with_capacity(512);
        let mut raw = Vec::with_capacity(1024);
        loop {
            raw.clear();
            if input.read_until(b'\n', &mut raw)? == 0 {
                break;
            }
            let text = rapport_engine::line_text(&raw);
            let line: &str = &text;
            if let Ok(event) = decode(line, &bundle.settings) {
                events += 1;
                buf.clear();
                serde_json::to_writer(
                    &mut buf,
                    &serde_json::json!({ "id": event.id, "at": event.at }),
                )?;
                buf.push(b'\n');
                out.write_all(&buf)?;
            }
        }
        out.flush()?;
        Ok(events)
    })();
    match result {
        Ok(events) => {
            let counts = Counts {
                events,
                ..Counts::default()
            };
            print_counts(&counts, started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A regular file read or written in place by the task that uses it. A file's reads and
/// writes go to the page cache and return at once, so they are done directly rather
/// than handed to tokio's blocking pool one buffer at a time (`tokio::fs::File`), which
/// costs a thread switch and a copy per buffer. Pipes (stdin, stdout) keep tokio's own
/// types: a read from them can wait indefinitely.
struct LocalFile<T>(T);

impl<R: BufRead + Unpin> tokio::io::AsyncRead for LocalFile<R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result =
            std::io::Read::read(&mut this.0, buf.initialize_unfilled()).map(|n| buf.advance(n));
        std::task::Poll::Ready(result)
    }
}

impl<R: BufRead + Unpin> tokio::io::AsyncBufRead for LocalFile<R> {
    fn poll_fill_buf(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<&[u8]>> {
        std::task::Poll::Ready(self.get_mut().0.fill_buf())
    }

    fn consume(self: std::pin::Pin<&mut Self>, amount: usize) {
        self.get_mut().0.consume(amount);
    }
}

impl<W: Write + Unpin> tokio::io::AsyncWrite for LocalFile<W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn wall_clock() -> rapport_engine::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            rapport_engine::Millis::try_from(d.as_millis()).unwrap_or(0)
        })
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
            Some(p) if p != Path::new("-") => match File::open(p) {
                Ok(f) => Box::new(LocalFile(BufReader::with_capacity(1 << 16, f))),
                Err(e) => return Err(format!("cannot read events `{}`: {e}", p.display())),
            },
            _ => Box::new(TBufReader::with_capacity(1 << 16, tokio::io::stdin())),
        };
        let open = |p: PathBuf| async move {
            let w: Box<dyn AsyncWrite + Unpin + Send> = if p == Path::new("-") {
                Box::new(TBufWriter::with_capacity(1 << 16, tokio::io::stdout()))
            } else {
                Box::new(LocalFile(BufWriter::with_capacity(
                    1 << 16,
                    File::create(&p)?,
                )))
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
            // `rapport run` exits when the run ends.
            process_ends: true,
            max_clock_jump: args.max_clock_jump,
            started: wall_clock(),
            max_line: args.max_line,
        };
        if args.shards > 1 && rapport_host::needs_one_worker(&bundle) {
            eprintln!(
                "note: the bundle has a staged rollout, whose state lives in one engine: running on one worker instead of {}",
                args.shards
            );
        }
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
        Ok(counts) => {
            if counts.interrupted {
                eprintln!(
                    "interrupted: stopped reading; everything read was processed and written"
                );
            }
            print_counts(&counts, started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
