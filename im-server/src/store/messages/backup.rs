//! A consistent copy of the message log while it keeps running.
//!
//! fjall 3 has no checkpoint or backup call, and its files cannot simply be copied while the
//! database is open: flushes and compactions rewrite them underneath. It does have
//! cross-keyspace snapshots: a snapshot sees every write batch that committed before it and
//! none after, and each group commit is one write batch. So the backup opens a snapshot and
//! bulk-loads every keyspace, as the snapshot sees it, into a new database (fjall's ingestion
//! writes sorted tables directly, with no journal), which it then opens as a message log to
//! check. The writer never pauses; compaction keeps what the snapshot still needs.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use fjall::{Keyspace, PersistMode, Readable, Snapshot};

use super::{Keyspaces, MessageLog, StoreError, engine_error, io_error};

/// What a backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBackup {
    /// The highest id in the copy: every message acknowledged before the backup began has an
    /// id at or below it.
    pub last_id: u64,
    /// How many messages the copy holds.
    pub messages: u64,
}

impl MessageLog {
    /// Writes a consistent copy of the log into `dest`, a directory that must not exist yet
    /// (created with mode 0700). Blocking; appends go on meanwhile and are not in the copy. A
    /// failed copy is removed again: half a backup is worse than none.
    pub fn backup_to(&self, dest: &Path) -> Result<LogBackup, StoreError> {
        let snapshot = self.inner.db.snapshot();
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dest)
            .map_err(|e| io_error(dest, e))?;
        let copied = copy(&snapshot, &self.inner.ks, dest).and_then(|()| {
            let copy = MessageLog::open(dest)?;
            let info = LogBackup {
                last_id: copy.last_id(),
                messages: copy.count()?,
            };
            copy.close()?;
            Ok(info)
        });
        if copied.is_err() {
            let _ = std::fs::remove_dir_all(dest);
        }
        copied
    }
}

fn copy(snapshot: &Snapshot, from: &Keyspaces, dest: &Path) -> Result<(), StoreError> {
    let eng = |e| engine_error(dest, e);
    let db = super::open_database(dest).map_err(eng)?;
    let to = Keyspaces::open(&db).map_err(eng)?;
    let pairs = [
        (&from.msgs, &to.msgs),
        (&from.ids, &to.ids),
        (&from.inbox, &to.inbox),
        (&from.dedup, &to.dedup),
        (&from.meta, &to.meta),
    ];
    for (src, dst) in pairs {
        ingest(snapshot, src, dst).map_err(eng)?;
    }
    db.persist(PersistMode::SyncAll).map_err(eng)
}

/// Bulk-loads everything `snapshot` sees in `src` into the empty keyspace `dst`.
fn ingest(snapshot: &Snapshot, src: &Keyspace, dst: &Keyspace) -> fjall::Result<()> {
    let mut ingestion = dst.start_ingestion()?;
    for entry in snapshot.iter(src) {
        let (k, v) = entry.into_inner()?;
        ingestion.write(k, v)?;
    }
    ingestion.finish()
}

#[cfg(test)]
mod tests {
    use im_proto::{Target, UserName};

    use super::*;
    use crate::store::messages::{Conversation, NewMessage, system_clock};

    fn msg(from: &str, to: &str, text: &str) -> NewMessage {
        NewMessage {
            from: UserName::parse(from).unwrap(),
            to: Target::parse(to).unwrap(),
            client_id: text.into(),
            action: false,
            text: text.into(),
            sender_device: 1,
        }
    }

    #[test]
    fn a_backup_is_a_working_log_with_everything_committed_before_it() {
        let tmp = tempfile::tempdir().unwrap();
        let log = MessageLog::open(&tmp.path().join("log")).unwrap();
        for i in 0..300 {
            log.append_blocking(msg("alice", if i % 2 == 0 { "bob" } else { "#room" }, &format!("m{i}")))
                .unwrap();
        }
        // Retention ran: the copy keeps the high-water mark, so ids never restart.
        assert_eq!(log.delete_older_than(system_clock()() + 1000, 10).unwrap(), 10);
        // Appends keep going while the backup runs.
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    log.append_blocking(msg("bob", "alice", &format!("late{i}"))).unwrap();
                }
            })
        };
        let dest = tmp.path().join("backup");
        let info = log.backup_to(&dest).unwrap();
        writer.join().unwrap();
        assert!(info.last_id >= 300, "{info:?}");
        assert_eq!(info.messages, info.last_id - 10);
        // Taking it again to the same place is refused, and leaves the first alone.
        assert!(log.backup_to(&dest).is_err());
        log.close().unwrap();

        let copy = MessageLog::open_with_clock(&dest, system_clock()).unwrap();
        assert_eq!(copy.last_id(), info.last_id);
        let dm = Conversation::direct(&UserName::parse("alice").unwrap(), &UserName::parse("bob").unwrap());
        let (page, _) = copy.history(&dm, None, None, 1000).unwrap();
        assert_eq!(
            page.first().unwrap().text,
            "m10",
            "retention's deletions are in the copy"
        );
        let texts: Vec<_> = page.iter().map(|m| m.text.clone()).collect();
        assert!(texts.contains(&"m298".to_owned()));
        // A retransmission of a message in the copy is still recognised (dedup came along),
        // and new ids continue after the copy's last one.
        let again = copy.append_blocking(msg("alice", "bob", "m298")).unwrap();
        assert!(matches!(again, crate::store::messages::Appended::Duplicate(_)));
        let next = copy.append_blocking(msg("alice", "bob", "after restore")).unwrap();
        assert_eq!(next.message().id, info.last_id + 1);
    }
}
