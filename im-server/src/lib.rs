//! The im server: accepts connections, runs sessions, stores and routes messages.
//!
//! # Layout
//! - [`config`]: the configuration file and every operational limit.
//! - [`datadir`]: the data directory, its files and the host key.
//! - [`store`]: durable state: the message log (fjall) and the accounts database (SQLite).
//! - [`router`]: who is online and each connection's bounded push queue.
//! - [`state`]: what all connections share, and the dispatcher that routes committed messages.
//! - [`ratelimit`]: per-address, per-account and per-user limits.
//! - [`auth`]: Argon2id passwords (off the reactor) and tickets.
//! - [`conn`]: one connection's bytes and the server side of the handshake.
//! - [`idle`]: the runtime's idle moments, for work that can wait.
//! - [`session`]: login, catch-up, and the request/push loop of one connection.
//! - [`cursors`]: live sessions' periodic cursor saves, batched into one commit.
//! - [`social`]: rooms, contacts, presence, typing and blocking.
//! - [`server`]: the accept loop, connection limits and graceful shutdown.
//! - [`metrics`]: Prometheus metrics (names, recording helpers, the `/metrics` responder).
//! - [`control`]: the local control socket that `im-server status` and `backup` talk to.
//! - [`backup`]: consistent backups of a running or stopped server, and restores.

pub mod auth;
pub mod backup;
pub mod config;
pub mod conn;
pub mod control;
pub mod cursors;
pub mod datadir;
pub mod handoff;
pub mod idle;
pub mod metrics;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod session;
pub mod social;
pub mod state;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::datadir::{DataDir, DataDirError};
use crate::state::Shared;
use crate::store::accounts::{Accounts, AccountsError};
use crate::store::messages::{MessageLog, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error(transparent)]
    Messages(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// A server with its stores open, ready to serve.
pub struct Server {
    pub shared: Arc<Shared>,
    committed: handoff::Committed,
}

impl Server {
    /// Opens (creating on first start) the data directory, host key and stores.
    pub fn open(dir: &DataDir, config: Config) -> Result<Server, StartError> {
        let host_key = dir.host_key()?;
        let endorsement = dir.endorsement(&host_key)?;
        if let Some(e) = &endorsement {
            tracing::info!(
                previous = %im_proto::crypto::fingerprint(&e.old_key),
                until = %state::format_ms(e.not_after_ms),
                "host key rotated: the previous key's endorsement is sent until the grace period ends"
            );
        }
        let accounts = Arc::new(Accounts::open(&dir.accounts_path())?);
        let (sink, committed) = handoff::handoff();
        let log = MessageLog::open_with_sink(&dir.messages_path(), sink)?;
        let passwords = auth::Passwords::new(config.limits.password_hash_concurrency)?;
        let shared = Arc::new(Shared {
            limits: ratelimit::RateLimits::new(&config.limits),
            config,
            cursors: cursors::Cursors::new(accounts.clone()),
            accounts,
            log,
            router: Arc::new(router::LocalRouter::default()),
            host_key: Arc::new(host_key),
            endorsement: endorsement.map(Arc::new),
            passwords,
            shutdown: CancellationToken::new(),
            social: social::State::default(),
            started: Instant::now(),
        });
        Ok(Server { shared, committed })
    }

    pub fn fingerprint(&self) -> String {
        self.shared.host_key.fingerprint()
    }

    /// Starts routing committed messages and returns the shared state, for driving sessions
    /// directly ([`session::serve`] over any byte stream) in tests and fuzzers.
    pub fn start(self) -> (Arc<Shared>, tokio::task::JoinHandle<()>) {
        let dispatcher = tokio::spawn(state::dispatch(self.shared.clone(), self.committed));
        (self.shared, dispatcher)
    }

    /// Serves on `listener` until [`Shared::shutdown`] fires; then every session sends its
    /// Close, pending writes finish, and the message log drains and closes.
    pub async fn serve(self, listener: TcpListener) {
        let max = server::connection_limit(self.shared.config.limits.max_connections, server::raise_nofile_limit());
        let (shared, dispatcher) = self.start();
        server::run(listener, shared.clone(), max).await;
        dispatcher.abort();
        let log = shared.log.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || log.close()).await.unwrap_or(Ok(())) {
            tracing::error!(error = %e, "closing the message log failed");
        }
    }
}
