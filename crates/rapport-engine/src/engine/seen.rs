//! The event ids of the dedupe window: which (contact, id) pairs were processed, kept
//! compact (16 bytes an id) and hashed with a fixed algorithm, since a store keeps them.

use std::collections::HashMap;

use crate::event::{Event, Millis};

/// A 96-bit hash of an event's contact and id: ids are unique per contact, so the same id
/// from two contacts is two events (one contact's id must never drop another's STOP).
/// The hash is MurmurHash3 x64_128 (seed 0) of the contact's UTF-8 bytes, the byte 0xFF
/// (which UTF-8 never uses) and the id's bytes, its low 96 bits kept; an event with no
/// contact (a tick, an operator event) hashes 0xFE and the id. The algorithm is fixed
/// because a durable store keeps these keys across versions of the program. Held as three
/// 32-bit words, so a key and the time beside it take 16 bytes (a `u64` field would align
/// the pair to 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdKey([u32; 3]);

impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The first 64 bits are the bucket hash; the rest only tell keys apart on equality.
        state.write_u64(self.first());
    }
}

impl IdKey {
    pub(crate) fn of(contact: Option<&str>, id: &str) -> Self {
        let (contact, mark) = match contact {
            Some(c) => (c.as_bytes(), 0xFF),
            None => (&[][..], 0xFE),
        };
        // The bytes in one run (on the stack when they fit), which the hash reads in
        // 16-byte blocks far faster than through a chain of readers.
        let len = contact.len() + 1 + id.len();
        let mut stack = [0u8; 128];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        buf[..contact.len()].copy_from_slice(contact);
        buf[contact.len()] = mark;
        buf[contact.len() + 1..].copy_from_slice(id.as_bytes());
        let mut bytes: &[u8] = buf;
        // Reading from memory cannot fail.
        let h = murmur3::murmur3_x64_128(&mut bytes, 0).unwrap_or(0);
        IdKey::from_parts(h as u64, (h >> 64) as u32)
    }

    pub(crate) fn from_parts(first: u64, second: u32) -> Self {
        IdKey([first as u32, (first >> 32) as u32, second])
    }

    /// The first pass's 64 bits.
    pub(crate) fn first(&self) -> u64 {
        u64::from(self.0[0]) | u64::from(self.0[1]) << 32
    }

    /// 32 bits of the second pass.
    pub(crate) fn second(&self) -> u32 {
        self.0[2]
    }
}

/// The ids of a dedupe window, spread over many small tables: a table that grows holds its
/// old and new buckets at once, so small tables keep that moment small.
///
/// A table doubles when it is seven-eighths full, so one table is between 44% and 88%
/// full. Tables given equal shares of the ids would all double together, and the memory
/// per id would swing by two with the number of ids. Instead table `i` gets a share
/// proportional to 2^(i/64): their fill levels spread evenly over one doubling, and the
/// memory per id stays near its average (about 63% full) whatever the number of ids.
/// The share is chosen by middle bits of the key, which the tables use for neither their
/// bucket nor their tag.
pub(crate) struct SeenIds {
    tables: Vec<HashMap<IdKey, u32, BuildIdHasher>>,
    /// `bounds[i]`: the lowest 32-bit draw that goes to table `i + 1`.
    bounds: [u32; SEEN_TABLES - 1],
    len: usize,
}

const SEEN_TABLES: usize = 64;

impl Default for SeenIds {
    fn default() -> Self {
        // Table i takes the draws u with 64 * log2(1 + u / 2^32) in [i, i + 1).
        let bounds = std::array::from_fn(|i| {
            let share = 2f64.powf((i + 1) as f64 / SEEN_TABLES as f64) - 1.0;
            (share * 4_294_967_296.0) as u32
        });
        SeenIds {
            tables: (0..SEEN_TABLES).map(|_| HashMap::default()).collect(),
            bounds,
            len: 0,
        }
    }
}

impl SeenIds {
    fn table(&self, key: &IdKey) -> usize {
        // Bits 24 to 55: below the tag's top 7 bits, above any bucket index in use.
        let draw = (key.first() >> 24) as u32;
        self.bounds.partition_point(|&b| b <= draw)
    }

    pub(crate) fn contains(&self, key: &IdKey) -> bool {
        self.tables[self.table(key)].contains_key(key)
    }

    /// Adds `key` unless it is there; false when it was (one probe for both).
    pub(crate) fn insert_new(&mut self, key: IdKey, seconds: u32) -> bool {
        let t = self.table(&key);
        match self.tables[t].entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seconds);
                self.len += 1;
                true
            }
        }
    }

    pub(crate) fn insert(&mut self, key: IdKey, seconds: u32) {
        let t = self.table(&key);
        if self.tables[t].insert(key, seconds).is_none() {
            self.len += 1;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keeps the ids whose time passes `keep`.
    pub(crate) fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        for t in &mut self.tables {
            t.retain(|_, at| keep(*at));
        }
        self.len = self.tables.iter().map(HashMap::len).sum();
    }
}

