//! The durable message log: every chat message, with its server-assigned id and timestamp,
//! on an LSM tree (fjall 3) with group commit.
//!
//! # Guarantees
//! - **Durable before acknowledged.** [`MessageLog::append`] resolves only after the batch
//!   holding the message is in the journal and `fsync`ed; an acknowledged message survives
//!   `kill -9` of the server (and a power cut, as far as `fsync` does).
//! - **Ids** are global, start at 1, strictly increase across restarts (a high-water mark is
//!   written with every batch, so retention emptying the log does not reset them), have no
//!   gaps, and stay at or below [`MAX_ID`] (2^53 - 1).
//! - **Timestamps** are milliseconds since the Unix epoch (UTC) and never go backwards, even
//!   when the wall clock does: each batch gets max(previous, now).
//! - **Deduplication**: a message whose (sender, client id) was stored in the last 24 hours
//!   is not stored again; the original is returned as [`Appended::Duplicate`]. An empty
//!   client id opts out.
//! - **Reads see a prefix**: history and catch-up never return an id above
//!   [`MessageLog::last_id`], and every id up to it is readable, so a device that remembers
//!   the highest id it has seen never skips one.
//! - **Disk bytes are never trusted**: an undecodable record is [`StoreError::Corrupt`], not a
//!   panic.
//! - **A crash mid-write does not stop the next start**: a damaged last batch of the journal
//!   is cut off on open (kept beside it, with a warning); damage anywhere else stops the open
//!   with [`StoreError::DamagedJournal`] rather than drop intact messages (see `journal.rs`).
//!
//! # Threads
//! Appends go through a channel to one dedicated writer thread (see `writer.rs`), so async
//! callers never block the reactor on I/O. Reads run on the caller's thread and block: call
//! them from `spawn_blocking`.
//!
//! # Layout
//! - `mod.rs` (this file): the public types and the read side.
//! - `writer.rs`: the group-commit writer thread.
//! - `record.rs`: keys and value encodings of every keyspace, and their total decoders.
//! - `dedup.rs`: the writer's in-memory filter of the dedup buckets, so that a new message
//!   (nearly every one) is not looked up on disk.
//! - `backup.rs`: a consistent copy of the whole log, taken from a snapshot while it runs.
//! - `journal.rs`: our check of fjall's journal before each open, and the cut of a damaged
//!   tail (a crash during the last write), keeping the cut bytes beside it.

mod backup;
mod dedup;
mod journal;
mod record;
mod writer;

pub use backup::LogBackup;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use im_proto::limits::{MAX_CLIENT_ID, MAX_ID, MAX_TEXT};
use im_proto::{RoomName, Target, UserName};
use tokio::sync::{mpsc, oneshot};

/// The on-disk format version this code reads and writes (the `meta/format` entry).
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_MAGIC: &[u8] = b"im-message-log";
const META_FORMAT: &str = "format";
const META_HIGH_WATER: &str = "high-water";

const KS_MSGS: &str = "msgs";
const KS_IDS: &str = "ids";
const KS_INBOX: &str = "inbox";
const KS_DEDUP: &str = "dedup";
const KS_META: &str = "meta";

/// Memory for unflushed writes, per keyspace: the message records' keyspace, and each of
/// the small index keyspaces. fjall's default is 64 MiB each, which for five keyspaces is
/// more memory than a chat server should hold for this; smaller memtables cost no
/// measurable append throughput (see examples/message_log_bench.rs).
const MSGS_MEMTABLE_BYTES: u64 = 16 << 20;
const INDEX_MEMTABLE_BYTES: u64 = 8 << 20;

/// fjall's block cache (its default: 32 MiB). With the memtables above, this bounds what the
/// message log holds in memory at 64 MiB; recent history (what catch-up and scrolling read)
/// is mostly still in the memtables anyway.
const BLOCK_CACHE_BYTES: u64 = 16 << 20;

/// Most journal kept before fjall flushes memtables to free it: bounds the replay on
/// restart. fjall's default is 512 MiB, its minimum 64 MiB.
const MAX_JOURNAL_BYTES: u64 = 128 << 20;

/// How much nicer than the server fjall's worker threads (memtable flushes, compaction) run.
/// A flush takes 100–200 ms of CPU; at the same priority it took turns with the sessions, and
/// the p99 of acknowledged DMs on one core jumped from 9 to 130 ms above 8,000/s
/// (BENCHMARKS.md). Ten steps nicer it takes the idle time and about a tenth of a busy core,
/// which keeps up with the highest append rate the sessions reach.
const WORKER_NICE: libc::c_int = 10;

/// fjall's own marker file: its presence is how an existing store is recognised.
const FJALL_VERSION_FILE: &str = "version";

/// A message as a sender hands it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    pub from: UserName,
    pub to: Target,
    /// The sender's own id for this message, for deduplicating retransmissions; at most
    /// [`MAX_CLIENT_ID`] bytes. Empty: no deduplication.
    pub client_id: String,
    /// An action ("/me waves") rather than a plain message.
    pub action: bool,
    /// At most [`MAX_TEXT`] bytes.
    pub text: String,
    /// The sending device's id, or 0 for none (server-side tools). Stored, so that catch-up
    /// can leave out what a device sent itself.
    pub sender_device: u64,
}

