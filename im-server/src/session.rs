//! One client session after the handshake: login, catch-up, then the loop that reads
//! requests, writes replies and pushes, pings an idle peer and ends with a Close.
//!
//! Everything here runs in the connection's own task over any [`ByteStream`], so tests can
//! drive a whole session over an in-memory pipe. Slow work never runs on the reactor: the
//! accounts database and Argon2 go to the blocking pool, and message appends wait on the log's
//! group-commit thread while the loop keeps serving (replies to pipelined sends come back
//! in order through `pending`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use im_proto::hostkey::{check_public_key, verify_rsa_pss};
use im_proto::keys::user_auth_message;
use im_proto::limits::{MAX_PAGE, MAX_RECORD_PLAINTEXT, MIN_PASSWORD_CHARS};
use im_proto::msg::{
    ChatMessage, ClientMsg, CloseReason, DeviceId, DeviceInfo, ErrorCode, MessageId, MsgError, Password, RequestId,
    ServerMsg, Timestamp,
};
use im_proto::session::{Incoming, Session};
use im_proto::{Target, UserName};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::auth::new_ticket;
use crate::config::Registration;
use crate::conn::{ByteStream, ConnError, Established, Transport, handshake};
use crate::metrics::ConnectionGauge;
use crate::ratelimit::UnauthGuard;
use crate::router::{ConnId, Inbox, Next, Push, QueueEnd, next_conn_id, outbox};
use crate::state::{Shared, chat_message, now_ms};
use crate::store::accounts::{AccountsError, UserId};
use crate::store::messages::{Appended, NewMessage, StoredMessage};

/// Pushes taken off the queue, or replies taken, per write: enough to coalesce a burst into
/// one syscall, few enough that one busy connection does not starve its own reads.
const COALESCE: usize = 256;
/// Direct messages remembered per connection for delivery receipts.
const RECEIPT_WINDOW: usize = 4096;
/// Requests of one connection being answered at once (mostly sends waiting for their
/// commit). Past it the session stops reading, which holds the client back through TCP: a
/// client that sends faster than the log commits would otherwise queue sends here without
/// bound, each waiting on the writer's full queue and woken one by one.
const MAX_PENDING: usize = 256;
/// An active connection saves its cursor at most this often (and always when it ends).
const CURSOR_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Room left in a record for the reply's own fields when a page of messages is cut to fit.
const PAGE_SLACK: usize = 256;
/// Input still read, without waiting, for the acks in it once a session has ended: far more
/// than a client's last words, and a bound on a peer that keeps sending.
const FINAL_INPUT: usize = 64 * 1024;

/// Why a session ends: what the Close record says.
#[derive(Debug)]
struct End {
    code: ErrorCode,
    text: String,
    /// A write was cut off mid-record: nothing more can be sent, not even a Close.
    abort: bool,
}

impl End {
    fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        End {
            code,
            text: text.into(),
            abort: false,
        }
    }
}

impl From<ConnError> for End {
    fn from(e: ConnError) -> Self {
        match e {
            ConnError::Eof => End::new(ErrorCode::Normal, "peer closed"),
            ConnError::Io(_) | ConnError::Truncated => End::new(ErrorCode::Normal, e.to_string()),
            _ => End::new(ErrorCode::Protocol, e.to_string()),
        }
    }
}

impl From<AccountsError> for End {
    fn from(e: AccountsError) -> Self {
        tracing::error!(error = %e, "accounts database error");
        End::new(ErrorCode::Internal, "internal error")
    }
}

/// The logged-in identity of a session.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserName,
    pub uid: UserId,
    pub device: DeviceId,
}

/// Serves one connection from the first byte to the Close.
pub async fn serve<S: ByteStream>(stream: S, ip: IpAddr, shared: Arc<Shared>, unauth: UnauthGuard) {
    // Each phase is its own boxed future: a future awaited inline is part of this one, which
    // every idle connection holds for its whole life, with the handshake's, the login's and
    // the goodbye's state in it. Boxed, the idle connection holds only the live loop's.
    let Some((mut t, mut session, login, _gauge)) = Box::pin(establish(stream, ip, &shared, unauth)).await else {
        return;
    };
    let conn = next_conn_id();
    let (out, inbox) = outbox(conn, login.device, shared.config.limits.outbound_queue);
    shared.router.attach(&login.user, out);
    Box::pin(crate::social::connected(&shared, &login)).await;
    // Most connections go quiet after logging in: free the key schedules that the handshake
    // and login expanded now, while the next connection can reuse the memory, not after a
    // ping interval, when thousands of them sit between live allocations.
    session.release();
    let mut s = Live::new(login, shared);
    let end = s.run(&mut t, &mut session, inbox).await;
    Box::pin(s.finish(t, session, conn, end)).await;
}

