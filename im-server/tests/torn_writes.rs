//! Both stores survive a torn write at the tail of their log, through their public APIs.
//!
//! A crash image is taken by copying a store's files while it is open, after each write has
//! returned (and so was `fsync`ed): that is what `kill -9` leaves on disk. The tail of the
//! write-ahead file is then damaged the way a write cut short by a power loss damages it
//! (cut in the middle of a frame or batch, or followed by garbage), and the store is opened
//! from the image:
//! - the accounts database (SQLite, WAL): `accounts.db` and `accounts.db-wal`, without the
//!   `-shm` index, which SQLite rebuilds from the WAL on open;
//! - the message log (fjall 3): its journal, the `<n>.jnl` files in the log's directory;
//!   the active one is the highest `n`. fjall preallocates a journal file (64 MiB of zeros)
//!   and writes batches from its start, each ending in the trailer `FJL`, so the written
//!   part ends after the last non-zero byte; "the tail" below is the end of that part.
//!
//! Every transaction (batch) that is complete before the damage is there after the reopen;
//! the torn one is not; garbage after the last complete one loses nothing; and the store
//! goes on working (new writes succeed and are read back).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use im_proto::{Target, UserName};
use im_server::store::accounts::Accounts;
use im_server::store::messages::{Appended, Conversation, MessageLog, NewMessage, StoreError};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
const NOW: u64 = 1_700_000_000_000;
/// Writes before the damage.
const WRITES: usize = 12;

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn size(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Bytes that are no valid WAL frame or journal entry (a fixed pseudo-random sequence).
fn garbage(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn cut(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Copies every file under `from` to `to`, keeping the layout.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

// ---- SQLite ----

/// An open accounts database with a user committed per transaction, and the size of its WAL
/// after each commit.
struct Accounting {
    dir: tempfile::TempDir,
    _db: Accounts,
    wal_after: Vec<u64>,
}

fn name(i: usize) -> UserName {
    user(&format!("user{i}"))
}

fn accounts_with_commits() -> Accounting {
    let dir = tempfile::tempdir().unwrap();
    let db = Accounts::open(&dir.path().join("accounts.db")).unwrap();
    let wal = dir.path().join("accounts.db-wal");
    let mut wal_after = Vec::new();
    for i in 0..WRITES {
        db.create_user(&name(i), HASH, NOW).unwrap();
        wal_after.push(size(&wal));
    }
    assert!(
        wal_after.windows(2).all(|w| w[0] < w[1]),
        "every commit appends to the WAL (no checkpoint in between): {wal_after:?}"
    );
    Accounting {
        dir,
        _db: db,
        wal_after,
    }
}

impl Accounting {
    /// What `kill -9` leaves: the database and its WAL, as they are now.
    fn crash_image(&self, name: &str) -> PathBuf {
        let to = self.dir.path().join(name);
        fs::create_dir(&to).unwrap();
        for f in ["accounts.db", "accounts.db-wal"] {
            fs::copy(self.dir.path().join(f), to.join(f)).unwrap();
        }
        to
    }
}

/// Opens the image and returns which users are there; then checks it still takes writes.
fn users_after_reopen(image: &Path) -> Vec<bool> {
    let db = Accounts::open(&image.join("accounts.db")).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    let present = (0..WRITES).map(|i| db.user(&name(i)).unwrap().is_some()).collect();
    db.create_user(&user("after"), HASH, NOW).unwrap();
    assert!(db.user(&user("after")).unwrap().is_some());
    present
}

#[test]
fn sqlite_keeps_every_transaction_before_a_torn_wal_tail() {
    let a = accounts_with_commits();
    let last = WRITES - 1;
    let all = vec![true; WRITES];
    let all_but_last: Vec<bool> = (0..WRITES).map(|i| i < last).collect();

    // The last transaction cut in the middle of a frame.
    let image = a.crash_image("mid-frame");
    let wal = image.join("accounts.db-wal");
    cut(
        &wal,
        a.wal_after[last - 1] + (a.wal_after[last] - a.wal_after[last - 1]) / 2 + 3,
    );
    assert_eq!(users_after_reopen(&image), all_but_last);

    // Cut a few bytes short: the commit frame is incomplete.
    let image = a.crash_image("short");
    cut(&image.join("accounts.db-wal"), a.wal_after[last] - 5);
    assert_eq!(users_after_reopen(&image), all_but_last);

    // Garbage after the last complete transaction loses nothing.
    let image = a.crash_image("garbage");
    append(&image.join("accounts.db-wal"), &garbage(10_000));
    assert_eq!(users_after_reopen(&image), all);

    // A damaged frame inside the last transaction: its checksum fails, and SQLite stops
    // there; everything before it stays.
    let image = a.crash_image("flipped");
    flip(&image.join("accounts.db-wal"), a.wal_after[last - 1] + 100);
    assert_eq!(users_after_reopen(&image), all_but_last);

    // Torn in the middle of the log: the transactions after the tear are gone with it, the
    // ones before are all there (a WAL is replayed as a prefix).
    let image = a.crash_image("early");
    let tear = 5;
    cut(&image.join("accounts.db-wal"), a.wal_after[tear - 1] + 10);
    let expected: Vec<bool> = (0..WRITES).map(|i| i < tear).collect();
    assert_eq!(users_after_reopen(&image), expected);
}

// ---- fjall ----

/// The active journal file of a message log: the `<n>.jnl` with the highest `n`, anywhere
/// under its directory.
fn active_journal(dir: &Path) -> PathBuf {
    fn walk(dir: &Path, found: &mut Vec<(u64, PathBuf)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if let Some(n) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jnl"))
                .and_then(|n| n.parse().ok())
            {
                found.push((n, path));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, &mut found);
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no journal file under {}", dir.display()))
        .1
}

fn message(i: usize) -> NewMessage {
    NewMessage {
        from: user("alice"),
        to: Target::User(user("bob")),
        client_id: format!("c{i}"),
        action: false,
        text: format!("message {i}"),
        sender_device: 1,
    }
}

/// Where the written part of a preallocated journal ends: after its last non-zero byte (a
/// batch ends in the trailer `FJL`).
/// Only the first MiB is read: these tests write a few KiB.
fn written_end(journal: &Path) -> u64 {
    let mut head = vec![0u8; 1 << 20];
    let n = fs::File::open(journal).unwrap().read_at(&mut head, 0).unwrap();
    head[..n].iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1)
}

/// Overwrites bytes of a file in place.
fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

fn flip(path: &Path, at: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
}

/// An open message log with one message appended per batch (each append waits for its own
/// commit), and where the journal's written part ended after each.
struct Logging {
    dir: tempfile::TempDir,
    _log: MessageLog,
    journal: PathBuf,
    ids: Vec<u64>,
    journal_after: Vec<u64>,
}

fn log_with_batches() -> Logging {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages");
    let log = MessageLog::open(&path).unwrap();
    let journal = active_journal(&path);
    let mut ids = Vec::new();
    let mut journal_after = Vec::new();
    for i in 0..WRITES {
        match log.append_blocking(message(i)).unwrap() {
            Appended::New(m) => ids.push(m.id),
            dup => panic!("unexpected {dup:?}"),
        }
        journal_after.push(written_end(&journal));
    }
    assert_eq!(active_journal(&path), journal, "the journal rotated");
    assert!(
        journal_after.windows(2).all(|w| w[0] < w[1]),
        "each batch grows the journal: {journal_after:?}"
    );
    Logging {
        dir,
        _log: log,
        journal,
        ids,
        journal_after,
    }
}

impl Logging {
    /// What `kill -9` leaves: the log's directory as it is now. Returns the image's directory
    /// and its active journal.
    fn crash_image(&self, name: &str) -> (PathBuf, PathBuf) {
        let from = self.dir.path().join("messages");
        let to = self.dir.path().join(name);
        copy_tree(&from, &to);
        let journal = to.join(self.journal.strip_prefix(&from).unwrap());
        (to, journal)
    }
}

/// Opens the image and returns which of the appended messages are there; then checks that
/// it takes new appends and that ids never go back.
fn messages_after_reopen(image: &Path, ids: &[u64]) -> Vec<bool> {
    let log = MessageLog::open(image).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    let conv = Conversation::direct(&user("alice"), &user("bob"));
    let (page, _) = log.history(&conv, None, Some(0), 500).unwrap();
    for m in &page {
        let i = ids.iter().position(|id| *id == m.id).expect("only appended messages");
        assert_eq!(m.text, format!("message {i}"), "message {} read back wrong", m.id);
    }
    let present: Vec<bool> = ids.iter().map(|id| page.iter().any(|m| m.id == *id)).collect();
    let last = page.last().map_or(0, |m| m.id);
    assert_eq!(log.last_id(), last);
    let next = log.append_blocking(message(1000)).unwrap().into_message();
    assert!(next.id > last, "a new append got id {} after {last}", next.id);
    let (page, _) = log.history(&conv, None, Some(last), 10).unwrap();
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), [next.id]);
    log.close().unwrap();
    present
}

#[test]
fn fjall_keeps_every_batch_before_a_torn_journal_tail() {
    let l = log_with_batches();
    let last = WRITES - 1;
    let all = vec![true; WRITES];
    let all_but_last: Vec<bool> = (0..WRITES).map(|i| i < last).collect();

    // The journal's last few bytes lost: the last batch is incomplete.
    let (image, journal) = l.crash_image("short");
    cut(&journal, l.journal_after[last] - 3);
    // (And the same with the preallocated zeros kept after the tear.)
    let (image2, journal2) = l.crash_image("short-zeroed");
    write_at(&journal2, l.journal_after[last] - 3, &[0; 3]);
    assert_eq!(messages_after_reopen(&image2, &l.ids), all_but_last);
    assert_eq!(messages_after_reopen(&image, &l.ids), all_but_last);

    // Cut in the middle of the last batch.
    let (image, journal) = l.crash_image("mid-batch");
    cut(&journal, (l.journal_after[last - 1] + l.journal_after[last]) / 2);
    assert_eq!(messages_after_reopen(&image, &l.ids), all_but_last);

    // Garbage after the last complete batch loses nothing: over the preallocated zeros, and
    // after the end of the file.
    let (image, journal) = l.crash_image("garbage");
    write_at(&journal, l.journal_after[last], &garbage(10_000));
    assert_eq!(messages_after_reopen(&image, &l.ids), all);
    let (image, journal) = l.crash_image("garbage-appended");
    cut(&journal, l.journal_after[last]);
    append(&journal, &garbage(10_000));
    assert_eq!(messages_after_reopen(&image, &l.ids), all);

    // Torn in the middle of the journal: the batches before the tear are all there.
    let (image, journal) = l.crash_image("early");
    let tear = 5;
    cut(&journal, l.journal_after[tear - 1] + 7);
    let expected: Vec<bool> = (0..WRITES).map(|i| i < tear).collect();
    assert_eq!(messages_after_reopen(&image, &l.ids), expected);
}

/// Not a torn tail but damage inside the last complete batch (a byte of it changed, its
/// trailer intact: a sector lost from the middle of the last write). fjall alone refuses to
/// open such a journal (or panics, with debug assertions); the message log checks the journal
/// first and cuts the damaged batch off, so every batch before it is kept.
///
/// One exception, by design: fjall's checksum does not cover the batch's sequence number
/// (bytes 5..13 of its start marker). A damaged one that went down is caught (sequence
/// numbers only increase) and the batch dropped; one that went up cannot be told from a real
/// one, and the batch, whose contents do verify, is kept.
#[test]
fn fjall_drops_a_damaged_last_batch() {
    let l = log_with_batches();
    let last = WRITES - 1;
    let all = vec![true; WRITES];
    let all_but_last: Vec<bool> = (0..WRITES).map(|i| i < last).collect();
    let start = l.journal_after[last - 1];
    let seqno_at = start + 5..start + 13;
    let mut seqno = [0u8; 8];
    fs::File::open(&l.journal)
        .unwrap()
        .read_exact_at(&mut seqno, seqno_at.start)
        .unwrap();
    let seqno = u64::from_le_bytes(seqno);
    for at in start..l.journal_after[last] {
        let (image, journal) = l.crash_image(&format!("flipped-{at}"));
        flip(&journal, at);
        let raised = seqno_at.contains(&at) && seqno ^ (0x40 << (8 * (at - seqno_at.start))) > seqno;
        let expected = if raised { &all } else { &all_but_last };
        assert_eq!(
            &messages_after_reopen(&image, &l.ids),
            expected,
            "byte {at} of the last batch damaged"
        );
        fs::remove_dir_all(&image).unwrap();
    }
}

/// The files `<journal>.damaged-*` beside a journal.
fn damaged_copies(journal: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.damaged-", journal.file_name().unwrap().to_str().unwrap());
    let mut found: Vec<PathBuf> = fs::read_dir(journal.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&prefix))
        .collect();
    found.sort();
    found
}

