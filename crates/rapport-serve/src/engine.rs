//! The engine's thread: the durable loop of `rapport run --store` over the inbox, its
//! released actions handed to delivery only once committed, restarted around a deploy
//! or an erasure so they happen between two commits.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rapport_bundle::Bundle;
use rapport_engine::deploy::FlowChange;
use rapport_host::deploy::deploy;
use rapport_host::{run_durable, DurableOptions, Input, Sink};
use rapport_store::{DeliveryRow, HostLock, LiveReader, SqliteStore, Store};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::delivery::Job;
use crate::feed::{Feed, LiveFeed};
use crate::metrics::{ActionLabels, Metrics, Reason};
use crate::writer::Request;

/// What the engine's thread is asked between two runs of the loop.
pub(crate) enum Control {
    Deploy {
        bundle: Box<Bundle>,
        done: oneshot::Sender<Result<Vec<FlowChange>, String>>,
    },
    Forget {
        contact: String,
        done: oneshot::Sender<Result<Value, String>>,
    },
    Shutdown,
}

/// WhatsApp redelivers a webhook for up to 7 days: event ids are kept at least that long.
pub(crate) const WHATSAPP_REDELIVERY: u64 = 7 * 86_400;

pub(crate) struct EngineThread {
    pub(crate) path: PathBuf,
    pub(crate) lock: HostLock,
    pub(crate) feed: Arc<Mutex<Receiver<Feed>>>,
    pub(crate) control: Receiver<Control>,
    pub(crate) writer: Sender<Request>,
    pub(crate) jobs: mpsc::UnboundedSender<Job>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tick: Duration,
    pub(crate) now: fn() -> i64,
    /// The bundle running (the API validates events against its settings).
    pub(crate) bundle: Arc<RwLock<Arc<Bundle>>>,
    /// Delivery, told the running bundle's templates.
    pub(crate) delivery: Arc<crate::delivery::Delivery>,
    pub(crate) running: Arc<AtomicBool>,
    pub(crate) min_dedupe: u64,
}

/// A fingerprint of a bundle file's content (SHA-256 of its JSON), to tell whether the
/// `--bundle` file changed between two starts.
fn fingerprint(bundle: &Bundle) -> String {
    use sha2::Digest;
    let json = serde_json::to_string(bundle).unwrap_or_default();
    crate::signature::hex(&sha2::Sha256::digest(json.as_bytes()))
}

/// Deploys the bundle to start with onto the store, before the host listens (a bundle
/// the store refuses stops the start with the reason). That is the `--bundle` file when it
/// changed since the last start that took it (a deploy by file), else the store's own,
/// which may hold a later `rapport deploy`: restarting with the file the unit names must
/// not roll that back. The file is noted as taken only once its deploy succeeded.
pub(crate) fn prepare(
    path: &std::path::Path,
    lock: &HostLock,
    file: Bundle,
    min_dedupe: u64,
) -> Result<Bundle, String> {
    let mut store = SqliteStore::open(path, lock).map_err(|e| e.to_string())?;
    let print = fingerprint(&file);
    let same_file = store
        .host_note("bundle_file")
        .map_err(|e| e.to_string())?
        .as_deref()
        == Some(print.as_str());
    let stored = match store.stored_bundle().map_err(|e| e.to_string())? {
        Some(text) => Some(
            serde_json::from_str::<Bundle>(&text)
                .ok()
                .filter(|b| b.validate().is_ok())
                .ok_or("the store's bundle is damaged; start with a bundle file that changed (rebuild it)")?,
        ),
        None => None,
    };
    let mut bundle = match stored {
        Some(b) if same_file => {
            tracing::info!("the --bundle file is the one of the last start: running the bundle last deployed to the store");
            b
        }
        _ => file,
    };
    bundle.settings.dedupe_window = bundle.settings.dedupe_window.max(min_dedupe);
    let d = deploy(&mut store, bundle).map_err(|e| e.to_string())?;
    if d.changed {
        for c in &d.changes {
            tracing::info!("deployed: {}", rapport_host::deploy::describe(c));
        }
    }
    store
        .set_host_note("bundle_file", &print)
        .map_err(|e| e.to_string())?;
    Ok(d.bundle)
}