/// The handshake and the login, within the login timeout: the transport, its session, who
/// logged in and the connection's place in the gauge; `None` when the connection ended
/// (with a Close where one is due).
async fn establish<S: ByteStream>(
    stream: S,
    ip: IpAddr,
    shared: &Arc<Shared>,
    unauth: UnauthGuard,
) -> Option<(Transport<S>, Session, Identity, ConnectionGauge)> {
    let mut gauge = ConnectionGauge::handshaking();
    let mut t = Transport::new(stream);
    let deadline = Instant::now() + shared.config.limits.login_timeout();
    let est = match tokio::time::timeout_at(deadline, handshake(&mut t, shared, ip)).await {
        Ok(Ok(est)) => est,
        Ok(Err(e)) => {
            tracing::debug!(%ip, error = %e, "handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%ip, "handshake timed out");
            return None;
        }
    };
    let Established {
        mut session,
        exporter,
        ticket,
    } = est;
    let outcome = tokio::select! {
        r = tokio::time::timeout_at(deadline, login(&mut t, &mut session, shared, ip, &exporter, ticket)) => match r {
            Ok(Ok(Some(id))) => Ok(id),
            Ok(Ok(None)) => return None,
            Ok(Err(end)) => Err(end),
            Err(_) => Err(End::new(ErrorCode::LoginTimeout, "log in within the time limit")),
        },
        _ = shared.shutdown.cancelled() => Err(End::new(ErrorCode::ShuttingDown, "server shutting down")),
    };
    match outcome {
        Ok(login) => {
            drop(unauth);
            gauge.authenticated();
            tracing::info!(user = %login.user, device = login.device.get(), %ip, "logged in");
            Some((t, session, login, gauge))
        }
        Err(end) => {
            close(&mut t, &mut session, end).await;
            None
        }
    }
}

/// Sends Close with the reason (unless the peer is gone), flushes, and shuts the stream.
async fn close<S: ByteStream>(t: &mut Transport<S>, session: &mut Session, end: End) {
    if end.abort {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut t.stream).await;
        return;
    }
    if end.code == ErrorCode::Normal && end.text == "peer closed" && session.peer_closed() {
        let mut reason = Vec::new();
        CloseReason::new(ErrorCode::Normal, "bye").encode(&mut reason);
        let _ = session.seal_close(&reason, &mut t.wbuf);
    } else {
        let mut reason = Vec::new();
        CloseReason::new(end.code, end.text).encode(&mut reason);
        let _ = session.seal_close(&reason, &mut t.wbuf);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = t.flush().await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut t.stream).await;
    })
    .await;
}

/// Seals one message into the write buffer.
fn queue<S>(t: &mut Transport<S>, session: &mut Session, msg: &ServerMsg) -> Result<(), End> {
    session
        .seal_with(&mut t.wbuf, |out| msg.encode(out))
        .map_err(|e| End::new(ErrorCode::Internal, e.to_string()))
}

/// Waits for the next client message. `Ok(None)`: the peer sent Close. A reserved kind is
/// answered `unsupported` and skipped; anything undecodable ends the session.
async fn next_msg<S: ByteStream>(t: &mut Transport<S>, session: &mut Session) -> Result<Option<ClientMsg>, End> {
    loop {
        match t.buffered(session)? {
            Some(Incoming::Data(plain)) => {
                let plain = Zeroizing::new(plain.to_vec());
                match decode(&plain) {
                    Ok(m) => return Ok(Some(m)),
                    Err(reply) if reply.request_id().is_some() => {
                        queue(t, session, &reply)?;
                        t.flush().await?;
                    }
                    Err(reply) => return Err(protocol_end(*reply)),
                }
            }
            Some(Incoming::Close(_)) => return Ok(None),
            None => t.read_more(session).await?,
        }
    }
}

/// How a session ends when its queue does.
fn ended(why: QueueEnd) -> End {
    match why {
        QueueEnd::Overflow => End::new(ErrorCode::QueueOverflow, "too slow to receive; reconnect to catch up"),
        QueueEnd::Revoked => End::new(ErrorCode::Revoked, "this device was revoked"),
        QueueEnd::ShuttingDown => End::new(ErrorCode::ShuttingDown, "server shutting down"),
    }
}

/// The next queued push, if one is there now (the queue's end stays for the session loop).
fn next_push(inbox: &mut Inbox) -> Option<Push> {
    match inbox.try_next() {
        Some(Next::Push(push)) => Some(push),
        _ => None,
    }
}

/// Buffers the input that has already arrived, without waiting for more. Returns the bytes
/// read (0: nothing yet); the end of the stream is `Eof` (or `Truncated`), as for any read.
fn read_arrived<S: ByteStream>(t: &mut Transport<S>, session: &Session) -> Result<usize, ConnError> {
    // `Transport::read` is cancel-safe, so polling it once and dropping it loses nothing.
    let Some(n) = t.read().now_or_never() else {
        return Ok(0);
    };
    let n = n?;
    t.after_read(n, session)?;
    Ok(n)
}

/// Decodes a client message; a reserved kind becomes the `unsupported` reply to send.
fn decode(plain: &[u8]) -> Result<ClientMsg, Box<ServerMsg>> {
    match ClientMsg::decode(plain) {
        Ok(m) => Ok(m),
        Err(e @ MsgError::Reserved(_)) => Err(Box::new(ServerMsg::error(
            ClientMsg::peek_request_id(plain),
            e.code(),
            e.to_string(),
        ))),
        Err(e) => Err(Box::new(ServerMsg::error(None, ErrorCode::Protocol, e.to_string()))),
    }
}

/// An undecodable message ends the session with the decoder's explanation.
fn protocol_end(reply: ServerMsg) -> End {
    match reply {
        ServerMsg::Error { text, .. } => End::new(ErrorCode::Protocol, text),
        _ => End::new(ErrorCode::Protocol, "undecodable message"),
    }
}

fn err(req: RequestId, code: ErrorCode, text: impl Into<String>) -> ServerMsg {
    ServerMsg::error(Some(req), code, text)
}

