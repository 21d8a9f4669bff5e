//! The runtime host: reads and decodes JSONL events (each line once, on the reader), shards
//! contacts over worker tasks by a hash of the contact (each contact's events stay in order
//! on one worker), runs an engine per worker and writes actions and audit records as JSONL.
//!
//! Every worker sees the clock move: the reader numbers each event with the clock as it
//! stood after that event in input order (a rejected line does not move it), and each
//! worker steps the event at that clock and fires timers up to the latest one, so an event
//! gives the same actions on whichever worker and with however many workers it runs, even
//! when the stream is out of order. Ticks and operator events go to every worker; only the
//! first reports their actions and audit records that belong to no contact. Flows with
//! staged rollouts keep their rollout state in one engine, so a bundle with a rollout runs
//! on one worker.
//!
//! An event further ahead of the clock than [`Options::max_clock_jump`] is rejected: one
//! bad timestamp would otherwise fire every contact's timers at once.

pub mod deploy;
mod durable;
pub use durable::{
    run_durable, DurableError, DurableOptions, DurableReport, Input, LiveInput, Next, Sink,
};
mod input;
pub(crate) use input::read_line_capped;
use input::{admit, read_line_capped_async, too_long, WallClock};
pub use input::{check_clock_jump, DEFAULT_MAX_CLOCK_JUMP, DEFAULT_MAX_LINE};

/// At most this many workers: each holds an engine and buffers, and beyond the cores there
/// is nothing to gain.
pub const MAX_SHARDS: usize = 256;

/// Whether the bundle must run on one worker: a staged rollout's state (its stage, its
/// guard metrics) lives in one engine.
pub fn needs_one_worker(bundle: &Bundle) -> bool {
    bundle
        .flows
        .iter()
        .any(|f| f.rollout.as_ref().is_some_and(|r| r.stages.len() > 1) || f.halt.is_some())
}

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use rapport_bundle::Bundle;
use rapport_engine::{
    decode, Action, ActionKind, Audit, Engine, Event, Millis, Rejected, SeenEvents,
};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Lines are handed to workers in batches of this many.
const BATCH: usize = 512;

/// What a run did, printed at its end.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    pub events: u64,
    pub rejected: u64,
    /// Events whose contact and id were already processed within the dedupe window.
    pub duplicates: u64,
    /// By type; `template` for sends with a template, `policy` for STOP/START/HELP replies.
    pub actions: BTreeMap<String, u64>,
    pub suppressed: BTreeMap<String, u64>,
    pub not_enrolled: BTreeMap<String, u64>,
    /// Reading stopped early (Ctrl-C); everything read was processed and written.
    pub interrupted: bool,
}

