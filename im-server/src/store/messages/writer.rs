//! The group-commit writer: one dedicated thread owns id and timestamp assignment and all
//! message writes.
//!
//! It waits for a request, then takes everything else already queued (up to
//! [`MAX_BATCH`]), stages the whole lot into one fjall write batch, commits it with one
//! `fsync` ([`PersistMode::SyncAll`]), and only then answers each waiting sender. Under load
//! the queue fills while the previous `fsync` runs, so batches grow by themselves and the
//! cost of durability is shared; an idle log commits single messages at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fjall::{Database, OwnedWriteBatch, PersistMode};
use im_proto::Target;
use im_proto::limits::MAX_ID;
use tokio::sync::{mpsc, oneshot};

use super::dedup::DedupFilter;
use super::record::{self, DAY_MS};
use super::{
    Appended, Clock, Conversation, Keyspaces, NewMessage, Shared, Sink, StoreError, StoredMessage, engine_error,
};

/// Most requests in one commit: bounds the batch's memory and the latency of its first
/// sender. At 100-byte messages that is well under a megabyte of journal per fsync.
pub(super) const MAX_BATCH: usize = 4096;

/// Depth of the request queue in front of the writer. A full queue makes `append` wait
/// (asynchronously), which is the back-pressure on senders.
pub(super) const QUEUE_DEPTH: usize = 16 * 1024;

/// The dedup window: a (sender, client id) pair seen this recently is a retransmission.
pub(super) const DEDUP_WINDOW_MS: u64 = DAY_MS;

/// What the writer's queue carries.
pub(super) enum Command {
    Append(Request),
    /// Stop taking requests: commit what is already queued, sync, and exit.
    Close,
}

pub(super) struct Request {
    pub msg: NewMessage,
    pub reply: oneshot::Sender<Result<Appended, StoreError>>,
}

pub(super) struct Writer {
    pub path: PathBuf,
    pub db: Database,
    pub ks: Keyspaces,
    pub rx: mpsc::Receiver<Command>,
    pub shared: Arc<Shared>,
    pub clock: Clock,
    /// The next id to hand out; every id below it is stored (or was, before retention).
    pub next_id: u64,
    /// The newest timestamp handed out; timestamps never go backwards.
    pub last_ts: u64,
    /// Which (sender, client id) pairs the dedup buckets may hold: most messages are new,
    /// and this tells so without reading the buckets.
    pub dedup_filter: DedupFilter,
    /// Where newly stored messages go once durable, in id order (routing). It may block,
    /// and with it every sender.
    pub sink: Option<Sink>,
}

impl Writer {
    /// Runs until the log is closed (or every handle is gone) and the queue is drained,
    /// then syncs the journal one last time.
    pub fn run(mut self) -> Result<(), StoreError> {
        let mut batch = Vec::with_capacity(64);
        while let Some(first) = self.rx.blocking_recv() {
            self.take(first, &mut batch);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => self.take(cmd, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
        }
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| engine_error(&self.path, e))
    }

    fn take(&mut self, cmd: Command, batch: &mut Vec<Request>) {
        match cmd {
            Command::Append(req) => batch.push(req),
            // New sends now fail; what is already queued is still received and committed,
            // then `blocking_recv` returns `None`.
            Command::Close => self.rx.close(),
        }
    }

    /// Stages, commits and answers one batch, leaving `batch` empty.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        let now = self.last_ts.max((self.clock)());
        self.dedup_filter.forget_before(record::day_of(now).saturating_sub(1));
        let mut next_id = self.next_id;
        let mut wb = self.db.batch().durability(Some(PersistMode::SyncAll));
        let mut outcomes: Vec<Result<Appended, StoreError>> = Vec::with_capacity(batch.len());
        // Dedup keys first seen in this very batch, pointing into `outcomes`.
        let mut seen: HashMap<(&im_proto::UserName, &str), usize> = HashMap::new();
        let mut new_count = 0u64;

