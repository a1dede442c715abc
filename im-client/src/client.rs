//! The client: [`connect`] logs in and returns a [`Client`] handle and an [`Events`] stream;
//! a driver task owns the connection.
//!
//! ```text
//!  Client (clone freely) --Command--> driver task <--records--> server
//!  Events (one consumer) <--Event----'
//! ```
//!
//! The driver matches replies to requests by request id, answers the server's `Ping`s,
//! stores pushed tickets, drops pushed messages it has already delivered (by id), sends the
//! `Ack`s the caller asks for, pings an idle server, and, when asked to, reconnects with
//! backoff and resumes by ticket.
//!
//! Logging in ([`connect`]) tries, in order: the stored ticket for (server, user) if it has
//! not expired; the user key; the password (asked for only then). A ticket the server no
//! longer knows makes it run a full handshake: the ticket is deleted and the login goes on
//! with the key or password on the same connection.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use im_proto::crypto::fingerprint;
use im_proto::hostkey::RsaSigner;
use im_proto::keys::user_auth_message;
use im_proto::limits::{MAX_PAGE, MAX_STATUS_TEXT, MAX_TEXT, MAX_TOPIC};
use im_proto::msg::{
    ChatMessage, ClientMsg, CloseReason, Contact, ContactState, DeviceId, DeviceInfo, ErrorCode, Member, MessageId,
    Password, Presence, PresenceInfo, RequestId, RoomEventKind, RoomInfo, ServerMsg, Timestamp, is_valid_client_id,
};
use im_proto::{RoomName, Target, UserName};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::connection::{Connection, Received};
use crate::error::Error;
use crate::home::{Home, StoredTicket};
use crate::known_hosts::HostKeyPolicy;
use crate::server_addr::ServerAddr;

/// Longest wait for the TCP connection to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for any one answer from the server while connecting and logging in.
pub const LOGIN_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait, after a password or key login, for the ticket the server pushes next.
pub const TICKET_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for the reply to a request once logged in.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// After this long with nothing from the server, the client sends a `Ping` ...
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(30);
/// ... and gives the connection up if nothing arrives for this long after it.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many recent message ids the driver remembers to drop duplicate pushes.
pub const DEDUP_WINDOW: usize = 4096;
/// Longest wait, when closing, for the server's own Close (see `conn_shutdown`).
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Where a password comes from; called only when a password is actually needed (no ticket,
/// no key), on a blocking thread, so it may prompt on a terminal.
pub type PasswordSource = Arc<dyn Fn() -> Result<Password, Error> + Send + Sync>;

/// What the client may log in with.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Try the stored ticket for (server, user) first.
    pub use_ticket: bool,
    /// An RSA user key; used when no ticket works.
    pub key: Option<Arc<RsaSigner>>,
    /// The password, asked for last. Also the fallback when the key is refused.
    pub password: Option<PasswordSource>,
    /// Create the account (`Register`) instead of logging in; needs `password`.
    pub register: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("use_ticket", &self.use_ticket)
            .field("key", &self.key)
            .field("password", &self.password.as_ref().map(|_| "<source>"))
            .field("register", &self.register)
            .finish()
    }
}

/// Reconnection after a lost connection: exponential backoff from `initial` to `max`, with
/// jitter; the server's retry-after advice is honoured when it gave one.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

/// Everything [`connect`] needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub server: ServerAddr,
    pub user: UserName,
    pub home: Home,
    pub device_name: String,
    pub credentials: Credentials,
    pub host_keys: HostKeyPolicy,
    /// Reconnect (and resume by ticket) when the connection is lost; `None`: the
    /// [`Events`] stream ends with a `Disconnected` event instead.
    pub reconnect: Option<Backoff>,
}

/// How the session logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    Ticket,
    Key,
    Password,
    Register,
}

/// What the server said at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub server: ServerAddr,
    /// The canonical user name, as the server has it.
    pub user: UserName,
    pub device_id: DeviceId,
    pub server_time: Timestamp,
    pub login: LoginKind,
    /// The server's host-key fingerprint: the key it presented, or (after a resumption,
    /// which shows no key) the pinned one.
    pub host_fingerprint: Option<String>,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The server sent a Close record.
    Closed(CloseReason),
    /// The connection broke, timed out, or the server broke the protocol.
    Lost(String),
}

