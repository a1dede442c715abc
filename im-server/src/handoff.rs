//! The hand-off from the message log's writer to the dispatcher: each commit's new messages,
//! in id order, with back-pressure.
//!
//! Routing can fall behind the log: with one core saturated by DMs the log acknowledged
//! 64,000/s while 54,000/s were routed, and with an unbounded queue between them 420,000
//! messages had queued after 8 s. So the writer counts what it hands over and, past
//! [`HIGH_WATER`] messages not yet routed, waits until the dispatcher is down to
//! [`LOW_WATER`]: acknowledgements slow to routing's pace instead of memory growing. (Measured
//! with `im-bench dm` at 64,000/s offered on one core, together with the sessions' own limit
//! on unanswered requests: 52,000/s acknowledged and 50,000/s routed, against 64,000/s and
//! 54,000/s with nothing bounded.) The gap between the two marks keeps the writer from waking
//! for every commit routed once the backlog is at its limit.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::store::messages::{Sink, StoredMessage};

/// Messages handed over and not yet routed past which the writer waits. About 300 bytes each.
pub const HIGH_WATER: usize = 64 * 1024;
/// What the dispatcher works the backlog down to before the writer goes on.
pub const LOW_WATER: usize = HIGH_WATER / 2;

#[derive(Default)]
struct Backlog {
    /// Messages handed over and not yet routed.
    queued: Mutex<usize>,
    room: Condvar,
}

impl Backlog {
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The dispatcher's end.
pub struct Committed {
    rx: mpsc::UnboundedReceiver<Vec<StoredMessage>>,
    backlog: Arc<Backlog>,
}

/// The writer's end (a [`Sink`] for the message log) and the dispatcher's.
pub fn handoff() -> (Sink, Committed) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let b = backlog.clone();
    let sink: Sink = Box::new(move |batch: Vec<StoredMessage>| {
        let mut queued = b.lock();
        *queued += batch.len();
        // A closed receiver means nobody routes any more: not the log's failure, and no one
        // will make room either.
        if tx.send(batch).is_err() {
            return;
        }
        if *queued > HIGH_WATER {
            while *queued > LOW_WATER && !tx.is_closed() {
                queued = b.room.wait(queued).unwrap_or_else(|p| p.into_inner());
            }
        }
    });
    (sink, Committed { rx, backlog })
}

impl Committed {
    /// The next commit's messages; `None` once the log is closed.
    pub async fn recv(&mut self) -> Option<Vec<StoredMessage>> {
        self.rx.recv().await
    }

    /// `n` messages of what [`recv`](Committed::recv) gave are routed.
    pub fn routed(&self, n: usize) {
        let mut queued = self.backlog.lock();
        let was = *queued;
        *queued = was.saturating_sub(n);
        if was > LOW_WATER && *queued <= LOW_WATER {
            self.backlog.room.notify_one();
        }
    }
}

impl Drop for Committed {
    /// Routing has stopped: a writer waiting for room must not wait forever.
    fn drop(&mut self) {
        self.rx.close();
        let _guard = self.backlog.lock();
        self.backlog.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn msgs(n: usize) -> Vec<StoredMessage> {
        let m = StoredMessage {
            id: 1,
            ts: 1,
            from: im_proto::UserName::parse("a").unwrap(),
            to: im_proto::Target::parse("b").unwrap(),
            client_id: String::new(),
            action: false,
            text: String::new(),
            sender_device: 1,
        };
        vec![m; n]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_waits_past_high_water_until_low_water() {
        let (mut sink, mut committed) = handoff();
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let writer = std::thread::spawn(move || {
            sink(msgs(HIGH_WATER)); // at high water: goes on
            done_tx.send(1).unwrap();
            sink(msgs(1)); // past it: waits
            done_tx.send(2).unwrap();
        });
        assert_eq!(done.recv().await, Some(1));
        assert_eq!(committed.recv().await.unwrap().len(), HIGH_WATER);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(done.try_recv().is_err(), "went on past high water");
        committed.routed(HIGH_WATER - LOW_WATER); // one above low water
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(done.try_recv().is_err(), "went on above low water");
        committed.routed(1);
        assert_eq!(done.recv().await, Some(2));
        writer.join().unwrap();
    }

    #[test]
    fn a_writer_waiting_for_room_goes_on_when_routing_stops() {
        let (mut sink, committed) = handoff();
        let writer = std::thread::spawn(move || sink(msgs(HIGH_WATER + 1)));
        std::thread::sleep(Duration::from_millis(100));
        drop(committed);
        writer.join().unwrap();
    }
}