        for req in batch.iter() {
            let msg = &req.msg;
            let dedup = (!msg.client_id.is_empty()).then(|| self.dedup_filter.hash(msg.from.as_str(), &msg.client_id));
            if let Some(hash) = dedup {
                if let Some(&i) = seen.get(&(&msg.from, msg.client_id.as_str()))
                    && let Some(Ok(Appended::New(orig))) = outcomes.get(i)
                {
                    outcomes.push(Ok(Appended::Duplicate(orig.clone())));
                    continue;
                }
                match self.find_duplicate(msg, hash, now) {
                    Ok(Some(orig)) => {
                        outcomes.push(Ok(Appended::Duplicate(orig)));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        outcomes.push(Err(e));
                        continue;
                    }
                }
            }
            if next_id > MAX_ID {
                outcomes.push(Err(StoreError::IdsExhausted));
                continue;
            }
            let stored = StoredMessage {
                id: next_id,
                ts: now,
                from: msg.from.clone(),
                to: msg.to.clone(),
                client_id: msg.client_id.clone(),
                action: msg.action,
                text: msg.text.clone(),
                sender_device: msg.sender_device,
            };
            next_id += 1;
            self.stage(&mut wb, &stored, dedup);
            if dedup.is_some() {
                seen.insert((&msg.from, msg.client_id.as_str()), outcomes.len());
            }
            new_count += 1;
            outcomes.push(Ok(Appended::New(stored)));
        }

