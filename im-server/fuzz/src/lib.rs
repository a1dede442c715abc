//! Whole server sessions under fuzzing: the real [`im_server::session::serve`] over an
//! in-memory pipe, on real stores in a temporary directory (in `/dev/shm` when there is one,
//! so an `fsync` costs nothing), with a resumption ticket already in the accounts database so
//! that each run's handshake costs two X25519 operations and no RSA signature.
//!
//! # Layout
//! - `src/lib.rs` (this file): the server fixture (built once per process, and again when its
//!   stores have grown), the client side of one run, and the checks on what the server sent.
//! - `fuzz_targets/session.rs`: one whole session per input; the first byte picks the mode.
//!
//! # One run
//! The first input byte picks the mode (its value modulo 3) and whether the client logs in by
//! ticket before the fuzzed part (bit 7):
//! - **handshake**: the rest is the client's whole byte stream, from the first byte.
//! - **raw**: a genuine resumption handshake, then the rest as raw bytes.
//! - **records**: a genuine resumption handshake, then the rest cut into chunks (a length
//!   byte, or `0xFF` and a big-endian `u16`, then that many bytes), each sealed as one Data
//!   record. A chunk that starts with `0xF0..=0xFF` is a template: a valid request built from
//!   its other bytes (send, history, rooms, moderation, contacts, devices, login...), so that
//!   request handling is reached without the fuzzer having to guess user names; any other
//!   chunk is sent as it is, for the message decoder.
//!
//! Then the client closes its side and reads everything the server sends until the server
//! ends the connection. A run fails (panics) when the server panics, when a session does not
//! end within [`RUN_LIMIT`] of the client closing, when the server sends a frame or record
//! that does not parse, open and decode, when its output stops in the middle of a record, or
//! when a logged-in user is shown a direct message between two other users.
//!
//! Password hashes (Argon2id, tens of milliseconds each) are capped at [`MAX_HASHES`] per run:
//! further messages that would need one are left out, so that every run stays fast.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use im_proto::frame::FrameDecoder;
use im_proto::handshake::{ClientHandshake, ResumeTicket};
use im_proto::limits::{MAX_PASSWORD, MAX_PUBLIC_KEY_DER, MAX_STATUS_TEXT, MAX_TEXT, MAX_TOPIC};
use im_proto::msg::{ChatMessage, ClientMsg, CloseReason, DeviceId, MessageId, Presence, RequestId, ServerMsg};
use im_proto::session::{Incoming, Session};
use im_proto::{RoomName, Target, UserName};
use im_server::config::Config;
use im_server::datadir::{DataDir, write_private};
use im_server::state::{Shared, now_ms};
use im_server::store::accounts::{Ticket, UserId};
use im_server::store::messages::NewMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use zeroize::Zeroizing;

/// The user the client resumes as, and its device.
pub const USER: &str = "alice";
pub const DEVICE: u64 = 4242;
/// Another user, with a device id no input is likely to produce.
pub const OTHER: &str = "bob";
pub const OTHER_DEVICE: u64 = 0x000A_5C3D_1E2F_6B79;
/// The name of bob's seeded device. Device ids are chosen by clients and unique per user only
/// (alice may log in with the same id as bob's device); this name, which no fuzzed request
/// gives a device, is what tells bob's device apart in a list shown to alice.
pub const OTHER_DEVICE_NAME: &str = "bob's seeded device";
/// The password of both users.
pub const PASSWORD: &str = "correct horse battery";
/// The resumption ticket of [`USER`]'s [`DEVICE`].
pub const TICKET_ID: [u8; 16] = [7; 16];
pub const TICKET_SECRET: [u8; 32] = [42; 32];
/// The text of a direct message from bob to carol, stored before any run.
pub const SECRET_TEXT: &str = "between bob and carol only";