impl Disconnect {
    /// A stable machine name: the close code's name, or `connection_lost`.
    pub fn code_name(&self) -> &'static str {
        match self {
            Disconnect::Closed(r) => r.code.name(),
            Disconnect::Lost(_) => "connection_lost",
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Disconnect::Closed(r) => &r.text,
            Disconnect::Lost(t) => t,
        }
    }

    /// The error a command reports for it.
    pub fn to_error(&self) -> Error {
        match self {
            Disconnect::Closed(r) => Error::Closed(r.clone()),
            Disconnect::Lost(t) => Error::ConnectionLost(t.clone()),
        }
    }

    fn from_error(e: &Error) -> Self {
        match e {
            Error::Closed(r) => Disconnect::Closed(r.clone()),
            other => Disconnect::Lost(other.to_string()),
        }
    }
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disconnect::Closed(r) => write!(f, "closed by the server: {r}"),
            Disconnect::Lost(t) => write!(f, "connection lost: {t}"),
        }
    }
}

/// Something the server pushed, or a change of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message this client has not delivered before (duplicates are dropped). Call
    /// [`Client::ack`] once it is consumed.
    Message(ChatMessage),
    /// `user`'s device `device_id` has acknowledged our direct message `id`.
    Receipt {
        id: MessageId,
        user: UserName,
        device_id: DeviceId,
    },
    /// `from` is typing to `to` (us, or a room).
    Typing {
        from: UserName,
        to: Target,
    },
    Room {
        room: RoomName,
        kind: RoomEventKind,
        user: UserName,
        by: Option<UserName>,
        topic: Option<String>,
        ts: Timestamp,
    },
    Presence(PresenceInfo),
    /// A contact relationship changed; `None`: it is gone.
    Contact {
        user: UserName,
        state: Option<ContactState>,
    },
    /// A new resumption ticket was stored in the home.
    Ticket {
        expires_at: Timestamp,
    },
    /// An `Error` not tied to a request (a rate limit on acks or typing notices).
    ServerError {
        code: ErrorCode,
        text: String,
        retry_after_ms: Option<u32>,
    },
    /// The connection ended. Without `reconnecting` this is the last event.
    Disconnected {
        reason: Disconnect,
        reconnecting: bool,
    },
    /// A new connection is logged in after a `Disconnected { reconnecting: true }`.
    Reconnected(SessionInfo),
}

/// The stream of [`Event`]s; it ends when the driver stops.
pub struct Events(mpsc::UnboundedReceiver<Event>);

impl Events {
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}

/// The reply to `Send`: the server has stored the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: MessageId,
    pub ts: Timestamp,
    pub client_id: String,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    /// More messages match beyond this page.
    pub more: bool,
}

/// The room moderation requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    Kick,
    Ban,
    Unban,
    Op,
    Deop,
}

enum Command {
    Request {
        req: RequestId,
        msg: ClientMsg,
        reply: oneshot::Sender<Result<ServerMsg, Error>>,
    },
    Ack(MessageId),
    Typing(Target),
    Close(oneshot::Sender<()>),
}

/// The handle: cheap to clone, usable from any task. Requests are pipelined: several may be
/// in flight at once.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    opts: ConnectOptions,
    next_req: AtomicU32,
    session: Mutex<SessionInfo>,
}

impl Shared {
    fn next_req(&self) -> RequestId {
        RequestId(self.next_req.fetch_add(1, Ordering::Relaxed))
    }
}

/// Connects, checks the host key, logs in, and starts the driver task.
pub async fn connect(opts: ConnectOptions) -> Result<(Client, Events), Error> {
    let next_req = AtomicU32::new(1);
    let (conn, info, early) = establish(&opts, &next_req).await?;
    let shared = Arc::new(Shared {
        opts,
        next_req,
        session: Mutex::new(info),
    });
    let (tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        shared: shared.clone(),
        cmd_rx,
        events: ev_tx,
        pending: HashMap::new(),
        seen: Dedup::default(),
        ack_wanted: 0,
        ack_sent: 0,
    };
    tokio::spawn(driver.run(conn, early));
    Ok((Client { tx, shared }, Events(ev_rx)))
}

/// Runs a full handshake with `server` only to learn its host key (SubjectPublicKeyInfo
/// DER), without trusting or pinning it and without logging in.
pub async fn fetch_host_key(server: &ServerAddr) -> Result<Vec<u8>, Error> {
    let tcp = open_tcp(server).await?;
    let (conn, est) = step(Connection::handshake(tcp, None, &server.key())).await?;
    conn.shutdown().await;
    est.host_key
        .ok_or_else(|| Error::Protocol("the server resumed a session nobody asked for".into()))
}

