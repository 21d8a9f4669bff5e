//! `rapport serve`: the live host (docs/deploy.md).
//!
//! Platform webhooks come in over HTTP, are checked (signatures on the raw bytes),
//! normalised into the runtime's events and committed to the store's inbox before they
//! are acknowledged. The engine consumes the inbox with the durable loop of
//! `rapport run --store`, ticked by the wall clock. What it releases is recorded as a
//! delivery and sent to the platforms' APIs and to the sinks, each contact's actions in
//! order, with retries; the outcome comes back to the engine as a `delivery` event.
//!
//! Threads: the HTTP server and delivery run on tokio; the engine and the store's
//! writer each have a thread of their own (SQLite calls block).

pub mod config;
mod console;
mod delivery;
mod engine;
mod feed;
mod http;
mod listener;
mod meta;
mod metrics;
pub mod signature;
mod telegram;
mod whatsapp;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rapport_bundle::Bundle;
use rapport_store::{HostLock, LiveReader, SqliteStore};

pub use config::{HostConfig, Problem};

/// The wall clock in milliseconds since the epoch.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What `rapport serve` runs.
pub struct Serve {
    pub bundle: Bundle,
    pub store: PathBuf,
    pub config: HostConfig,
}

/// Runs the host until SIGTERM or Ctrl-C, then drains: webhooks get 503, the engine
/// commits what it has, calls in flight finish (within `grace`), and it returns.
pub async fn serve(s: Serve) -> Result<(), String> {
    let Serve {
        bundle,
        store,
        config,
    } = s;
    let mut signals = StopSignals::listen();
    let config = Arc::new(config);
    let lock = HostLock::acquire(&store).map_err(|e| e.to_string())?;
    // Creates the store where nothing exists, migrates an older one, refuses anything else.
    drop(SqliteStore::open(&store, &lock).map_err(|e| e.to_string())?);
    let min_dedupe = if config
        .channels
        .values()
        .any(|c| matches!(c, config::Connector::WhatsApp(_)))
    {
        if bundle.settings.dedupe_window < engine::WHATSAPP_REDELIVERY {
            tracing::info!(
                "the project keeps event ids for {}s; WhatsApp redelivers for up to 7 days, so they are kept 7d",
                bundle.settings.dedupe_window
            );
        }
        engine::WHATSAPP_REDELIVERY
    } else {
        0
    };
    // The bundle is deployed before anything listens: one the store refuses stops here.
    let bundle = engine::prepare(&store, &lock, bundle, min_dedupe)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let (feed_tx, feed_rx) = std::sync::mpsc::channel();
    let (writer, writer_thread) =
        writer::start(&store, feed_tx.clone(), wall_ms).map_err(|e| e.to_string())?;
    let delivery = delivery::Delivery::new(
        Arc::clone(&config),
        bundle.settings.templates.clone(),
        writer.clone(),
        Arc::clone(&metrics),
        wall_ms,
    )?;
    let reader = LiveReader::open(&store).map_err(|e| e.to_string())?;
    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::unbounded_channel();
    // What was released but not delivered before the last stop goes out first.
    let unfinished = reader.unfinished().map_err(|e| e.to_string())?;
    if !unfinished.is_empty() {
        let in_flight = unfinished
            .iter()
            .filter(|r| r.status == "in_flight")
            .count();
        tracing::info!(
            "{} actions were not delivered before the last stop ({in_flight} were in flight: sent again, and counted)",
            unfinished.len()
        );
    }
    let now = Instant::now();
    for row in unfinished {
        delivery.enqueue(delivery::Job {
            row,
            released: now,
            seq: 0,
        });
    }
    tokio::spawn(Arc::clone(&delivery).run(jobs_rx));

    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let running = Arc::new(AtomicBool::new(false));
    let shared_bundle = Arc::new(RwLock::new(Arc::new(bundle.clone())));
    let engine = engine::EngineThread {
        path: store.clone(),
        lock,
        feed: Arc::new(Mutex::new(feed_rx)),
        control: control_rx,
        writer: writer.clone(),
        jobs: jobs_tx,
        metrics: Arc::clone(&metrics),
        tick: config.tick,
        now: wall_ms,
        bundle: Arc::clone(&shared_bundle),
        delivery: Arc::clone(&delivery),
        running: Arc::clone(&running),
        min_dedupe,
    };
    let (engine_done_tx, engine_done) = tokio::sync::oneshot::channel();
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let r = engine.run(bundle);
            let _ = engine_done_tx.send(r);
        })
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;

    let draining = Arc::new(AtomicBool::new(false));
    let app = Arc::new(http::App {
        config: Arc::clone(&config),
        writer: writer.clone(),
        reader: Mutex::new(reader),
        metrics: Arc::clone(&metrics),
        delivery: Arc::clone(&delivery),
        control: control_tx.clone(),
        feed: feed_tx.clone(),
        bundle: shared_bundle,
        store_path: store.clone(),
        draining: Arc::clone(&draining),
        engine_running: running,
        now: wall_ms,
        handoffs_counted: Mutex::new(None),
        forged_audit: http::PerMinute::new(60),
        sessions: console::Sessions::default(),
        sign_ins: http::PerMinute::new(20),
        report_cache: tokio::sync::Mutex::new(None),
        report_store: Arc::new(Mutex::new(None)),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address listened on: {e}"))?;
    // Said on stderr in a fixed form: scripts and tests read the port from it.
    eprintln!("rapport serve: listening on http://{local}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut engine_done = engine_done;
    let stop_reason = {
        let router = http::router(Arc::clone(&app));
        let server = tokio::spawn(listener::serve(
            listener,
            router,
            stop_rx.clone(),
            config.grace,
        ));
        let reason = tokio::select! {
            _ = signals.wait() => Ok(()),
            r = &mut engine_done => Err(match r {
                Ok(Err(e)) => format!("the engine stopped: {e}"),
                _ => "the engine stopped".to_string(),
            }),
        };
        // Stop: readyz and webhooks say 503 from now on; the listener closes.
        draining.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        let _ = control_tx.send(engine::Control::Shutdown);
        let _ = feed_tx.send(feed::Feed::Stop);
        // In-flight requests may finish, but a client trickling bytes does not hold the
        // stop up for longer than the grace period.
        if !matches!(server.await, Ok(true)) {
            tracing::warn!(
                "connections still open after the grace period of {}s were closed",
                config.grace.as_secs()
            );
        }
        reason
    };
    // The engine commits what it was given and releases it to delivery.
    let engine_result = if stop_reason.is_ok() {
        match engine_done.await {
            Ok(r) => r,
            Err(_) => Err("the engine thread ended without a word".into()),
        }
    } else {
        Ok(())
    };
    let _ = engine_thread.join();
    let drained = delivery.drain(config.grace).await;
    if !drained {
        tracing::warn!(
            "calls still in flight after the grace period of {}s; they are sent again at the next start",
            config.grace.as_secs()
        );
    }
    drop(app);
    drop(writer);
    drop(delivery);
    let _ = writer_thread;
    stop_reason?;
    engine_result?;
    eprintln!("rapport serve: stopped; everything acknowledged is committed");
    Ok(())
}

/// The signals that stop the host, listened for from the start: a SIGTERM that comes
/// while the host is still starting drains it too, instead of killing it.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> StopSignals {
        StopSignals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
            #[cfg(unix)]
            interrupt: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .ok(),
        }
    }

    /// Waits for SIGTERM or Ctrl-C.
    async fn wait(&mut self) {
        #[cfg(unix)]
        if let (Some(term), Some(interrupt)) = (self.term.as_mut(), self.interrupt.as_mut()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
