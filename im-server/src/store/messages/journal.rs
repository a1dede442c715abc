//! Our own check of fjall's journal before fjall replays it, and the repair of a damaged tail.
//!
//! Why: fjall 3 replays its journal (`<n>.jnl` files in the log's directory) on open, and
//! copes with a batch *cut short* at the tail, but not with a *damaged* one. A changed byte
//! inside the last complete batch (its trailer intact: a sector lost from the middle of the
//! last write) makes it refuse to open (`JournalRecovery`), or panic with debug assertions
//! on; and a bad entry tag anywhere makes it silently truncate the journal there, dropping
//! every later batch. So before fjall opens the log, [`check_and_repair`] walks every
//! journal file with the total parser below and:
//! - all batches verify (the rest of the file empty or preallocated zeros): nothing to do;
//! - damage in the active (last) journal with no intact batch after it: the tail is what a
//!   crash in the middle of the last write leaves. It is cut off, the cut bytes are kept
//!   beside the journal as `<n>.jnl.damaged-<unix seconds>` (fjall ignores that name), and a
//!   warning says what was cut. The lost batch may have been acknowledged: `fsync` returned,
//!   but the storage lost it anyway;
//! - damage with an intact batch after it, or in a sealed (older, fully synced) journal:
//!   that is not a torn write but damaged storage, and dropping it would drop acknowledged
//!   messages that are still intact, so the log refuses to open
//!   ([`StoreError::DamagedJournal`]), saying where, and leaves the decision to a person.
//!
//! The format, from fjall 3.1's `journal/entry.rs` and `writer.rs` (little-endian): a batch
//! is `Start` (tag 1, item count u32, seqno u64), then that many entries, each an `Item`
//! (tag 2, value type u8, compression u8, keyspace u64, key length u16, value length u32,
//! stored value length u32, key, stored value) or a `Clear` (tag 4, keyspace u64), then
//! `End` (tag 3, checksum u64, trailer `FJL\x03`). The checksum is XXH3-64 of the entries'
//! bytes. The start marker is not covered by it, so a damaged seqno is caught only when it
//! breaks the order (seqnos strictly increase through the journals) or range; a seqno
//! damaged upwards is indistinguishable from a real one, and its batch (whose contents do
//! verify) is kept.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{StoreError, io_error};
use xxhash_rust::xxh3::xxh3_64;

/// Most bytes of one journal file that are checked: a larger one is left to fjall's own
/// recovery, with a warning. Ours are far smaller: fjall rotates the active journal at a
/// fraction of `MAX_JOURNAL_BYTES` (128 MiB, all journals together). The check reads a
/// journal's written part into memory (only that: preallocated zeros at its end are
/// counted, not stored).
pub(super) const MAX_CHECKED_JOURNAL_BYTES: u64 = 512 << 20;

/// fjall's lock file in the log's directory: held while checking and cutting, so a log in
/// use by another process is never touched.
const LOCK_FILE: &str = "lock";

const TAG_START: u8 = 1;
const TAG_ITEM: u8 = 2;
const TAG_END: u8 = 3;
const TAG_CLEAR: u8 = 4;
const TRAILER: &[u8; 4] = b"FJL\x03";
/// lsm-tree reserves seqnos from 2^63 up (it stops with "ran out of sequence numbers").
const SEQNO_LIMIT: u64 = 1 << 63;

/// Why the bytes at some offset are not an intact batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Damage {
    /// The file ends inside the batch.
    Torn,
    /// A byte where an entry starts is no tag that may come there.
    BadTag(u8),
    /// An end marker after a different number of entries than the start marker announced.
    WrongCount,
    /// The end marker's trailer is not `FJL\x03`.
    BadTrailer,
    /// The entries' checksum does not match the end marker's.
    Checksum,
    /// The batch's seqno is not above the previous batch's, or is out of range.
    Seqno { previous: Option<u64>, found: u64 },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Torn => write!(f, "the file ends inside the batch"),
            Damage::BadTag(t) => write!(f, "bad entry tag {t:#04x}"),
            Damage::WrongCount => write!(f, "item count does not match"),
            Damage::BadTrailer => write!(f, "bad end-marker trailer"),
            Damage::Checksum => write!(f, "checksum mismatch"),
            Damage::Seqno { previous, found } => {
                write!(f, "sequence number {found} out of order (previous {previous:?})")
            }
        }
    }
}