        if new_count > 0 {
            wb.insert(
                &self.ks.meta,
                super::META_HIGH_WATER,
                record::encode_pair(next_id - 1, now),
            );
            let started = std::time::Instant::now();
            if let Err(e) = wb.commit() {
                // Nothing of this batch is acknowledged; its ids are handed out again.
                crate::metrics::commit_failed();
                let err = engine_error(&self.path, e);
                tracing::error!(path = %self.path.display(), error = %err, "message log commit failed");
                for o in &mut outcomes {
                    if o.is_ok() {
                        *o = Err(err.clone());
                    }
                }
                Self::reply(batch, outcomes);
                return;
            }
            self.next_id = next_id;
            self.shared.last_id.store(next_id - 1, Ordering::Release);
            self.shared.commits.fetch_add(1, Ordering::Relaxed);
            self.shared.appended.fetch_add(new_count, Ordering::Relaxed);
            crate::metrics::committed(started.elapsed(), new_count);
            if let Some(sink) = &mut self.sink {
                let routed = outcomes
                    .iter()
                    .filter_map(|o| match o {
                        Ok(Appended::New(m)) => Some(m.clone()),
                        _ => None,
                    })
                    .collect();
                sink(routed);
            }
        }
        self.last_ts = now;
        let dups = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Appended::Duplicate(_))))
            .count();
        self.shared.duplicates.fetch_add(dups as u64, Ordering::Relaxed);
        crate::metrics::duplicates(dups);
        Self::reply(batch, outcomes);
    }

    fn reply(batch: &mut Vec<Request>, outcomes: Vec<Result<Appended, StoreError>>) {
        for (req, outcome) in batch.drain(..).zip(outcomes) {
            // A sender that gave up waiting is no error: its message is stored regardless.
            let _ = req.reply.send(outcome);
        }
    }

    /// Adds one new message to the write batch: its record, its id entry, the inbox entries
    /// of a direct message, and its dedup entry (given the hash of its dedup pair; also
    /// noted in the filter).
    fn stage(&mut self, wb: &mut OwnedWriteBatch, m: &StoredMessage, dedup: Option<u64>) {
        let conv = Conversation::of(&m.from, &m.to);
        let ck = record::conv_key(&conv);
        wb.insert(&self.ks.msgs, record::msg_key(&ck, m.id), record::encode_record(m));
        wb.insert(&self.ks.ids, m.id.to_be_bytes(), record::encode_id_entry(m.ts, &ck));
        if let Target::User(to) = &m.to {
            wb.insert(&self.ks.inbox, record::inbox_key(&m.from, m.id), to.as_str());
            if *to != m.from {
                wb.insert(&self.ks.inbox, record::inbox_key(to, m.id), m.from.as_str());
            }
        }
        if let Some(hash) = dedup {
            let day = record::day_of(m.ts);
            wb.insert(
                &self.ks.dedup,
                record::dedup_key(day, &m.from, &m.client_id),
                record::encode_pair(m.id, m.ts),
            );
            self.dedup_filter.insert(day, hash);
        }
    }

    /// The stored original of a retransmission, if (from, client_id), hashed to `hash`, was
    /// stored less than [`DEDUP_WINDOW_MS`] before `now`. Looks in today's and yesterday's
    /// buckets, those the filter does not rule out.
    fn find_duplicate(&self, msg: &NewMessage, hash: u64, now: u64) -> Result<Option<StoredMessage>, StoreError> {
        let today = record::day_of(now);
        for day in [today, today.saturating_sub(1)] {
            if !self.dedup_filter.may_hold(day, hash) {
                continue;
            }
            let key = record::dedup_key(day, &msg.from, &msg.client_id);
            let Some(v) = self.ks.dedup.get(&key).map_err(|e| engine_error(&self.path, e))? else {
                continue;
            };
            let (id, ts) = record::decode_pair(&v).map_err(|d| self.corrupt("dedup", d))?;
            if now.saturating_sub(ts) >= DEDUP_WINDOW_MS {
                continue;
            }
            // The original may be gone (a retention shorter than the window): then this is
            // a new message after all.
            return super::load_by_id(&self.path, &self.ks, id);
        }
        Ok(None)
    }

    fn corrupt(&self, what: &str, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!("{what}: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::messages::MessageLog;

    fn req(from: &str, client_id: &str) -> (Request, oneshot::Receiver<Result<Appended, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let msg = NewMessage {
            from: im_proto::UserName::parse(from).unwrap(),
            to: Target::parse("#room").unwrap(),
            client_id: client_id.into(),
            action: false,
            sender_device: 0,
            text: "hi".into(),
        };
        (Request { msg, reply }, answer)
    }

    #[test]
    fn one_batch_one_commit_and_in_batch_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let log = MessageLog::open(dir.path()).unwrap();
        // A second writer over the same store, driven by hand so the batch is exactly ours.
        let (_tx, rx) = mpsc::channel(1);
        let shared = Arc::new(Shared::default());
        let (sink, routed) = std::sync::mpsc::channel();
        let mut w = Writer {
            path: dir.path().to_owned(),
            db: log.inner.db.clone(),
            ks: log.inner.ks.clone(),
            rx,
            shared: shared.clone(),
            clock: Arc::new(|| 1_000),
            next_id: 1,
            last_ts: 5_000, // the clock is behind: timestamps must not go backwards
            dedup_filter: DedupFilter::load(&log.inner.ks.dedup, 0).unwrap(),
            sink: Some(Box::new(move |batch| sink.send(batch).unwrap())),
        };
        let (reqs, mut answers): (Vec<_>, Vec<_>) = [req("a", "x"), req("a", "x"), req("b", "x"), req("a", "")]
            .into_iter()
            .unzip();
        let mut batch = reqs;
        w.commit(&mut batch);
        assert!(batch.is_empty());
        let got: Vec<Appended> = answers.iter_mut().map(|a| a.try_recv().unwrap().unwrap()).collect();
        assert!(matches!(&got[0], Appended::New(m) if m.id == 1 && m.ts == 5_000));
        assert_eq!(got[1], Appended::Duplicate(got[0].message().clone()));
        assert!(matches!(&got[2], Appended::New(m) if m.id == 2));
        assert!(matches!(&got[3], Appended::New(m) if m.id == 3));
        assert_eq!(shared.commits.load(Ordering::Relaxed), 1);
        assert_eq!(shared.appended.load(Ordering::Relaxed), 3);
        assert_eq!(shared.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(shared.last_id.load(Ordering::Relaxed), 3);
        assert_eq!(w.next_id, 4);
        // The new ones, not the duplicate, went to the routing sink, in id order.
        let mut sunk = Vec::new();
        while let Ok(batch) = routed.try_recv() {
            sunk.extend(batch.iter().map(|m| m.id));
        }
        assert_eq!(sunk, [1, 2, 3]);
    }
}
