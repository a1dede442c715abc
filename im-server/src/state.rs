//! What every connection shares: configuration, stores, router, limits, the host key, and the
//! shutdown signal. Also the dispatcher, which routes committed messages to their recipients
//! in commit order.

use std::sync::Arc;
use std::time::Instant;

use im_proto::Target;
use im_proto::handshake::Endorsement;
use im_proto::hostkey::RsaSigner;
use im_proto::msg::{ChatMessage, DeviceId, MessageId, ServerMsg, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::auth::Passwords;
use crate::config::Config;
use crate::handoff::Committed;
use crate::ratelimit::RateLimits;
use crate::router::{Push, Router};
use crate::store::accounts::{Accounts, AccountsError};
use crate::store::messages::{MessageLog, StoredMessage};

pub struct Shared {
    pub config: Config,
    pub accounts: Arc<Accounts>,
    pub log: MessageLog,
    pub router: Arc<dyn Router>,
    pub host_key: Arc<RsaSigner>,
    /// The host key's endorsement by its predecessor after `im-server rotate-host-key`, sent
    /// in full handshakes until its grace period ends.
    pub endorsement: Option<Arc<Endorsement>>,
    pub limits: RateLimits,
    pub passwords: Passwords,
    /// Fires once on SIGINT/SIGTERM ([`Shared::shut_down`]): the listeners stop and every
    /// connection sends Close and ends. Cancel it only through `shut_down`, which also tells
    /// the logged-in sessions.
    pub shutdown: CancellationToken,
    /// Rooms' membership and online users' contacts, blocks and presence, cached.
    pub social: crate::social::State,
    /// Live sessions' periodic cursor saves, batched.
    pub cursors: crate::cursors::Cursors,
    pub started: Instant,
}

impl Shared {
    /// Starts the shutdown: connections still logging in and the listeners watch the token,
    /// logged-in sessions their push queues.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
        self.router.shut_down();
    }

    /// Runs a blocking accounts-database call on the blocking pool.
    pub async fn db<T, F>(&self, f: F) -> Result<T, AccountsError>
    where
        T: Send + 'static,
        F: FnOnce(&Accounts) -> Result<T, AccountsError> + Send + 'static,
    {
        let accounts = self.accounts.clone();
        match tokio::task::spawn_blocking(move || f(&accounts)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn chat_message(m: &StoredMessage) -> ChatMessage {
    ChatMessage {
        id: MessageId(m.id),
        ts: Timestamp(m.ts),
        from: m.from.clone(),
        to: m.to.clone(),
        action: m.action,
        text: m.text.clone(),
        client_id: m.client_id.clone(),
    }
}

/// Routes each committed message, in the order the log committed them, so that every
/// connection receives messages in id order and a device's cursor never skips one.
pub async fn dispatch(shared: Arc<Shared>, mut committed: Committed) {
    while let Some(batch) = committed.recv().await {
        for m in &batch {
            // Other tasks get their turn as often as when messages came one per `recv`.
            tokio::task::coop::consume_budget().await;
            route(&shared, m).await;
        }
        committed.routed(batch.len());
    }
}

/// Pushes one committed message to its recipients' connections.
async fn route(shared: &Arc<Shared>, m: &StoredMessage) {
    let sender_device = DeviceId::new(m.sender_device);
    let push = Push::from([ServerMsg::Message(chat_message(m))]);
    match &m.to {
        Target::User(to) => {
            shared.router.push_to_user(to, &push, None);
            if to != &m.from {
                shared.router.push_to_user(&m.from, &push, sender_device);
            }
        }
        Target::Room(room) => crate::social::fan_out(shared, room, &m.from, sender_device, &push).await,
    }
}

/// `YYYY-MM-DD HH:MM:SS` UTC, for the admin CLI.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