/// A message as stored, with the server's id and timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    /// Milliseconds since the Unix epoch, UTC.
    pub ts: u64,
    pub from: UserName,
    pub to: Target,
    pub client_id: String,
    pub action: bool,
    pub text: String,
    /// The sending device's id, or 0 for none.
    pub sender_device: u64,
}

/// What [`MessageLog::append`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored under a new id.
    New(StoredMessage),
    /// The same (from, client_id) was stored within the last 24 hours: nothing new was
    /// stored, and this is the original.
    Duplicate(StoredMessage),
}

impl Appended {
    /// The message, new or original.
    pub fn message(&self) -> &StoredMessage {
        match self {
            Appended::New(m) | Appended::Duplicate(m) => m,
        }
    }

    pub fn into_message(self) -> StoredMessage {
        match self {
            Appended::New(m) | Appended::Duplicate(m) => m,
        }
    }
}

/// A thread of messages: the direct conversation of two users, or a room.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Conversation {
    /// Canonical form: the smaller name first. Build it with [`Conversation::direct`].
    Direct(UserName, UserName),
    Room(RoomName),
}

impl Conversation {
    /// The direct conversation of `a` and `b`, the same whichever order they come in.
    pub fn direct(a: &UserName, b: &UserName) -> Conversation {
        if a <= b {
            Conversation::Direct(a.clone(), b.clone())
        } else {
            Conversation::Direct(b.clone(), a.clone())
        }
    }

    /// The conversation a message from `from` to `to` belongs to.
    pub fn of(from: &UserName, to: &Target) -> Conversation {
        match to {
            Target::User(u) => Conversation::direct(from, u),
            Target::Room(r) => Conversation::Room(r.clone()),
        }
    }
}

/// Counters of the writer, for benchmarks, tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Messages stored (new ids handed out) since open.
    pub appended: u64,
    /// Appends answered with the original instead.
    pub duplicates: u64,
    /// Group commits (one write + one fsync each) since open.
    pub commits: u64,
}

/// Why the message log failed. Cheap to clone: one commit failure is reported to every
/// sender of its batch.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("message log {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("message log {}: storage engine: {source}", path.display())]
    Engine {
        path: PathBuf,
        #[source]
        source: Arc<fjall::Error>,
    },
    #[error("message log {} is in use by another process or handle", path.display())]
    Locked { path: PathBuf },
    #[error(
        "{} is not a message log ({detail}); refusing to use it: give an empty or new directory",
        path.display()
    )]
    Foreign { path: PathBuf, detail: String },
    #[error(
        "message log {} has format version {found}; this server reads version {FORMAT_VERSION}",
        path.display()
    )]
    UnknownVersion { path: PathBuf, found: u32 },
    #[error(
        "message log journal {} is damaged at byte {offset} ({detail}); not a torn last write, so \
         nothing was dropped: restore the log from a backup, or give up everything from that byte \
         on by truncating the file to {offset} bytes",
        path.display()
    )]
    DamagedJournal { path: PathBuf, offset: u64, detail: String },
    #[error("message log {} has a corrupt record: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("message ids exhausted (the next id would exceed 2^53 - 1)")]
    IdsExhausted,
    #[error("message log is closed")]
    Closed,
}

fn engine_error(path: &Path, e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Locked => StoreError::Locked { path: path.to_owned() },
        fjall::Error::Io(source) => StoreError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        },
        fjall::Error::InvalidVersion(v) => StoreError::Foreign {
            path: path.to_owned(),
            detail: format!("its storage engine version marker is {v:?}, not fjall 3"),
        },
        e => StoreError::Engine {
            path: path.to_owned(),
            source: Arc::new(e),
        },
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source: Arc::new(e),
    }
}

/// Where timestamps come from: milliseconds since the Unix epoch. Injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Takes each commit's new messages on the writer thread ([`MessageLog::open_with_sink`]).
pub type Sink = Box<dyn FnMut(Vec<StoredMessage>) + Send>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// The keyspace handles (cheap clones of fjall handles).
#[derive(Clone)]
struct Keyspaces {
    msgs: Keyspace,
    ids: Keyspace,
    inbox: Keyspace,
    dedup: Keyspace,
    meta: Keyspace,
}

impl Keyspaces {
    fn open(db: &Database) -> fjall::Result<Keyspaces> {
        // Options apply when a keyspace is created; an existing one keeps its own.
        let ks =
            |name, memtable: u64| db.keyspace(name, || KeyspaceCreateOptions::default().max_memtable_size(memtable));
        Ok(Keyspaces {
            msgs: ks(KS_MSGS, MSGS_MEMTABLE_BYTES)?,
            ids: ks(KS_IDS, INDEX_MEMTABLE_BYTES)?,
            inbox: ks(KS_INBOX, INDEX_MEMTABLE_BYTES)?,
            dedup: ks(KS_DEDUP, INDEX_MEMTABLE_BYTES)?,
            meta: ks(KS_META, INDEX_MEMTABLE_BYTES)?,
        })
    }
}

