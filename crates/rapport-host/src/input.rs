//! What a host accepts from its input: lines of at most a set length (read without
//! holding a longer one in memory), and events no further ahead of the clock than a set
//! jump, but for a STOP, which is never dropped for its time.

use rapport_engine::{Event, Millis, Rejected};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The default longest event line: 1 MiB. A longer line is skipped without being held in
/// memory and rejected with its line number.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// One line as read by [`read_line_capped`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LineRead {
    /// Bytes consumed from the input, the line break included; 0 at the end.
    pub(crate) consumed: usize,
    /// The line was longer than the cap: the buffer is empty and the line was skipped.
    pub(crate) too_long: bool,
    /// The line ended with a line break (else it is the input's last, unfinished line).
    pub(crate) complete: bool,
}

/// Takes what `available` holds of the current line into `buf` (at most `max` bytes of
/// the line): returns the bytes to consume and whether the line ended.
fn take_line_part(
    available: &[u8],
    buf: &mut Vec<u8>,
    max: usize,
    read: &mut LineRead,
) -> (usize, bool) {
    let (part, ended) = match memchr::memchr(b'\n', available) {
        Some(i) => (&available[..=i], true),
        None => (available, false),
    };
    // The line break (`\n` or `\r\n`) does not count against the cap.
    if !read.too_long && buf.len() + part.len() > max.saturating_add(2) {
        read.too_long = true;
        buf.clear();
    }
    if !read.too_long {
        buf.extend_from_slice(part);
    }
    read.consumed += part.len();
    read.complete = ended;
    (part.len(), ended)
}

/// Reads one line into `buf` (cleared first), holding at most `max` bytes of it.
pub(crate) fn read_line_capped<R: std::io::BufRead + ?Sized>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut read = LineRead::default();
    loop {
        let available = match input.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read);
        }
        let (n, ended) = take_line_part(available, buf, max, &mut read);
        input.consume(n);
        if ended {
            return Ok(read);
        }
    }
}

/// [`read_line_capped`] on an async input.
pub(crate) async fn read_line_capped_async<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut read = LineRead::default();
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(read);
        }
        let (n, ended) = take_line_part(available, buf, max, &mut read);
        input.consume(n);
        if ended {
            return Ok(read);
        }
    }
}

/// The reason a line longer than `max` bytes is rejected.
pub(crate) fn too_long(max: usize) -> Rejected {
    Rejected {
        reason: format!(
            "the line is longer than {} KiB: an event is a line of JSON well under that; \
             raise --max-line if this one is right",
            max / 1024
        ),
        id: None,
        contact: None,
    }
}

/// The default maximum clock jump of a file run: 31 days.
pub const DEFAULT_MAX_CLOCK_JUMP: Millis = 31 * 86_400_000;

/// Whether an event may move the clock to its `at`: not more than `max_jump` ahead of the
/// stream's clock (the latest event time so far, `clock`), nor ahead of the wall clock
/// `wall` by as much. The first bound keeps one bad timestamp in a stream from firing
/// every contact's timers at once; the second catches a bad first event and keeps a run
/// of events from walking the clock forward a step at a time. `Err` says why.
pub fn check_clock_jump(
    at: Millis,
    clock: Option<Millis>,
    wall: Millis,
    max_jump: Millis,
) -> Result<(), String> {
    let ahead = |of: &str, reference: Millis| {
        format!(
            "`at` {} is more than {} ahead of {of} ({}): rejected so that one bad \
             timestamp cannot fire every contact's timers; fix the time, or raise \
             --max-clock-jump if the stream really jumps ahead",
            rapport_engine::format_time(at),
            describe_span(max_jump),
            rapport_engine::format_time(reference),
        )
    };
    if let Some(c) = clock.filter(|c| at > c.saturating_add(max_jump)) {
        return Err(ahead("the clock", c));
    }
    if at > wall.saturating_add(max_jump) {
        return Err(ahead("the wall clock", wall));
    }
    Ok(())
}

/// The wall clock as a host sees it: the time the caller gave at the start, moved on by
/// the time elapsed since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    started: Millis,
    at: std::time::Instant,
}

impl WallClock {
    pub(crate) fn new(started: Millis) -> Self {
        WallClock {
            started,
            at: std::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Millis {
        let elapsed = Millis::try_from(self.at.elapsed().as_millis()).unwrap_or(Millis::MAX);
        self.started.saturating_add(elapsed)
    }
}

/// Holds an event to the clock-jump rule, in place (an event is large, and the reader is
/// the run's narrowest path). One too far ahead is rejected, except an opt-out: a STOP
/// with a bad timestamp is applied at the clock (with a note on stderr), since dropping
/// it would keep messaging someone who asked to stop.
pub(crate) fn admit(
    event: &mut Event,
    clock: Option<Millis>,
    wall: &WallClock,
    max_jump: Millis,
    settings: &rapport_bundle::Settings,
    line: u64,
) -> Result<(), Rejected> {
    // The wall clock is read only for an event ahead of where it started.
    let beyond_start = event.at > wall.started.saturating_add(max_jump);
    let beyond_clock = clock.is_some_and(|c| event.at > c.saturating_add(max_jump));
    if !beyond_start && !beyond_clock {
        return Ok(());
    }
    let now = wall.now();
    let Err(reason) = check_clock_jump(event.at, clock, now, max_jump) else {
        return Ok(());
    };
    if let rapport_engine::Body::Message { text, .. } = &event.body {
        let keyword = rapport_bundle::normalize_opt_keyword(text);
        if settings.opt_out.keywords.contains(&keyword) {
            eprintln!(
                "line {line}: {reason}; it is an opt-out, so it is applied at the clock instead"
            );
            event.at = clock.unwrap_or(now).min(now);
            return Ok(());
        }
    }
    Err(Rejected {
        reason,
        id: Some(event.id.clone()),
        contact: event.contact.clone(),
    })
}

/// `31d`, `5m`, `90s`: a span as a person writes it.
fn describe_span(ms: Millis) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
