//! Device cursors saved in batches, off the sessions' paths.
//!
//! A live session saves its device's cursor every few seconds, so that a crash redelivers
//! little. Each save is a SQLite commit with `fsync` (about 2.5 ms here) under the accounts
//! database's one lock; with a few hundred busy devices, saves awaited in the session loop
//! queued behind each other for a hundred milliseconds and more, and every message waiting on
//! those sessions waited too. So sessions hand their cursor to [`Cursors::save`] and go on: one
//! worker task writes everything handed in since its last write in one transaction.
//!
//! A cursor only moves forward (`advance_cursors` keeps the larger value), so a batched save
//! may land before or after the direct save a session makes as it ends (which it awaits: the
//! next connection must find it), and losing a batch to a crash only means redelivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::store::accounts::{Accounts, UserId};

/// (user, device) -> acknowledged up to.
type Batch = HashMap<(UserId, u64), u64>;

/// The handle sessions save through. The worker starts on first use, on the runtime of the
/// caller (tests and the fuzzer run sessions on runtimes of their own), and again if that
/// runtime has gone.
pub struct Cursors {
    accounts: Arc<Accounts>,
    tx: Mutex<Option<mpsc::UnboundedSender<(UserId, u64, u64)>>>,
}

impl Cursors {
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Cursors {
            accounts,
            tx: Mutex::new(None),
        }
    }

    /// Queues a save of `device`'s cursor at `up_to`; returns at once.
    pub fn save(&self, user: UserId, device: u64, up_to: u64) {
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let update = (user, device, up_to);
        let update = match tx.as_ref().map(|t| t.send(update)) {
            Some(Ok(())) => return,
            Some(Err(mpsc::error::SendError(update))) => update,
            None => update,
        };
        let (new_tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(worker(rx, self.accounts.clone()));
        // The receiver is alive: the worker has not run yet.
        let _ = new_tx.send(update);
        *tx = Some(new_tx);
    }
}

async fn worker(mut rx: mpsc::UnboundedReceiver<(UserId, u64, u64)>, accounts: Arc<Accounts>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::new();
        let mut add = |(user, device, up_to): (UserId, u64, u64)| {
            let slot = batch.entry((user, device)).or_insert(0);
            *slot = (*slot).max(up_to);
        };
        add(first);
        while let Ok(update) = rx.try_recv() {
            add(update);
        }
        let accounts = accounts.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let updates: Vec<_> = batch.into_iter().map(|((u, d), up_to)| (u, d, up_to)).collect();
            accounts.advance_cursors(&updates)
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cursors not saved; messages will be delivered again"),
            Err(_) => tracing::warn!("cursor saving worker failed; messages will be delivered again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_land_in_the_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let accounts = Arc::new(Accounts::open(&dir.path().join("accounts.db")).expect("open"));
        let name = im_proto::UserName::parse("alice").expect("valid name");
        let alice = accounts.create_user(&name, "hash", 0).expect("user");
        accounts.touch_device(alice, 7, "phone", 0).expect("device");
        let cursors = Cursors::new(accounts.clone());
        cursors.save(alice, 7, 40);
        cursors.save(alice, 7, 30);
        cursors.save(alice, 8, 5); // no such device: skipped
        cursors.save(alice, 7, 42);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while accounts.cursor(alice, 7).expect("cursor") != Some(42) {
            assert!(tokio::time::Instant::now() < deadline, "the saves never landed");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(accounts.cursor(alice, 8).expect("cursor"), None);
    }
}