impl EngineThread {
    /// Runs until a shutdown, starting with `first` (deployed by [`prepare`]).
    pub(crate) fn run(self, first: Bundle) -> Result<(), String> {
        let mut pending_reply: Option<oneshot::Sender<Result<Vec<FlowChange>, String>>> = None;
        let mut current = Some(first);
        let mut next: Option<Bundle> = None;
        loop {
            let mut store = SqliteStore::open(&self.path, &self.lock).map_err(|e| e.to_string())?;
            if let Some(mut bundle) = next.take() {
                bundle.settings.dedupe_window = bundle.settings.dedupe_window.max(self.min_dedupe);
                match deploy(&mut store, bundle) {
                    Ok(d) => {
                        if d.changed {
                            for c in &d.changes {
                                tracing::info!("deployed: {}", rapport_host::deploy::describe(c));
                            }
                        }
                        if let Some(r) = pending_reply.take() {
                            let _ = r.send(Ok(d.changes.clone()));
                        }
                        current = Some(d.bundle);
                    }
                    Err(e) => match pending_reply.take() {
                        // A refused deploy leaves the running bundle running.
                        Some(r) => {
                            let _ = r.send(Err(e.to_string()));
                        }
                        None => return Err(e.to_string()),
                    },
                }
            }
            let Some(bundle) = current.clone() else {
                return Err("no bundle to run".into());
            };
            if let Ok(mut t) = self.delivery.templates.lock() {
                *t = bundle.settings.templates.clone();
            }
            if let Ok(mut b) = self.bundle.write() {
                *b = Arc::new(bundle.clone());
            }
            let reader = LiveReader::open(&self.path).map_err(|e| e.to_string())?;
            let feed = LiveFeed::new(Arc::clone(&self.feed), reader, self.tick, self.now);
            let mut actions = ActionSink {
                buf: Vec::new(),
                writer: self.writer.clone(),
                jobs: self.jobs.clone(),
                metrics: Arc::clone(&self.metrics),
            };
            let mut audit = AuditSink {
                buf: Vec::new(),
                metrics: Arc::clone(&self.metrics),
            };
            let options = DurableOptions {
                batch: 1024,
                cache: 100_000,
                // The wall clock ticks the engine, so an event more than five minutes
                // ahead of it is a bad timestamp.
                max_clock_jump: 5 * 60_000,
                started: (self.now)(),
                // Whatever the API accepted fits: a line is at most a whole body.
                max_line: crate::http::MAX_BODY,
            };
            let never = AtomicBool::new(false);
            self.running.store(true, Ordering::Relaxed);
            let result = run_durable(
                bundle,
                store,
                Input::Live(Box::new(feed)),
                &mut actions,
                Some(&mut audit),
                &options,
                &never,
            );
            self.running.store(false, Ordering::Relaxed);
            let report = result.map_err(|e| e.to_string())?;
            if report.redelivered > 0 {
                tracing::info!(
                    "{} actions committed before the last stop were released again",
                    report.redelivered
                );
            }
            match self.control.try_recv() {
                Ok(Control::Deploy { bundle, done }) => {
                    next = Some(*bundle);
                    pending_reply = Some(done);
                }
                Ok(Control::Forget { contact, done }) => {
                    let mut store =
                        SqliteStore::open(&self.path, &self.lock).map_err(|e| e.to_string())?;
                    let r = store
                        .forget(&contact)
                        .map(|f| {
                            serde_json::json!({"contact": contact, "found": f.found,
                                "opted_out_kept_as_hash": f.opted_out_kept_as_hash,
                                "removed": {"timers": f.timers, "transcript": f.transcript,
                                    "audit": f.audit, "outbox": f.outbox}})
                        })
                        .map_err(|e| e.to_string());
                    let _ = done.send(r);
                }
                Ok(Control::Shutdown) | Err(_) => return Ok(()),
            }
        }
    }
}