fn limited(req: RequestId, what: &str, wait: Duration) -> ServerMsg {
    ServerMsg::Error {
        req: Some(req),
        code: ErrorCode::RateLimited,
        text: format!("too many {what}; try again in {} ms", wait.as_millis()),
        retry_after_ms: Some(wait.as_millis().clamp(1, u128::from(u32::MAX)) as u32),
    }
}

const AUTH_FAILED: &str = "wrong user name or password";

/// The login phase: only Ping and the login messages are accepted.
async fn login<S: ByteStream>(
    t: &mut Transport<S>,
    session: &mut Session,
    shared: &Arc<Shared>,
    ip: IpAddr,
    exporter: &[u8; 32],
    ticket: Option<crate::store::accounts::TicketRecord>,
) -> Result<Option<Identity>, End> {
    loop {
        let Some(msg) = next_msg(t, session).await? else {
            return Ok(None);
        };
        let method = crate::metrics::login_method(&msg);
        let result = match msg {
            ClientMsg::Ping { nonce } => Err(ServerMsg::Pong { nonce }),
            ClientMsg::Register {
                req,
                user,
                password,
                device_id,
                device_name,
            } => register(shared, ip, req, user, password, device_id, device_name).await,
            ClientMsg::LoginPassword {
                req,
                user,
                password,
                device_id,
                device_name,
            } => login_password(shared, ip, req, user, password, device_id, device_name).await,
            ClientMsg::LoginKey {
                req,
                user,
                device_id,
                device_name,
                public_key_der,
                signature,
            } => {
                login_key(
                    shared,
                    ip,
                    exporter,
                    req,
                    user,
                    device_id,
                    device_name,
                    public_key_der,
                    signature,
                )
                .await
            }
            ClientMsg::LoginTicket { req } => match &ticket {
                Some(tk) => match DeviceId::new(tk.device_id) {
                    Some(device) => Ok((
                        req,
                        Identity {
                            user: tk.user_name.clone(),
                            uid: tk.user,
                            device,
                        },
                        false,
                    )),
                    None => Err(err(req, ErrorCode::TicketInvalid, "ticket names an invalid device")),
                },
                None => Err(err(
                    req,
                    ErrorCode::TicketInvalid,
                    "this connection did not resume a ticket; log in with a password or key",
                )),
            },
            other => Err(ServerMsg::error(
                other.request_id(),
                ErrorCode::Unauthenticated,
                "log in first",
            )),
        };
        if let Some(method) = method {
            crate::metrics::login(method, result.is_ok());
        }
        match result {
            Ok((req, id, issue_ticket)) => {
                let now = now_ms();
                let reply = ServerMsg::LoggedIn {
                    req,
                    user: id.user.clone(),
                    device_id: id.device,
                    server_time: Timestamp(now),
                };
                queue(t, session, &reply)?;
                if issue_ticket {
                    let ticket = issue(shared, &id).await?;
                    queue(t, session, &ticket)?;
                }
                t.flush().await?;
                return Ok(Some(id));
            }
            Err(reply) => {
                queue(t, session, &reply)?;
                t.flush().await?;
            }
        }
    }
}

type LoginResult = Result<(RequestId, Identity, bool), ServerMsg>;

/// The rate-limit refusal to send, if the address or the account has tried too often.
fn login_rate_refusal(shared: &Shared, ip: IpAddr, req: RequestId, user: &UserName) -> Option<ServerMsg> {
    if let Err(wait) = shared.limits.logins_per_ip.check(&ip) {
        return Some(limited(req, "login attempts from your address", wait));
    }
    if let Err(wait) = shared.limits.logins_per_account.check(user) {
        return Some(limited(req, "login attempts for this account", wait));
    }
    None
}

fn internal(req: RequestId, e: impl std::fmt::Display) -> ServerMsg {
    tracing::error!(error = %e, "internal error");
    err(req, ErrorCode::Internal, "internal error")
}

async fn touch(shared: &Shared, req: RequestId, uid: UserId, device: DeviceId, name: String) -> Result<(), ServerMsg> {
    shared
        .db(move |a| a.touch_device(uid, device.get(), &name, now_ms()))
        .await
        .map(drop)
        .map_err(|e| internal(req, e))
}