async fn open_tcp(server: &ServerAddr) -> Result<TcpStream, Error> {
    let connect = TcpStream::connect((server.host.as_str(), server.port));
    let tcp = match timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => {
            return Err(Error::Connect {
                server: server.key(),
                source,
            });
        }
        Err(_) => {
            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
            return Err(Error::Connect {
                server: server.key(),
                source,
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// One network step of the login, bounded by [`LOGIN_STEP_TIMEOUT`].
async fn step<T>(f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    timeout(LOGIN_STEP_TIMEOUT, f)
        .await
        .unwrap_or(Err(Error::Timeout(LOGIN_STEP_TIMEOUT.as_secs())))
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// Sends a request before the driver runs and waits for its reply, answering pings. Other
/// messages (none are expected before login) are kept for the driver.
async fn login_request(conn: &mut Connection, msg: ClientMsg, early: &mut Vec<ServerMsg>) -> Result<ServerMsg, Error> {
    let req = msg.request_id();
    conn.send(&msg).await?;
    drop(msg);
    loop {
        match step(conn.recv()).await? {
            Received::Closed(reason) => return Err(Error::Closed(reason)),
            Received::Reserved(_) => {}
            Received::Message(ServerMsg::Ping { nonce }) => conn.send(&ClientMsg::Pong { nonce }).await?,
            Received::Message(m) if m.request_id().is_some() && m.request_id() == req => {
                return match m {
                    ServerMsg::Error {
                        code,
                        text,
                        retry_after_ms,
                        ..
                    } => Err(Error::Server {
                        code,
                        text,
                        retry_after_ms,
                    }),
                    m => Ok(m),
                };
            }
            Received::Message(m) => early.push(m),
        }
    }
}

fn store_ticket(
    opts: &ConnectOptions,
    user: &UserName,
    ticket_id: [u8; 16],
    secret: im_proto::msg::TicketSecret,
    expires_at: Timestamp,
) -> Result<(), Error> {
    let ticket = StoredTicket {
        id: ticket_id,
        secret: secret.into_zeroizing(),
        expires_at,
    };
    opts.home.save_ticket(&opts.server, user, &ticket)
}

/// Opens a connection and logs in, following the order in the module doc. Returns the
/// messages read after the login reply, for the driver to handle first.
async fn establish(
    opts: &ConnectOptions,
    next_req: &AtomicU32,
) -> Result<(Connection, SessionInfo, Vec<ServerMsg>), Error> {
    let creds = &opts.credentials;
    let req = || RequestId(next_req.fetch_add(1, Ordering::Relaxed));
    let device_id = opts.home.device_id()?;
    let mut ticket = None;
    if creds.use_ticket && !creds.register {
        ticket = opts.home.load_ticket(&opts.server, &opts.user)?;
        if ticket.as_ref().is_some_and(|t| t.is_expired(now())) {
            opts.home.delete_ticket(&opts.server, &opts.user)?;
            ticket = None;
        }
    }
    let mut early = Vec::new();
    loop {
        let tcp = open_tcp(&opts.server).await?;
        let offered = ticket.is_some();
        let (mut conn, est) = step(Connection::handshake(
            tcp,
            ticket.as_ref().map(StoredTicket::to_resume),
            &opts.server.key(),
        ))
        .await?;
        let info =
            |user: UserName, device_id: DeviceId, server_time: Timestamp, login: LoginKind, fp: Option<String>| {
                SessionInfo {
                    server: opts.server.clone(),
                    user,
                    device_id,
                    server_time,
                    login,
                    host_fingerprint: fp,
                }
            };
        if est.resumed {
            match login_request(&mut conn, ClientMsg::LoginTicket { req: req() }, &mut early).await {
                Ok(ServerMsg::LoggedIn {
                    user,
                    device_id,
                    server_time,
                    ..
                }) => {
                    let pinned = opts.host_keys.known_hosts.lookup(&opts.server)?.map(|(fp, _)| fp);
                    tracing::debug!(server = %opts.server, %user, "logged in by ticket");
                    return Ok((
                        conn,
                        info(user, device_id, server_time, LoginKind::Ticket, pinned),
                        early,
                    ));
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(Error::Server { code, .. }) if code != ErrorCode::RateLimited => {
                    // The server resumed but will not log the ticket in: forget it and start
                    // over with a full handshake.
                    tracing::debug!(%code, "ticket login refused; logging in afresh");
                    opts.home.delete_ticket(&opts.server, &opts.user)?;
                    ticket = None;
                    conn.shutdown().await;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let host_key = est
            .host_key
            .as_deref()
            .ok_or_else(|| Error::Protocol("full handshake without a host key".into()))?;
        let fp = fingerprint(host_key);
        opts.host_keys
            .verify_key(&opts.server, host_key, est.endorsement.as_ref())
            .await?;
        if offered {
            tracing::debug!("the server did not resume the ticket; deleting it");
            opts.home.delete_ticket(&opts.server, &opts.user)?;
        }
        let get_password = || async {
            let source = creds.password.clone().ok_or_else(|| {
                Error::NoCredentials("no ticket, no user key and no password (set IM_PASSWORD, use --password-file, or run on a terminal)".into())
            })?;
            tokio::task::spawn_blocking(move || source())
                .await
                .map_err(|_| Error::NoCredentials("password prompt failed".into()))?
        };
        let mut reply = None;
        let mut kind = LoginKind::Password;
        if creds.register {
            let password = get_password().await?;
            let msg = ClientMsg::Register {
                req: req(),
                user: opts.user.clone(),
                password,
                device_id,
                device_name: opts.device_name.clone(),
            };
            reply = Some(login_request(&mut conn, msg, &mut early).await?);
            kind = LoginKind::Register;
        } else if let Some(key) = &creds.key {
            let signature = {
                let mut rng = rand::rng();
                key.sign(&mut rng, &user_auth_message(&est.exporter, opts.user.as_str()))
            };
            let msg = ClientMsg::LoginKey {
                req: req(),
                user: opts.user.clone(),
                device_id,
                device_name: opts.device_name.clone(),
                public_key_der: key.public_der().to_vec(),
                signature,
            };
            match login_request(&mut conn, msg, &mut early).await {
                Ok(r) => {
                    reply = Some(r);
                    kind = LoginKind::Key;
                }
                Err(Error::Server {
                    code: ErrorCode::AuthFailed,
                    ..
                }) if creds.password.is_some() => {
                    tracing::info!("the user key was refused; trying the password");
                }
                Err(e) => return Err(e),
            }
        }
        let reply = match reply {
            Some(r) => r,
            None => {
                let password = get_password().await?;
                let msg = ClientMsg::LoginPassword {
                    req: req(),
                    user: opts.user.clone(),
                    password,
                    device_id,
                    device_name: opts.device_name.clone(),
                };
                login_request(&mut conn, msg, &mut early).await?
            }
        };
        let ServerMsg::LoggedIn {
            user,
            device_id,
            server_time,
            ..
        } = reply
        else {
            return Err(unexpected(&reply));
        };
        // The server pushes a ticket right after the login reply: wait for it (answering
        // pings), so that even a one-shot command (register, send) leaves with a ticket.
        let wait_until = Instant::now() + TICKET_WAIT;
        while early.is_empty() {
            match tokio::time::timeout_at(wait_until, conn.recv()).await {
                Err(_) => break,
                Ok(received) => match received? {
                    Received::Message(ServerMsg::Ticket {
                        ticket_id,
                        secret,
                        expires_at,
                    }) => {
                        store_ticket(opts, &user, ticket_id, secret, expires_at)?;
                        break;
                    }
                    Received::Message(ServerMsg::Ping { nonce }) => conn.send(&ClientMsg::Pong { nonce }).await?,
                    Received::Message(m) => early.push(m),
                    Received::Closed(reason) => return Err(Error::Closed(reason)),
                    Received::Reserved(_) => {}
                },
            }
        }
        tracing::debug!(server = %opts.server, %user, ?kind, "logged in");
        return Ok((conn, info(user, device_id, server_time, kind, Some(fp)), early));
    }
}

fn unexpected(msg: &ServerMsg) -> Error {
    Error::Protocol(format!("unexpected {} from the server", msg.name()))
}

/// Remembers which pushed message ids were delivered: every id up to `floor`, and the most
/// recent ones above it.
#[derive(Default)]
struct Dedup {
    floor: u64,
    recent: BTreeSet<u64>,
}

impl Dedup {
    /// Whether `id` is new (and records it).
    fn insert(&mut self, id: MessageId) -> bool {
        if id.0 <= self.floor || !self.recent.insert(id.0) {
            return false;
        }
        while self.recent.len() > DEDUP_WINDOW {
            if let Some(oldest) = self.recent.pop_first() {
                self.floor = oldest;
            }
        }
        true
    }
}

/// Why `serve` returned.
enum Ended {
    /// The caller closed the client.
    Closed,
    Lost(Error),
}

struct Driver {
    shared: Arc<Shared>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    pending: HashMap<RequestId, oneshot::Sender<Result<ServerMsg, Error>>>,
    seen: Dedup,
    ack_wanted: u64,
    ack_sent: u64,
}

impl Driver {
    fn emit(&self, event: Event) {
        // A caller that dropped its Events does not want them.
        let _ = self.events.send(event);
    }

    async fn run(mut self, mut conn: Connection, early: Vec<ServerMsg>) {
        let mut early = early;
        loop {
            let ended = self.serve(&mut conn, std::mem::take(&mut early)).await;
            let err = match ended {
                Ended::Closed => return,
                Ended::Lost(err) => err,
            };
            let reason = Disconnect::from_error(&err);
            for (_, reply) in self.pending.drain() {
                let _ = reply.send(Err(reason.to_error()));
            }
            let backoff = self.shared.opts.reconnect.clone().filter(|_| err.is_transient());
            tracing::debug!(%reason, reconnecting = backoff.is_some(), "disconnected");
            self.emit(Event::Disconnected {
                reason,
                reconnecting: backoff.is_some(),
            });
            let Some(backoff) = backoff else { return };
            match self.reconnect(&backoff, err.retry_after_ms()).await {
                Some((c, info, e)) => {
                    conn = c;
                    early = e;
                    self.ack_sent = 0;
                    if let Ok(mut s) = self.shared.session.lock() {
                        *s = info.clone();
                    }
                    self.emit(Event::Reconnected(info));
                }
                None => return,
            }
        }
    }

    /// Tries to log in again until it works, the failure is not transient, attempts run out,
    /// or the caller closes the client.
    async fn reconnect(
        &mut self,
        backoff: &Backoff,
        mut advice_ms: Option<u32>,
    ) -> Option<(Connection, SessionInfo, Vec<ServerMsg>)> {
        let mut delay = backoff.initial;
        let mut attempts = 0u32;
        loop {
            let jitter = rand::random_range(0.5..=1.0);
            let mut wait = delay.mul_f64(jitter);
            if let Some(ms) = advice_ms.take() {
                wait = wait.max(Duration::from_millis(ms.into()));
            }
            let deadline = Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = sleep_until(deadline) => break,
                    cmd = self.cmd_rx.recv() => match cmd {
                        None => return None,
                        Some(Command::Close(done)) => {
                            let _ = done.send(());
                            return None;
                        }
                        Some(Command::Request { reply, .. }) => {
                            let _ = reply.send(Err(Error::ConnectionLost("reconnecting".into())));
                        }
                        Some(Command::Ack(id)) => self.ack_wanted = self.ack_wanted.max(id.0),
                        Some(Command::Typing(_)) => {}
                    },
                }
            }
            attempts += 1;
            match establish(&self.shared.opts, &self.shared.next_req).await {
                Ok(ok) => return Some(ok),
                Err(e) if e.is_transient() && backoff.max_attempts.is_none_or(|max| attempts < max) => {
                    tracing::debug!(error = %e, attempts, "reconnect failed; retrying");
                    advice_ms = e.retry_after_ms();
                    delay = (delay * 2).min(backoff.max);
                }
                Err(e) => {
                    self.emit(Event::Disconnected {
                        reason: Disconnect::from_error(&e),
                        reconnecting: false,
                    });
                    return None;
                }
            }
        }
    }

    async fn serve(&mut self, conn: &mut Connection, early: Vec<ServerMsg>) -> Ended {
        for m in early {
            if let Err(e) = self.handle(conn, m).await {
                return Ended::Lost(e);
            }
        }
        if self.ack_wanted > self.ack_sent
            && let Err(e) = self.send_ack(conn).await
        {
            return Ended::Lost(e);
        }
        let mut last_rx = Instant::now();
        let mut pinged = false;
        loop {
            let idle_until = last_rx + KEEPALIVE_AFTER + if pinged { KEEPALIVE_TIMEOUT } else { Duration::ZERO };
            tokio::select! {
                cmd = self.cmd_rx.recv() => {
                    let result = match cmd {
                        None => {
                            conn_shutdown(conn).await;
                            return Ended::Closed;
                        }
                        Some(Command::Close(done)) => {
                            conn_shutdown(conn).await;
                            let _ = done.send(());
                            return Ended::Closed;
                        }
                        Some(Command::Request { req, msg, reply }) => match conn.send(&msg).await {
                            Ok(()) => {
                                self.pending.insert(req, reply);
                                Ok(())
                            }
                            Err(e) => {
                                let _ = reply.send(Err(Error::ConnectionLost(e.to_string())));
                                Err(e)
                            }
                        },
                        Some(Command::Ack(id)) => {
                            self.ack_wanted = self.ack_wanted.max(id.0);
                            self.send_ack(conn).await
                        }
                        Some(Command::Typing(to)) => conn.send(&ClientMsg::Typing { to }).await,
                    };
                    if let Err(e) = result {
                        return Ended::Lost(e);
                    }
                }
                received = conn.recv() => {
                    last_rx = Instant::now();
                    pinged = false;
                    let result = match received {
                        Ok(Received::Message(m)) => self.handle(conn, m).await,
                        Ok(Received::Reserved(kind)) => {
                            tracing::debug!(kind, "ignoring a reserved message kind");
                            Ok(())
                        }
                        Ok(Received::Closed(reason)) => Err(Error::Closed(reason)),
                        Err(e) => {
                            if let Error::Protocol(text) = &e {
                                let _ = conn.close(&CloseReason::new(ErrorCode::Protocol, text.clone())).await;
                            }
                            Err(e)
                        }
                    };
                    if let Err(e) = result {
                        return Ended::Lost(e);
                    }
                }
                _ = sleep_until(idle_until) => {
                    if pinged {
                        return Ended::Lost(Error::Timeout((KEEPALIVE_AFTER + KEEPALIVE_TIMEOUT).as_secs()));
                    }
                    pinged = true;
                    let nonce = rand::random();
                    if let Err(e) = conn.send(&ClientMsg::Ping { nonce }).await {
                        return Ended::Lost(e);
                    }
                }
            }
        }
    }

    async fn send_ack(&mut self, conn: &mut Connection) -> Result<(), Error> {
        if self.ack_wanted > self.ack_sent {
            conn.send(&ClientMsg::Ack {
                up_to: MessageId(self.ack_wanted),
            })
            .await?;
            self.ack_sent = self.ack_wanted;
        }
        Ok(())
    }

    async fn handle(&mut self, conn: &mut Connection, msg: ServerMsg) -> Result<(), Error> {
        match msg {
            ServerMsg::Ping { nonce } => conn.send(&ClientMsg::Pong { nonce }).await?,
            ServerMsg::Pong { .. } => {}
            ServerMsg::Ticket {
                ticket_id,
                secret,
                expires_at,
            } => {
                let user = self
                    .shared
                    .session
                    .lock()
                    .map(|s| s.user.clone())
                    .unwrap_or_else(|_| self.shared.opts.user.clone());
                match store_ticket(&self.shared.opts, &user, ticket_id, secret, expires_at) {
                    Ok(()) => self.emit(Event::Ticket { expires_at }),
                    Err(e) => tracing::warn!(error = %e, "cannot store the resumption ticket"),
                }
            }
            ServerMsg::Message(m) => {
                if self.seen.insert(m.id) {
                    self.emit(Event::Message(m));
                } else {
                    tracing::debug!(id = m.id.0, "dropping a duplicate message");
                }
            }
            ServerMsg::Receipt { id, user, device_id } => self.emit(Event::Receipt { id, user, device_id }),
            ServerMsg::TypingNotice { from, to } => self.emit(Event::Typing { from, to }),
            ServerMsg::RoomEvent {
                room,
                kind,
                user,
                by,
                topic,
                ts,
            } => self.emit(Event::Room {
                room,
                kind,
                user,
                by,
                topic,
                ts,
            }),
            ServerMsg::ContactUpdate { user, state } => self.emit(Event::Contact { user, state }),
            ServerMsg::PresenceUpdate(p) => self.emit(Event::Presence(p)),
            ServerMsg::Error {
                req: None,
                code,
                text,
                retry_after_ms,
            } => self.emit(Event::ServerError {
                code,
                text,
                retry_after_ms,
            }),
            reply => match reply.request_id().and_then(|req| self.pending.remove(&req)) {
                Some(tx) => {
                    let result = match reply {
                        ServerMsg::Error {
                            code,
                            text,
                            retry_after_ms,
                            ..
                        } => Err(Error::Server {
                            code,
                            text,
                            retry_after_ms,
                        }),
                        reply => Ok(reply),
                    };
                    let _ = tx.send(result);
                }
                None => tracing::debug!(kind = reply.name(), "reply to no pending request"),
            },
        }
        Ok(())
    }
}

/// Ends a connection that did its job: our Close, then the server's. Waiting for the
/// server's Close (up to [`CLOSE_WAIT`]) is what makes our last acks count: the server sends
/// it only after handling everything before our Close and saving the device's cursor, so the
/// next connection (say the next `im-client listen`) does not get those messages again.
/// Reading to the end also keeps unread pushes from turning our close into a TCP reset,
/// which may discard what we sent last. What comes before the server's Close is dropped: it
/// was not acknowledged, so it comes again.
async fn conn_shutdown(conn: &mut Connection) {
    if conn.close(&CloseReason::new(ErrorCode::Normal, "bye")).await.is_err() {
        return;
    }
    let _ = timeout(CLOSE_WAIT, async {
        while let Ok(Received::Message(_) | Received::Reserved(_)) = conn.recv().await {}
    })
    .await;
}

fn check_len(what: &str, text: &str, max: usize) -> Result<(), Error> {
    if text.len() > max {
        return Err(Error::Refused(format!(
            "{what} is {} bytes; at most {max} are allowed",
            text.len()
        )));
    }
    Ok(())
}

impl Client {
    /// What the server said at login (updated after a reconnection).
    pub fn session(&self) -> SessionInfo {
        match self.shared.session.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sends a request built with a fresh request id and waits for its reply. An `Error`
    /// reply becomes [`Error::Server`].
    pub async fn request(&self, make: impl FnOnce(RequestId) -> ClientMsg) -> Result<ServerMsg, Error> {
        let req = self.shared.next_req();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Request {
                req,
                msg: make(req),
                reply,
            })
            .map_err(|_| Error::ClientClosed)?;
        match timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ClientClosed),
            Err(_) => Err(Error::Timeout(REQUEST_TIMEOUT.as_secs())),
        }
    }

    async fn request_ok(&self, make: impl FnOnce(RequestId) -> ClientMsg) -> Result<(), Error> {
        match self.request(make).await? {
            ServerMsg::Ok { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Tells the server this device has consumed every message up to and including `id`.
    /// Acks only move forward; a smaller id than one already acknowledged is ignored.
    pub fn ack(&self, id: MessageId) -> Result<(), Error> {
        self.tx.send(Command::Ack(id)).map_err(|_| Error::ClientClosed)
    }

    /// "I am typing to `to`". Repeat at most every 3 seconds while typing.
    pub fn typing(&self, to: Target) -> Result<(), Error> {
        self.tx.send(Command::Typing(to)).map_err(|_| Error::ClientClosed)
    }

    /// Closes the connection cleanly once every command sent before (acks included) is
    /// written and the server has answered our Close (so it has handled them), and stops the
    /// driver.
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Close(done)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Sends a message; returns once the server has stored it. Resending the same
    /// `client_id` (within a day) is safe: the server answers with the original `Sent`.
    pub async fn send(&self, to: &Target, text: &str, client_id: &str, action: bool) -> Result<Sent, Error> {
        check_len("the message", text, MAX_TEXT)?;
        if !is_valid_client_id(client_id) {
            return Err(Error::Usage(format!(
                "invalid client id {client_id:?}: 1 to 64 printable ASCII characters without spaces"
            )));
        }
        let reply = self
            .request(|req| ClientMsg::Send {
                req,
                to: to.clone(),
                client_id: client_id.to_owned(),
                action,
                text: text.to_owned(),
            })
            .await?;
        match reply {
            ServerMsg::Sent { id, ts, client_id, .. } => Ok(Sent { id, ts, client_id }),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of the history with a user or in a room: the newest `limit` messages before
    /// `before`, or with `after`, the oldest `limit` messages after it.
    pub async fn history(
        &self,
        with: &Target,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u16,
    ) -> Result<HistoryPage, Error> {
        let limit = limit.clamp(1, MAX_PAGE as u16);
        match self
            .request(|req| ClientMsg::History {
                req,
                with: with.clone(),
                before,
                after,
                limit,
            })
            .await?
        {
            ServerMsg::HistoryPage { messages, more, .. } => Ok(HistoryPage { messages, more }),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes this device's tickets; the server then closes the connection.
    pub async fn logout(&self) -> Result<(), Error> {
        match self.request_ok(|req| ClientMsg::Logout { req }).await {
            // A server that closes (`normal`) before its `Ok` has logged us out all the same.
            Ok(())
            | Err(Error::Closed(CloseReason {
                code: ErrorCode::Normal,
                ..
            })) => {}
            Err(e) => return Err(e),
        }
        let s = self.session();
        self.shared.opts.home.delete_ticket(&s.server, &s.user)?;
        Ok(())
    }

    /// Asks for a fresh ticket (stored when it arrives, before this returns).
    pub async fn request_ticket(&self) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::RequestTicket { req }).await
    }

    pub async fn change_password(&self, old: Password, new: Password) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::ChangePassword {
            req,
            old_password: old,
            new_password: new,
        })
        .await
    }

    pub async fn add_key(&self, public_key_der: Vec<u8>) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::AddUserKey { req, public_key_der })
            .await
    }

    pub async fn remove_key(&self, public_key_der: Vec<u8>) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::RemoveUserKey { req, public_key_der })
            .await
    }

    pub async fn devices(&self) -> Result<Vec<DeviceInfo>, Error> {
        match self.request(|req| ClientMsg::ListDevices { req }).await? {
            ServerMsg::Devices { devices, .. } => Ok(devices),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn revoke_device(&self, device_id: DeviceId) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::RevokeDevice { req, device_id }).await
    }

    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, Error> {
        match self.request(|req| ClientMsg::ListRooms { req }).await? {
            ServerMsg::Rooms { rooms, .. } => Ok(rooms),
            other => Err(unexpected(&other)),
        }
    }

    /// Joins a room, creating it (as its owner) if it does not exist.
    pub async fn join(&self, room: &RoomName) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::Join {
            req,
            room: room.clone(),
        })
        .await
    }

    pub async fn leave(&self, room: &RoomName) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::Leave {
            req,
            room: room.clone(),
        })
        .await
    }

    pub async fn members(&self, room: &RoomName) -> Result<Vec<Member>, Error> {
        match self
            .request(|req| ClientMsg::Members {
                req,
                room: room.clone(),
            })
            .await?
        {
            ServerMsg::MemberList { members, .. } => Ok(members),
            other => Err(unexpected(&other)),
        }
    }

    /// With `Some(text)`, sets the topic (an empty text clears it); with `None`, asks.
    /// Returns the topic now.
    pub async fn topic(&self, room: &RoomName, set: Option<&str>) -> Result<Option<String>, Error> {
        if let Some(t) = set {
            check_len("the topic", t, MAX_TOPIC)?;
        }
        let topic = set.map(str::to_owned);
        match self
            .request(|req| ClientMsg::Topic {
                req,
                room: room.clone(),
                topic,
            })
            .await?
        {
            ServerMsg::TopicIs { topic, .. } => Ok(topic),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn moderate(&self, action: Moderation, room: &RoomName, user: &UserName) -> Result<(), Error> {
        let (room, user) = (room.clone(), user.clone());
        self.request_ok(|req| match action {
            Moderation::Kick => ClientMsg::Kick { req, room, user },
            Moderation::Ban => ClientMsg::Ban { req, room, user },
            Moderation::Unban => ClientMsg::Unban { req, room, user },
            Moderation::Op => ClientMsg::Op { req, room, user },
            Moderation::Deop => ClientMsg::Deop { req, room, user },
        })
        .await
    }

    pub async fn contacts(&self) -> Result<Vec<Contact>, Error> {
        match self.request(|req| ClientMsg::ListContacts { req }).await? {
            ServerMsg::Contacts { contacts, .. } => Ok(contacts),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks `user` to become a contact (accepts at once if they asked us).
    pub async fn contact_request(&self, user: &UserName) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::ContactRequest {
            req,
            user: user.clone(),
        })
        .await
    }

    pub async fn contact_accept(&self, user: &UserName) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::ContactAccept {
            req,
            user: user.clone(),
        })
        .await
    }

    /// Removes a contact, withdraws our request or declines theirs.
    pub async fn contact_remove(&self, user: &UserName) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::ContactRemove {
            req,
            user: user.clone(),
        })
        .await
    }

    pub async fn set_presence(&self, presence: Presence, text: Option<&str>) -> Result<(), Error> {
        if let Some(t) = text {
            check_len("the status text", t, MAX_STATUS_TEXT)?;
        }
        let text = text.map(str::to_owned);
        self.request_ok(|req| ClientMsg::SetPresence { req, presence, text })
            .await
    }

    pub async fn presence(&self, users: Vec<UserName>) -> Result<Vec<PresenceInfo>, Error> {
        match self.request(|req| ClientMsg::GetPresence { req, users }).await? {
            ServerMsg::PresenceList { entries, .. } => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn block(&self, user: &UserName) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::Block {
            req,
            user: user.clone(),
        })
        .await
    }

    pub async fn unblock(&self, user: &UserName) -> Result<(), Error> {
        self.request_ok(|req| ClientMsg::Unblock {
            req,
            user: user.clone(),
        })
        .await
    }

    pub async fn blocked(&self) -> Result<Vec<UserName>, Error> {
        match self.request(|req| ClientMsg::ListBlocked { req }).await? {
            ServerMsg::Blocked { users, .. } => Ok(users),
            other => Err(unexpected(&other)),
        }
    }
}

/// Waits `ms` milliseconds: the server's retry-after advice.
pub async fn wait_retry_after(ms: u32) {
    sleep(Duration::from_millis(ms.into())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_drops_repeats_and_old_ids() {
        let mut d = Dedup::default();
        assert!(d.insert(MessageId(5)));
        assert!(!d.insert(MessageId(5)));
        assert!(d.insert(MessageId(3)));
        for id in 10..10 + DEDUP_WINDOW as u64 {
            assert!(d.insert(MessageId(id)));
        }
        // The window moved past 3 and 5: they count as seen.
        assert!(!d.insert(MessageId(4)));
        assert!(!d.insert(MessageId(10 + DEDUP_WINDOW as u64 - 1)));
        assert!(d.insert(MessageId(20_000)));
    }

    #[test]
    fn credentials_debug_hides_the_password_source() {
        let c = Credentials {
            password: Some(Arc::new(|| Ok(Password::from("hunter22")))),
            ..Default::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter22") && s.contains("<source>"), "{s}");
    }
}
