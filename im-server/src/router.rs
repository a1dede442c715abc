//! Delivery: who is online, and how a push reaches each of their connections.
//!
//! Every logged-in connection registers an [`Outbox`]: a bounded queue of pushes that ends
//! itself when it is full. A connection that cannot keep up is thereby
//! disconnected (it catches up from its cursor when it returns) instead of slowing the sender
//! or growing memory without bound. Pushes are `Arc`s, so a room fan-out clones pointers, and
//! each connection's own task encrypts and writes its socket: the fan-out's real cost, the
//! kernel's send path, spreads over every worker thread.
//!
//! [`Router`] is a trait so that cross-node routing over a broker can replace the in-process
//! [`LocalRouter`] without touching session code.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use im_proto::UserName;
use im_proto::msg::{DeviceId, ServerMsg};

/// Identifies one connection for the lifetime of the process.
pub type ConnId = u64;

pub fn next_conn_id() -> ConnId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a connection's queue ended: the session ends with the matching Close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueEnd {
    /// The queue filled up: the connection is too slow, and catches up when it returns.
    Overflow,
    /// The connection's device was revoked.
    Revoked,
    /// The server is shutting down.
    ShuttingDown,
}

/// One entry of a connection's queue: usually one message, shared by every recipient of a
/// fan-out. The receipts for one sender of all the acks a session reads together travel as
/// one entry: a device that acknowledges a long catch-up at once, in one Ack or one per
/// message, would otherwise fill the sender's queue in that instant, however fast the sender
/// reads, and disconnect it as too slow.
pub type Push = Arc<[ServerMsg]>;

/// What the session takes from its queue next.
#[derive(Debug)]
pub enum Next {
    Push(Push),
    Ended(QueueEnd),
}

/// A queue grown past this many pushes by a burst is freed once drained, rather than kept by
/// an idle connection.
const KEEP_QUEUE: usize = 64;

/// One connection's push queue, shared by its two ends. An empty queue allocates nothing
/// (tokio's bounded channel held about 800 bytes per connection, idle or not), and its end is
/// part of it, so a session waits on one thing for pushes, overflow, revocation and shutdown.
struct Queue {
    state: Mutex<QueueState>,
    /// Whether there is anything to take (a push or the end), so that the session's many
    /// looks at an empty queue (each wake-up of its loop, each poll before and after
    /// registering its waker) skip the lock: in a fan-out to thousands, those locks were the
    /// session's costliest line. Set under the lock before the waker is woken, cleared under
    /// the lock by the take that empties the queue; a stale `false` is safe, because a
    /// waiting session registers its waker before it looks again (the `AtomicWaker` order).
    ready: AtomicBool,
    /// The session's task, woken by a push or the end. One task waits, so a waker slot is
    /// enough: no waiter list to lock, nothing to unregister when the session stops waiting.
    waker: AtomicWaker,
    depth: usize,
}

#[derive(Default)]
struct QueueState {
    pushes: VecDeque<Push>,
    end: Option<QueueEnd>,
    /// The session is gone: pushes are refused.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(&self, why: QueueEnd) {
        let mut state = self.lock();
        state.end.get_or_insert(why);
        self.ready.store(true, Ordering::Release);
        drop(state);
        self.waker.wake();
    }

    /// Whether a take may find something. `false` may be stale, never wrong for long: see
    /// `ready`.
    fn maybe_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The router's end of a connection's push queue.
#[derive(Clone)]
pub struct Outbox {
    pub conn: ConnId,
    pub device: DeviceId,
    queue: Arc<Queue>,
}

/// The connection's end: the session takes pushes from it, and ends itself when the queue
/// ends (too slow, or its device revoked).
pub struct Inbox {
    queue: Arc<Queue>,
}

pub fn outbox(conn: ConnId, device: DeviceId, depth: usize) -> (Outbox, Inbox) {
    let queue = Arc::new(Queue {
        state: Mutex::new(QueueState::default()),
        ready: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        depth: depth.max(1),
    });
    (
        Outbox {
            conn,
            device,
            queue: queue.clone(),
        },
        Inbox { queue },
    )
}

impl Outbox {
    /// Queues a push without waiting. A full queue ends it as too slow.
    pub fn push(&self, msg: &Push) -> bool {
        let mut state = self.queue.lock();
        if state.closed || state.end.is_some() {
            return false;
        }
        if state.pushes.len() >= self.queue.depth {
            state.end = Some(QueueEnd::Overflow);
        } else {
            state.pushes.push_back(msg.clone());
        }
        self.queue.ready.store(true, Ordering::Release);
        let queued = state.end.is_none();
        drop(state);
        self.queue.waker.wake();
        queued
    }

    fn end(&self, why: QueueEnd) {
        self.queue.end(why);
    }
}