/// A cursor over the journal's bytes: every read is bounds-checked, so any input is safe.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damage> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(Damage::Torn)?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Damage> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, n: usize) -> Result<u64, Damage> {
        Ok(self.take(n)?.iter().rev().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }
}

/// Parses the batch starting at `at`: its end and seqno if it is intact (framing, count,
/// trailer and checksum all hold). Never allocates; each step consumes at least one byte.
pub(super) fn parse_batch(b: &[u8], at: usize) -> Result<(usize, u64), Damage> {
    let mut c = Cursor { b, pos: at };
    match c.u8()? {
        TAG_START => {}
        t => return Err(Damage::BadTag(t)),
    }
    let count = c.uint(4)?;
    let seqno = c.uint(8)?;
    let entries_start = c.pos;
    let mut seen = 0u64;
    loop {
        let entry_start = c.pos;
        match c.u8()? {
            TAG_ITEM => {
                c.take(2)?; // value type, compression: covered by the checksum
                c.take(8)?; // keyspace
                let key_len = c.uint(2)?;
                c.take(4)?; // value length before compression
                let stored_len = c.uint(4)?;
                c.take(usize::try_from(key_len + stored_len).map_err(|_| Damage::Torn)?)?;
            }
            TAG_CLEAR => {
                c.take(8)?;
            }
            TAG_END => {
                let entries = &b[entries_start..entry_start];
                let checksum = c.uint(8)?;
                if c.take(TRAILER.len())? != TRAILER {
                    return Err(Damage::BadTrailer);
                }
                if seen != count {
                    return Err(Damage::WrongCount);
                }
                if xxh3_64(entries) != checksum {
                    return Err(Damage::Checksum);
                }
                return Ok((c.pos, seqno));
            }
            t => return Err(Damage::BadTag(t)),
        }
        seen += 1;
        if seen > count {
            return Err(Damage::WrongCount);
        }
    }
}

/// What [`scan`] found in one journal file.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Scan {
    /// Intact batches from the start.
    pub batches: usize,
    /// Where the last of them ends.
    pub intact_end: usize,
    /// The seqno of the last of them (or the previous file's, if none).
    pub last_seqno: Option<u64>,
    /// `None`: nothing but zeros (or nothing) after `intact_end`.
    pub damage: Option<Damage>,
}

/// Walks the batches of a journal file from its start. `previous` is the last seqno of the
/// journal before this one.
pub(super) fn scan(b: &[u8], previous: Option<u64>) -> Scan {
    let mut s = Scan {
        batches: 0,
        intact_end: 0,
        last_seqno: previous,
        damage: None,
    };
    while s.intact_end < b.len() {
        if b[s.intact_end] == 0 && b[s.intact_end..].iter().all(|&x| x == 0) {
            break; // the preallocated rest of the file
        }
        match parse_batch(b, s.intact_end) {
            Ok((_, seqno)) if seqno >= SEQNO_LIMIT || s.last_seqno.is_some_and(|p| seqno <= p) => {
                s.damage = Some(Damage::Seqno {
                    previous: s.last_seqno,
                    found: seqno,
                });
                break;
            }
            Ok((end, seqno)) => {
                s.batches += 1;
                s.intact_end = end;
                s.last_seqno = Some(seqno);
            }
            Err(d) => {
                s.damage = Some(d);
                break;
            }
        }
    }
    s
}

/// The first offset after `from` where an intact batch starts, if any: whether damage is a
/// torn tail (none) or lies in the middle of the journal.
pub(super) fn next_intact_batch(b: &[u8], from: usize) -> Option<usize> {
    (from + 1..b.len()).find(|&q| b[q] == TAG_START && parse_batch(b, q).is_ok())
}