/// Released actions: recorded as deliveries (on disk) before the outbox forgets them,
/// then handed to the delivery workers.
struct ActionSink {
    buf: Vec<u8>,
    writer: Sender<Request>,
    jobs: mpsc::UnboundedSender<Job>,
    metrics: Arc<Metrics>,
}

impl Write for ActionSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for ActionSink {
    fn sync(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
        let mut rows = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_str(line).map_err(std::io::Error::other)?;
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            let kind = s("type").unwrap_or_default();
            self.metrics
                .actions
                .get_or_create(&ActionLabels {
                    r#type: kind.clone(),
                    flow: s("flow").unwrap_or_default(),
                    version: s("version").unwrap_or_default(),
                })
                .inc();
            rows.push(DeliveryRow {
                action: s("id").unwrap_or_default(),
                contact: s("contact"),
                channel: s("channel"),
                line: line.to_string(),
                status: "pending".into(),
                attempts: 0,
            });
        }
        let (done, rx) = oneshot::channel();
        self.writer
            .send(Request::Release {
                rows: rows.clone(),
                done,
            })
            .map_err(|_| std::io::Error::other("the writer stopped"))?;
        let new = rx
            .blocking_recv()
            .map_err(|_| std::io::Error::other("the writer stopped"))?
            .map_err(std::io::Error::other)?;
        let released = Instant::now();
        for (row, new) in rows.into_iter().zip(new) {
            if new {
                let _ = self.jobs.send(Job {
                    row,
                    released,
                    seq: 0,
                });
            }
        }
        Ok(())
    }
}

/// Audit records after their commit: counted into the metrics (they are in the store
/// already).
struct AuditSink {
    buf: Vec<u8>,
    metrics: Arc<Metrics>,
}

impl Write for AuditSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for AuditSink {
    fn sync(&mut self) -> std::io::Result<()> {
        let text = std::mem::take(&mut self.buf);
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            match s("kind").as_str() {
                "suppressed" => {
                    self.metrics
                        .suppressions
                        .get_or_create(&Reason {
                            reason: s("reason"),
                        })
                        .inc();
                }
                "rejected" => {
                    self.metrics
                        .events_rejected
                        .get_or_create(&Reason {
                            reason: short_reason(&s("reason")),
                        })
                        .inc();
                }
                "duplicate" => {
                    // A status redelivered: its labels are dropped uncounted.
                    self.metrics.status_recorded(&s("cause"), false, None, "");
                    self.metrics.duplicates.inc();
                }
                "delivery" | "delivery_failed" => {
                    let status = if s("kind") == "delivery" {
                        s("reason")
                    } else {
                        "failed".to_string()
                    };
                    let contact = v.get("contact").and_then(Value::as_str);
                    self.metrics
                        .status_recorded(&s("cause"), true, contact, &status);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A rejection's reason as a label: its first words, without back-quotes and without
/// the words that hold a number (a time, an id), so the label set stays small.
fn short_reason(reason: &str) -> String {
    let plain: String = reason.chars().filter(|c| *c != '`').collect();
    let cut = [": ", "(", "\""]
        .iter()
        .filter_map(|p| plain.find(p))
        .min()
        .unwrap_or(plain.len());
    let words: Vec<&str> = plain[..cut]
        .split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .take(10)
        .collect();
    if words.is_empty() {
        "other".into()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejection_labels_keep_the_words_and_drop_the_values() {
        assert_eq!(
            super::short_reason(
                "`at` 2099-01-01T00:00:00.000Z is more than 5m ahead of the wall clock (2026-12-05T10:00:00.000Z): rejected"
            ),
            "at is more than ahead of the wall clock"
        );
        assert_eq!(super::short_reason("missing `at`"), "missing at");
        assert_eq!(
            super::short_reason("not a JSON event: expected value"),
            "not a JSON event"
        );
        assert_eq!(super::short_reason(""), "other");
    }
}
