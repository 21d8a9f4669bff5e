//! The one thread that writes the live tables: requests from webhooks, the engine's
//! releases and delivery outcomes are drained together and written in one transaction
//! (group commit), so a burst of webhooks costs one sync to disk, not one each.

use std::path::Path;
use std::sync::mpsc;

use rapport_store::{DeliveryRow, HostAudit, Live, LiveBatch, Mark, StoreError};
use tokio::sync::oneshot;

/// A request to the writer.
pub(crate) enum Request {
    /// Events for the inbox (and audit records); answered with their inbox positions
    /// once on disk.
    Append {
        events: Vec<String>,
        audit: Vec<HostAudit>,
        done: oneshot::Sender<Result<Vec<u64>, String>>,
    },
    /// Actions released by the engine; answered with which are new.
    Release {
        rows: Vec<DeliveryRow>,
        done: oneshot::Sender<Result<Vec<bool>, String>>,
    },
    /// A delivery's new status; answered once on disk, with whether the delivery is
    /// still recorded.
    Mark {
        mark: Mark,
        /// The outcome's `delivery` event, for the inbox when the mark applies.
        event: Option<String>,
        done: oneshot::Sender<Result<bool, String>>,
    },
}

/// How long finished deliveries are kept (milliseconds).
const KEEP_DELIVERIES: i64 = 14 * 86_400_000;

/// Requests drained into one transaction at most.
const GROUP: usize = 4096;

/// Where committed inbox events go next (the engine's feed).
pub(crate) type Committed = mpsc::Sender<crate::feed::Feed>;

/// Starts the writer on `path`; it ends when every sender is dropped.
pub(crate) fn start(
    path: &Path,
    feed: Committed,
    now: fn() -> i64,
) -> Result<(mpsc::Sender<Request>, std::thread::JoinHandle<()>), StoreError> {
    let mut live = Live::open(path)?;
    let (tx, rx) = mpsc::channel::<Request>();
    let thread = std::thread::Builder::new()
        .name("live-writer".into())
        .spawn(move || {
            // Finished deliveries are kept two weeks for status webhooks and reports;
            // older ones are dropped at the start and every hour.
            let mut pruned = std::time::Instant::now();
            let _ = live.prune(now() - KEEP_DELIVERIES);
            while let Ok(first) = rx.recv() {
                if pruned.elapsed() >= std::time::Duration::from_secs(3600) {
                    let _ = live.prune(now() - KEEP_DELIVERIES);
                    pruned = std::time::Instant::now();
                }
                let mut requests = vec![first];
                while requests.len() < GROUP {
                    match rx.try_recv() {
                        Ok(r) => requests.push(r),
                        Err(_) => break,
                    }
                }
                write(&mut live, requests, &feed, now());
            }
        })
        .map_err(|e| StoreError::Damaged(format!("cannot start the writer thread: {e}")))?;
    Ok((tx, thread))
}

fn write(live: &mut Live, requests: Vec<Request>, feed: &Committed, now: i64) {
    let mut batch = LiveBatch::default();
    for r in &requests {
        match r {
            Request::Append { events, audit, .. } => {
                batch.events.extend(events.iter().cloned());
                batch.audit.extend(audit.iter().cloned());
            }
            Request::Release { rows, .. } => batch.released.extend(rows.iter().cloned()),
            Request::Mark { mark, event, .. } => batch.marks.push((mark.clone(), event.clone())),
        }
    }
    let result = live.write(&batch, now).map_err(|e| e.to_string());
    if let Ok(w) = &result {
        // In inbox order: the outcomes' events were written after the appended ones.
        for (seq, line) in w.seqs.iter().zip(&batch.events) {
            let _ = feed.send(crate::feed::Feed::Event(*seq, line.clone()));
        }
        for (seq, (_, event)) in w.outcome_seqs.iter().zip(&batch.marks) {
            if let (Some(seq), Some(line)) = (seq, event) {
                let _ = feed.send(crate::feed::Feed::Event(*seq, line.clone()));
            }
        }
    }
    let (mut seqs, mut new, mut marked) = match &result {
        Ok(w) => (
            w.seqs.clone().into_iter(),
            w.new.clone().into_iter(),
            w.marked.clone().into_iter(),
        ),
        Err(_) => (
            Vec::new().into_iter(),
            Vec::new().into_iter(),
            Vec::new().into_iter(),
        ),
    };
    for r in requests {
        match r {
            Request::Append { events, done, .. } => {
                let _ = done.send(match &result {
                    Ok(_) => Ok(seqs.by_ref().take(events.len()).collect()),
                    Err(e) => Err(e.clone()),
                });
            }
            Request::Release { rows, done } => {
                let _ = done.send(match &result {
                    Ok(_) => Ok(new.by_ref().take(rows.len()).collect()),
                    Err(e) => Err(e.clone()),
                });
            }
            Request::Mark { done, .. } => {
                let _ = done.send(match &result {
                    Ok(_) => Ok(marked.next().unwrap_or(false)),
                    Err(e) => Err(e.clone()),
                });
            }
        }
    }
}