impl Counts {
    fn action(&mut self, a: &Action) {
        let kind = match a.kind {
            ActionKind::Send if a.template.is_some() => "template",
            ActionKind::Send if a.policy.is_some() => "policy",
            k => k.as_str(),
        };
        match self.actions.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.actions.insert(kind.to_string(), 1);
            }
        }
    }

    fn merge(&mut self, other: Counts) {
        self.events += other.events;
        self.rejected += other.rejected;
        self.duplicates += other.duplicates;
        for (k, v) in other.actions {
            *self.actions.entry(k).or_default() += v;
        }
        for (k, v) in other.suppressed {
            *self.suppressed.entry(k).or_default() += v;
        }
        for (k, v) in other.not_enrolled {
            *self.not_enrolled.entry(k).or_default() += v;
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker tasks; 0 chooses the number of cores (1 for bundles with a rollout).
    pub shards: usize,
    /// Build and write audit records.
    pub audit: bool,
    /// The caller's process ends right after the run: leave the engines' state to the
    /// operating system rather than free a hundred thousand contacts one allocation at a
    /// time (a few percent of a large run's time). Otherwise it is freed on a thread of
    /// its own.
    pub process_ends: bool,
    /// Events more than this far ahead of the clock are rejected (milliseconds).
    pub max_clock_jump: Millis,
    /// The wall clock when the run started (milliseconds since the epoch); the host moves
    /// it on by the time elapsed. No event may be `max_clock_jump` ahead of it.
    pub started: Millis,
    /// Lines longer than this many bytes are rejected.
    pub max_line: usize,
}

/// A decoded line, or why it was rejected, with its line number and the clock as it stood
/// after it in input order.
struct Line {
    n: u64,
    clock: Millis,
    /// Its contact and id were processed before: counted and audited, not stepped.
    duplicate: bool,
    event: Result<Event, Rejected>,
}

/// A message to a worker.
enum Work {
    /// Numbered, decoded lines for this worker, and the latest event time read so far.
    Lines(Vec<Line>, Option<Millis>),
}

/// Action buffers written out, for the workers to fill again: a buffer that stays warm in
/// the cache is cheaper than a fresh one for every batch.
#[derive(Clone, Default)]
struct Spare(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Spare {
    /// An empty buffer of at least `capacity` bytes.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        // A buffer a burst made large is freed rather than kept.
        if buf.capacity() > 1 << 20 {
            return;
        }
        if let Ok(mut pool) = self.0.lock() {
            // A few per worker are enough; the rest are freed.
            if pool.len() < 16 {
                pool.push(buf);
            }
        }
    }
}

/// Output of a worker: serialised action lines, audit lines, and stderr lines.
struct Written {
    actions: Vec<u8>,
    audit: Vec<u8>,
    errors: Vec<String>,
}

fn shard_of(contact: &str, shards: usize) -> usize {
    (foldhash::fast::FixedState::with_seed(0x5250_5254).hash_one(contact) % shards as u64) as usize
}

/// Runs `bundle` over the events of `input`, writing actions to `actions` and audit
/// records to `audit`; stops reading when `stop` resolves (Ctrl-C), after which every
/// line read is still processed and written.
pub async fn run<R, W, A>(
    bundle: Bundle,
    input: R,
    mut actions: W,
    mut audit: Option<A>,
    options: Options,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<Counts>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    A: AsyncWrite + Unpin,
{
    let shards = match options.shards {
        _ if needs_one_worker(&bundle) => 1,
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n.min(MAX_SHARDS),
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Written>(shards * 4);
    let spare = Spare::default();
    // Batches come back to the reader once stepped: their events are freed by the thread
    // that made them (cheaper than a free from another thread), and the vectors are
    // filled again rather than allocated for every batch.
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<Line>>();
    let mut senders = Vec::with_capacity(shards);
    let mut workers = Vec::with_capacity(shards);
    for index in 0..shards {
        let (tx, rx) = mpsc::channel::<Work>(8);
        senders.push(tx);
        let bundle = bundle.clone();
        let out = out_tx.clone();
        let options = options.clone();
        let spare = spare.clone();
        let back = back_tx.clone();
        workers.push(tokio::task::spawn_blocking(move || {
            worker(index == 0, bundle, rx, out, options, spare, back)
        }));
    }
    drop(out_tx);
    drop(back_tx);

    // The writer: the only task that touches the sinks.
    let writer = async move {
        let failed = |what: &'static str| {
            move |e: std::io::Error| std::io::Error::new(e.kind(), format!("writing {what}: {e}"))
        };
        while let Some(w) = out_rx.recv().await {
            actions
                .write_all(&w.actions)
                .await
                .map_err(failed("actions"))?;
            spare.give(w.actions);
            if let Some(a) = audit.as_mut() {
                a.write_all(&w.audit)
                    .await
                    .map_err(failed("the audit trail"))?;
            }
            for e in w.errors {
                eprintln!("{e}");
            }
        }
        actions.flush().await.map_err(failed("actions"))?;
        if let Some(a) = audit.as_mut() {
            a.flush().await.map_err(failed("the audit trail"))?;
        }
        Ok::<(), std::io::Error>(())
    };

    // The reader decodes each line once; workers receive typed events.
    let settings = bundle.settings.clone();
    let (max_jump, max_line) = (options.max_clock_jump, options.max_line);
    let wall = WallClock::new(options.started);
    let window = Millis::try_from(bundle.settings.dedupe_window)
        .unwrap_or(Millis::MAX / 2000)
        .saturating_mul(1000);
    let reader = async move {
        let mut input = input;
        // One buffer for every line; bytes that are not UTF-8 are replaced (U+FFFD) as
        // the durable host does, so such a line is judged like any other, not fatal.
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut batches: Vec<Vec<Line>> = (0..shards).map(|_| Vec::with_capacity(BATCH)).collect();
        let mut pool = Pool {
            back: back_rx,
            spare: Vec::new(),
            keep: 2 * shards + 2,
        };
        let mut n: u64 = 0;
        let mut latest: Option<Millis> = None;
        // Duplicates are known here, before sharding, so one never moves the clock.
        let mut seen = SeenEvents::default();
        let mut interrupted = false;
        tokio::pin!(stop);
        loop {
            let read = tokio::select! {
                biased;
                _ = &mut stop => { interrupted = true; break; }
                read = read_line_capped_async(&mut input, &mut buf, max_line) => read?,
            };
            if read.consumed == 0 {
                break;
            }
            n += 1;
            let text = rapport_engine::line_text(&buf);
            let line: &str = &text;
            if !read.too_long && line.trim().is_empty() {
                continue;
            }
            let decoded = if read.too_long {
                Err(too_long(max_line))
            } else {
                decode(line, &settings)
            };
            let mut decoded = decoded;
            if let Ok(event) = &mut decoded {
                if let Err(rejected) = admit(event, latest, &wall, max_jump, &settings, n) {
                    decoded = Err(rejected);
                }
            }
            let mut duplicate = false;
            let contact = match &decoded {
                Ok(event) => {
                    let now = latest.map_or(event.at, |l| l.max(event.at));
                    if seen.first_time(event, now, window) {
                        latest = Some(now);
                    } else {
                        duplicate = true;
                    }
                    event.contact.as_deref()
                }
                Err(rejected) => rejected.contact.as_deref(),
            };
            let shard = contact.map(|c| shard_of(c, shards));
            let line = Line {
                n,
                clock: latest.unwrap_or(Millis::MIN),
                duplicate,
                event: decoded,
            };
            match shard {
                Some(s) => {
                    batches[s].push(line);
                    if batches[s].len() >= BATCH {
                        flush_all(&senders, &mut batches, latest, &mut pool).await;
                    }
                }
                // No contact (ticks, operator events, broken lines): every worker.
                None => {
                    for b in batches.iter_mut() {
                        b.push(Line {
                            event: line.event.clone(),
                            ..line
                        });
                    }
                    flush_all(&senders, &mut batches, latest, &mut pool).await;
                }
            }
        }
        flush_all(&senders, &mut batches, latest, &mut pool).await;
        // Closing the channels lets the workers finish.
        drop(senders);
        Ok::<bool, std::io::Error>(interrupted)
    };
    // A write that fails (a full disk, a closed pipe) ends the run at once with its error:
    // the reader stops, and the workers stop when their channels close.
    let (interrupted, ()) = tokio::try_join!(reader, writer)?;
    let mut counts = Counts {
        interrupted,
        ..Counts::default()
    };
    for w in workers {
        match w.await {
            Ok(c) => counts.merge(c),
            Err(e) => return Err(std::io::Error::other(format!("a worker failed: {e}"))),
        }
    }
    Ok(counts)
}

/// Batch vectors handed back by the workers, emptied on the reader.
struct Pool {
    back: std::sync::mpsc::Receiver<Vec<Line>>,
    spare: Vec<Vec<Line>>,
    /// At most this many are kept; the rest are freed.
    keep: usize,
}

impl Pool {
    /// An empty batch vector: one handed back if there is one, else a new one.
    fn take(&mut self) -> Vec<Line> {
        while let Ok(mut lines) = self.back.try_recv() {
            lines.clear();
            if self.spare.len() < self.keep {
                self.spare.push(lines);
            }
        }
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH))
    }
}

