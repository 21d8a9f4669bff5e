//! The engine's side of the inbox: events in inbox order (first those committed before
//! the engine started, read from the table, then each one the writer commits), and a
//! wall-clock tick every `tick`.

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rapport_host::{LiveInput, Next};
use rapport_store::LiveReader;

/// What reaches the feed.
pub(crate) enum Feed {
    /// An event committed to the inbox at this position.
    Event(u64, String),
    /// Stop after what was given.
    Stop,
}

pub(crate) struct LiveFeed {
    /// Shared: the feed is made again after a deploy restarts the engine.
    rx: Arc<Mutex<Receiver<Feed>>>,
    reader: LiveReader,
    /// The last inbox position given to the engine.
    last: u64,
    /// Events read from the table, waiting to be given.
    backlog: VecDeque<(u64, String)>,
    /// One message taken from the channel to see whether it was empty.
    peeked: Option<Feed>,
    tick: Duration,
    next_tick: Instant,
    stopping: bool,
    /// The table is read once before the channel (events committed before the start).
    fresh: bool,
    /// The wall clock in milliseconds.
    now: fn() -> i64,
}

impl LiveFeed {
    pub(crate) fn new(
        rx: Arc<Mutex<Receiver<Feed>>>,
        reader: LiveReader,
        tick: Duration,
        now: fn() -> i64,
    ) -> Self {
        LiveFeed {
            rx,
            reader,
            last: 0,
            backlog: VecDeque::new(),
            peeked: None,
            tick,
            next_tick: Instant::now(),
            stopping: false,
            fresh: false,
            now,
        }
    }

    /// Reads the table after `last` into the backlog (up to `upto`, when given).
    fn catch_up(&mut self, upto: Option<u64>) -> io::Result<()> {
        loop {
            let rows = self
                .reader
                .inbox_after(self.last_queued(), 1024)
                .map_err(io::Error::other)?;
            let n = rows.len();
            for (seq, line) in rows {
                if upto.is_some_and(|u| seq >= u) {
                    return Ok(());
                }
                self.backlog.push_back((seq, line));
            }
            if n < 1024 {
                return Ok(());
            }
        }
    }

    fn last_queued(&self) -> u64 {
        self.backlog.back().map_or(self.last, |b| b.0)
    }

    fn give(&mut self, seq: u64, line: String, buf: &mut Vec<u8>) -> Next {
        self.last = seq;
        buf.clear();
        buf.extend_from_slice(line.as_bytes());
        Next::Line(seq)
    }
}

impl LiveInput for LiveFeed {
    fn start_after(&mut self, position: u64) {
        self.last = position;
        self.fresh = true;
    }

    fn next(&mut self, buf: &mut Vec<u8>) -> io::Result<Next> {
        if std::mem::take(&mut self.fresh) {
            self.catch_up(None)?;
        }
        loop {
            if let Some((seq, line)) = self.backlog.pop_front() {
                return Ok(self.give(seq, line, buf));
            }
            if self.stopping {
                return Ok(Next::End);
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.next_tick = now + self.tick;
                return Ok(Next::Tick((self.now)()));
            }
            let item = match self.peeked.take() {
                Some(i) => i,
                None => match self
                    .rx
                    .lock()
                    .map_err(|_| io::Error::other("the feed's lock was poisoned"))?
                    .recv_timeout(self.next_tick - now)
                {
                    Ok(i) => i,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => Feed::Stop,
                },
            };
            match item {
                Feed::Stop => self.stopping = true,
                Feed::Event(seq, _) if seq <= self.last => {}
                Feed::Event(seq, line) if seq == self.last + 1 => {
                    return Ok(self.give(seq, line, buf));
                }
                // A gap: events committed before the engine started (or before this
                // one was sent) come from the table first, in order.
                Feed::Event(seq, line) => {
                    self.catch_up(Some(seq))?;
                    self.backlog.push_back((seq, line));
                }
            }
        }
    }

    fn idle(&mut self) -> bool {
        if self.fresh || !self.backlog.is_empty() || self.peeked.is_some() {
            return false;
        }
        let Ok(rx) = self.rx.lock() else {
            return true;
        };
        match rx.try_recv() {
            Ok(item) => {
                self.peeked = Some(item);
                false
            }
            Err(_) => true,
        }
    }
}
