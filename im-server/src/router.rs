//! Delivery: who is online, and how a push reaches each of their connections.
//!
//! Every logged-in connection registers an [`Outbox`]: a bounded queue of pushes plus a token
//! the router cancels when the queue is full. A connection that cannot keep up is thereby
//! disconnected (it catches up from its cursor when it returns) instead of slowing the sender
//! or growing memory without bound. Pushes are `Arc`s, so a room fan-out clones pointers, and
//! each connection's own task encrypts and writes its socket: the fan-out's real cost, the
//! kernel's send path, spreads over every worker thread.
//!
//! [`Router`] is a trait so that cross-node routing over a broker can replace the in-process
//! [`LocalRouter`] without touching session code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use im_proto::UserName;
use im_proto::msg::{DeviceId, ServerMsg};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identifies one connection for the lifetime of the process.
pub type ConnId = u64;

pub fn next_conn_id() -> ConnId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The sending side of a connection's push queue.
#[derive(Clone)]
pub struct Outbox {
    pub conn: ConnId,
    pub device: DeviceId,
    tx: mpsc::Sender<Arc<ServerMsg>>,
    overflow: CancellationToken,
    revoked: CancellationToken,
}

/// The connection's end: it drains `rx` and ends itself when `overflow` (too slow) or
/// `revoked` (its device was revoked) fires.
pub struct Inbox {
    pub rx: mpsc::Receiver<Arc<ServerMsg>>,
    pub overflow: CancellationToken,
    pub revoked: CancellationToken,
}

pub fn outbox(conn: ConnId, device: DeviceId, depth: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    let (overflow, revoked) = (CancellationToken::new(), CancellationToken::new());
    (
        Outbox {
            conn,
            device,
            tx,
            overflow: overflow.clone(),
            revoked: revoked.clone(),
        },
        Inbox { rx, overflow, revoked },
    )
}

impl Outbox {
    /// Queues a push without waiting. A full queue marks the connection as too slow.
    pub fn push(&self, msg: &Arc<ServerMsg>) -> bool {
        match self.tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// What the session code needs from delivery.
pub trait Router: Send + Sync + 'static {
    fn attach(&self, user: &UserName, outbox: Outbox);
    fn detach(&self, user: &UserName, conn: ConnId);
    /// Pushes to every connection of `user`, except those of `except_device`. Returns the
    /// number of connections that took it.
    fn push_to_user(&self, user: &UserName, msg: &Arc<ServerMsg>, except_device: Option<DeviceId>) -> usize;
    fn is_online(&self, user: &UserName) -> bool;
    /// Ends every connection of `user`'s `device` (the device was revoked). Returns how many.
    fn revoke_device(&self, user: &UserName, device: DeviceId) -> usize;
    /// Connections counted by the router: for status and metrics.
    fn connections(&self) -> usize;
}

/// In-process routing: a map from user to their connections' outboxes.
#[derive(Default)]
pub struct LocalRouter {
    users: RwLock<HashMap<UserName, Vec<Outbox>>>,
}

impl Router for LocalRouter {
    fn attach(&self, user: &UserName, outbox: Outbox) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
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

    fn push_to_user(&self, user: &UserName, msg: &Arc<ServerMsg>, except_device: Option<DeviceId>) -> usize {
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
            .inspect(|o| o.revoked.cancel())
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
        let m = Arc::new(ServerMsg::Pong { nonce: 1 });
        assert_eq!(r.push_to_user(&bob, &m, Some(dev(2))), 1);
        assert!(i1.rx.try_recv().is_ok());
        assert!(i2.rx.try_recv().is_err());
        r.detach(&bob, 1);
        r.detach(&bob, 2);
        assert!(!r.is_online(&bob));
    }

    #[test]
    fn a_full_queue_trips_the_overflow_token() {
        let (o, i) = outbox(1, dev(1), 2);
        let m = Arc::new(ServerMsg::Pong { nonce: 1 });
        assert!(o.push(&m) && o.push(&m));
        assert!(!i.overflow.is_cancelled());
        assert!(!o.push(&m));
        assert!(i.overflow.is_cancelled());
    }
}
