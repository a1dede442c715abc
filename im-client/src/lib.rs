//! The im client library: connect to a server, log in, send requests, receive events. Both
//! the `im-client` command (in this crate) and the terminal UI (`im-tui`) use it.
//!
//! ```no_run
//! # async fn demo(opts: im_client::ConnectOptions) -> Result<(), im_client::Error> {
//! use im_client::{Event, connect};
//! let (client, mut events) = connect(opts).await?;
//! let bob = im_proto::Target::parse("bob").map_err(|e| im_client::Error::Usage(e.to_string()))?;
//! client.send(&bob, "hi", "c-1", false).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(m) = event {
//!         println!("{}: {}", m.from, m.text);
//!         client.ack(m.id)?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`connection`]: one connection over a byte stream: the handshake, then messages in
//!   records. Used by `client` only.
//! - [`client`]: [`connect`] (login order: ticket, key, password), the [`Client`] handle, the
//!   [`Events`] stream, and the driver task that owns the connection (request ids, pings,
//!   tickets, deduplication, acks, reconnection).
//! - [`known_hosts`]: host-key pins and the trust policy (unknown / accept-new / ask /
//!   expected fingerprint; a changed key is always refused).
//! - [`home`]: the client's folder: config, known_hosts, user key, device id, tickets.
//! - [`server_addr`]: `HOST[:PORT]` as typed, the key of pins and tickets.
//! - [`password`]: the password from `IM_PASSWORD` or a file, and the checks of a new one.
//! - [`error`]: the one error type, each variant with an exit code and a machine name.
//! - [`exit_code`]: the command's exit codes, documented in one place.
//!
//! The command itself (`src/main.rs`, `src/cli/`) is a user of this API like any other.

pub mod client;
pub mod connection;
pub mod error;
pub mod exit_code;
pub mod home;
pub mod known_hosts;
pub mod password;
pub mod server_addr;

pub use client::{
    Backoff, Client, ConnectOptions, Credentials, Disconnect, Event, Events, HistoryPage, LoginKind, Moderation,
    PasswordSource, Sent, SessionInfo, connect, fetch_host_key,
};
pub use error::Error;
pub use home::{Config, Home, StoredTicket};
pub use known_hosts::{HostKeyPolicy, HostStatus, KnownHosts, UnknownHost};
pub use server_addr::ServerAddr;
