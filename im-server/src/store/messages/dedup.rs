//! The writer's memory of which (sender, client id) pairs the `dedup` keyspace may hold, so
//! that a new message, which is almost never a retransmission, is stored without looking
//! it up on disk.
//!
//! Two point reads of fjall per message (today's and yesterday's bucket) were a third of the
//! message log's time: the store alone appended 79–81k DMs/s with them and 113–115k/s with
//! this filter instead (BENCHMARKS.md). A lookup here is a keyed hash and one cache line per
//! filter segment. Reading the two buckets at open costs about 0.3 µs an entry (130 ms for
//! 436,000 messages, beside 2.2 s of fjall's own journal replay:
//! `examples/message_log_bench.rs`). The filter may answer "maybe" for a pair it has never seen (about one in a
//! thousand, then the writer reads fjall as before), but it never answers "no" for a pair
//! the keyspace holds in a day it tracks: every entry the writer stages goes in, and at open
//! the buckets of today and yesterday are read in whole.
//!
//! A day's filter grows with its entries (two bytes each, up to twice that while a segment
//! fills). Past [`MAX_PER_DAY`] entries it is dropped and that day is "unknown": every
//! lookup in it reads fjall, which is correct and as fast as before this filter existed.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use fjall::Keyspace;

/// Most entries one day's filter holds; beyond it the day's lookups read fjall. At two to
/// four bytes an entry, the two days the window spans take at most about 64 MiB, which only
/// a server storing over eight million messages with client ids a day reaches.
pub(super) const MAX_PER_DAY: usize = 1 << 23;

/// Entries the first segment of a day holds; each further segment holds twice the last.
const FIRST_SEGMENT: usize = 1 << 16;

/// Filter bits per entry: 16 gives about one false "maybe" in a thousand lookups.
const BITS_PER_ENTRY: usize = 16;

/// What the filter knows of the dedup keyspace's entries, per UTC day.
pub(super) struct DedupFilter {
    hasher: RandomState,
    /// Days before this are not tracked: they may hold anything.
    tracked_from: u32,
    /// [`MAX_PER_DAY`], smaller in tests.
    max_per_day: usize,
    /// The tracked days that have entries; a tracked day not listed has none.
    days: Vec<(u32, Day)>,
}

enum Day {
    Known(Filter),
    /// Grew past [`MAX_PER_DAY`]: may hold anything.
    Unknown,
}

impl DedupFilter {
    /// Reads the buckets of `today` and the day before, the only ones the dedup window can
    /// reach from now on (the writer's clock never goes back). Blocking.
    pub fn load(dedup: &Keyspace, today: u32) -> fjall::Result<DedupFilter> {
        let mut filter = DedupFilter::empty(today.saturating_sub(1), MAX_PER_DAY);
        for day in filter.tracked_from..=today {
            for guard in dedup.prefix(day.to_be_bytes()) {
                let key = guard.key()?;
                let Some(pair) = key.get(4..) else { continue };
                let h = filter.hash_pair(pair);
                if !filter.insert(day, h) {
                    break;
                }
            }
        }
        Ok(filter)
    }

    /// A filter that tracks every day from `tracked_from` on and has seen nothing.
    fn empty(tracked_from: u32, max_per_day: usize) -> DedupFilter {
        DedupFilter {
            hasher: RandomState::new(),
            tracked_from,
            max_per_day,
            days: Vec::new(),
        }
    }

    /// The hash of a (sender, client id) pair. Keyed per process, so a client cannot choose
    /// ids that collide on purpose (a collision would only cost a disk read anyway).
    pub fn hash(&self, from: &str, client_id: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        // The bytes of a dedup key after its day: from, 0x00, client id.
        h.write(from.as_bytes());
        h.write(&[0]);
        h.write(client_id.as_bytes());
        h.finish()
    }

    fn hash_pair(&self, pair: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(pair);
        h.finish()
    }

    /// Whether `day`'s bucket may hold the pair hashed to `h`; `false` is certain.
    pub fn may_hold(&self, day: u32, h: u64) -> bool {
        if day < self.tracked_from {
            return true;
        }
        match self.days.iter().find(|(d, _)| *d == day) {
            None => false,
            Some((_, Day::Unknown)) => true,
            Some((_, Day::Known(f))) => f.contains(h),
        }
    }

    /// Notes that `day`'s bucket holds the pair hashed to `h`. Returns whether the day is
    /// still known (false: it grew past [`MAX_PER_DAY`], or is not tracked).
    pub fn insert(&mut self, day: u32, h: u64) -> bool {
        if day < self.tracked_from {
            return false;
        }
        if !self.days.iter().any(|(d, _)| *d == day) {
            self.days.push((day, Day::Known(Filter::default())));
        }
        let Some((_, slot)) = self.days.iter_mut().find(|(d, _)| *d == day) else {
            return false;
        };
        let Day::Known(f) = slot else {
            return false;
        };
        if f.len >= self.max_per_day {
            *slot = Day::Unknown;
            return false;
        }
        f.insert(h);
        true
    }