async fn register(
    shared: &Arc<Shared>,
    ip: IpAddr,
    req: RequestId,
    user: UserName,
    password: Password,
    device: DeviceId,
    device_name: String,
) -> LoginResult {
    if shared.config.registration == Registration::Closed {
        return Err(err(
            req,
            ErrorCode::RegistrationClosed,
            "registration is closed on this server; ask its admin for an account",
        ));
    }
    if let Err(wait) = shared.limits.logins_per_ip.check(&ip) {
        return Err(limited(req, "registrations from your address", wait));
    }
    if password.expose().chars().count() < MIN_PASSWORD_CHARS {
        return Err(err(
            req,
            ErrorCode::WeakPassword,
            format!("passwords need at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    let hash = shared
        .passwords
        .hash(password.into_zeroizing())
        .await
        .map_err(|e| internal(req, e))?;
    let name = user.clone();
    let uid = match shared.db(move |a| a.create_user(&name, &hash, now_ms())).await {
        Ok(uid) => uid,
        Err(AccountsError::Exists(_)) => return Err(err(req, ErrorCode::Exists, format!("the name {user} is taken"))),
        Err(e) => return Err(internal(req, e)),
    };
    touch(shared, req, uid, device, device_name).await?;
    tracing::info!(%user, "registered");
    Ok((req, Identity { user, uid, device }, true))
}

async fn login_password(
    shared: &Arc<Shared>,
    ip: IpAddr,
    req: RequestId,
    user: UserName,
    password: Password,
    device: DeviceId,
    device_name: String,
) -> LoginResult {
    if let Some(refusal) = login_rate_refusal(shared, ip, req, &user) {
        return Err(refusal);
    }
    let name = user.clone();
    let record = shared.db(move |a| a.user(&name)).await.map_err(|e| internal(req, e))?;
    let hash = record.as_ref().map(|r| r.password_hash.clone());
    // Unknown users verify against the dummy hash: the same work, the same answer.
    let ok = shared
        .passwords
        .verify(password.into_zeroizing(), hash)
        .await
        .map_err(|e| internal(req, e))?;
    let Some(record) = record.filter(|_| ok) else {
        tracing::info!(%user, %ip, "failed password login");
        return Err(err(req, ErrorCode::AuthFailed, AUTH_FAILED));
    };
    touch(shared, req, record.id, device, device_name).await?;
    Ok((
        req,
        Identity {
            user,
            uid: record.id,
            device,
        },
        true,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn login_key(
    shared: &Arc<Shared>,
    ip: IpAddr,
    exporter: &[u8; 32],
    req: RequestId,
    user: UserName,
    device: DeviceId,
    device_name: String,
    spki: Vec<u8>,
    signature: Vec<u8>,
) -> LoginResult {
    if let Some(refusal) = login_rate_refusal(shared, ip, req, &user) {
        return Err(refusal);
    }
    let name = user.clone();
    let key = spki.clone();
    let known = shared
        .db(move |a| {
            Ok(match a.user(&name)? {
                Some(r) if a.has_key(r.id, &key)? => Some(r.id),
                _ => None,
            })
        })
        .await
        .map_err(|e| internal(req, e))?;
    let message = user_auth_message(exporter, user.as_str());
    let valid = tokio::task::spawn_blocking(move || verify_rsa_pss(&spki, &message, &signature).is_ok())
        .await
        .unwrap_or(false);
    let Some(uid) = known.filter(|_| valid) else {
        tracing::info!(%user, %ip, "failed key login");
        return Err(err(
            req,
            ErrorCode::AuthFailed,
            "the key is not attached to that user, or the signature is wrong",
        ));
    };
    touch(shared, req, uid, device, device_name).await?;
    Ok((req, Identity { user, uid, device }, true))
}

/// Creates, stores and returns a fresh ticket push for the identity's device.
async fn issue(shared: &Shared, id: &Identity) -> Result<ServerMsg, End> {
    let expires = now_ms() + shared.config.limits.ticket_lifetime().as_millis() as u64;
    let ticket = new_ticket(id.uid, id.device.get(), expires);
    let push = ServerMsg::Ticket {
        ticket_id: ticket.id,
        secret: (*ticket.secret).into(),
        expires_at: Timestamp(expires),
    };
    shared.db(move |a| a.insert_ticket(&ticket)).await?;
    Ok(push)
}

type Pending = Pin<Box<dyn Future<Output = ServerMsg> + Send>>;

/// A logged-in session's state.
struct Live {
    id: Identity,
    shared: Arc<Shared>,
    /// Replies to sends, in request order, waiting on the group commit.
    pending: FuturesOrdered<Pending>,
    /// Highest id pushed during catch-up: live pushes at or below it are duplicates.
    caught_up: u64,
    /// Direct messages pushed to this device and not yet acknowledged: (id, sender).
    unacked: VecDeque<(u64, UserName)>,
    acked: u64,
    /// The cursor as last stored and waited for (at login, or by `persist_cursor`).
    persisted: u64,
    /// The cursor as last handed to the batched saver, which may not have stored it yet.
    saved: u64,
    saved_at: Instant,
    last_rx: Instant,
    /// When we last wrote anything: a sealer in use is not released by the keepalive.
    last_tx: Instant,
    ping_out: Option<u64>,
    /// Set by `Logout`: the session closes once the `Ok` is written.
    logged_out: bool,
}

impl Live {
    fn new(id: Identity, shared: Arc<Shared>) -> Self {
        Live {
            id,
            shared,
            pending: FuturesOrdered::new(),
            caught_up: 0,
            unacked: VecDeque::new(),
            acked: 0,
            persisted: 0,
            saved: 0,
            saved_at: Instant::now(),
            last_rx: Instant::now(),
            last_tx: Instant::now(),
            ping_out: None,
            logged_out: false,
        }
    }

    async fn run<S: ByteStream>(&mut self, t: &mut Transport<S>, session: &mut Session, mut inbox: Inbox) -> End {
        // Boxed, like `handle` below: a future awaited inline is part of this loop's state,
        // which every idle connection holds for its whole life.
        if let Err(end) = Box::pin(self.catch_up(t, session)).await {
            return end;
        }
        let ping_interval = self.shared.config.limits.ping_interval();
        // One timer for the connection's life, moved only when its deadline does: a new one
        // per wake-up would insert into and remove from the timer wheel on every push.
        let keepalive = tokio::time::sleep_until(self.last_rx + ping_interval);
        tokio::pin!(keepalive);
        loop {
            // Handle what input is buffered (some may have arrived while we were writing, see
            // Transport::flush), then write everything queued, then wait for the next event.
            if let Err(end) = self.input(t, session).await {
                return end;
            }
            if !t.wbuf.is_empty() {
                self.last_tx = Instant::now();
            }
            // A peer that stops reading blocks this write once the socket buffers fill; its
            // queue then overflows, and that must end the session even mid-write.
            tokio::select! {
                biased;
                r = t.flush() => if let Err(e) = r { return e.into() },
                why @ (QueueEnd::Overflow | QueueEnd::ShuttingDown) = inbox.ended() => return End { abort: true, ..ended(why) },
            }
            if self.logged_out {
                return End::new(ErrorCode::Normal, "logged out");
            }
            let at = self.last_rx + ping_interval * if self.ping_out.is_some() { 2 } else { 1 };
            if keepalive.deadline() != at {
                keepalive.as_mut().reset(at);
            }
            let step: Result<(), End> = tokio::select! {
                biased;
                Some(reply) = self.pending.next(), if !self.pending.is_empty() => self.replies(t, session, reply),
                next = inbox.next() => match next {
                    Next::Push(push) => self.pushes(t, session, push, &mut inbox),
                    Next::Ended(why) => return ended(why),
                },
                // A client with this many requests unanswered is read again once some are:
                // its sends wait in its socket, not as futures here.
                r = t.read(), if self.pending.len() < MAX_PENDING => r.map_err(ConnError::from).and_then(|n| t.after_read(n, session)).map_err(End::from),
                // Every firing moves the deadline (a Ping doubles it; a second firing ends
                // the session), so a fired timer is always reset above.
                _ = &mut keepalive => self.keepalive(t, session).await,
                // Once the runtime has nothing else to run: compute the keystream of the next
                // records, so that a push later costs only an XOR and the MAC. Not earlier: in
                // a room's fan-out that would delay the members written after this one.
                _ = crate::idle::next(), if session.wants_prepare() => {
                    session.prepare();
                    Ok(())
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// The end of a logged-in session: apply the acks the client sent before the end (however
    /// it ended), leave the router and presence, save the cursor, say goodbye.
    async fn finish<S: ByteStream>(mut self, mut t: Transport<S>, mut session: Session, conn: ConnId, end: End) {
        self.drain_acks(&mut t, &mut session);
        self.receipts();
        if end.code == ErrorCode::QueueOverflow {
            crate::metrics::queue_overflow();
        }
        self.shared.router.detach(&self.id.user, conn);
        crate::social::disconnected(&self.shared, &self.id).await;
        self.persist_cursor().await;
        tracing::info!(user = %self.id.user, code = end.code.name(), reason = %end.text, "session ended");
        close(&mut t, &mut session, end).await;
    }

    /// Pushes everything this device has not acknowledged, in id order, page by page.
    async fn catch_up<S: ByteStream>(&mut self, t: &mut Transport<S>, session: &mut Session) -> Result<(), End> {
        let (uid, device) = (self.id.uid, self.id.device.get());
        let (cursor, rooms) = self
            .shared
            .db(move |a| Ok((a.cursor(uid, device)?.unwrap_or(0), a.rooms_of(uid)?)))
            .await?;
        let rooms: Vec<_> = rooms.into_iter().map(|m| (m.room, m.joined_at_msg_id)).collect();
        self.acked = cursor;
        self.persisted = cursor;
        self.saved = cursor;
        let mut after = cursor;
        loop {
            let (log, user, rooms2) = (self.shared.log.clone(), self.id.user.clone(), rooms.clone());
            let page = tokio::task::spawn_blocking(move || log.catch_up(&user, &rooms2, after, MAX_PAGE))
                .await
                .map_err(|_| End::new(ErrorCode::Internal, "catch-up worker failed"))?
                .map_err(|e| End::new(ErrorCode::Internal, e.to_string()))?;
            let full = page.len() >= MAX_PAGE;
            for m in &page {
                after = m.id;
                if m.from == self.id.user && m.sender_device == device {
                    continue; // this device sent it
                }
                if crate::social::hidden(&self.shared, &self.id, m) {
                    continue; // a room message from a user this one blocks
                }
                self.track(m.id, &m.from, &m.to);
                queue(t, session, &ServerMsg::Message(chat_message(m)))?;
                crate::metrics::delivered(1);
            }
            t.flush().await?;
            if !full {
                break;
            }
            self.arrived_input(t, session).await?;
        }
        self.caught_up = after;
        Ok(())
    }

    /// Handles the input that has arrived, without waiting for more: between catch-up pages,
    /// where nothing else reads. A catch-up that fits in the socket buffers never blocks a
    /// write (and a blocked write is the only other time we read), so without this a client
    /// that leaves in the middle (Ack, then Close) would go unheard until the catch-up ends,
    /// and a long catch-up would go on for a client that is gone.
    async fn arrived_input<S: ByteStream>(&mut self, t: &mut Transport<S>, session: &mut Session) -> Result<(), End> {
        let read = read_arrived(t, session);
        // What came before the end of the stream is handled first: an Ack, then the Close.
        self.input(t, session).await?;
        read.map(drop).map_err(End::from)
    }

    /// Remembers a pushed direct message from someone else, for its delivery receipt.
    fn track(&mut self, id: u64, from: &UserName, to: &Target) {
        if from != &self.id.user && matches!(to, Target::User(_)) {
            if self.unacked.len() >= RECEIPT_WINDOW {
                self.unacked.pop_front();
            }
            self.unacked.push_back((id, from.clone()));
        }
    }

    /// Writes a reply and every other one already answered, as one write: a group commit
    /// answers a client's pipelined sends all at once, and one write each was the larger
    /// part of the server's `sendto` time under load.
    fn replies<S>(&mut self, t: &mut Transport<S>, session: &mut Session, first: ServerMsg) -> Result<(), End> {
        queue(t, session, &first)?;
        // Polling without this task's waker is safe: the loop polls `pending` again, with
        // it, before it waits.
        for _ in 1..COALESCE {
            match self.pending.next().now_or_never() {
                Some(Some(reply)) => queue(t, session, &reply)?,
                _ => break,
            }
        }
        Ok(())
    }

    /// Writes a push and whatever else is queued behind it, as one write.
    fn pushes<S>(
        &mut self,
        t: &mut Transport<S>,
        session: &mut Session,
        first: Push,
        inbox: &mut Inbox,
    ) -> Result<(), End> {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(push) = next {
            for msg in push.iter() {
                if let ServerMsg::Message(m) = msg {
                    if m.id.0 <= self.caught_up {
                        continue;
                    }
                    self.track(m.id.0, &m.from, &m.to);
                    crate::metrics::delivered(1);
                }
                queue(t, session, msg)?;
                n += 1;
            }
            next = if n < COALESCE { next_push(inbox) } else { None };
        }
        Ok(())
    }

    /// Handles every complete message that has arrived.
    async fn input<S: ByteStream>(&mut self, t: &mut Transport<S>, session: &mut Session) -> Result<(), End> {
        while let Some(incoming) = t.buffered(session)? {
            self.last_rx = Instant::now();
            self.ping_out = None;
            let plain = match incoming {
                Incoming::Data(p) => Zeroizing::new(p.to_vec()),
                Incoming::Close(_) => return Err(End::new(ErrorCode::Normal, "peer closed")),
            };
            match decode(&plain) {
                Ok(ClientMsg::Pong { .. }) => {
                    // The answer to our keepalive Ping: the client is quiet again.
                    session.release_opener();
                }
                Ok(msg) => {
                    if let Some(reply) = Box::pin(self.handle(msg)).await? {
                        queue(t, session, &reply)?;
                    }
                }
                Err(reply) if reply.request_id().is_some() => queue(t, session, &reply)?,
                Err(reply) => return Err(protocol_end(*reply)),
            }
        }
        self.receipts();
        Ok(())
    }

    async fn keepalive<S: ByteStream>(&mut self, t: &mut Transport<S>, session: &mut Session) -> Result<(), End> {
        if self.ping_out.is_some() {
            return Err(End::new(ErrorCode::IdleTimeout, "no answer to ping"));
        }
        let nonce = rand::random::<u64>();
        self.ping_out = Some(nonce);
        self.save_cursor();
        let sent_nothing = self.last_tx.elapsed() >= self.shared.config.limits.ping_interval();
        queue(t, session, &ServerMsg::Ping { nonce })?;
        // The client has sent nothing for a whole interval: free its direction's expanded key
        // schedule until the next record, and ours too (after sealing the Ping, which needs
        // it) unless we are busy sending, say room messages to a member who only reads.
        session.release_opener();
        if sent_nothing {
            session.release_sealer();
        }
        Ok(())
    }

    /// Applies the acks the client sent before the session ended, up to its Close (anything
    /// else is dropped: there is no one left to answer). That includes input still in the
    /// socket, not only what we buffered: a client that leaves during a catch-up closes with
    /// our bytes unread, so its kernel resets the connection and our next write fails before
    /// we have read its last Ack. The reset does not discard what had arrived, so it is read
    /// here, without waiting and at most [`FINAL_INPUT`] bytes of it.
    fn drain_acks<S: ByteStream>(&mut self, t: &mut Transport<S>, session: &mut Session) {
        let mut read = 0;
        while self.buffered_acks(t, session) && read < FINAL_INPUT {
            match read_arrived(t, session) {
                Ok(n) if n > 0 => read += n,
                _ => return,
            }
        }
    }

    /// Applies the acks among the buffered messages; `false` once the input has ended (a
    /// Close, or input that cannot be read).
    fn buffered_acks<S: ByteStream>(&mut self, t: &mut Transport<S>, session: &mut Session) -> bool {
        loop {
            match t.buffered(session) {
                Ok(Some(Incoming::Data(plain))) => {
                    if let Ok(ClientMsg::Ack { up_to }) = ClientMsg::decode(&plain) {
                        self.ack(up_to);
                    }
                }
                Ok(None) => return true,
                Ok(Some(Incoming::Close(_))) | Err(_) => return false,
            }
        }
    }

    /// Hands the cursor to the batched saver (`cursors.rs`) without waiting: for the saves
    /// while the session runs.
    fn save_cursor(&mut self) {
        if self.acked > self.saved {
            let (uid, device) = (self.id.uid, self.id.device.get());
            self.shared.cursors.save(uid, device, self.acked);
            self.saved = self.acked;
            self.saved_at = Instant::now();
        }
    }

    /// Saves the cursor and waits until it is stored: as the session ends, before the Close,
    /// so that the device's next connection finds it.
    async fn persist_cursor(&mut self) {
        if self.acked > self.persisted {
            let (uid, device, up_to) = (self.id.uid, self.id.device.get(), self.acked);
            match self.shared.db(move |a| a.advance_cursor(uid, device, up_to)).await {
                Ok(_) => self.persisted = up_to,
                Err(e) => tracing::warn!(error = %e, "cursor not saved; messages will be delivered again"),
            }
        }
    }

    /// Handles one request; returns the reply to write now, if any (sends reply later).
    async fn handle(&mut self, msg: ClientMsg) -> Result<Option<ServerMsg>, End> {
        let reply = match msg {
            ClientMsg::Ping { nonce } => ServerMsg::Pong { nonce },
            ClientMsg::Pong { .. } => return Ok(None),
            ClientMsg::Register { req, .. }
            | ClientMsg::LoginPassword { req, .. }
            | ClientMsg::LoginKey { req, .. }
            | ClientMsg::LoginTicket { req } => err(req, ErrorCode::BadRequest, "already logged in"),
            ClientMsg::Send {
                req,
                to,
                client_id,
                action,
                text,
            } => return Ok(self.send(req, to, client_id, action, text).await),
            ClientMsg::Ack { up_to } => {
                self.ack(up_to);
                if self.saved_at.elapsed() >= CURSOR_SAVE_INTERVAL {
                    self.save_cursor();
                }
                return Ok(None);
            }
            ClientMsg::Typing { to } => {
                crate::social::typing(&self.shared, &self.id, to).await;
                return Ok(None);
            }
            ClientMsg::History {
                req,
                with,
                before,
                after,
                limit,
            } => self.history(req, with, before, after, limit).await,
            ClientMsg::RequestTicket { req } => {
                // For this connection only, and after any replies still pending, then `Ok`.
                let ticket = issue(&self.shared, &self.id).await?;
                self.pending.push_back(Box::pin(std::future::ready(ticket)));
                self.pending
                    .push_back(Box::pin(std::future::ready(ServerMsg::Ok { req })));
                return Ok(None);
            }
            ClientMsg::Logout { req } => {
                let (uid, device) = (self.id.uid, self.id.device.get());
                self.shared.db(move |a| a.delete_tickets_of_device(uid, device)).await?;
                self.logged_out = true;
                ServerMsg::Ok { req }
            }
            ClientMsg::ChangePassword {
                req,
                old_password,
                new_password,
            } => self.change_password(req, old_password, new_password).await?,
            ClientMsg::AddUserKey { req, public_key_der } => match check_public_key(&public_key_der) {
                Err(e) => err(req, ErrorCode::BadRequest, e.to_string()),
                Ok(()) => {
                    let uid = self.id.uid;
                    self.shared
                        .db(move |a| a.add_key(uid, &public_key_der, now_ms()))
                        .await?;
                    ServerMsg::Ok { req }
                }
            },
            ClientMsg::RemoveUserKey { req, public_key_der } => {
                let uid = self.id.uid;
                if self.shared.db(move |a| a.remove_key(uid, &public_key_der)).await? {
                    ServerMsg::Ok { req }
                } else {
                    err(req, ErrorCode::NotFound, "that key is not attached to your account")
                }
            }
            ClientMsg::ListDevices { req } => {
                let uid = self.id.uid;
                let current = self.id.device.get();
                let devices = self.shared.db(move |a| a.devices(uid)).await?;
                let devices = devices
                    .into_iter()
                    .filter_map(|d| {
                        Some(DeviceInfo {
                            id: DeviceId::new(d.id)?,
                            name: d.name,
                            last_seen: Timestamp(d.last_seen_ms),
                            current: d.id == current,
                        })
                    })
                    .collect();
                ServerMsg::Devices { req, devices }
            }
            ClientMsg::RevokeDevice { req, device_id } => {
                let uid = self.id.uid;
                if self.shared.db(move |a| a.remove_device(uid, device_id.get())).await? {
                    self.shared.router.revoke_device(&self.id.user, device_id);
                    ServerMsg::Ok { req }
                } else {
                    err(
                        req,
                        ErrorCode::NotFound,
                        format!("you have no device {}", device_id.get()),
                    )
                }
            }
            // Rooms, contacts, presence and blocking.
            other => crate::social::handle(&self.shared, &self.id, other).await?,
        };
        Ok(Some(reply))
    }

    /// Moves the cursor; the receipts follow with [`receipts`](Live::receipts), once the
    /// input at hand is handled.
    fn ack(&mut self, up_to: MessageId) {
        let up_to = up_to.0.min(self.caught_up.max(self.shared.log.last_id()));
        if up_to > self.acked {
            self.acked = up_to;
        }
    }

    /// Receipts for the direct messages acknowledged so far: one push per sender for all the
    /// acks handled since the last call. Per Ack, a client that acknowledges each message on
    /// its own would queue one push per message on the sender's connection at once when a
    /// burst of its acks is read together, and overflow the queue of a sender that reads
    /// perfectly well (see `Push`).
    fn receipts(&mut self) {
        let up_to = self.acked;
        // Called after every batch of input: most have acknowledged nothing new.
        if self.unacked.front().is_none_or(|(id, _)| *id > up_to) {
            return;
        }
        let mut receipts: HashMap<UserName, Vec<ServerMsg>> = HashMap::new();
        while self.unacked.front().is_some_and(|(id, _)| *id <= up_to) {
            if let Some((id, from)) = self.unacked.pop_front() {
                receipts.entry(from).or_default().push(ServerMsg::Receipt {
                    id: MessageId(id),
                    user: self.id.user.clone(),
                    device_id: self.id.device,
                });
            }
        }
        for (from, receipts) in receipts {
            self.shared.router.push_to_user(&from, &Push::from(receipts), None);
        }
    }

    async fn send(
        &mut self,
        req: RequestId,
        to: Target,
        client_id: String,
        action: bool,
        text: String,
    ) -> Option<ServerMsg> {
        if let Err(wait) = self.shared.limits.messages_per_user.check(&self.id.user) {
            return Some(limited(req, "messages", wait));
        }
        if let Err(refusal) = crate::social::may_send(&self.shared, &self.id, &to).await {
            return Some(refusal.reply(req));
        }
        let msg = NewMessage {
            from: self.id.user.clone(),
            to,
            client_id,
            action,
            text,
            sender_device: self.id.device.get(),
        };
        // Queued here, in request order, and only the wait for the commit runs beside the
        // other requests: the runtime polls pending futures in no fixed order (a task's
        // cooperative budget runs out after 128 channel sends), so queuing inside them let a
        // burst's later messages overtake earlier ones.
        let committed = match self.shared.log.submit(msg).await {
            Ok(committed) => committed,
            Err(e) => return Some(internal(req, e)),
        };
        self.pending.push_back(Box::pin(async move {
            match committed.await {
                Ok(Appended::New(m) | Appended::Duplicate(m)) => ServerMsg::Sent {
                    req,
                    id: MessageId(m.id),
                    ts: Timestamp(m.ts),
                    client_id: m.client_id,
                },
                Err(e) => internal(req, e),
            }
        }));
        None
    }

    async fn history(
        &mut self,
        req: RequestId,
        with: Target,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u16,
    ) -> ServerMsg {
        let forward = after.is_some() && before.is_none();
        let (conv, visible_from) = match crate::social::history_scope(&self.shared, &self.id, &with).await {
            Ok(scope) => scope,
            Err(refusal) => return refusal.reply(req),
        };
        // A room member sees the room from the moment they joined: nothing at or before it.
        let after = match (after, visible_from) {
            (a, 0) => a,
            (Some(a), v) => Some(MessageId(a.0.max(v))),
            (None, v) => Some(MessageId(v)),
        };
        // Paging backwards stays backwards when `after` was raised to the join point.
        let before = if forward {
            before.map(|b| b.0)
        } else {
            Some(before.map_or(u64::MAX, |b| b.0))
        };
        let log = self.shared.log.clone();
        let limit = usize::from(limit).min(MAX_PAGE);
        let page = tokio::task::spawn_blocking(move || log.history(&conv, before, after.map(|a| a.0), limit)).await;
        match page {
            Ok(Ok((mut messages, more))) => {
                messages.retain(|m| !crate::social::hidden(&self.shared, &self.id, m));
                history_page(req, messages, more, forward)
            }
            Ok(Err(e)) => internal(req, e),
            Err(e) => internal(req, e),
        }
    }

    async fn change_password(&mut self, req: RequestId, old: Password, new: Password) -> Result<ServerMsg, End> {
        if new.expose().chars().count() < MIN_PASSWORD_CHARS {
            return Ok(err(
                req,
                ErrorCode::WeakPassword,
                format!("passwords need at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        let uid = self.id.uid;
        let Some(record) = self.shared.db(move |a| a.user_by_id(uid)).await? else {
            return Err(End::new(ErrorCode::AuthFailed, "account deleted"));
        };
        let ok = self
            .shared
            .passwords
            .verify(old.into_zeroizing(), Some(record.password_hash))
            .await
            .map_err(|e| End::new(ErrorCode::Internal, e.to_string()))?;
        if !ok {
            return Ok(err(req, ErrorCode::AuthFailed, "the old password is wrong"));
        }
        let hash = self
            .shared
            .passwords
            .hash(new.into_zeroizing())
            .await
            .map_err(|e| End::new(ErrorCode::Internal, e.to_string()))?;
        let device = self.id.device.get();
        self.shared
            .db(move |a| {
                a.set_password(uid, &hash)?;
                a.delete_tickets_except_device(uid, device)
            })
            .await?;
        tracing::info!(user = %self.id.user, "password changed; other devices' tickets revoked");
        Ok(ServerMsg::Ok { req })
    }
}

/// Builds a history page that fits in one record: when the messages would not fit, the
/// ones farthest from the anchor are left out and `more` says so.
fn history_page(req: RequestId, mut messages: Vec<StoredMessage>, mut more: bool, forward: bool) -> ServerMsg {
    let mut size = PAGE_SLACK;
    let mut keep = 0;
    let sizes: Vec<usize> = messages
        .iter()
        .map(|m| 40 + m.text.len() + m.client_id.len() + m.from.as_str().len() + m.to.as_str().len())
        .collect();
    let order: Box<dyn Iterator<Item = usize>> = if forward {
        Box::new(0..sizes.len())
    } else {
        Box::new((0..sizes.len()).rev())
    };
    for i in order {
        if size + sizes[i] > MAX_RECORD_PLAINTEXT {
            more = true;
            break;
        }
        size += sizes[i];
        keep += 1;
    }
    if forward {
        messages.truncate(keep);
    } else {
        messages.drain(..messages.len() - keep);
    }
    let messages: Vec<ChatMessage> = messages.iter().map(chat_message).collect();
    ServerMsg::HistoryPage { req, messages, more }
}