/// Reads a journal's written part: the file up to its last non-zero byte (fjall preallocates
/// journals with zeros). `None` if that is over [`MAX_CHECKED_JOURNAL_BYTES`].
fn read_written(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    const CHUNK: usize = 64 << 10;
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let mut file = File::open(path)?;
    let mut data = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut zeros = 0usize; // zero bytes read but not (yet) stored
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(Some(data));
        }
        // Comparing with zeros first is a memcmp: fast even unoptimised (in tests).
        let last = if chunk[..n] == ZEROS[..n] {
            None
        } else {
            chunk[..n].iter().rposition(|&x| x != 0)
        };
        match last {
            None => zeros += n,
            Some(last) => {
                if (data.len() + zeros + last) as u64 >= MAX_CHECKED_JOURNAL_BYTES {
                    return Ok(None);
                }
                data.resize(data.len() + zeros, 0);
                data.extend_from_slice(&chunk[..=last]);
                zeros = n - last - 1;
            }
        }
    }
}

/// The journal files of a log directory, oldest first (fjall's naming: `<n>.jnl`).
fn journals(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            found.push((id, path));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Checks every journal of the log in `dir` and cuts a damaged tail off the active one (see
/// the module documentation). Returns the journal that was cut, if one was. Call before
/// fjall opens the log, on an existing log only.
pub(super) fn check_and_repair(dir: &Path) -> Result<Option<PathBuf>, StoreError> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = match OpenOptions::new().read(true).write(true).open(&lock_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&lock_path, e)),
    };
    if let Some(lock) = &lock {
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => StoreError::Locked { path: dir.to_owned() },
            fs::TryLockError::Error(e) => io_error(&lock_path, e),
        })?;
    }
    let journals = journals(dir)?;
    let mut previous = None;
    for (i, path) in journals.iter().enumerate() {
        let active = i + 1 == journals.len();
        let Some(bytes) = read_written(path).map_err(|e| io_error(path, e))? else {
            tracing::warn!(journal = %path.display(), limit = MAX_CHECKED_JOURNAL_BYTES,
                "message log: journal too large to check; leaving it to the storage engine");
            previous = None;
            continue;
        };
        let s = scan(&bytes, previous);
        previous = s.last_seqno;
        let Some(damage) = s.damage else { continue };
        let later = next_intact_batch(&bytes, s.intact_end);
        if !active || later.is_some() {
            let detail = match later {
                Some(q) => format!("intact batches follow from byte {q}"),
                None => "later journals hold more batches".into(),
            };
            tracing::error!(journal = %path.display(), offset = s.intact_end, %damage, %detail,
                "message log: damaged journal, not at its tail; refusing to drop what follows");
            return Err(StoreError::DamagedJournal {
                path: path.clone(),
                offset: s.intact_end as u64,
                detail: format!("{damage}; {detail}"),
            });
        }
        let kept = cut_tail(path, &bytes, s.intact_end)?;
        tracing::warn!(
            journal = %path.display(),
            offset = s.intact_end,
            cut_bytes = bytes.len() - s.intact_end,
            intact_batches = s.batches,
            %damage,
            kept = %kept.display(),
            "message log: cut a damaged tail off the journal (a write torn or damaged by a crash); \
             its last batch is lost, though it may have been acknowledged"
        );
        return Ok(Some(path.clone()));
    }
    Ok(None)
}