/// Names the templates pick from: the two users, one that exists only if an input registers
/// it, and rooms that exist only once an input joins them.
const USERS: [&str; 4] = [USER, OTHER, "carol", "nobody"];
const ROOMS: [&str; 2] = ["#r", "#s"];

/// Longest a run may take, from the first byte to the end of the server's session. Far above
/// any honest run (milliseconds): a run that takes this long is a hang.
pub const RUN_LIMIT: Duration = Duration::from_secs(10);
/// Password hashes one run may cause; see the module doc.
pub const MAX_HASHES: usize = 2;
/// Runs on one server before its stores are rebuilt, and the most messages they may hold:
/// every login catches up on what the device has not acknowledged, so a log that only grows
/// would make every run slower than the last.
const RUNS_PER_SERVER: u64 = 5_000;
const MESSAGES_PER_SERVER: u64 = 5_000;
/// In-memory pipe capacity each way.
const PIPE: usize = 1 << 20;
/// The request id of the login the harness itself sends.
const LOGIN_REQ: RequestId = RequestId(0xFFFF_FF00);

/// What the first input byte selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Handshake,
    Raw,
    Records,
}

/// One decoded input.
#[derive(Debug)]
pub struct Input<'a> {
    pub mode: Mode,
    pub login: bool,
    pub rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&first, rest) = data.split_first()?;
        let mode = match first % 3 {
            0 => Mode::Handshake,
            1 => Mode::Raw,
            _ => Mode::Records,
        };
        Some(Input {
            mode,
            login: first & 0x80 != 0,
            rest,
        })
    }
}

/// A running server: its stores' directory and shared state.
struct Server {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
    dispatcher: tokio::task::JoinHandle<()>,
    alice: UserId,
    runs: u64,
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    /// The Argon2id hash of [`PASSWORD`], computed once.
    hash: String,
    server: Option<Server>,
}

fn fixture() -> MutexGuard<'static, Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            Mutex::new(Fixture {
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime"),
                hash: im_server::auth::hash_blocking(PASSWORD).expect("hash the fixture password"),
                server: None,
            })
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn user(name: &str) -> UserName {
    UserName::parse(name).expect("a valid fixture name")
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("a valid fixture room")
}

/// Limits high enough that no run is ever refused for what earlier runs did (every run comes
/// from the same address), so that a run does the same whenever it is replayed.
fn config() -> Config {
    let mut c = Config::default();
    let l = &mut c.limits;
    l.unauthenticated_per_ip = u32::MAX;
    l.handshakes_per_ip_per_sec = 1_000_000;
    l.handshake_burst_per_ip = 1_000_000;
    l.logins_per_ip_per_min = 1_000_000;
    l.logins_per_account_per_min = 1_000_000;
    l.messages_per_user_per_sec = 1_000_000;
    l.message_burst_per_user = 1_000_000;
    c
}

/// Scratch directories to remove when the process exits: libFuzzer ends a run with `exit`,
/// which drops no static, so the fixture's own `TempDir` would stay behind in `/dev/shm`.
static SCRATCH: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_scratch_dirs() {
    if let Ok(dirs) = SCRATCH.try_lock() {
        for dir in dirs.iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A temporary directory in `/dev/shm` when there is one (an `fsync` there costs nothing).
fn scratch_dir() -> tempfile::TempDir {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a function without arguments that only removes directories.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(remove_scratch_dirs);
    });
    let mut b = tempfile::Builder::new();
    b.prefix("im-server-fuzz-");
    let dir = b
        .tempdir_in("/dev/shm")
        .or_else(|_| b.tempdir())
        .expect("a temporary directory");
    SCRATCH
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.path().to_owned());
    dir
}

