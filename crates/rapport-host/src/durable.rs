//! The durable host (design section 6.9): one engine over a [`Store`], events read in
//! batches, each batch committed in one transaction before its actions are released.
//!
//! The order for every batch: step each event; commit the changed state, timers, event
//! ids, audit records, transcript lines, the batch's actions (into the outbox) and the
//! input position; write the actions to the sink and flush it; then, in the next
//! commit, drop them from the outbox. A crash before the commit loses nothing (the input
//! position did not move, so the events are read again and give the same actions with
//! the same ids); a crash after it leaves the actions in the outbox, and the next start
//! releases them first. Only the actions of a batch in flight at the crash can reach
//! the sink twice, with the same ids.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use rapport_bundle::{Bundle, Purpose};
use rapport_engine::{decode, ActionKind, Engine, Millis};
use rapport_store::{
    AuditEntry, Batch, Checkpoint, OutboxEntry, Store, StoreError, TranscriptEntry,
};

use crate::Counts;

/// Where events come from.
pub enum Input {
    /// A file: the store remembers how far it was read, and a restart on the same file
    /// carries on from there.
    File(PathBuf),
    /// A stream (stdin): a restart reads what the upstream sends again, and event ids
    /// already processed are ignored.
    Stream(Box<dyn Read + Send>),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct DurableOptions {
    /// Events per commit at most (a commit also happens whenever the input has nothing
    /// more ready, so a live stream is never held back).
    pub batch: usize,
    /// Contacts kept in memory between batches; the rest are loaded from the store.
    pub cache: usize,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions {
            batch: 1024,
            cache: 100_000,
        }
    }
}

/// What a durable run did.
#[derive(Debug, Default, Clone)]
pub struct DurableReport {
    pub counts: Counts,
    /// Actions committed but not released by the previous run, released at the start.
    pub redelivered: u64,
    /// The input line a restart on the same file carried on after.
    pub resumed_after_line: Option<u64>,
    /// Transcript lines removed at the start for being older than `retention`.
    pub purged: usize,
    /// Commits made.
    pub commits: u64,
}