/// Copies `bytes[at..]` to `<journal>.damaged-<unix seconds>` (synced), then truncates the
/// journal to `at` (synced). Returns the copy's path.
fn cut_tail(path: &Path, bytes: &[u8], at: usize) -> Result<PathBuf, StoreError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{now}"));
    let mut copy_path = PathBuf::from(name);
    let mut n = 1;
    let mut copy = loop {
        match OpenOptions::new().write(true).create_new(true).open(&copy_path) {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                let mut name = path.as_os_str().to_owned();
                name.push(format!(".damaged-{now}-{n}"));
                copy_path = PathBuf::from(name);
                n += 1;
            }
            Err(e) => return Err(io_error(&copy_path, e)),
        }
    };
    copy.write_all(&bytes[at..])
        .and_then(|()| copy.sync_all())
        .map_err(|e| io_error(&copy_path, e))?;
    let journal = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    journal
        .set_len(at as u64)
        .and_then(|()| journal.sync_all())
        .map_err(|e| io_error(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, e))?;
    }
    Ok(copy_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a batch of items the way fjall 3 does (uncompressed).
    fn batch(seqno: u64, items: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut entries = Vec::new();
        for (k, v) in items {
            entries.push(TAG_ITEM);
            entries.extend([0, 0]);
            entries.extend(7u64.to_le_bytes());
            entries.extend((k.len() as u16).to_le_bytes());
            entries.extend((v.len() as u32).to_le_bytes());
            entries.extend((v.len() as u32).to_le_bytes());
            entries.extend(*k);
            entries.extend(*v);
        }
        let mut b = vec![TAG_START];
        b.extend((items.len() as u32).to_le_bytes());
        b.extend(seqno.to_le_bytes());
        b.extend(&entries);
        b.push(TAG_END);
        b.extend(xxh3_64(&entries).to_le_bytes());
        b.extend(TRAILER);
        b
    }

    fn journal(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut b = Vec::new();
        let mut ends = Vec::new();
        for i in 0..n {
            b.extend(batch(
                i + 1,
                &[(b"key", format!("value {i}").as_bytes()), (b"k2", b"v2")],
            ));
            ends.push(b.len());
        }
        (b, ends)
    }

    #[test]
    fn intact_journal_with_zeros_after_it() {
        let (mut b, ends) = journal(3);
        b.extend([0; 100]);
        let s = scan(&b, None);
        assert_eq!(
            s,
            Scan {
                batches: 3,
                intact_end: ends[2],
                last_seqno: Some(3),
                damage: None
            }
        );
        assert_eq!(scan(&[], Some(9)).last_seqno, Some(9));
    }

    #[test]
    fn every_damaged_byte_of_the_last_batch_is_found() {
        let (b, ends) = journal(3);
        for at in ends[1]..ends[2] {
            let mut d = b.clone();
            d[at] ^= 0x40;
            let s = scan(&d, None);
            let seqno_byte = (ends[1] + 5..ends[1] + 13).contains(&at);
            if seqno_byte {
                // Outside the checksum; raised, it still looks right.
                assert_eq!(s.batches, 3, "byte {at}");
            } else {
                assert_eq!((s.batches, s.intact_end), (2, ends[1]), "byte {at}");
                assert!(s.damage.is_some());
                assert_eq!(next_intact_batch(&d, s.intact_end), None, "byte {at}");
            }
        }
    }

    #[test]
    fn a_seqno_going_back_is_damage() {
        let mut b = batch(5, &[(b"a", b"b")]);
        let first = b.len();
        b.extend(batch(5, &[(b"c", b"d")]));
        let s = scan(&b, None);
        assert_eq!((s.batches, s.intact_end), (1, first));
        assert_eq!(
            s.damage,
            Some(Damage::Seqno {
                previous: Some(5),
                found: 5
            })
        );
        assert_eq!(scan(&b[..first], Some(5)).batches, 0);
        assert_eq!(scan(&batch(SEQNO_LIMIT, &[]), None).batches, 0);
    }

    #[test]
    fn damage_in_the_middle_is_told_from_a_torn_tail() {
        let (mut b, ends) = journal(5);
        b[ends[1] + 48] ^= 0x01; // in the first key
        let s = scan(&b, None);
        assert_eq!((s.batches, s.damage), (2, Some(Damage::Checksum)));
        assert_eq!(next_intact_batch(&b, s.intact_end), Some(ends[2]));
        // Torn: cut inside the last batch, or zeros over its end.
        let (b, ends) = journal(3);
        for cut in ends[1] + 1..ends[2] {
            assert_eq!(scan(&b[..cut], None).damage, Some(Damage::Torn));
            let mut z = b.clone();
            z[cut..].fill(0);
            let s = scan(&z, None);
            assert_eq!((s.batches, s.intact_end), (2, ends[1]), "zeros from {cut}");
        }
    }

    #[test]
    fn any_bytes_are_parsed_without_panic() {
        // Lengths claiming far more than there is, every tag, short inputs.
        let mut b = vec![TAG_START, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, TAG_ITEM];
        b.extend([0xff; 30]);
        for n in 0..b.len() {
            let _ = scan(&b[..n], None);
            let _ = next_intact_batch(&b[..n], 0);
        }
        let noise: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(scan(&noise, None).damage.is_some());
        assert_eq!(next_intact_batch(&noise, 0), None);
    }
}