impl Fixture {
    /// The server for the next run: the current one, or a fresh one when it has served its
    /// share. Also puts back alice's device and ticket if an earlier run revoked them.
    fn server(&mut self) -> Arc<Shared> {
        let stale = self
            .server
            .as_ref()
            .is_none_or(|s| s.runs >= RUNS_PER_SERVER || s.shared.log.last_id() >= MESSAGES_PER_SERVER);
        if stale {
            if let Some(old) = self.server.take() {
                self.retire(old);
            }
            self.server = Some(self.build());
        }
        let s = self.server.as_mut().expect("just built");
        s.runs += 1;
        let now = now_ms();
        let accounts = &s.shared.accounts;
        if accounts.ticket(&TICKET_ID, now).expect("read the ticket").is_none() {
            accounts
                .touch_device(s.alice, DEVICE, "fuzz", now)
                .expect("restore the device");
            accounts
                .insert_ticket(&fixture_ticket(s.alice, now))
                .expect("restore the ticket");
        }
        s.shared.clone()
    }

    fn build(&self) -> Server {
        let dir = scratch_dir();
        let data = DataDir::open_or_create(&dir.path().join("data")).expect("create the data directory");
        // A fixed host key: generating one costs seconds.
        write_private(
            &data.host_key_path(),
            include_bytes!("../../../im-proto/tests/data/host_key.pem"),
        )
        .expect("write the host key");
        let server = im_server::Server::open(&data, config()).expect("open the server's stores");
        let now = now_ms();
        let accounts = &server.shared.accounts;
        let mut ids = Vec::new();
        for (name, device, device_name) in [(USER, DEVICE, "fuzz"), (OTHER, OTHER_DEVICE, OTHER_DEVICE_NAME)] {
            let uid = accounts
                .create_user(&user(name), &self.hash, now)
                .expect("create a user");
            accounts
                .touch_device(uid, device, device_name, now)
                .expect("add a device");
            ids.push(uid);
        }
        accounts
            .insert_ticket(&fixture_ticket(ids[0], now))
            .expect("store the ticket");
        server
            .shared
            .log
            .append_blocking(NewMessage {
                from: user(OTHER),
                to: Target::User(user("carol")),
                client_id: "secret".into(),
                action: false,
                text: SECRET_TEXT.into(),
                sender_device: OTHER_DEVICE,
            })
            .expect("store the secret message");
        let _runtime = self.rt.enter();
        let (shared, dispatcher) = server.start();
        Server {
            _dir: dir,
            shared,
            dispatcher,
            alice: ids[0],
            runs: 0,
        }
    }

    /// Stops a server: its dispatcher, then its message log (joining the writer thread); the
    /// directory goes with it.
    fn retire(&self, old: Server) {
        let Server {
            _dir,
            shared,
            dispatcher,
            ..
        } = old;
        shared.shut_down();
        dispatcher.abort();
        let _ = self.rt.block_on(dispatcher);
        let log = shared.log.clone();
        drop(shared);
        let _ = log.close();
    }
}

fn fixture_ticket(alice: UserId, now: u64) -> Ticket {
    Ticket {
        id: TICKET_ID,
        user: alice,
        device_id: DEVICE,
        secret: Zeroizing::new(TICKET_SECRET),
        expires_ms: now + 30 * 86_400_000,
    }
}

/// Runs one input; panics on any failure described in the module doc.
pub fn run(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let mut fixture = fixture();
    let shared = fixture.server();
    fixture.rt.block_on(async {
        if tokio::time::timeout(RUN_LIMIT, session(shared, &input)).await.is_err() {
            panic!("the session did not end within {RUN_LIMIT:?} after the client closed ({input:?})");
        }
    });
}