async fn flush_all(
    senders: &[mpsc::Sender<Work>],
    batches: &mut [Vec<Line>],
    latest: Option<Millis>,
    pool: &mut Pool,
) {
    for (s, batch) in senders.iter().zip(batches.iter_mut()) {
        let lines = std::mem::replace(batch, pool.take());
        // A worker that stopped has reported why; nothing more to send it.
        let _ = s.send(Work::Lines(lines, latest)).await;
    }
}

/// One shard: its own engine, fed batches in order. The `primary` worker counts and
/// reports the lines that every worker receives (ticks, operator events, lines with no
/// contact).
fn worker(
    primary: bool,
    bundle: Bundle,
    mut rx: mpsc::Receiver<Work>,
    out: mpsc::Sender<Written>,
    options: Options,
    spare: Spare,
    back: std::sync::mpsc::Sender<Vec<Line>>,
) -> Counts {
    let audit_on = options.audit;
    let mut engine = Engine::new(bundle);
    engine.record_audit(audit_on);
    engine.leave_dedupe_to_host();
    let mut counts = Counts::default();
    while let Some(Work::Lines(lines, latest)) = rx.blocking_recv() {
        let mut w = Written {
            actions: spare.take(lines.len() * 200),
            audit: Vec::new(),
            errors: Vec::new(),
        };
        // Read in place: the decoded events are large, and moving each out costs more
        // than the step's own reads.
        for line in &lines {
            let n = line.n;
            match &line.event {
                Ok(event) if line.duplicate => {
                    if event.contact.is_some() || primary {
                        counts.events += 1;
                        counts.duplicates += 1;
                        if audit_on
                            && serde_json::to_writer(&mut w.audit, &Audit::duplicate(event)).is_ok()
                        {
                            w.audit.push(b'\n');
                        }
                    }
                }
                Ok(event) => {
                    // An event with no contact reached every worker: the first reports
                    // what belongs to no contact; every worker reports its contacts'.
                    let report_all = event.contact.is_some() || primary;
                    let o = engine.step_at(event, line.clock);
                    if report_all {
                        counts.events += 1;
                        counts.duplicates += u64::from(o.duplicates);
                        counts.rejected += u64::from(o.rejected);
                    }
                    write_output(&o, &mut w, &mut counts, audit_on, report_all);
                    engine.recycle(o);
                }
                Err(rejected) => {
                    // A line with no contact reached every worker: report it once.
                    if rejected.contact.is_some() || primary {
                        counts.events += 1;
                        counts.rejected += 1;
                        w.errors
                            .push(format!("line {n}: rejected: {}", rejected.reason));
                        if audit_on {
                            let record = serde_json::json!({
                                "kind": "rejected", "actor": "system", "line": n,
                                "id": rejected.id, "contact": rejected.contact, "reason": rejected.reason,
                            });
                            if serde_json::to_writer(&mut w.audit, &record).is_ok() {
                                w.audit.push(b'\n');
                            }
                        }
                    }
                }
            }
        }
        // The clock moves on every worker, so their timers fire too.
        if let Some(t) = latest {
            let o = engine.advance(t);
            write_output(&o, &mut w, &mut counts, audit_on, true);
            engine.recycle(o);
        }
        // The reader frees the events and fills the vector again (once it has stopped
        // reading, the send fails and the batch is freed here).
        let _ = back.send(lines);
        if out.blocking_send(w).is_err() {
            break;
        }
    }
    for (kind, reason, n) in engine.tallies() {
        let bucket = if kind == "suppressed" {
            &mut counts.suppressed
        } else {
            &mut counts.not_enrolled
        };
        *bucket.entry(reason.to_string()).or_default() += n;
    }
    if options.process_ends {
        // The operating system takes the whole memory back at once.
        std::mem::forget(engine);
    } else {
        // Freeing every contact one allocation at a time takes a tenth of a large run's
        // time; nothing waits for it, so it happens on a thread of its own.
        let _ = std::thread::Builder::new()
            .name("free".into())
            .spawn(move || drop(engine));
    }
    counts
}

/// Writes a step's actions and audit records; with `all` off, only those of a contact
/// (another worker reports the rest).
fn write_output(
    o: &rapport_engine::Output,
    w: &mut Written,
    counts: &mut Counts,
    audit_on: bool,
    all: bool,
) {
    for a in o.actions.iter().filter(|a| all || a.contact.is_some()) {
        counts.action(a);
        a.write_json(&mut w.actions);
        w.actions.push(b'\n');
    }
    if audit_on {
        for a in o.audit.iter().filter(|a| all || a.contact.is_some()) {
            if serde_json::to_writer(&mut w.audit, a).is_ok() {
                w.audit.push(b'\n');
            }
        }
    }
}