/// The events processed within the dedupe window, by contact and id: an engine keeps one,
/// and so does a host that dedupes before sharding.
#[derive(Default)]
pub struct SeenEvents {
    pub(crate) ids: SeenIds,
    /// Times are held in seconds after this one.
    pub(crate) base: Option<Millis>,
}

impl SeenEvents {
    /// Records the event at `now`; false when its contact and id were already seen.
    /// Ids older than `window` (milliseconds) are forgotten from time to time.
    pub fn first_time(&mut self, event: &Event, now: Millis, window: Millis) -> bool {
        let first = self.insert(IdKey::of(event.contact.as_deref(), &event.id), now);
        if first {
            self.sweep(now, window);
        }
        first
    }

    pub(crate) fn insert(&mut self, key: IdKey, now: Millis) -> bool {
        let base = *self.base.get_or_insert(now);
        self.ids.insert_new(key, seen_seconds(base, now))
    }

    pub(crate) fn sweep(&mut self, now: Millis, window: Millis) {
        // Sweep rarely: the set is bounded by the events of one dedupe window.
        if self.ids.len().is_multiple_of(65_536) {
            let Some(base) = self.base else { return };
            let oldest = seen_seconds(base, now.saturating_sub(window));
            self.ids.retain(|at| at >= oldest);
        }
    }
}

/// Seconds from `base` to `at`, saturating (event time only moves forward from `base`).
pub(crate) fn seen_seconds(base: Millis, at: Millis) -> u32 {
    u32::try_from(at.saturating_sub(base).max(0) / 1000).unwrap_or(u32::MAX)
}

/// An [`IdKey`] is already a uniform hash: the map uses its first half as is.
#[derive(Default, Clone, Copy)]
pub(crate) struct BuildIdHasher;

#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::BuildHasher for BuildIdHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 writes, which `IdKey` never makes; fold them in anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_event_id_takes_16_bytes() {
        // The dedupe window holds every id it saw; padding here multiplies by all of them.
        assert_eq!(std::mem::size_of::<(IdKey, u32)>(), 16);
    }

    #[test]
    fn the_dedupe_window_memory_per_id_stays_steady() {
        // With equal shares every table doubles at once and the fill swings between 44%
        // and 88%; with spread shares it stays near 63% at any number of ids.
        let mut seen = SeenIds::default();
        let mut n = 0u32;
        let mut checkpoint = 3_000f64;
        while n < 48_000 {
            assert!(seen.insert_new(IdKey::of(Some("c"), &format!("e{n}")), 0));
            n += 1;
            if f64::from(n) >= checkpoint {
                checkpoint *= 1.07;
                let buckets: usize = seen.tables.iter().map(|t| t.capacity() * 8 / 7).sum();
                let fill = f64::from(n) / buckets as f64;
                assert!(
                    (0.52..0.78).contains(&fill),
                    "{n} ids fill {fill:.2} of the buckets"
                );
            }
        }
        assert_eq!(seen.len(), n as usize);
        assert!(!seen.insert_new(IdKey::of(Some("c"), "e0"), 0));
        assert!(seen.contains(&IdKey::of(Some("c"), "e47999")));
        assert!(!seen.contains(&IdKey::of(Some("c"), "e48000")));
    }

    #[test]
    fn an_id_key_keeps_both_hashes() {
        let key = IdKey::from_parts(0x0123_4567_89ab_cdef, 0xfeed_beef);
        assert_eq!(key.first(), 0x0123_4567_89ab_cdef);
        assert_eq!(key.second(), 0xfeed_beef);
        assert_eq!(IdKey::of(Some("c"), "e1"), IdKey::of(Some("c"), "e1"));
        assert_ne!(IdKey::of(Some("c"), "e1"), IdKey::of(Some("c"), "e2"));
        // The same id from another contact, or with no contact, is another event; the
        // separator keeps `ab`+`c` apart from `a`+`bc`.
        assert_ne!(IdKey::of(Some("c"), "e1"), IdKey::of(Some("d"), "e1"));
        assert_ne!(IdKey::of(Some("c"), "e1"), IdKey::of(None, "e1"));
        assert_ne!(IdKey::of(Some("ab"), "c"), IdKey::of(Some("a"), "bc"));
        // The algorithm is fixed (stores keep these keys): MurmurHash3 x64_128, seed 0.
        let key = IdKey::of(Some("c1"), "m1");
        let mut bytes: &[u8] = b"c1\xffm1";
        let h = murmur3::murmur3_x64_128(&mut bytes, 0).unwrap_or(0);
        assert_eq!((key.first(), key.second()), (h as u64, (h >> 64) as u32));
    }
}