/// Errors that stop a durable run. Whatever was committed before stays committed.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error(transparent)]
    Store(#[from] rapport_store::StoreError),
    #[error("{0}")]
    State(String),
    #[error("cannot read events `{path}`: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs `bundle` over `input` on `store`, releasing actions to `actions` (and audit
/// records to `audit`) only after the state that produced them is committed. Stops
/// reading when `stop` is set; what was read is still processed, committed and released.
pub fn run_durable<S: Store + 'static>(
    bundle: Bundle,
    store: S,
    input: Input,
    actions: &mut dyn Write,
    mut audit: Option<&mut dyn Write>,
    options: &DurableOptions,
    stop: &AtomicBool,
) -> Result<DurableReport, DurableError> {
    let mut store = store;
    let mut report = DurableReport::default();
    let purpose: HashMap<String, Purpose> = bundle
        .flows
        .iter()
        .map(|f| (f.name.clone(), f.purpose))
        .collect();
    let window = i64::try_from(bundle.settings.dedupe_window)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let retention = bundle.settings.retention;

    let mut engine = Engine::new(bundle);
    engine.record_audit(true);
    engine.track_changes();

    // Restore what was committed.
    report.purged = store.purge(&retention)?.transcript;
    let since = store
        .resume(Some(i64::MAX))?
        .global
        .as_deref()
        .and_then(clock_of)
        .map(|clock| clock.saturating_sub(window));
    let resume = store.resume(since)?;
    if let Some(g) = &resume.global {
        engine.restore_global(g).map_err(DurableError::State)?;
    }
    for t in &resume.timers {
        engine
            .restore_timer(t)
            .map_err(|e| DurableError::State(format!("the store is damaged: {e}")))?;
    }
    for (a, b, at) in &resume.seen {
        engine.restore_seen(*a, *b, *at);
    }
    // Contacts load through a second handle, so loading never waits for a commit. It
    // sees committed state only, which is right: a contact leaves memory only when
    // every batch that touched it is committed.
    let mut contacts = store.reader()?;
    engine.set_loader(Box::new(move |contact| {
        contacts.load_contact(contact).map_err(|e| e.to_string())
    }));
    // Release what the previous run committed but may not have released.
    let mut released_up_to = None;
    if !resume.outbox.is_empty() {
        // Said first: an operator watching a restart loop sees each redelivery.
        eprintln!(
            "redelivering {} actions committed but not confirmed released by an earlier run (same ids)",
            resume.outbox.len()
        );
    }
    for p in &resume.outbox {
        actions.write_all(p.line.as_bytes())?;
        actions.write_all(b"\n")?;
        report.redelivered += 1;
        released_up_to = Some(p.seq);
    }
    actions.flush()?;

    // Open the input, carrying on where the last commit left it.
    let (mut reader, source, mut offset, mut line_no): (BufReader<Box<dyn Read + Send>>, _, _, _) =
        match input {
            Input::File(path) => {
                let source = std::fs::canonicalize(&path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string();
                let input_err = |source: std::io::Error| DurableError::Input {
                    path: path.display().to_string(),
                    source,
                };
                let mut file = File::open(&path).map_err(input_err)?;
                let len = file.metadata().map_err(input_err)?.len();
                let (mut offset, mut line) = (0, 0);
                if let Some(c) = resume.checkpoint.as_ref().filter(|c| c.source == source) {
                    if c.offset <= len {
                        file.seek(SeekFrom::Start(c.offset)).map_err(input_err)?;
                        offset = c.offset;
                        line = c.line;
                        report.resumed_after_line = Some(c.line);
                    }
                }
                (
                    BufReader::with_capacity(1 << 16, Box::new(file) as Box<dyn Read + Send>),
                    Some(source),
                    offset,
                    line,
                )
            }
            Input::Stream(r) => (BufReader::with_capacity(1 << 16, r), None, 0, 0),
        };

    let live = source.is_none();
    let mut committer = Committer::start(store);
    // The output of the batch being committed, released when its commit is done.
    let mut inflight: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut buf = Vec::with_capacity(1024);
    let mut eof = false;
    while !eof {
        let mut batch = Batch::default();
        let mut out_actions: Vec<u8> = Vec::new();
        let mut out_audit: Vec<u8> = Vec::new();
        let mut lines = 0;
        while lines < options.batch {
            if stop.load(Ordering::Relaxed) {
                report.counts.interrupted = true;
                eof = true;
                break;
            }
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                eof = true;
                break;
            }
            offset += n as u64;
            line_no += 1;
            lines += 1;
            step_line(
                &mut engine,
                &buf,
                line_no,
                &purpose,
                &mut batch,
                &mut out_actions,
                &mut out_audit,
                &mut report.counts,
            );
            // A stream with nothing more ready: commit now rather than hold it back.
            if live && reader.buffer().is_empty() {
                break;
            }
        }
        if let Some(e) = engine.take_load_error() {
            return Err(DurableError::State(format!(
                "the store is damaged, stopping without committing this batch: {e}"
            )));
        }
        batch.changes = engine.take_changes().map_err(DurableError::State)?;
        batch.checkpoint = source.as_ref().map(|s| Checkpoint {
            source: s.clone(),
            offset,
            line: line_no,
        });
        batch.released_up_to = None;
        if report.commits % 256 == 0 {
            batch.forget_ids_before = engine.clock().map(|c| c.saturating_sub(window));
        }
        // The previous batch: once its commit is done, release its actions; the outbox
        // drops them in this batch's commit.
        if let Some(out) = inflight.take() {
            released_up_to = committer.settle(out, actions, &mut audit)?;
        }
        batch.released_up_to = released_up_to.take();
        committer.send(batch)?;
        report.commits += 1;
        inflight = Some((out_actions, out_audit));
        if engine.contacts() > options.cache {
            if let Some(out) = inflight.take() {
                released_up_to = committer.settle(out, actions, &mut audit)?;
            }
            engine.evict(options.cache / 2);
        }
    }
    if let Some(out) = inflight.take() {
        released_up_to = committer.settle(out, actions, &mut audit)?;
    }
    if released_up_to.is_some() {
        // Drop the last released actions from the outbox.
        let batch = Batch {
            changes: engine.take_changes().map_err(DurableError::State)?,
            released_up_to,
            checkpoint: source.as_ref().map(|s| Checkpoint {
                source: s.clone(),
                offset,
                line: line_no,
            }),
            ..Batch::default()
        };
        committer.send(batch)?;
        committer.settle((Vec::new(), Vec::new()), actions, &mut audit)?;
        report.commits += 1;
    }
    committer.finish()?;
    for (kind, reason, n) in engine.tallies() {
        let bucket = if kind == "suppressed" {
            &mut report.counts.suppressed
        } else {
            &mut report.counts.not_enrolled
        };
        *bucket.entry(reason.to_string()).or_default() += n;
    }
    Ok(report)
}

