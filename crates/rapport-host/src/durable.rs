//! The durable host (docs/runtime.md): one engine over a [`Store`], events read in
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

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use rapport_bundle::{Bundle, Purpose};
use rapport_engine::{decode, ActionKind, Engine, Millis, Output};
use rapport_store::{
    AuditEntry, Batch, Checkpoint, OutboxEntry, Store, StoreError, TranscriptEntry,
};

use crate::Counts;

/// Where released lines go. `sync` makes what was written durable: it is called before
/// the outbox forgets the lines (a file syncs to disk; a pipe has nothing to do).
pub trait Sink: Write {
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes at the start of an events file that identify it (see `fingerprint`).
const HEAD: u64 = 64 * 1024;

/// A fingerprint of the events file read up to `offset`: a hash of its first bytes (at
/// most `HEAD`, never past `offset`), so a restart notices another file at the same path.
fn fingerprint(head: &[u8], offset: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let n = usize::try_from(offset).map_or(head.len(), |o| o.min(head.len()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    head[..n].hash(&mut h);
    h.finish()
}

/// The `contact` of a line that failed to validate, read leniently (a string, or a
/// number written as one).
fn lenient_contact(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    match v.get("contact")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Where events come from.
pub enum Input {
    /// A file: the store remembers how far it was read, and a restart on the same file
    /// carries on from there.
    File(PathBuf),
    /// A stream (stdin): a restart reads what the upstream sends again, and event ids
    /// already processed are ignored.
    Stream(Box<dyn Read + Send>),
    /// A live host's inbox and wall clock: each commit records the last inbox entry it
    /// holds, and a restart carries on after it.
    Live(Box<dyn LiveInput>),
}

/// What a live host gives the durable loop next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// An event line (written into the buffer) and its place in the inbox.
    Line(u64),
    /// The wall clock reached this time: fire what is due.
    Tick(Millis),
    /// Stop: everything given so far is committed and released.
    End,
}

/// A live host's source of events (see [`Input::Live`]).
pub trait LiveInput: Send {
    /// Called once before the first `next`: the last inbox entry already processed.
    fn start_after(&mut self, position: u64);
    /// Waits for the next line (into `buf`, without a line break), tick or the end.
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Next>;
    /// Whether nothing more is ready now (then the loop commits and releases at once).
    fn idle(&mut self) -> bool;
}

/// Where the loop reads lines.
enum Reader {
    Buffered(BufReader<Box<dyn Read + Send>>),
    Live(Box<dyn LiveInput>),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct DurableOptions {
    /// Events per commit at most (a commit also happens whenever the input has nothing
    /// more ready, so a live stream is never held back).
    pub batch: usize,
    /// Contacts kept in memory between batches; the rest are loaded from the store.
    pub cache: usize,
    /// Events more than this far ahead of the clock are rejected (milliseconds).
    pub max_clock_jump: Millis,
    /// Lines longer than this many bytes are rejected.
    pub max_line: usize,
    /// The wall clock when the run started; the host moves it on by the time elapsed. No
    /// event may be `max_clock_jump` ahead of it.
    pub started: Millis,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions {
            batch: 1024,
            cache: 100_000,
            max_clock_jump: crate::DEFAULT_MAX_CLOCK_JUMP,
            max_line: crate::DEFAULT_MAX_LINE,
            // No wall clock known: only the stream clock bounds a jump.
            started: Millis::MAX / 4,
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
    actions: &mut dyn Sink,
    mut audit: Option<&mut dyn Sink>,
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

    // Restore what was committed; a store of another bundle is refused before
    // anything in it changes.
    let resume = store.resume(window)?;
    if let Some(g) = &resume.global {
        engine.restore_global(g).map_err(DurableError::State)?;
    }
    report.purged = store.purge(&retention)?.transcript;
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
    actions.sync()?;
    if let Some(a) = audit.as_mut() {
        for line in &resume.outbox_audit {
            a.write_all(line.as_bytes())?;
            a.write_all(b"\n")?;
        }
        a.flush()?;
        a.sync()?;
    }

    // Open the input, carrying on where the last commit left it.
    let mut head = Vec::new();
    let (mut reader, source, offset, mut line_no): (Reader, _, _, _) = match input {
        Input::Live(mut live) => {
            let after = resume
                .checkpoint
                .as_ref()
                .filter(|c| c.source == rapport_store::INBOX_SOURCE)
                .map_or(0, |c| c.offset);
            live.start_after(after);
            (
                Reader::Live(live),
                Some(rapport_store::INBOX_SOURCE.to_string()),
                after,
                after,
            )
        }
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
            // The first bytes tell this file from another one at the same path.
            (&mut file)
                .take(HEAD)
                .read_to_end(&mut head)
                .map_err(input_err)?;
            let (mut offset, mut line) = (0, 0);
            if let Some(c) = resume.checkpoint.as_ref().filter(|c| c.source == source) {
                let mut before = [0u8; 1];
                let ends_a_line = c.offset == 0
                    || (file.seek(SeekFrom::Start(c.offset - 1)).is_ok()
                        && file.read_exact(&mut before).is_ok()
                        && before[0] == b'\n');
                if c.offset <= len && ends_a_line && fingerprint(&head, c.offset) == c.fingerprint {
                    offset = c.offset;
                    line = c.line;
                    report.resumed_after_line = Some(c.line);
                } else {
                    eprintln!(
                            "note: `{}` is not the file an earlier run read up to line {} (shorter, or other content); reading it from the start (event ids already processed are skipped)",
                            path.display(),
                            c.line
                        );
                }
            }
            file.seek(SeekFrom::Start(offset)).map_err(input_err)?;
            (
                Reader::Buffered(BufReader::with_capacity(
                    1 << 16,
                    Box::new(file) as Box<dyn Read + Send>,
                )),
                Some(source),
                offset,
                line,
            )
        }
        Input::Stream(r) => (
            Reader::Buffered(BufReader::with_capacity(1 << 16, r)),
            None,
            0,
            0,
        ),
    };
    let live_input = matches!(reader, Reader::Live(_));

    let wall = crate::WallClock::new(options.started);
    // The latest event time of this run: jumps are measured within a run, so a store
    // that sat idle for months takes today's events (the wall clock bounds the first).
    // A live host's stream clock is the wall clock from the start (as every tick makes
    // it), so events from before the start arriving ahead of the first tick are not taken
    // for a jump from the oldest of them.
    let mut run_clock: Option<Millis> = live_input.then(|| wall.now());
    let mut run = Pipeline {
        committer: Committer::start(store),
        inflight: None,
        released_up_to,
        pending: Pending::default(),
        source,
        head,
        window,
        cache: options.cache,
        audit_in_outbox: audit.is_some(),
    };
    // Release at once whenever nothing more is ready (a stream or a live host), rather
    // than only at full batches (a file).
    let live = run.source.is_none() || live_input;
    // The input read up to the last whole line: (byte offset, line number).
    let mut pos = (offset, line_no);
    let mut buf = Vec::with_capacity(1024);
    let mut lines = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            report.counts.interrupted = true;
            break;
        }
        let before = pos;
        let (read, after) = match &mut reader {
            Reader::Buffered(r) => {
                let read = crate::read_line_capped(r, &mut buf, options.max_line)?;
                if read.consumed == 0 {
                    break;
                }
                line_no += 1;
                // The input position only moves past whole lines: a last line with no
                // newline (a writer still appending?) is processed, and read again after
                // a restart.
                let after = if read.complete {
                    (pos.0 + read.consumed as u64, line_no)
                } else {
                    before
                };
                (read, after)
            }
            Reader::Live(l) => match l.next(&mut buf)? {
                Next::End => break,
                Next::Tick(at) => {
                    // The wall clock is the stream's clock too: a quiet week does not make
                    // the next message a jump.
                    run_clock = Some(run_clock.map_or(at, |c| c.max(at)));
                    // Due timers first, in slices as before an event, then the guards.
                    let until = engine.clock().map_or(at, |c| c.max(at));
                    run.fire_due(
                        &mut engine,
                        until,
                        before,
                        &purpose,
                        actions,
                        &mut audit,
                        &mut report,
                    )?;
                    let o = engine.wall_tick(until);
                    run.pending.output(&o, &purpose, &mut report.counts);
                    if l.idle() {
                        run.commit(&mut engine, before, actions, &mut audit, &mut report)?;
                        run.settle(actions, &mut audit)?;
                        lines = 0;
                    }
                    continue;
                }
                Next::Line(seq) => {
                    line_no = seq;
                    let read = crate::input::LineRead {
                        consumed: buf.len(),
                        complete: true,
                        too_long: buf.len() > options.max_line,
                    };
                    (read, (seq, seq))
                }
            },
        };
        lines += 1;
        let text = rapport_engine::line_text(&buf);
        let line: &str = &text;
        if read.too_long || !line.trim().is_empty() {
            report.counts.events += 1;
            let decoded = if read.too_long {
                Err(crate::too_long(options.max_line))
            } else {
                decode(line, &engine.bundle().settings)
            };
            let mut decoded = decoded;
            if let Ok(event) = &mut decoded {
                let settings = &engine.bundle().settings;
                let jump = options.max_clock_jump;
                if let Err(r) = crate::admit(event, run_clock, &wall, jump, settings, line_no) {
                    decoded = Err(r);
                }
            }
            match decoded {
                Err(rejected) => {
                    report.counts.rejected += 1;
                    eprintln!("line {line_no}: rejected: {}", rejected.reason);
                    // The contact, even of a line that failed on it (a number for a
                    // string), so `forget` finds the record.
                    let contact = rejected.contact.or_else(|| lenient_contact(line));
                    let record = serde_json::json!({
                        "kind": "rejected", "actor": "system", "line": line_no,
                        "id": rejected.id, "contact": contact, "reason": rejected.reason,
                    })
                    .to_string();
                    run.pending
                        .audit_line(engine.clock().unwrap_or(0), contact, record);
                }
                Ok(event) if engine.is_duplicate(&event) => {
                    // A duplicate changes nothing, not even the clock: no timer fires
                    // first. The step only counts and audits it.
                    let o = engine.step(&event);
                    report.counts.duplicates += u64::from(o.duplicates);
                    run.pending.output(&o, &purpose, &mut report.counts);
                }
                Ok(event) => {
                    run_clock = Some(run_clock.map_or(event.at, |c| c.max(event.at)));
                    // Timers due before the event fire first (in slices).
                    let until = engine.clock().map_or(event.at, |c| c.max(event.at));
                    run.fire_due(
                        &mut engine,
                        until,
                        before,
                        &purpose,
                        actions,
                        &mut audit,
                        &mut report,
                    )?;
                    let o = engine.step(&event);
                    if let (Some(contact), Some(text)) =
                        (event.contact.as_ref(), inbound_text(&event.body))
                    {
                        run.pending.batch.transcript.push(TranscriptEntry {
                            at: event.at,
                            contact: contact.clone(),
                            direction: "in",
                            channel: event.channel.clone(),
                            purpose: None,
                            text: text.to_string(),
                        });
                    }
                    run.pending.output(&o, &purpose, &mut report.counts);
                }
            }
        }
        pos = after;
        // A full batch, or a stream with nothing more ready: commit, and on a stream
        // release at once too (never hold a live stream's replies back).
        let idle = live
            && match &mut reader {
                Reader::Buffered(r) => r.buffer().is_empty(),
                Reader::Live(l) => l.idle(),
            };
        if lines >= options.batch || idle {
            run.commit(&mut engine, after, actions, &mut audit, &mut report)?;
            lines = 0;
            if idle {
                run.settle(actions, &mut audit)?;
            }
        }
    }
    let end = pos;
    run.commit(&mut engine, end, actions, &mut audit, &mut report)?;
    run.settle(actions, &mut audit)?;
    if run.released_up_to.is_some() {
        // Drop the last released actions from the outbox.
        run.commit(&mut engine, end, actions, &mut audit, &mut report)?;
        run.settle(actions, &mut audit)?;
    }
    let committer = run.committer;
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

/// Timers fired at most per slice before an event (see the loop in `run_durable`); no
/// more than the contacts the cache holds.
const TIMER_SLICE: usize = 4096;

/// Flow, version, hour and kind of a count of activity. A kind such as `sent` is
/// borrowed: counting allocates nothing per action.
type ActivityKey = (Arc<str>, Arc<str>, i64, Cow<'static, str>);

/// What the steps since the last commit produced.
#[derive(Default)]
struct Pending {
    batch: Batch,
    actions: Vec<u8>,
    audit: Vec<u8>,
    /// Sends and moderation actions by flow version, hour and kind, for the report.
    activity: HashMap<ActivityKey, u64>,
}

impl Pending {
    fn audit_line(&mut self, at: Millis, contact: Option<String>, line: String) {
        self.audit.extend_from_slice(line.as_bytes());
        self.audit.push(b'\n');
        self.batch.audit.push(AuditEntry {
            at,
            contact,
            records: line,
        });
    }

    /// Adds a step's actions (outbox, transcript, sink) and audit records.
    fn output(&mut self, o: &Output, purpose: &HashMap<String, Purpose>, counts: &mut Counts) {
        for a in &o.actions {
            counts.action(a);
            let kind = match a.kind {
                ActionKind::Send => Some("sent"),
                ActionKind::Reply => Some("reply"),
                ActionKind::Hide => Some("hide"),
                ActionKind::Review => Some("review"),
                _ => None,
            };
            if let (ActionKind::Hide, Some(comment), Some(flow), Some(version)) =
                (a.kind, &a.comment, &a.flow, &a.version)
            {
                self.batch.hidden.push(rapport_store::Hidden {
                    comment: comment.clone(),
                    contact: a.contact.clone(),
                    flow: flow.to_string(),
                    version: version.to_string(),
                    at: a.at,
                });
            }
            if let (Some(kind), Some(flow), Some(version)) = (kind, &a.flow, &a.version) {
                let key = (
                    Arc::clone(flow),
                    Arc::clone(version),
                    rapport_store::hour_of(a.at),
                    Cow::Borrowed(kind),
                );
                *self.activity.entry(key).or_default() += 1;
            }
            let Ok(line) = serde_json::to_string(a) else {
                continue;
            };
            self.actions.extend_from_slice(line.as_bytes());
            self.actions.push(b'\n');
            if let (Some(contact), Some(text), ActionKind::Send | ActionKind::Reply) =
                (a.contact.as_ref(), a.text.as_ref(), a.kind)
            {
                self.batch.transcript.push(TranscriptEntry {
                    at: a.at,
                    contact: contact.clone(),
                    direction: "out",
                    channel: a.channel.as_deref().map(str::to_string),
                    purpose: a
                        .flow
                        .as_deref()
                        .and_then(|f| purpose.get(f))
                        .map(|p| purpose_name(*p).to_string()),
                    text: text.clone(),
                });
            }
            self.batch.outbox.push(OutboxEntry {
                contact: a.contact.clone(),
                action_id: a.id.clone(),
                line,
            });
        }
        // One stored entry per contact for the records of this step (a step mostly
        // concerns one contact).
        let mut current: Option<AuditEntry> = None;
        for a in &o.audit {
            if let ("restored", Some(comment)) = (a.kind, &a.detail) {
                self.batch.restored.push((comment.clone(), a.at));
            }
            if let ("suppressed", Some(flow), Some(version)) = (a.kind, &a.flow, &a.version) {
                let key = (
                    Arc::from(flow.as_str()),
                    Arc::from(version.as_str()),
                    rapport_store::hour_of(a.at),
                    Cow::Owned(format!(
                        "suppressed:{}",
                        a.reason.as_deref().unwrap_or("unknown")
                    )),
                );
                *self.activity.entry(key).or_default() += 1;
            }
            let Ok(line) = serde_json::to_string(a) else {
                continue;
            };
            self.audit.extend_from_slice(line.as_bytes());
            self.audit.push(b'\n');
            match current.as_mut() {
                Some(e) if e.contact == a.contact => {
                    e.records.push('\n');
                    e.records.push_str(&line);
                }
                _ => {
                    self.batch.audit.extend(current.take());
                    current = Some(AuditEntry {
                        at: a.at,
                        contact: a.contact.clone(),
                        records: line,
                    });
                }
            }
        }
        self.batch.audit.extend(current);
    }
}

/// The batches on their way: the one being built, the one being committed.
struct Pipeline {
    committer: Committer,
    /// The output of the batch being committed, released when its commit is done.
    inflight: Option<(Vec<u8>, Vec<u8>)>,
    /// Outbox entries released but not yet dropped from the outbox.
    released_up_to: Option<i64>,
    pending: Pending,
    source: Option<String>,
    /// The first bytes of the events file, for the checkpoint's fingerprint.
    head: Vec<u8>,
    window: Millis,
    cache: usize,
    /// An audit file is written: keep its lines in the outbox too.
    audit_in_outbox: bool,
}

impl Pipeline {
    /// Sends what is pending to be committed, with the input read up to `at` (byte
    /// offset, line). The previous batch is released first, once its commit is done.
    fn commit(
        &mut self,
        engine: &mut Engine,
        (offset, line): (u64, u64),
        actions: &mut dyn Sink,
        audit: &mut Option<&mut dyn Sink>,
        report: &mut DurableReport,
    ) -> Result<(), DurableError> {
        if let Some(e) = engine.take_load_error() {
            return Err(DurableError::State(format!(
                "the store is damaged, stopping without committing this batch: {e}"
            )));
        }
        let pending = std::mem::take(&mut self.pending);
        let mut batch = pending.batch;
        batch.activity = pending
            .activity
            .into_iter()
            .map(|((flow, version, hour, kind), n)| rapport_store::Activity {
                flow: flow.to_string(),
                version: version.to_string(),
                hour,
                kind: kind.into_owned(),
                n,
            })
            .collect();
        batch.changes = engine.take_changes().map_err(DurableError::State)?;
        batch.checkpoint = self.source.as_ref().map(|s| Checkpoint {
            source: s.clone(),
            offset,
            line,
            fingerprint: fingerprint(&self.head, offset),
        });
        batch.audit_in_outbox = self.audit_in_outbox;
        if report.commits.is_multiple_of(256) {
            batch.forget_ids_before = engine.clock().map(|c| c.saturating_sub(self.window));
        }
        self.settle(actions, audit)?;
        batch.released_up_to = self.released_up_to.take();
        self.committer.send(batch)?;
        report.commits += 1;
        self.inflight = Some((pending.actions, pending.audit));
        if engine.contacts() > self.cache {
            // Only committed contacts may leave memory.
            self.settle(actions, audit)?;
            engine.evict(self.cache / 2);
        }
        Ok(())
    }

    /// Fires the timers due up to `until`, in slices of at most the cache (and
    /// `TIMER_SLICE`): when one event makes many contacts' timers come due (a tick after a
    /// quiet night), the contacts loaded for them are committed and leave memory between
    /// slices. Such a commit keeps the input position at `before`: a restart reads the
    /// event again, and the timers fired so far are committed.
    #[allow(clippy::too_many_arguments)]
    fn fire_due(
        &mut self,
        engine: &mut Engine,
        until: Millis,
        before: (u64, u64),
        purpose: &HashMap<String, Purpose>,
        actions: &mut dyn Sink,
        audit: &mut Option<&mut dyn Sink>,
        report: &mut DurableReport,
    ) -> Result<(), DurableError> {
        loop {
            let slice = self.cache.clamp(1, TIMER_SLICE);
            let (o, more) = engine.advance_some(until, slice);
            self.pending.output(&o, purpose, &mut report.counts);
            if !more {
                return Ok(());
            }
            if engine.contacts() > self.cache {
                self.commit(engine, before, actions, audit, report)?;
            }
        }
    }

    /// Waits for the batch being committed and releases its output.
    fn settle(
        &mut self,
        actions: &mut dyn Sink,
        audit: &mut Option<&mut dyn Sink>,
    ) -> Result<(), DurableError> {
        if let Some(out) = self.inflight.take() {
            self.released_up_to = self.committer.settle(out, actions, audit)?;
        }
        Ok(())
    }
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
        actions: &mut dyn Sink,
        audit: &mut Option<&mut dyn Sink>,
    ) -> Result<Option<i64>, DurableError> {
        let last = self
            .done
            .recv()
            .map_err(|_| DurableError::State("the store thread stopped".into()))??;
        actions.write_all(&out_actions)?;
        actions.flush()?;
        // Durable before the next commit drops these lines from the outbox.
        actions.sync()?;
        if let Some(a) = audit.as_mut() {
            a.write_all(&out_audit)?;
            a.flush()?;
            a.sync()?;
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
