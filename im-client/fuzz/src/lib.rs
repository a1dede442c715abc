//! The im-client driver against a hostile server: the real [`im_client::connect`] and its
//! driver task, over loopback TCP to a fake server in the same process that resumes the
//! client's ticket, logs it in, waits for the client's requests, and then sends what the
//! input says.
//!
//! The driver is only reachable through `connect`, which opens a `TcpStream` itself, so the
//! fake server listens on 127.0.0.1 (one listener per process); a run costs a loopback
//! connection and four X25519 operations. (Fuzzing at the decoded-message level without a
//! socket would need `connect` to accept any byte stream, or the driver's `handle` to be
//! reachable from outside the crate.)
//!
//! # Layout
//! - `src/lib.rs` (this file): the fixture (runtime, listener, client home with a stored
//!   ticket), the fake server, and the checks.
//! - `fuzz_targets/client_events.rs`: one connection per input.
//!
//! # One run
//! The client logs in by ticket, then sends seven requests (send, history, devices, members,
//! presence, topic, rooms) and acknowledges every message it is given. Once the fake server
//! has all seven, it sends the input, as bit 0 of the first byte says:
//! - **raw** (clear): the rest of the input as raw bytes on the connection;
//! - **records** (set): the rest cut into chunks (a length byte, or `0xFF` and a big-endian
//!   `u16`, then that many bytes), each sealed as one Data record. A chunk that starts with
//!   `0xF0..=0xFF` is a template: a valid server message built from its other bytes (a
//!   pushed message, the right or a wrong reply to one of the pending requests, an error, a
//!   ping, a ticket, a Close...); any other chunk is sent as it is.
//!
//! Then it ends the connection (bit 1 of the first byte: with a Close record first) and reads
//! what the client sends until the client closes. A run fails (panics) when the client
//! panics, when it does not finish within [`RUN_LIMIT`] (every request answered or failed,
//! the event stream ended), when it delivers the same message twice, when it sends a record
//! or message that does not open or decode, or when it acknowledges an id it never delivered.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use im_client::home::StoredTicket;
use im_client::known_hosts::{HostKeyPolicy, KnownHosts, UnknownHost};
use im_client::{ConnectOptions, Credentials, Event, Home, ServerAddr};
use im_proto::frame::FrameDecoder;
use im_proto::handshake::{ServerHandshake, ServerInputs};
use im_proto::limits::{MAX_REASON, MAX_STATUS_TEXT, MAX_TEXT, MAX_TOPIC};
use im_proto::msg::{
    ChatMessage, ClientMsg, CloseReason, ContactState, DeviceId, DeviceInfo, ErrorCode, Member, MessageId, Presence,
    PresenceInfo, RequestId, Role, RoomEventKind, RoomInfo, ServerMsg, TicketSecret, Timestamp,
};
use im_proto::session::{Incoming, Session};
use im_proto::{RoomName, Target, UserName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

pub const USER: &str = "alice";
pub const DEVICE: u64 = 4242;
pub const TICKET_ID: [u8; 16] = [7; 16];
pub const TICKET_SECRET: [u8; 32] = [42; 32];
/// Requests the client has in flight when the input starts.
pub const REQUESTS: usize = 7;
/// Longest a run may take; an honest run takes about a millisecond.
pub const RUN_LIMIT: Duration = Duration::from_secs(10);

const USERS: [&str; 3] = [USER, "bob", "carol"];
const ROOMS: [&str; 2] = ["#r", "#s"];

struct Fixture {
    rt: tokio::runtime::Runtime,
    listener: Arc<TcpListener>,
    _home_dir: tempfile::TempDir,
    opts: ConnectOptions,
}

fn fixture() -> MutexGuard<'static, Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| Mutex::new(Fixture::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
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
    b.prefix("im-client-fuzz-");
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
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("listen on loopback");
        let addr = listener.local_addr().expect("the listener's address");
        let dir = scratch_dir();
        let home = Home::at(dir.path());
        let server = ServerAddr::parse(&addr.to_string()).expect("a server address");
        let opts = ConnectOptions {
            server,
            user: name(USER),
            home: home.clone(),
            device_name: "fuzz".into(),
            credentials: Credentials {
                use_ticket: true,
                ..Credentials::default()
            },
            host_keys: HostKeyPolicy {
                known_hosts: KnownHosts::new(home.known_hosts_path()),
                unknown: UnknownHost::Refuse,
                expected: None,
            },
            reconnect: None,
        };
        Fixture {
            rt,
            listener: Arc::new(listener),
            _home_dir: dir,
            opts,
        }
    }

    /// Stores the fixture ticket again: a run may have replaced or deleted it.
    fn reset_ticket(&self) {
        let ticket = StoredTicket {
            id: TICKET_ID,
            secret: Zeroizing::new(TICKET_SECRET),
            expires_at: Timestamp(4_000_000_000_000),
        };
        self.opts
            .home
            .save_ticket(&self.opts.server, &self.opts.user, &ticket)
            .expect("store the ticket");
    }
}