impl Inbox {
    /// The queue's end or its next push, without waiting. The end comes first and stays.
    pub fn try_next(&mut self) -> Option<Next> {
        if !self.queue.maybe_ready() {
            return None;
        }
        let mut state = self.queue.lock();
        if let Some(why) = state.end {
            return Some(Next::Ended(why));
        }
        let push = state.pushes.pop_front();
        if state.pushes.is_empty() {
            self.queue.ready.store(false, Ordering::Relaxed);
            if state.pushes.capacity() > KEEP_QUEUE {
                state.pushes = VecDeque::new();
            }
        }
        push.map(Next::Push)
    }

    /// Waits for the queue's end or its next push. Cancel-safe.
    pub async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll(cx, Self::try_next)).await
    }

    /// Waits until the queue ends, leaving pushes queued. Cancel-safe.
    pub async fn ended(&mut self) -> QueueEnd {
        std::future::poll_fn(|cx| {
            self.poll(cx, |i| {
                if i.queue.maybe_ready() {
                    i.queue.lock().end
                } else {
                    None
                }
            })
        })
        .await
    }

    /// `check`, or, when it finds nothing, a wake-up once a push or the end arrives. It checks
    /// again after registering, so what arrived in between is not missed.
    fn poll<T>(&mut self, cx: &mut Context<'_>, mut check: impl FnMut(&mut Self) -> Option<T>) -> Poll<T> {
        if let Some(t) = check(self) {
            return Poll::Ready(t);
        }
        self.queue.waker.register(cx.waker());
        match check(self) {
            Some(t) => Poll::Ready(t),
            None => Poll::Pending,
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.closed = true;
        state.pushes.clear();
    }
}

/// What the session code needs from delivery.
pub trait Router: Send + Sync + 'static {
    fn attach(&self, user: &UserName, outbox: Outbox);
    fn detach(&self, user: &UserName, conn: ConnId);
    /// Pushes to every connection of `user`, except those of `except_device`. Returns the
    /// number of connections that took it.
    fn push_to_user(&self, user: &UserName, msg: &Push, except_device: Option<DeviceId>) -> usize;
    fn is_online(&self, user: &UserName) -> bool;
    /// Ends every connection of `user`'s `device` (the device was revoked). Returns how many.
    fn revoke_device(&self, user: &UserName, device: DeviceId) -> usize;
    /// Connections counted by the router: for status and metrics.
    fn connections(&self) -> usize;
    /// Ends every connection's queue as shutting down, and the queue of every connection
    /// attached from now on. Sessions learn of the shutdown this way, from the one thing they
    /// wait on anyway, rather than each polling a shared token on every wake-up.
    fn shut_down(&self);
}

/// In-process routing: a map from user to their connections' outboxes.
#[derive(Default)]
pub struct LocalRouter {
    users: RwLock<HashMap<UserName, Vec<Outbox>>>,
    /// Set under the write lock, so an attach either sees it or is ended by `shut_down`.
    shutting_down: AtomicBool,
}