/// State shared between the handles and the writer thread.
#[derive(Default)]
struct Shared {
    /// Highest id committed; everything up to it is readable.
    last_id: AtomicU64,
    appended: AtomicU64,
    duplicates: AtomicU64,
    commits: AtomicU64,
}

/// The message log. Clones share one store and one writer thread; the writer stops, after
/// draining its queue, when the last clone is dropped or [closed](MessageLog::close).
#[derive(Clone)]
pub struct MessageLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Database,
    ks: Keyspaces,
    clock: Clock,
    shared: Arc<Shared>,
    /// `None` only while shutting down.
    tx: Option<mpsc::Sender<writer::Command>>,
    /// Taken by whoever stops the writer first: `close` or the last handle's drop.
    writer: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
}

impl Inner {
    /// Waits for the writer to finish (it has been told to, or its channel is closed).
    fn join_writer(&self) -> Result<(), StoreError> {
        let handle = match self.writer.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        match handle {
            Some(handle) => handle.join().unwrap_or(Err(StoreError::Closed)),
            None => Ok(()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the last sender closes the channel: the writer drains it and exits.
        self.tx = None;
        if let Err(e) = self.join_writer() {
            tracing::error!(path = %self.path.display(), error = %e, "closing the message log");
        }
    }
}

impl fmt::Debug for MessageLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageLog")
            .field("path", &self.inner.path)
            .field("last_id", &self.last_id())
            .finish_non_exhaustive()
    }
}