async fn session(shared: Arc<Shared>, input: &Input<'_>) {
    let (client, server_end) = tokio::io::duplex(PIPE);
    let ip = IpAddr::from([127, 0, 0, 1]);
    let guard = shared
        .limits
        .unauthenticated(ip)
        .expect("the fuzz config has no per-address limit");
    let task = tokio::spawn(im_server::session::serve(server_end, ip, shared, guard));
    let (mut rd, mut wr) = tokio::io::split(client);
    match input.mode {
        Mode::Handshake => {
            let (_, out) = tokio::join!(write_and_close(&mut wr, input.rest), read_all(&mut rd, BytesMut::new()));
            check_plaintext(out);
        }
        Mode::Raw | Mode::Records => {
            let (mut session, buf) = handshake(&mut rd, &mut wr).await;
            let mut out = Vec::new();
            if input.login {
                seal(&mut session, &ClientMsg::LoginTicket { req: LOGIN_REQ }, &mut out);
            }
            if input.mode == Mode::Raw {
                out.extend_from_slice(input.rest);
            } else {
                for plain in plaintexts(input.rest) {
                    // A chunk over the record limit cannot be sealed: left out.
                    let _ = session.seal(&plain, &mut out);
                }
            }
            let (_, received) = tokio::join!(write_and_close(&mut wr, &out), read_all(&mut rd, buf));
            check_records(&mut session, received);
        }
    }
    // The server's output ended, so its session is ending: a panic in it is a failure.
    if let Err(e) = task.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn write_and_close(wr: &mut WriteHalf<DuplexStream>, bytes: &[u8]) {
    // The server may end the connection early (that is what a protocol error does).
    if wr.write_all(bytes).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

/// Everything the server sends until it ends the connection, after what `buf` already holds.
async fn read_all(rd: &mut ReadHalf<DuplexStream>, mut buf: BytesMut) -> BytesMut {
    loop {
        buf.reserve(16 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return buf,
            Ok(_) => {}
        }
    }
}

/// A genuine resumption with the fixture ticket: the server must accept it.
async fn handshake(rd: &mut ReadHalf<DuplexStream>, wr: &mut WriteHalf<DuplexStream>) -> (Session, BytesMut) {
    let ticket = ResumeTicket {
        id: TICKET_ID,
        secret: Zeroizing::new(TICKET_SECRET),
    };
    let (mut hs, hello) = ClientHandshake::new(&mut rand::rng(), Some(ticket));
    wr.write_all(&hello).await.expect("send ClientHello");
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let est = loop {
        let frame = loop {
            if let Some(f) = decoder.decode(&mut buf).expect("the server's handshake frames parse") {
                break f;
            }
            buf.reserve(4096);
            let n = rd.read_buf(&mut buf).await.expect("read the server's flight");
            assert!(n > 0, "the server ended a genuine resumption handshake");
        };
        if let Some(est) = hs.handle(frame).expect("the server's flight verifies") {
            break est;
        }
    };
    assert!(est.resumed, "the server did not resume the fixture ticket");
    wr.write_all(&est.finished).await.expect("send Finished");
    (est.session, buf)
}

fn seal(session: &mut Session, msg: &ClientMsg, out: &mut Vec<u8>) {
    let mut plain = Vec::new();
    msg.encode(&mut plain);
    session.seal(&plain, out).expect("a template fits in a record");
}

/// The record plaintexts of a `records` input, with password hashes capped.
pub fn plaintexts(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut hashes = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (len, tail) = match len {
            0xFF => match tail.split_first_chunk::<2>() {
                Some((l, t)) => (usize::from(u16::from_be_bytes(*l)), t),
                None => (tail.len(), &[][..]),
            },
            n => (usize::from(n), tail),
        };
        let (chunk, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        let plain = match chunk.split_first() {
            Some((&t, params)) if t >= 0xF0 => {
                let mut v = Vec::new();
                template(t & 0x0F, params).encode(&mut v);
                v
            }
            _ => chunk.to_vec(),
        };
        if needs_hash(&plain) {
            hashes += 1;
            if hashes > MAX_HASHES {
                continue;
            }
        }
        out.push(plain);
    }
    out
}

/// Whether the server may hash a password for this message (Register, LoginPassword,
/// ChangePassword).
fn needs_hash(plain: &[u8]) -> bool {
    matches!(plain, [0x00, 0x10 | 0x11 | 0x16, ..])
}

/// A valid request built from `p`: the template number `t` says which.
fn template(t: u8, p: &[u8]) -> ClientMsg {
    let b = |i: usize| p.get(i).copied().unwrap_or(0);
    // Text from byte `i` on, cut to a field's limit (on a character boundary).
    let tail = |i: usize, max: usize| {
        let mut t = String::from_utf8_lossy(p.get(i..).unwrap_or(&[])).into_owned();
        while t.len() > max {
            t.pop();
        }
        t
    };
    let req = RequestId(u32::from(b(0)));
    let name = |i: usize| user(USERS[usize::from(b(i)) % USERS.len()]);
    let rm = |i: usize| room(ROOMS[usize::from(b(i)) % ROOMS.len()]);
    let target = |i: usize| {
        if b(i) & 0x80 != 0 {
            Target::Room(rm(i))
        } else {
            Target::User(name(i))
        }
    };
    // Small ids: the ones the stores actually hold.
    let id = |i: usize| MessageId(u64::from(b(i)));
    let password = |i: usize| {
        if b(i) & 1 == 0 {
            PASSWORD.to_owned()
        } else {
            tail(i + 1, MAX_PASSWORD)
        }
    };
    let device = |i: usize| DeviceId::new([DEVICE, OTHER_DEVICE, 1][usize::from(b(i)) % 3]).expect("valid ids");
    match t {
        0 => ClientMsg::Send {
            req,
            to: target(1),
            client_id: format!("c{}", b(2)),
            action: b(3) & 1 == 1,
            text: tail(4, MAX_TEXT),
        },
        1 => ClientMsg::History {
            req,
            with: target(1),
            before: (b(2) & 1 == 1).then(|| id(3)),
            after: (b(2) & 2 == 2).then(|| id(4)),
            limit: u16::from(b(5)).clamp(1, 500),
        },
        2 => ClientMsg::Join { req, room: rm(1) },
        3 => ClientMsg::Leave { req, room: rm(1) },
        4 => {
            let (room, user) = (rm(2), name(3));
            match b(1) % 5 {
                0 => ClientMsg::Kick { req, room, user },
                1 => ClientMsg::Ban { req, room, user },
                2 => ClientMsg::Unban { req, room, user },
                3 => ClientMsg::Op { req, room, user },
                _ => ClientMsg::Deop { req, room, user },
            }
        }
        5 => ClientMsg::Topic {
            req,
            room: rm(1),
            topic: (b(2) & 1 == 1).then(|| tail(3, MAX_TOPIC)),
        },
        6 => ClientMsg::Ack { up_to: id(1) },
        7 => ClientMsg::Typing { to: target(1) },
        8 => match b(1) % 4 {
            0 => ClientMsg::ContactRequest { req, user: name(2) },
            1 => ClientMsg::ContactAccept { req, user: name(2) },
            2 => ClientMsg::ContactRemove { req, user: name(2) },
            _ => ClientMsg::ListContacts { req },
        },
        9 => match b(1) % 3 {
            0 => ClientMsg::Block { req, user: name(2) },
            1 => ClientMsg::Unblock { req, user: name(2) },
            _ => ClientMsg::ListBlocked { req },
        },
        10 => match b(1) % 2 {
            0 => ClientMsg::SetPresence {
                req,
                presence: [Presence::Online, Presence::Away, Presence::Busy, Presence::Offline][usize::from(b(2)) % 4],
                text: (b(3) & 1 == 1).then(|| tail(4, MAX_STATUS_TEXT)),
            },
            _ => ClientMsg::GetPresence {
                req,
                users: (2..p.len()).map(name).collect(),
            },
        },
        11 => match b(1) % 3 {
            0 => ClientMsg::ListDevices { req },
            1 => ClientMsg::RevokeDevice {
                req,
                device_id: device(2),
            },
            _ => ClientMsg::AddUserKey {
                req,
                public_key_der: p
                    .get(2..)
                    .unwrap_or(&[])
                    .iter()
                    .copied()
                    .take(MAX_PUBLIC_KEY_DER)
                    .collect(),
            },
        },
        12 => match b(1) % 3 {
            0 => ClientMsg::RequestTicket { req },
            1 => ClientMsg::Logout { req },
            _ => ClientMsg::Ping { nonce: u64::from(b(2)) },
        },
        13 => match b(1) % 3 {
            0 => ClientMsg::LoginTicket { req },
            1 => ClientMsg::LoginPassword {
                req,
                user: name(2),
                password: password(3).into(),
                device_id: device(4),
                device_name: "fuzz".into(),
            },
            _ => ClientMsg::Register {
                req,
                user: user(&format!("u{}", b(2))),
                password: password(3).into(),
                device_id: device(4),
                device_name: "fuzz".into(),
            },
        },
        14 => ClientMsg::ChangePassword {
            req,
            old_password: password(1).into(),
            new_password: password(2).into(),
        },
        _ => match b(1) % 2 {
            0 => ClientMsg::Members { req, room: rm(2) },
            _ => ClientMsg::ListRooms { req },
        },
    }
}

/// Before the handshake, the server sends only well-formed frames.
fn check_plaintext(mut out: BytesMut) {
    let mut decoder = FrameDecoder::new();
    while decoder
        .decode(&mut out)
        .unwrap_or_else(|e| panic!("the server sent a malformed frame: {e}"))
        .is_some()
    {}
    assert!(
        out.is_empty() && !decoder.is_mid_frame(),
        "the server's output ends in the middle of a frame"
    );
}

/// After the handshake: every record opens and decodes, the output ends on a record boundary,
/// and nobody is shown a direct message between two other users.
fn check_records(session: &mut Session, mut out: BytesMut) {
    let mut me: Option<UserName> = None;
    loop {
        match session.read(&mut out) {
            Ok(Some(Incoming::Data(plain))) => {
                let msg = ServerMsg::decode(&plain)
                    .unwrap_or_else(|e| panic!("the server sent an undecodable message ({e}): {plain:02x?}"));
                check_visible(&mut me, &msg);
            }
            Ok(Some(Incoming::Close(reason))) => {
                CloseReason::decode(&reason)
                    .unwrap_or_else(|e| panic!("the server sent an undecodable close reason ({e}): {reason:02x?}"));
                assert!(out.is_empty(), "the server sent {} bytes after its Close", out.len());
                return;
            }
            Ok(None) => {
                assert!(
                    out.is_empty() && !session.is_mid_frame(),
                    "the server's output ends in the middle of a record"
                );
                return;
            }
            Err(e) => panic!("the server sent a record its client cannot open: {e}"),
        }
    }
}

fn check_visible(me: &mut Option<UserName>, msg: &ServerMsg) {
    let seen = |m: &ChatMessage, me: &Option<UserName>| {
        let Some(me) = me else {
            panic!("a message was shown before login: {m:?}");
        };
        if let Target::User(to) = &m.to {
            assert!(
                &m.from == me || to == me,
                "{me} was shown a direct message between {} and {to}: {m:?}",
                m.from
            );
        }
    };
    match msg {
        ServerMsg::LoggedIn { user, .. } => *me = Some(user.clone()),
        ServerMsg::Message(m) => seen(m, me),
        ServerMsg::HistoryPage { messages, .. } => messages.iter().for_each(|m| seen(m, me)),
        ServerMsg::Devices { devices, .. } if me.as_ref().is_some_and(|u| u.as_str() == USER) => {
            assert!(
                devices.iter().all(|d| d.name != OTHER_DEVICE_NAME),
                "{USER} was shown {OTHER}'s device: {devices:?}"
            );
        }
        _ => {}
    }
}