impl Router for LocalRouter {
    fn attach(&self, user: &UserName, outbox: Outbox) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        if self.shutting_down.load(Ordering::Relaxed) {
            outbox.end(QueueEnd::ShuttingDown);
        }
        users.entry(user.clone()).or_default().push(outbox);
    }

    fn detach(&self, user: &UserName, conn: ConnId) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = users.get_mut(user) {
            list.retain(|o| o.conn != conn);
            if list.is_empty() {
                users.remove(user);
            }
        }
    }

    fn push_to_user(&self, user: &UserName, msg: &Push, except_device: Option<DeviceId>) -> usize {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let Some(list) = users.get(user) else { return 0 };
        list.iter()
            .filter(|o| Some(o.device) != except_device)
            .filter(|o| o.push(msg))
            .count()
    }

    fn is_online(&self, user: &UserName) -> bool {
        self.users.read().unwrap_or_else(|p| p.into_inner()).contains_key(user)
    }

    fn revoke_device(&self, user: &UserName, device: DeviceId) -> usize {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let Some(list) = users.get(user) else { return 0 };
        list.iter()
            .filter(|o| o.device == device)
            .inspect(|o| o.end(QueueEnd::Revoked))
            .count()
    }

    fn connections(&self) -> usize {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    fn shut_down(&self) {
        let users = self.users.write().unwrap_or_else(|p| p.into_inner());
        self.shutting_down.store(true, Ordering::Relaxed);
        for o in users.values().flatten() {
            o.end(QueueEnd::ShuttingDown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u64) -> DeviceId {
        DeviceId::new(n).unwrap()
    }

    #[test]
    fn pushes_reach_every_connection_but_the_excluded_device() {
        let r = LocalRouter::default();
        let bob = UserName::parse("bob").unwrap();
        let (o1, mut i1) = outbox(1, dev(1), 4);
        let (o2, mut i2) = outbox(2, dev(2), 4);
        r.attach(&bob, o1);
        r.attach(&bob, o2);
        let m = Push::from([ServerMsg::Pong { nonce: 1 }]);
        assert_eq!(r.push_to_user(&bob, &m, Some(dev(2))), 1);
        assert!(matches!(i1.try_next(), Some(Next::Push(_))));
        assert!(i2.try_next().is_none());
        r.detach(&bob, 1);
        r.detach(&bob, 2);
        assert!(!r.is_online(&bob));
    }

    #[test]
    fn a_full_queue_ends_as_overflow_and_refuses_more() {
        let (o, mut i) = outbox(1, dev(1), 2);
        let m = Push::from([ServerMsg::Pong { nonce: 1 }]);
        assert!(o.push(&m) && o.push(&m));
        assert!(matches!(i.try_next(), Some(Next::Push(_))));
        assert!(o.push(&m));
        assert!(!o.push(&m));
        assert!(matches!(i.try_next(), Some(Next::Ended(QueueEnd::Overflow))));
        assert!(
            matches!(i.try_next(), Some(Next::Ended(QueueEnd::Overflow))),
            "the end stays"
        );
        assert!(!o.push(&m));
    }

    #[test]
    fn a_revoked_device_ends_its_queues_and_a_closed_queue_refuses_pushes() {
        let r = LocalRouter::default();
        let bob = UserName::parse("bob").unwrap();
        let (o1, mut i1) = outbox(1, dev(1), 4);
        let (o2, mut i2) = outbox(2, dev(2), 4);
        r.attach(&bob, o1.clone());
        r.attach(&bob, o2);
        assert_eq!(r.revoke_device(&bob, dev(1)), 1);
        assert!(matches!(i1.try_next(), Some(Next::Ended(QueueEnd::Revoked))));
        assert!(i2.try_next().is_none());
        drop(i1);
        assert!(!o1.push(&Push::from([ServerMsg::Pong { nonce: 1 }])));
    }

    #[tokio::test]
    async fn shutting_down_ends_every_queue_and_every_later_one() {
        let r = LocalRouter::default();
        let bob = UserName::parse("bob").unwrap();
        let (o1, mut i1) = outbox(1, dev(1), 4);
        r.attach(&bob, o1);
        r.shut_down();
        assert!(matches!(i1.try_next(), Some(Next::Ended(QueueEnd::ShuttingDown))));
        // A session that finished logging in after the shutdown began.
        let (o2, mut i2) = outbox(2, dev(2), 4);
        r.attach(&bob, o2);
        assert_eq!(i2.ended().await, QueueEnd::ShuttingDown);
    }

    #[tokio::test]
    async fn next_wakes_for_a_push_queued_before_or_while_waiting() {
        let (o, mut i) = outbox(1, dev(1), 4);
        let m = Push::from([ServerMsg::Pong { nonce: 7 }]);
        o.push(&m);
        assert!(matches!(i.next().await, Next::Push(_)));
        let pusher = tokio::spawn(async move {
            tokio::task::yield_now().await;
            o.push(&Push::from([ServerMsg::Pong { nonce: 8 }]));
            o
        });
        assert!(matches!(i.next().await, Next::Push(_)));
        let o = pusher.await.unwrap();
        o.end(QueueEnd::Revoked);
        assert_eq!(i.ended().await, QueueEnd::Revoked);
    }

    /// Pushes from another thread, each only after the last was taken: a wake-up lost between
    /// a session's look at an empty queue (without the lock) and its waker's registration
    /// would leave it waiting for good, with nothing behind it to wake it.
    #[test]
    fn no_push_from_another_thread_waits_for_the_next() {
        const ROUNDS: u64 = 20_000;
        let (o, mut i) = outbox(1, dev(1), 4);
        let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
        let pusher = std::thread::spawn(move || {
            for nonce in 0..ROUNDS {
                o.push(&Push::from([ServerMsg::Pong { nonce }]));
                if taken_rx.recv_timeout(std::time::Duration::from_secs(10)).is_err() {
                    return Err(nonce);
                }
            }
            o.end(QueueEnd::Revoked);
            Ok(())
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let session = async {
            for want in 0..ROUNDS {
                match i.next().await {
                    Next::Push(p) => assert!(matches!(p[..], [ServerMsg::Pong { nonce }] if nonce == want)),
                    Next::Ended(why) => panic!("ended early: {why:?}"),
                }
                taken_tx.send(()).unwrap();
            }
            assert_eq!(i.ended().await, QueueEnd::Revoked);
        };
        let taken = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(20), session).await });
        assert!(taken.is_ok(), "the session waited for a push that was queued");
        assert_eq!(pusher.join().unwrap(), Ok(()), "a push was never taken");
    }
}