/// Opens fjall on a short-lived thread made [`WORKER_NICE`] nicer: the worker threads fjall
/// starts inherit that thread's nice value (on Linux a nice value is per thread), and no
/// other thread does. Failing to lower the priority only costs latency, so it is a warning.
pub(super) fn open_database(path: &Path) -> fjall::Result<Database> {
    std::thread::scope(|s| {
        let opener = s.spawn(|| {
            lower_own_priority(WORKER_NICE);
            Database::builder(path)
                .max_journaling_size(MAX_JOURNAL_BYTES)
                .cache_size(BLOCK_CACHE_BYTES)
                .open()
        });
        match opener.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Adds `by` to the calling thread's nice value, up to the lowest priority (19).
fn lower_own_priority(by: libc::c_int) {
    // SAFETY: getpriority and setpriority only read their arguments; who = 0 is the calling
    // thread. A thread may always lower its own priority.
    let failed = unsafe {
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, (now + by).min(19)) != 0
    };
    if failed {
        let err = std::io::Error::last_os_error();
        tracing::warn!(error = %err, "could not lower the priority of the message log's workers");
    }
}

impl MessageLog {
    /// Opens the log in `dir`, creating it if `dir` is missing or empty, and starts the
    /// writer thread. Refuses, without creating anything in it, a non-empty directory that
    /// is not a message log (another program's files, or another program's fjall database)
    /// and a log of an unknown format version.
    pub fn open(dir: &Path) -> Result<MessageLog, StoreError> {
        MessageLog::open_inner(dir, system_clock(), None)
    }

    /// [`open`](MessageLog::open), and every newly stored message is also given to `sink`,
    /// each commit's as one batch in id order, once it is durable and before its senders are
    /// answered: the feed for routing messages to their recipients. Duplicates are not given
    /// again. The sink runs on the writer thread and may block: that holds back every sender
    /// (routing's back-pressure).
    pub fn open_with_sink(dir: &Path, sink: Sink) -> Result<MessageLog, StoreError> {
        MessageLog::open_inner(dir, system_clock(), Some(sink))
    }

    /// [`open`](MessageLog::open) with a given clock, for tests of time-dependent behaviour
    /// (retention, the dedup window).
    pub fn open_with_clock(dir: &Path, clock: Clock) -> Result<MessageLog, StoreError> {
        MessageLog::open_inner(dir, clock, None)
    }

    fn open_inner(dir: &Path, clock: Clock, sink: Option<Sink>) -> Result<MessageLog, StoreError> {
        let path = dir.to_path_buf();
        let existing = inspect_directory(&path)?;
        if existing {
            // Before fjall replays the journal: it panics (debug builds) or refuses on a
            // damaged last batch, and silently drops what follows some damage.
            journal::check_and_repair(&path)?;
        }
        let db = open_database(&path).map_err(|e| engine_error(&path, e))?;
        if existing {
            check_existing(&db, &path)?;
        }
        let ks = Keyspaces::open(&db).map_err(|e| engine_error(&path, e))?;
        let eng = |e| engine_error(&path, e);
        let corrupt = |what: &str, detail: String| StoreError::Corrupt {
            path: path.clone(),
            detail: format!("{what}: {detail}"),
        };
        if ks.meta.get(META_FORMAT).map_err(eng)?.is_none() {
            // New (or its creation was cut short, which check_existing allows): mark it.
            let mut marker = FORMAT_MAGIC.to_vec();
            marker.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
            let mut wb = db.batch().durability(Some(PersistMode::SyncAll));
            wb.insert(&ks.meta, META_FORMAT, marker);
            wb.commit().map_err(eng)?;
        }

        // Recover the id and timestamp high-water marks.
        let (mut last_id, mut last_ts) = match ks.meta.get(META_HIGH_WATER).map_err(eng)? {
            Some(v) => record::decode_pair(&v).map_err(|d| corrupt("meta/high-water", d))?,
            None => (0, 0),
        };
        if let Some(g) = ks.ids.last_key_value() {
            let (k, v) = g.into_inner().map_err(eng)?;
            let id = record::id_suffix(&k).map_err(|d| corrupt(KS_IDS, d))?;
            let (ts, _) = record::decode_id_entry(&v).map_err(|d| corrupt(KS_IDS, d))?;
            last_id = last_id.max(id);
            last_ts = last_ts.max(ts);
        }
        if last_id > MAX_ID {
            return Err(corrupt(
                "meta/high-water",
                format!("last id {last_id} is above 2^53 - 1"),
            ));
        }

        // Before the writer's first batch, whose `now` is at least this.
        let dedup_filter = dedup::DedupFilter::load(&ks.dedup, record::day_of(last_ts.max(clock()))).map_err(eng)?;

        let shared = Arc::new(Shared {
            last_id: AtomicU64::new(last_id),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::channel(writer::QUEUE_DEPTH);
        let w = writer::Writer {
            path: path.clone(),
            db: db.clone(),
            ks: ks.clone(),
            rx,
            shared: shared.clone(),
            clock: clock.clone(),
            next_id: last_id + 1,
            last_ts,
            dedup_filter,
            sink,
        };
        let handle = std::thread::Builder::new()
            .name("message-log-writer".into())
            .spawn(move || w.run())
            .map_err(|e| io_error(&path, e))?;
        tracing::info!(path = %path.display(), last_id, "message log open");
        Ok(MessageLog {
            inner: Arc::new(Inner {
                path,
                db,
                ks,
                clock,
                shared,
                tx: Some(tx),
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Stores a message and resolves once it is durable (or is a duplicate of a stored
    /// one). Never blocks the async reactor: waiting for the writer is asynchronous.
    /// Dropping the future does not withdraw the message; it may still be stored.
    pub async fn append(&self, msg: NewMessage) -> Result<Appended, StoreError> {
        self.submit(msg).await?.await
    }

    /// Queues a message for the writer, waiting only while its queue is full, and returns
    /// the wait for its commit (what [`append`](MessageLog::append) resolves to). Messages
    /// are stored in the order they were submitted, so a caller that pipelines, submitting
    /// one message after the other and waiting for the commits together, keeps its order;
    /// starting several `append` futures at once does not (the runtime may poll them in any
    /// order). Once this returns `Ok` the writer has the message: it is committed (or its
    /// commit fails) whether or not anyone waits.
    pub async fn submit(
        &self,
        msg: NewMessage,
    ) -> Result<impl Future<Output = Result<Appended, StoreError>> + Send + 'static, StoreError> {
        validate(&msg)?;
        let tx = self.inner.tx.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.send(writer::Command::Append(writer::Request { msg, reply }))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(async move { answer.await.map_err(|_| StoreError::Closed)? })
    }

    /// [`append`](MessageLog::append) for threads that are not async tasks (the admin CLI,
    /// `spawn_blocking`, tests). Panics if called from inside an async task, like every
    /// blocking tokio channel operation.
    pub fn append_blocking(&self, msg: NewMessage) -> Result<Appended, StoreError> {
        validate(&msg)?;
        let tx = self.inner.tx.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        tx.blocking_send(writer::Command::Append(writer::Request { msg, reply }))
            .map_err(|_| StoreError::Closed)?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// A page of one conversation, ascending by id, and whether more lie beyond it in the
    /// paging direction.
    ///
    /// With `before` (or with neither bound): the newest `limit` messages with id < `before`
    /// (and > `after`, if given), `more` meaning older ones exist. With only `after`: the
    /// oldest `limit` messages with id > `after`, `more` meaning newer ones exist.
    /// Blocking.
    pub fn history(
        &self,
        conv: &Conversation,
        before: Option<u64>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<StoredMessage>, bool), StoreError> {
        let cap = self.last_id();
        let lo = after.map_or(1, |a| a.saturating_add(1));
        let hi = before.map_or(cap, |b| b.saturating_sub(1).min(cap));
        if lo > hi {
            return Ok((Vec::new(), false));
        }
        let ck = record::conv_key(conv);
        let snapshot = self.inner.db.snapshot();
        let range = snapshot.range(&self.inner.ks.msgs, record::msg_key(&ck, lo)..=record::msg_key(&ck, hi));
        let newest_first = before.is_some() || after.is_none();
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };

        let mut page = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        for guard in iter {
            if page.len() == limit {
                more = true;
                break;
            }
            let (k, v) = guard.into_inner().map_err(|e| self.engine(e))?;
            page.push(self.decode_msg(&k, &v, Some(conv))?);
        }
        if newest_first {
            page.reverse();
        }
        Ok((page, more))
    }

    /// Everything a user's devices should have with id > `after`: direct messages sent to
    /// or by the user, and messages of the listed rooms from each room's `visible_from`
    /// (exclusive) on. Ascending by id, at most `limit`. Blocking.
    pub fn catch_up(
        &self,
        user: &UserName,
        rooms: &[(RoomName, u64)],
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let cap = self.last_id();
        if limit == 0 || after >= cap {
            return Ok(Vec::new());
        }
        let snapshot = self.inner.db.snapshot();
        let mut sources: Vec<Box<dyn Iterator<Item = Result<StoredMessage, StoreError>>>> =
            Vec::with_capacity(rooms.len() + 1);

        // Direct messages: one scan of the user's inbox, then the records themselves.
        let inbox = snapshot.range(
            &self.inner.ks.inbox,
            record::inbox_key(user, after + 1)..=record::inbox_key(user, cap),
        );
        let (this, me, snap) = (self.clone(), user.clone(), snapshot.clone());
        sources.push(Box::new(
            inbox.filter_map(move |guard| this.inbox_entry(&snap, &me, guard).transpose()),
        ));

        for (room, visible_from) in rooms {
            let lo = after.max(*visible_from).saturating_add(1);
            if lo > cap {
                continue;
            }
            let conv = Conversation::Room(room.clone());
            let ck = record::conv_key(&conv);
            let range = snapshot.range(
                &self.inner.ks.msgs,
                record::msg_key(&ck, lo)..=record::msg_key(&ck, cap),
            );
            let this = self.clone();
            sources.push(Box::new(range.map(move |guard| {
                let (k, v) = guard.into_inner().map_err(|e| this.engine(e))?;
                this.decode_msg(&k, &v, Some(&conv))
            })));
        }

        // k-way merge by id; each source is already ascending, and reads stop at `limit`.
        let mut heads: Vec<Option<StoredMessage>> = Vec::with_capacity(sources.len());
        let mut heap = BinaryHeap::new();
        for (i, source) in sources.iter_mut().enumerate() {
            let head = source.next().transpose()?;
            if let Some(m) = &head {
                heap.push(Reverse((m.id, i)));
            }
            heads.push(head);
        }
        let mut out: Vec<StoredMessage> = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let Some(Reverse((id, i))) = heap.pop() else {
                break;
            };
            let (Some(m), Some(source)) = (heads.get_mut(i).and_then(Option::take), sources.get_mut(i)) else {
                break;
            };
            // A room listed twice yields its messages twice: ids are unique, so skip repeats.
            if out.last().is_none_or(|last| last.id != id) {
                out.push(m);
            }
            if let Some(next) = source.next().transpose()? {
                heap.push(Reverse((next.id, i)));
                if let Some(slot) = heads.get_mut(i) {
                    *slot = Some(next);
                }
            }
        }
        Ok(out)
    }

    /// The highest id assigned and committed so far (0 if none): a member's "joined at".
    pub fn last_id(&self) -> u64 {
        self.inner.shared.last_id.load(Ordering::Acquire)
    }

    /// Retention: deletes up to `max` of the oldest messages with a timestamp below `ts_ms`,
    /// and up to `max` dedup entries past the 24-hour window; returns how many messages went.
    /// Call it repeatedly, in small batches, until it returns less than `max`. Blocking.
    pub fn delete_older_than(&self, ts_ms: u64, max: usize) -> Result<usize, StoreError> {
        let ks = &self.inner.ks;
        let cap = self.last_id();
        let mut wb = self.inner.db.batch().durability(Some(PersistMode::SyncAll));
        let mut deleted = 0;
        for guard in ks.ids.iter() {
            if deleted == max {
                break;
            }
            let (k, v) = guard.into_inner().map_err(|e| self.engine(e))?;
            let id = record::id_suffix(&k).map_err(|d| self.corrupt(KS_IDS, d))?;
            let (ts, conv) = record::decode_id_entry(&v).map_err(|d| self.corrupt(KS_IDS, d))?;
            if ts >= ts_ms || id > cap {
                break;
            }
            wb.remove(&ks.ids, k);
            wb.remove(&ks.msgs, record::msg_key(&record::conv_key(&conv), id));
            if let Conversation::Direct(a, b) = &conv {
                wb.remove(&ks.inbox, record::inbox_key(a, id));
                if a != b {
                    wb.remove(&ks.inbox, record::inbox_key(b, id));
                }
            }
            deleted += 1;
        }

        // Dedup buckets older than yesterday hold nothing younger than 24 hours.
        let keep_from = record::day_of((self.inner.clock)()).saturating_sub(1);
        for guard in ks.dedup.range(..keep_from.to_be_bytes()).take(max) {
            let k = guard.key().map_err(|e| self.engine(e))?;
            wb.remove(&ks.dedup, k);
        }
        wb.commit().map_err(|e| self.engine(e))?;
        Ok(deleted)
    }

    /// How many messages the log holds: last id - first id + 1. Exact as long as ids have
    /// no gaps and retention deletes oldest first, which is how this module works; cheap
    /// (two key lookups), not a scan.
    pub fn count(&self) -> Result<u64, StoreError> {
        let last = self.last_id();
        let Some(g) = self.inner.ks.ids.first_key_value() else {
            return Ok(0);
        };
        let k = g.key().map_err(|e| self.engine(e))?;
        let first = record::id_suffix(&k).map_err(|d| self.corrupt(KS_IDS, d))?;
        Ok((last + 1).saturating_sub(first))
    }

    /// Counters of the writer since open.
    pub fn stats(&self) -> LogStats {
        let s = &self.inner.shared;
        LogStats {
            appended: s.appended.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
        }
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops appends for every handle: what is already queued is committed and answered,
    /// later appends fail with [`StoreError::Closed`]; then the journal is synced and the
    /// writer thread has ended, and any failure of that is returned. Reads keep working on
    /// other handles until the last one is dropped. Blocking (call it from
    /// `spawn_blocking`); closing twice is harmless.
    pub fn close(self) -> Result<(), StoreError> {
        if let Some(tx) = &self.inner.tx {
            // An error means the writer is already gone, which is what we want.
            let _ = tx.blocking_send(writer::Command::Close);
        }
        self.inner.join_writer()
    }

    // ---- helpers ----

    /// Resolves one inbox entry to its message; `None` for a dangling entry (logged).
    fn inbox_entry(
        &self,
        snapshot: &fjall::Snapshot,
        user: &UserName,
        guard: fjall::Guard,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let (k, v) = guard.into_inner().map_err(|e| self.engine(e))?;
        let id = record::id_suffix(&k).map_err(|d| self.corrupt(KS_INBOX, d))?;
        let peer = record::decode_user(&v).map_err(|d| self.corrupt(KS_INBOX, d))?;
        let conv = Conversation::direct(user, &peer);
        let key = record::msg_key(&record::conv_key(&conv), id);
        match snapshot.get(&self.inner.ks.msgs, &key).map_err(|e| self.engine(e))? {
            Some(v) => self.decode_msg(&key, &v, Some(&conv)).map(Some),
            None => {
                tracing::warn!(path = %self.inner.path.display(), id, "inbox entry without its message");
                Ok(None)
            }
        }
    }

    /// Decodes a `msgs` record and checks it against its key.
    fn decode_msg(&self, key: &[u8], value: &[u8], conv: Option<&Conversation>) -> Result<StoredMessage, StoreError> {
        let m = record::decode_record(value).map_err(|d| self.corrupt(KS_MSGS, d))?;
        check_record(key, &m, conv).map_err(|d| self.corrupt(KS_MSGS, d))?;
        Ok(m)
    }

    fn engine(&self, e: fjall::Error) -> StoreError {
        engine_error(&self.inner.path, e)
    }

    fn corrupt(&self, what: &str, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.path.clone(),
            detail: format!("{what}: {detail}"),
        }
    }
}

/// A record must sit under its own id, in its own conversation.
fn check_record(key: &[u8], m: &StoredMessage, conv: Option<&Conversation>) -> Result<(), String> {
    let key_id = record::id_suffix(key)?;
    if key_id != m.id {
        return Err(format!("record {} stored under id {key_id}", m.id));
    }
    let own = Conversation::of(&m.from, &m.to);
    if conv.is_some_and(|c| record::conv_key(c) != record::conv_key(&own)) {
        return Err(format!("record {} stored in the wrong conversation", m.id));
    }
    Ok(())
}

/// Loads a message by id through the `ids` index (`None` if it is gone).
fn load_by_id(path: &Path, ks: &Keyspaces, id: u64) -> Result<Option<StoredMessage>, StoreError> {
    let corrupt = |what: &str, d: String| StoreError::Corrupt {
        path: path.to_owned(),
        detail: format!("{what}: {d}"),
    };
    let Some(v) = ks.ids.get(id.to_be_bytes()).map_err(|e| engine_error(path, e))? else {
        return Ok(None);
    };
    let (_, conv) = record::decode_id_entry(&v).map_err(|d| corrupt(KS_IDS, d))?;
    let key = record::msg_key(&record::conv_key(&conv), id);
    let Some(v) = ks.msgs.get(&key).map_err(|e| engine_error(path, e))? else {
        return Ok(None);
    };
    let m = record::decode_record(&v).map_err(|d| corrupt(KS_MSGS, d))?;
    check_record(&key, &m, Some(&conv)).map_err(|d| corrupt(KS_MSGS, d))?;
    Ok(Some(m))
}

fn validate(msg: &NewMessage) -> Result<(), StoreError> {
    if msg.client_id.len() > MAX_CLIENT_ID {
        return Err(StoreError::Invalid(format!(
            "client id longer than {MAX_CLIENT_ID} bytes"
        )));
    }
    if msg.text.len() > MAX_TEXT {
        return Err(StoreError::Invalid(format!("text longer than {MAX_TEXT} bytes")));
    }
    Ok(())
}

/// Checks an existing fjall database before anything is created in it: it must carry our
/// format marker with a known version, or (a creation cut short) hold nothing but empty
/// keyspaces of ours.
fn check_existing(db: &Database, path: &Path) -> Result<(), StoreError> {
    let eng = |e| engine_error(path, e);
    let foreign = |detail: &str| StoreError::Foreign {
        path: path.to_owned(),
        detail: detail.into(),
    };
    if db.keyspace_exists(KS_META) {
        let meta = db.keyspace(KS_META, KeyspaceCreateOptions::default).map_err(eng)?;
        if let Some(v) = meta.get(META_FORMAT).map_err(eng)? {
            let version = v
                .strip_prefix(FORMAT_MAGIC)
                .and_then(|rest| <[u8; 4]>::try_from(rest).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| foreign("its format marker is not the message log's"))?;
            if version != FORMAT_VERSION {
                return Err(StoreError::UnknownVersion {
                    path: path.to_owned(),
                    found: version,
                });
            }
            return Ok(());
        }
    }
    for name in db.list_keyspace_names() {
        let name: &str = &name;
        let ours = [KS_MSGS, KS_IDS, KS_INBOX, KS_DEDUP, KS_META].contains(&name);
        // The keyspace exists, so this opens it and creates nothing.
        let empty = || {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .and_then(|k| k.is_empty())
                .map_err(eng)
        };
        if !ours || !empty()? {
            return Err(foreign("a fjall database without the message log's format marker"));
        }
    }
    Ok(())
}

/// Whether `path` holds an existing store (`true`), or is missing or empty (`false`).
/// Anything else is refused before fjall gets to write into it.
fn inspect_directory(path: &Path) -> Result<bool, StoreError> {
    let mut entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                detail: "not a directory".into(),
            });
        }
        Err(e) => return Err(io_error(path, e)),
    };
    if entries.next().is_none() {
        return Ok(false);
    }
    if path.join(FJALL_VERSION_FILE).is_file() {
        return Ok(true);
    }
    Err(StoreError::Foreign {
        path: path.to_owned(),
        detail: "the directory is not empty and holds no database".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    fn dm(from: &str, to: &str, client_id: &str) -> NewMessage {
        NewMessage {
            from: u(from),
            to: Target::parse(to).unwrap(),
            client_id: client_id.into(),
            action: false,
            text: format!("{from} to {to}"),
            sender_device: 1,
        }
    }

    /// The nice value of each of this process's threads whose name starts with `name` (the
    /// kernel keeps 15 bytes of it), from /proc.
    fn nice_of_threads(name: &str) -> Vec<i64> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("stat")),
            ) else {
                continue; // the thread ended meanwhile
            };
            if comm.starts_with(name) {
                // After the command in parentheses: state is field 3, nice field 19.
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                found.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
            }
        }
        found
    }

    #[test]
    fn only_fjall_workers_run_nicer() {
        // SAFETY: reads the calling thread's nice value.
        let mine = i64::from(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) });
        let dir = tempfile::tempdir().unwrap();
        let log = MessageLog::open(dir.path()).unwrap();
        let workers = nice_of_threads("fjall:worker");
        assert!(!workers.is_empty());
        let want = (mine + i64::from(WORKER_NICE)).min(19);
        assert!(workers.iter().all(|&n| n == want), "{workers:?}, want {want}");
        // The opener's thread is not the caller's, so the caller, and the writer thread it
        // started, keep their priority. SAFETY: as above.
        assert_eq!(i64::from(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }), mine);
        log.close().unwrap();
    }

    #[test]
    fn direct_conversations_are_symmetric() {
        assert_eq!(
            Conversation::direct(&u("b"), &u("a")),
            Conversation::direct(&u("a"), &u("b"))
        );
        assert_eq!(
            Conversation::of(&u("b"), &Target::parse("a").unwrap()),
            Conversation::of(&u("a"), &Target::parse("b").unwrap())
        );
    }

    #[test]
    fn oversized_messages_are_refused_before_queueing() {
        let dir = tempfile::tempdir().unwrap();
        let log = MessageLog::open(dir.path()).unwrap();
        let mut m = dm("a", "b", &"x".repeat(MAX_CLIENT_ID + 1));
        assert!(matches!(log.append_blocking(m.clone()), Err(StoreError::Invalid(_))));
        m.client_id.clear();
        m.text = "x".repeat(MAX_TEXT + 1);
        assert!(matches!(log.append_blocking(m), Err(StoreError::Invalid(_))));
        assert_eq!(log.last_id(), 0);
    }

    #[test]
    fn duplicates_within_one_batch_return_the_first() {
        // Many identical appends racing from threads land in few batches; exactly one is new.
        let dir = tempfile::tempdir().unwrap();
        let log = MessageLog::open(dir.path()).unwrap();
        let results: Vec<Appended> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| s.spawn(|| log.append_blocking(dm("a", "b", "same")).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let new: Vec<_> = results.iter().filter(|r| matches!(r, Appended::New(_))).collect();
        assert_eq!(new.len(), 1);
        let id = new[0].message().id;
        assert!(results.iter().all(|r| r.message().id == id));
        assert_eq!(log.stats().duplicates, 15);
        assert_eq!(log.count().unwrap(), 1);
    }

    #[test]
    fn dedup_window_is_24_hours() {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicU64::new(10 * record::DAY_MS + 5));
        let clock_now = now.clone();
        let log = MessageLog::open_with_clock(dir.path(), Arc::new(move || clock_now.load(Ordering::SeqCst))).unwrap();
        let first = log.append_blocking(dm("a", "b", "c1")).unwrap().into_message();
        // Across a day boundary, still inside the window: a duplicate.
        now.store(11 * record::DAY_MS + 4, Ordering::SeqCst);
        assert_eq!(
            log.append_blocking(dm("a", "b", "c1")).unwrap(),
            Appended::Duplicate(first.clone())
        );
        // 24 hours after the original: new.
        now.store(11 * record::DAY_MS + 5, Ordering::SeqCst);
        let again = log.append_blocking(dm("a", "b", "c1")).unwrap();
        assert!(matches!(&again, Appended::New(m) if m.id == first.id + 1));
        // Without a client id nothing is deduplicated.
        let x = log.append_blocking(dm("a", "b", "")).unwrap();
        let y = log.append_blocking(dm("a", "b", "")).unwrap();
        assert!(matches!((&x, &y), (Appended::New(_), Appended::New(_))));

        // Retention drops dedup buckets older than yesterday, and only those.
        assert!(!log.inner.ks.dedup.is_empty().unwrap());
        now.store(12 * record::DAY_MS, Ordering::SeqCst);
        assert_eq!(log.delete_older_than(0, 100).unwrap(), 0);
        assert!(
            !log.inner.ks.dedup.is_empty().unwrap(),
            "yesterday's bucket was dropped"
        );
        now.store(13 * record::DAY_MS, Ordering::SeqCst);
        assert_eq!(log.delete_older_than(0, 100).unwrap(), 0);
        assert!(log.inner.ks.dedup.is_empty().unwrap());
        assert_eq!(log.count().unwrap(), 4, "messages are not touched by dedup expiry");
    }

    #[test]
    fn dedup_reaches_into_yesterday_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicU64::new(10 * record::DAY_MS + 5));
        let clock = |now: &Arc<AtomicU64>| -> Clock {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let log = MessageLog::open_with_clock(dir.path(), clock(&now)).unwrap();
        let first = log.append_blocking(dm("a", "b", "c1")).unwrap().into_message();
        let second = log.append_blocking(dm("a", "b", "c2")).unwrap().into_message();
        log.close().unwrap();

        // Reopened the next day: yesterday's bucket is read into the writer's filter.
        now.store(11 * record::DAY_MS + 4, Ordering::SeqCst);
        let log = MessageLog::open_with_clock(dir.path(), clock(&now)).unwrap();
        assert_eq!(
            log.append_blocking(dm("a", "b", "c1")).unwrap(),
            Appended::Duplicate(first)
        );
        let third = log.append_blocking(dm("a", "b", "c3")).unwrap().into_message();
        // Past midnight again, today's new entry is yesterday's, and still found.
        now.store(12 * record::DAY_MS + 1, Ordering::SeqCst);
        assert_eq!(
            log.append_blocking(dm("a", "b", "c3")).unwrap(),
            Appended::Duplicate(third)
        );
        // The window has left the first day: new again.
        assert!(matches!(log.append_blocking(dm("a", "b", "c2")).unwrap(), Appended::New(m) if m.id > second.id));
    }

    #[test]
    fn ids_survive_retention_emptying_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = MessageLog::open(dir.path()).unwrap();
            for i in 0..3 {
                log.append_blocking(dm("a", "#r", &i.to_string())).unwrap();
            }
            assert_eq!(log.delete_older_than(u64::MAX, 100).unwrap(), 3);
            assert_eq!(log.count().unwrap(), 0);
            log.close().unwrap();
        }
        let log = MessageLog::open(dir.path()).unwrap();
        assert_eq!(log.last_id(), 3);
        let m = log.append_blocking(dm("a", "#r", "")).unwrap().into_message();
        assert_eq!(m.id, 4);
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let log = MessageLog::open(dir.path()).unwrap();
        let m = log.append_blocking(dm("a", "b", "")).unwrap().into_message();
        let conv = Conversation::of(&m.from, &m.to);
        let key = record::msg_key(&record::conv_key(&conv), m.id);
        log.inner.ks.msgs.insert(key, b"\x01garbage".to_vec()).unwrap();
        let err = log.history(&conv, None, None, 10).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        let err = log.catch_up(&u("b"), &[], 0, 10).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