/// What is cut off is not destroyed: the damaged bytes are kept beside the journal, exactly.
#[test]
fn fjall_keeps_the_cut_bytes_beside_the_journal() {
    let l = log_with_batches();
    let last = WRITES - 1;
    let (start, end) = (l.journal_after[last - 1], l.journal_after[last]);
    let (image, journal) = l.crash_image("kept");
    flip(&journal, (start + end) / 2);
    let damaged = fs::read(&journal).unwrap()[start as usize..end as usize].to_vec();
    assert!(damaged_copies(&journal).is_empty());

    let all_but_last: Vec<bool> = (0..WRITES).map(|i| i < last).collect();
    assert_eq!(messages_after_reopen(&image, &l.ids), all_but_last);
    let copies = damaged_copies(&journal);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(fs::read(&copies[0]).unwrap(), damaged);

    // An intact journal is left alone: no copy on the next open.
    let log = MessageLog::open(&image).unwrap();
    log.close().unwrap();
    assert_eq!(damaged_copies(&journal), copies);
}

/// Damage in the middle of the journal, with intact batches after it, is no torn write:
/// the log does not open (fjall alone would drop every later batch on a bad tag, silently),
/// and nothing is cut.
#[test]
fn fjall_damage_in_the_middle_of_the_journal_stops_the_open() {
    let l = log_with_batches();
    let middle = 5;
    for (name, at) in [
        (
            "middle-value",
            (l.journal_after[middle - 1] + l.journal_after[middle]) / 2,
        ),
        ("middle-tag", l.journal_after[middle - 1]),
    ] {
        let (image, journal) = l.crash_image(name);
        flip(&journal, at);
        let before = fs::read(&journal).unwrap();
        let err = MessageLog::open(&image).unwrap_err();
        assert!(
            matches!(&err, StoreError::DamagedJournal { offset, .. } if *offset == l.journal_after[middle - 1]),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("intact batches follow"), "{err}");
        assert_eq!(fs::read(&journal).unwrap(), before, "{name}: the journal was changed");
        assert!(damaged_copies(&journal).is_empty());
    }
}