    /// Stops tracking the days before `day`: the window has left them, and retention
    /// deletes their buckets.
    pub fn forget_before(&mut self, day: u32) {
        self.tracked_from = self.tracked_from.max(day);
        self.days.retain(|(d, _)| *d >= self.tracked_from);
    }
}

/// A growing Bloom filter: a chain of split-block Bloom filters, each twice the size of the
/// one before, so it needs no size up front and never rehashes what it holds.
#[derive(Default)]
struct Filter {
    segments: Vec<Segment>,
    len: usize,
}

impl Filter {
    fn contains(&self, h: u64) -> bool {
        self.segments.iter().any(|s| s.contains(h))
    }

    fn insert(&mut self, h: u64) {
        let full = self.segments.last().is_none_or(|s| s.len >= s.capacity);
        if full {
            let capacity = self.segments.last().map_or(FIRST_SEGMENT, |s| s.capacity * 2);
            self.segments.push(Segment::with_capacity(capacity));
        }
        if let Some(s) = self.segments.last_mut() {
            s.insert(h);
        }
        self.len += 1;
    }
}

/// One split-block Bloom filter (the layout of Parquet's): a key picks one 256-bit block
/// with the high half of its hash and sets one bit in each of the block's eight words with
/// the low half, so a lookup touches one cache line.
struct Segment {
    blocks: Vec<[u32; 8]>,
    capacity: usize,
    len: usize,
}

/// Odd multipliers that spread the low half of the hash over each word's 32 bits.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

impl Segment {
    fn with_capacity(capacity: usize) -> Segment {
        let blocks = (capacity * BITS_PER_ENTRY / 256).max(1);
        Segment {
            blocks: vec![[0; 8]; blocks],
            capacity,
            len: 0,
        }
    }

    /// The block for `h` (by multiply-shift of its high half, fair for any block count) and
    /// each word's bit mask.
    fn locate(&self, h: u64) -> (usize, [u32; 8]) {
        let n = self.blocks.len() as u64;
        let block = ((h >> 32) * n) >> 32;
        let key = h as u32;
        let masks = SALT.map(|salt| 1u32 << (key.wrapping_mul(salt) >> 27));
        (block as usize, masks)
    }

    fn contains(&self, h: u64) -> bool {
        let (i, masks) = self.locate(h);
        self.blocks
            .get(i)
            .is_some_and(|b| b.iter().zip(masks).all(|(w, m)| w & m != 0))
    }

    fn insert(&mut self, h: u64) {
        let (i, masks) = self.locate(h);
        if let Some(b) = self.blocks.get_mut(i) {
            for (w, m) in b.iter_mut().zip(masks) {
                *w |= m;
            }
        }
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_forgets_what_it_holds_across_segments() {
        let mut f = DedupFilter::empty(10, MAX_PER_DAY);
        let n = FIRST_SEGMENT * 3 + 17; // spans three segments
        let hashes: Vec<u64> = (0..n).map(|i| f.hash("alice", &format!("c-{i}"))).collect();
        for &h in &hashes {
            assert!(f.insert(11, h));
        }
        assert!(hashes.iter().all(|&h| f.may_hold(11, h)));
        // Another day holds none of them; an untracked day may hold anything.
        assert!(hashes.iter().all(|&h| !f.may_hold(12, h)));
        assert!(f.may_hold(9, hashes[0]));

        // Pairs never inserted: rarely a "maybe".
        let maybes = (0..100_000)
            .filter(|i| f.may_hold(11, f.hash("bob", &format!("c-{i}"))))
            .count();
        assert!(maybes < 1_000, "{maybes} false maybes in 100,000");
    }

    #[test]
    fn a_pair_hashes_alike_from_its_parts_and_from_its_key() {
        let f = DedupFilter::empty(0, MAX_PER_DAY);
        assert_eq!(f.hash("alice", "c-1"), f.hash_pair(b"alice\0c-1"));
        assert_ne!(f.hash("alice", "c-1"), f.hash("alice", "c-2"));
    }

    #[test]
    fn a_day_past_its_limit_becomes_unknown_and_forgotten_days_untracked() {
        let mut f = DedupFilter::empty(0, 1000);
        for i in 0..1000u64 {
            assert!(f.insert(1, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        }
        assert!(!f.insert(1, 42));
        assert!(f.may_hold(1, 7), "an unknown day may hold anything");
        assert!(f.insert(2, 5));
        assert!(!f.may_hold(2, 6));
        f.forget_before(2);
        assert!(f.may_hold(0, 7), "an untracked day may hold anything");
        assert!(!f.insert(1, 8), "nor is it tracked again");
        assert!(f.may_hold(2, 5) && !f.may_hold(2, 6) && !f.may_hold(3, 5));
    }
}