fn name(n: &str) -> UserName {
    UserName::parse(n).expect("a valid fixture name")
}

fn room(n: &str) -> RoomName {
    RoomName::parse(n).expect("a valid fixture room")
}

/// One decoded input.
#[derive(Debug, Clone)]
pub struct Input {
    pub records: bool,
    pub close: bool,
    pub rest: Vec<u8>,
}

impl Input {
    pub fn parse(data: &[u8]) -> Option<Input> {
        let (&first, rest) = data.split_first()?;
        Some(Input {
            records: first & 1 == 1,
            close: first & 2 == 2,
            rest: rest.to_vec(),
        })
    }
}

/// Runs one input; panics on any failure described in the module doc.
pub fn run(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let fixture = fixture();
    fixture.reset_ticket();
    fixture.rt.block_on(async {
        if tokio::time::timeout(RUN_LIMIT, connection(&fixture, input.clone()))
            .await
            .is_err()
        {
            panic!("the client did not finish within {RUN_LIMIT:?} ({input:?})");
        }
    });
}

async fn connection(fixture: &Fixture, input: Input) {
    let server = tokio::spawn(fake_server(fixture.listener.clone(), input));
    let (client, mut events) = match im_client::connect(fixture.opts.clone()).await {
        Ok(c) => c,
        Err(e) => panic!("the client could not log in by ticket: {e}"),
    };
    let bob = Target::User(name("bob"));
    let r = room("#r");
    let requests = async {
        let _ = tokio::join!(
            client.send(&bob, "hi", "c-1", false),
            client.history(&bob, None, None, 50),
            client.devices(),
            client.members(&r),
            client.presence(vec![name("bob")]),
            client.topic(&r, None),
            client.rooms(),
        );
    };
    let acker = client.clone();
    let consume = async move {
        let mut delivered = HashSet::new();
        while let Some(event) = events.recv().await {
            if let Event::Message(m) = event {
                assert!(delivered.insert(m.id.0), "message {} delivered twice", m.id.0);
                let _ = acker.ack(m.id);
            }
        }
        delivered
    };
    let ((), delivered) = tokio::join!(requests, consume);
    drop(client);
    let acks = match server.await {
        Ok(acks) => acks,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    for up_to in acks {
        assert!(
            delivered.contains(&up_to),
            "the client acknowledged {up_to}, which it never delivered"
        );
    }
}

/// What the client has sent so far, read by the fake server.
struct FromClient {
    stream: TcpStream,
    session: Session,
    buf: BytesMut,
    /// The requests still waiting for their replies: id and what was asked.
    requests: Vec<(RequestId, ClientMsg)>,
    acks: Vec<u64>,
    closed: bool,
}

impl FromClient {
    /// Waits until the client has sent something new, and checks it; false at the end of its
    /// stream.
    async fn read_more(&mut self) -> bool {
        loop {
            if self.check_buffered() > 0 {
                return true;
            }
            self.buf.reserve(8192);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    }

    /// Opens and checks every whole record buffered; returns how many there were.
    fn check_buffered(&mut self) -> usize {
        let mut n = 0;
        loop {
            match self.session.read(&mut self.buf) {
                Ok(Some(Incoming::Data(plain))) => {
                    n += 1;
                    assert!(!self.closed, "the client sent a record after its Close");
                    let msg = ClientMsg::decode(&plain)
                        .unwrap_or_else(|e| panic!("the client sent an undecodable message ({e}): {plain:02x?}"));
                    match msg {
                        ClientMsg::Ack { up_to } => self.acks.push(up_to.0),
                        m => {
                            if let Some(req) = m.request_id() {
                                self.requests.push((req, m));
                            }
                        }
                    }
                }
                Ok(Some(Incoming::Close(reason))) => {
                    n += 1;
                    CloseReason::decode(&reason)
                        .unwrap_or_else(|e| panic!("the client sent an undecodable close reason ({e})"));
                    self.closed = true;
                }
                Ok(None) => return n,
                Err(e) => panic!("the client sent a record that does not open: {e}"),
            }
        }
    }

    /// Checks the rest of what the client sent, once it has closed the connection.
    fn check_rest(&mut self) {
        self.check_buffered();
        assert!(
            self.buf.is_empty() && !self.session.is_mid_frame(),
            "the client's output ends in the middle of a record"
        );
    }
}

/// Accepts the client, resumes its ticket, logs it in, waits for its requests, sends the
/// input, ends the connection, and returns the ids the client acknowledged.
async fn fake_server(listener: Arc<TcpListener>, input: Input) -> Vec<u64> {
    let (mut stream, _) = listener.accept().await.expect("accept the client");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    let mut buf = BytesMut::new();
    let mut decoder = FrameDecoder::new();
    let mut next_frame = async |stream: &mut TcpStream, buf: &mut BytesMut| loop {
        if let Some(f) = decoder.decode(buf).expect("the client's handshake frames parse") {
            return f;
        }
        buf.reserve(4096);
        let n = stream.read_buf(buf).await.expect("read the client's handshake");
        assert!(n > 0, "the client ended its handshake");
    };
    let hello = ServerHandshake::read_client_hello(next_frame(&mut stream, &mut buf).await)
        .expect("the client's ClientHello is valid");
    assert_eq!(
        hello.ticket_id(),
        Some(TICKET_ID),
        "the client did not offer its ticket"
    );
    let inputs = ServerInputs::random(&mut rand::rng());
    let (expect, flight) = hello.resume(inputs, &TICKET_SECRET);
    stream.write_all(&flight).await.expect("send the flight");
    let fin = next_frame(&mut stream, &mut buf).await;
    let mut session = expect
        .read_finished(fin)
        .expect("the client's Finished verifies")
        .session;

    let mut client = FromClient {
        stream,
        session: session.clone(),
        buf,
        requests: Vec::new(),
        acks: Vec::new(),
        closed: false,
    };
    // The two sessions are one connection's two directions: `client.session` opens, this one seals.
    while client.requests.is_empty() {
        assert!(client.read_more().await, "the client left before logging in");
    }
    let (login, _) = client.requests.remove(0);
    let mut out = Vec::new();
    seal(
        &mut session,
        &ServerMsg::LoggedIn {
            req: login,
            user: name(USER),
            device_id: DeviceId::new(DEVICE).expect("valid"),
            server_time: Timestamp(1_700_000_000_000),
        },
        &mut out,
    );
    client.stream.write_all(&out).await.expect("send LoggedIn");
    while client.requests.len() < REQUESTS {
        assert!(client.read_more().await, "the client left before sending its requests");
    }

    let mut out = Vec::new();
    if input.records {
        for plain in plaintexts(&input.rest, &client.requests) {
            if plain.is_empty() {
                // A Close template: nothing may follow it.
                let mut reason = Vec::new();
                CloseReason::new(ErrorCode::Normal, "bye").encode(&mut reason);
                let _ = session.seal_close(&reason, &mut out);
                break;
            }
            let _ = session.seal(&plain, &mut out);
        }
    } else {
        out.extend_from_slice(&input.rest);
    }
    if input.close {
        let mut reason = Vec::new();
        CloseReason::new(ErrorCode::ShuttingDown, "fuzz").encode(&mut reason);
        let _ = session.seal_close(&reason, &mut out);
    }
    // The client may stop reading at any point (a protocol error): keep reading what it sends
    // meanwhile, so that neither side waits on a full socket buffer.
    let (mut rd, mut wr) = client.stream.into_split();
    let writer = async move {
        let _ = wr.write_all(&out).await;
        let _ = wr.shutdown().await;
        wr
    };
    let reader = async {
        let mut rest = Vec::new();
        let _ = rd.read_to_end(&mut rest).await;
        rest
    };
    let (wr, rest) = tokio::join!(writer, reader);
    client.stream = rd.reunite(wr).expect("the halves of one stream");
    client.buf.extend_from_slice(&rest);
    client.check_rest();
    client.acks
}

fn seal(session: &mut Session, msg: &ServerMsg, out: &mut Vec<u8>) {
    let mut plain = Vec::new();
    msg.encode(&mut plain);
    session.seal(&plain, out).expect("a template fits in a record");
}

/// The record plaintexts of a `records` input; an empty one stands for a Close.
pub fn plaintexts(mut rest: &[u8], requests: &[(RequestId, ClientMsg)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
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
        match chunk.split_first() {
            Some((&0xFF, _)) => out.push(Vec::new()),
            Some((&t, params)) if t >= 0xF0 => {
                let mut v = Vec::new();
                template(t & 0x0F, params, requests).encode(&mut v);
                out.push(v);
            }
            // The reserved SealedMessage kind, which the client ignores.
            Some((&0xEF, params)) => {
                let mut v = vec![0x7F, 0x00];
                v.extend_from_slice(params);
                out.push(v);
            }
            _ => out.push(chunk.to_vec()),
        }
    }
    out
}

/// A valid server message built from `p`: the template number `t` says which.
fn template(t: u8, p: &[u8], requests: &[(RequestId, ClientMsg)]) -> ServerMsg {
    let b = |i: usize| p.get(i).copied().unwrap_or(0);
    // Text from byte `i` on, cut to a field's limit (on a character boundary).
    let tail = |i: usize, max: usize| {
        let mut t = String::from_utf8_lossy(p.get(i..).unwrap_or(&[])).into_owned();
        while t.len() > max {
            t.pop();
        }
        t
    };
    let user = |i: usize| name(USERS[usize::from(b(i)) % USERS.len()]);
    let rm = |i: usize| room(ROOMS[usize::from(b(i)) % ROOMS.len()]);
    let target = |i: usize| {
        if b(i) & 0x80 != 0 {
            Target::Room(rm(i))
        } else {
            Target::User(user(i))
        }
    };
    // Small ids, so that inputs repeat them.
    let id = |i: usize| MessageId(u64::from(b(i)));
    let ts = |i: usize| Timestamp(1_700_000_000_000 + u64::from(b(i)));
    // The request a reply answers: one of the pending ones, or (b >= 0xF0) one never asked.
    let req = |i: usize| match requests.get(usize::from(b(i)) % (requests.len() + 1)) {
        Some((r, _)) if b(i) < 0xF0 => *r,
        _ => RequestId(u32::from(b(i)) << 8),
    };
    let chat = |i: usize| ChatMessage {
        id: id(i),
        ts: ts(i + 1),
        from: user(i + 2),
        to: target(i + 3),
        client_id: format!("c{}", b(i + 4)),
        action: b(i + 5) & 1 == 1,
        text: tail(i + 6, MAX_TEXT),
    };
    let presence =
        |i: usize| [Presence::Online, Presence::Away, Presence::Busy, Presence::Offline][usize::from(b(i)) % 4];
    match t {
        0 => ServerMsg::Message(chat(0)),
        // The right reply to a pending request, whatever it asked.
        1 => {
            let r = req(0);
            let asked = requests.iter().find(|(q, _)| *q == r).map(|(_, m)| m);
            match asked {
                Some(ClientMsg::Send { client_id, .. }) => ServerMsg::Sent {
                    req: r,
                    id: id(1),
                    ts: ts(2),
                    client_id: client_id.clone(),
                },
                Some(ClientMsg::History { .. }) => ServerMsg::HistoryPage {
                    req: r,
                    messages: (1..p.len().min(40)).step_by(8).map(chat).collect(),
                    more: b(1) & 1 == 1,
                },
                Some(ClientMsg::ListDevices { .. }) => ServerMsg::Devices {
                    req: r,
                    devices: (1..p.len().min(10))
                        .map(|i| DeviceInfo {
                            id: DeviceId::new(u64::from(b(i)).max(1)).expect("valid"),
                            name: format!("d{i}"),
                            last_seen: ts(i),
                            current: b(i) & 1 == 1,
                        })
                        .collect(),
                },
                Some(ClientMsg::Members { room, .. }) => ServerMsg::MemberList {
                    req: r,
                    room: room.clone(),
                    members: (1..p.len().min(10))
                        .map(|i| Member {
                            user: user(i),
                            role: [Role::Member, Role::Operator, Role::Owner][usize::from(b(i)) % 3],
                            online: b(i) & 1 == 1,
                        })
                        .collect(),
                },
                Some(ClientMsg::GetPresence { .. }) => ServerMsg::PresenceList {
                    req: r,
                    entries: (1..p.len().min(10))
                        .map(|i| PresenceInfo {
                            user: user(i),
                            presence: presence(i),
                            text: (b(i) & 0x10 != 0).then(|| format!("s{i}")),
                        })
                        .collect(),
                },
                Some(ClientMsg::Topic { room, .. }) => ServerMsg::TopicIs {
                    req: r,
                    room: room.clone(),
                    topic: (b(1) & 1 == 1).then(|| tail(2, MAX_TOPIC)),
                },
                Some(ClientMsg::ListRooms { .. }) => ServerMsg::Rooms {
                    req: r,
                    rooms: (1..p.len().min(10))
                        .map(|i| RoomInfo {
                            room: rm(i),
                            members: u32::from(b(i)),
                            topic: None,
                            joined: b(i) & 1 == 1,
                        })
                        .collect(),
                },
                _ => ServerMsg::Ok { req: r },
            }
        }
        2 => ServerMsg::Error {
            req: (b(0) & 0x80 == 0).then(|| req(1)),
            code: ErrorCode::from_wire(u16::from_be_bytes([b(2), b(3)])),
            text: tail(5, MAX_REASON),
            retry_after_ms: (b(4) & 1 == 1).then(|| u32::from(b(4))),
        },
        3 => ServerMsg::Ok { req: req(0) },
        4 => ServerMsg::Ping { nonce: u64::from(b(0)) },
        5 => ServerMsg::Ticket {
            ticket_id: [b(0); 16],
            secret: TicketSecret::new([b(1); 32]),
            expires_at: ts(2),
        },
        6 => ServerMsg::Receipt {
            id: id(0),
            user: user(1),
            device_id: DeviceId::new(u64::from(b(2)).max(1)).expect("valid"),
        },
        7 => ServerMsg::TypingNotice {
            from: user(0),
            to: target(1),
        },
        8 => ServerMsg::RoomEvent {
            room: rm(0),
            kind: [
                RoomEventKind::Join,
                RoomEventKind::Leave,
                RoomEventKind::Topic,
                RoomEventKind::Kick,
                RoomEventKind::Ban,
                RoomEventKind::Unban,
                RoomEventKind::Op,
                RoomEventKind::Deop,
            ][usize::from(b(1)) % 8],
            user: user(2),
            by: (b(3) & 1 == 1).then(|| user(4)),
            topic: (b(3) & 2 == 2).then(|| tail(5, MAX_TOPIC)),
            ts: ts(4),
        },
        9 => ServerMsg::ContactUpdate {
            user: user(0),
            state: [
                None,
                Some(ContactState::Incoming),
                Some(ContactState::Outgoing),
                Some(ContactState::Accepted),
            ][usize::from(b(1)) % 4],
        },
        10 => ServerMsg::PresenceUpdate(PresenceInfo {
            user: user(0),
            presence: presence(1),
            text: (b(2) & 1 == 1).then(|| tail(3, MAX_STATUS_TEXT)),
        }),
        11 => ServerMsg::LoggedIn {
            req: req(0),
            user: user(1),
            device_id: DeviceId::new(DEVICE).expect("valid"),
            server_time: ts(2),
        },
        12 => ServerMsg::Pong { nonce: u64::from(b(0)) },
        13 => ServerMsg::Sent {
            req: req(0),
            id: id(1),
            ts: ts(2),
            client_id: format!("c{}", b(3)),
        },
        _ => ServerMsg::HistoryPage {
            req: req(0),
            messages: (1..p.len().min(40)).step_by(8).map(chat).collect(),
            more: false,
        },
    }
}