/// Decodes and applies one input line, adding what it produced to the batch.
#[allow(clippy::too_many_arguments)]
fn step_line(
    engine: &mut Engine,
    raw: &[u8],
    n: u64,
    purpose: &HashMap<String, Purpose>,
    batch: &mut Batch,
    out_actions: &mut Vec<u8>,
    out_audit: &mut Vec<u8>,
    counts: &mut Counts,
) {
    let text = String::from_utf8_lossy(raw);
    let line = text.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return;
    }
    counts.events += 1;
    let event = match decode(line, &engine.bundle().settings) {
        Ok(e) => e,
        Err(rejected) => {
            counts.rejected += 1;
            eprintln!("line {n}: rejected: {}", rejected.reason);
            let record = serde_json::json!({
                "kind": "rejected", "actor": "system", "line": n,
                "id": rejected.id, "contact": rejected.contact, "reason": rejected.reason,
            });
            let line = record.to_string();
            out_audit.extend_from_slice(line.as_bytes());
            out_audit.push(b'\n');
            batch.audit.push(AuditEntry {
                at: engine.clock().unwrap_or(0),
                contact: rejected.contact,
                records: line,
            });
            return;
        }
    };
    let duplicate = engine.is_duplicate(&event.id);
    let o = engine.step(&event);
    // The inbound side of the transcript.
    if let (Some(contact), Some(text)) = (event.contact.as_ref(), inbound_text(&event.body)) {
        if !duplicate {
            batch.transcript.push(TranscriptEntry {
                at: event.at,
                contact: contact.clone(),
                direction: "in",
                channel: event.channel.clone(),
                purpose: None,
                text: text.to_string(),
            });
        }
    }
    for a in &o.actions {
        counts.action(a);
        let Ok(line) = serde_json::to_string(a) else {
            continue;
        };
        out_actions.extend_from_slice(line.as_bytes());
        out_actions.push(b'\n');
        if let (Some(contact), Some(text), ActionKind::Send | ActionKind::Reply) =
            (a.contact.as_ref(), a.text.as_ref(), a.kind)
        {
            batch.transcript.push(TranscriptEntry {
                at: a.at,
                contact: contact.clone(),
                direction: "out",
                channel: a.channel.clone(),
                purpose: a
                    .flow
                    .as_ref()
                    .and_then(|f| purpose.get(f))
                    .map(|p| purpose_name(*p).to_string()),
                text: text.clone(),
            });
        }
        batch.outbox.push(OutboxEntry {
            contact: a.contact.clone(),
            action_id: a.id.clone(),
            line,
        });
    }
    // One stored entry per contact for the records of this step (runs of the same
    // contact are joined; a step mostly concerns one contact).
    let mut current: Option<AuditEntry> = None;
    for a in &o.audit {
        let Ok(line) = serde_json::to_string(a) else {
            continue;
        };
        out_audit.extend_from_slice(line.as_bytes());
        out_audit.push(b'\n');
        match current.as_mut() {
            Some(e) if e.contact == a.contact => {
                e.records.push('\n');
                e.records.push_str(&line);
            }
            _ => {
                batch.audit.extend(current.take());
                current = Some(AuditEntry {
                    at: a.at,
                    contact: a.contact.clone(),
                    records: line,
                });
            }
        }
    }
    batch.audit.extend(current);
}

fn inbound_text(body: &rapport_engine::Body) -> Option<&str> {
    match body {
        rapport_engine::Body::Message { text, .. } | rapport_engine::Body::Comment { text, .. } => {
            Some(text)
        }
        _ => None,
    }
}

fn purpose_name(p: Purpose) -> &'static str {
    match p {
        Purpose::Marketing => "marketing",
        Purpose::Transactional => "transactional",
    }
}

/// The latest event time committed, from the engine-wide state.
fn clock_of(global: &str) -> Option<Millis> {
    serde_json::from_str::<serde_json::Value>(global)
        .ok()?
        .get("clock")?
        .as_i64()
}

/// Commits batches on a thread of their own, one at a time and in order, so the next
/// batch is stepped while the previous one is written and synced.
struct Committer {
    batches: Option<mpsc::SyncSender<Batch>>,
    done: mpsc::Receiver<Result<Option<i64>, StoreError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn start<S: Store + 'static>(mut store: S) -> Self {
        let (batches, todo) = mpsc::sync_channel::<Batch>(1);
        let (report, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                for batch in todo {
                    if report.send(store.commit(batch)).is_err() {
                        break;
                    }
                }
            })
            .ok();
        Committer {
            batches: Some(batches),
            done,
            thread,
        }
    }

    fn send(&mut self, batch: Batch) -> Result<(), DurableError> {
        let gone = || DurableError::State("the store thread stopped".into());
        match (&self.thread, &self.batches) {
            (Some(_), Some(tx)) => tx.send(batch).map_err(|_| gone()),
            _ => Err(gone()),
        }
    }

    /// Waits for the oldest commit in flight, then releases its output.
    fn settle(
        &mut self,
        (out_actions, out_audit): (Vec<u8>, Vec<u8>),
        actions: &mut dyn Write,
        audit: &mut Option<&mut dyn Write>,
    ) -> Result<Option<i64>, DurableError> {
        let last = self
            .done
            .recv()
            .map_err(|_| DurableError::State("the store thread stopped".into()))??;
        actions.write_all(&out_actions)?;
        actions.flush()?;
        if let Some(a) = audit.as_mut() {
            a.write_all(&out_audit)?;
            a.flush()?;
        }
        Ok(last)
    }

    fn finish(mut self) -> Result<(), DurableError> {
        self.batches = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Err(_)) => Err(DurableError::State("the store thread failed".into())),
            _ => Ok(()),
        }
    }
}
