//! Room fan-out latency: one room of 1,000 online members on loopback, beside the floor set by
//! the kernel's send path, measured in the same run.
//!
//! ```text
//! cargo run --release -p im-server --example room_fanout [-- MEMBERS [MESSAGES]]
//! ```
//!
//! **The server run.** An in-process server (a fresh temporary data directory, the fixed test
//! host key) with MEMBERS users (default 1,000) created straight in the accounts store, each
//! with a device, a resumption ticket and a membership of `#bench`; so no Argon2 hash and no
//! RSA signature is spent on setup. Each member connects over loopback TCP with a resumption
//! handshake and `LoginTicket`, and a task per member reads, decrypts and decodes its
//! records. Member 0 then sends MESSAGES room messages (default 200, after 10 unmeasured),
//! one at a time: each waits until every other member has it. Per message:
//! - *send→Sent*: the sender's wait for its `Sent`, i.e. the durable append (group commit
//!   with fsync) and the reply;
//! - *send→first* and *send→last*: until the first and the last of the other members has
//!   decoded the `Message`.
//!
//! **The floor.** The same number of loopback TCP connections, with no protocol, no crypto
//! and no store: a task per server-side socket waits on its own queue; a "fan-out" loop puts
//! one shared 200-byte buffer (the size of a short room message record) into every queue, as
//! the router does, and each task writes it to its socket; a task per client-side socket
//! reads it. *trigger→last* is the least a room fan-out can cost on this machine with this
//! design (one task per connection, kernel send per socket), and the same client tasks share
//! the same cores in both runs.
//!
//! Both runs share one tokio runtime (one worker per core), clients and server alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use im_proto::frame::FrameDecoder;
use im_proto::handshake::{ClientHandshake, ResumeTicket};
use im_proto::msg::{ClientMsg, RequestId, ServerMsg};
use im_proto::session::{Incoming, Session};
use im_proto::{RoomName, Target, UserName};
use im_server::config::Config;
use im_server::datadir::DataDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WARMUP: usize = 10;
const FLOOR_BYTES: usize = 200;
const CONNECT_CONCURRENCY: usize = 64;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let members: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let messages: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    assert!(members >= 2, "a room needs a sender and a recipient");
    im_server::server::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(members, messages))
}

async fn run(members: usize, messages: usize) -> Result<(), BoxError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("room fan-out: {members} members on loopback, {messages} messages, {cores} cores");

    let dir = tempfile::tempdir()?;
    let (addr, tickets) = start_server(dir.path(), members).await?;
    let server = server_run(addr, tickets, messages).await?;
    let floor = floor_run(members, messages).await?;

    println!();
    println!("{:<34} {:>9} {:>9} {:>9}", "ms", "p50", "p99", "max");
    report("server: send -> Sent (durable)", &server.sent);
    report("server: send -> first member", &server.first);
    report("server: send -> last member", &server.last);
    report("floor:  trigger -> first socket", &floor.first);
    report("floor:  trigger -> last socket", &floor.last);
    let ratio = percentile(&server.last, 0.5) / percentile(&floor.last, 0.5).max(f64::MIN_POSITIVE);
    println!();
    println!("send -> last member is {ratio:.1}x the floor at p50 (the floor has no store, no crypto, no protocol)");
    Ok(())
}

/// Opens a server on a temporary directory, creates the members and their tickets, and
/// serves on a loopback port.
async fn start_server(root: &std::path::Path, members: usize) -> Result<(SocketAddr, Vec<ResumeTicket>), BoxError> {
    let data = DataDir::open_or_create(&root.join("data"))?;
    im_server::datadir::write_private(
        &data.host_key_path(),
        include_bytes!("../../im-proto/tests/data/host_key.pem"),
    )?;
    let mut config = Config::default();
    let l = &mut config.limits;
    l.ping_interval_secs = 3600;
    l.login_timeout_secs = 600;
    l.unauthenticated_per_ip = 1_000_000;
    l.handshakes_per_ip_per_sec = 1_000_000;
    l.handshake_burst_per_ip = 1_000_000;
    l.messages_per_user_per_sec = 1_000_000;
    l.message_burst_per_user = 1_000_000;
    let server = im_server::Server::open(&data, config)?;
    let accounts = server.shared.accounts.clone();
    let setup = Instant::now();
    let tickets = tokio::task::spawn_blocking(move || -> Result<Vec<ResumeTicket>, BoxError> {
        let room = RoomName::parse("#bench")?;
        let now = im_server::state::now_ms();
        let mut tickets = Vec::with_capacity(members);
        for i in 0..members {
            // Nobody logs in with a password here: the hash is never checked.
            let uid = accounts.create_user(&UserName::parse(&format!("m{i}"))?, "$unused$", now)?;
            let device = i as u64 + 1;
            accounts.touch_device(uid, device, "room_fanout", now)?;
            let ticket = im_server::auth::new_ticket(uid, device, now + 86_400_000);
            accounts.insert_ticket(&ticket)?;
            accounts.join_room(&room, uid, 0, now)?;
            tickets.push(ResumeTicket {
                id: ticket.id,
                secret: ticket.secret.clone(),
            });
        }
        Ok(tickets)
    })
    .await??;
    println!(
        "setup: {members} users, devices, tickets and memberships in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server.serve(listener));
    Ok((addr, tickets))
}

/// A logged-in protocol client, split into its socket halves.
struct Member {
    session: Session,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl Member {
    async fn connect(addr: SocketAddr, ticket: ResumeTicket) -> Result<Member, BoxError> {
        let mut io = TcpStream::connect(addr).await?;
        io.set_nodelay(true)?;
        let (mut hs, hello) = ClientHandshake::new(&mut rand::rng(), Some(ticket));
        io.write_all(&hello).await?;
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let est = loop {
            let frame = loop {
                if let Some(f) = dec.decode(&mut buf)? {
                    break f;
                }
                if io.read_buf(&mut buf).await? == 0 {
                    return Err("server closed during the handshake".into());
                }
            };
            if let Some(est) = hs.handle(frame)? {
                break est;
            }
        };
        if !est.resumed {
            return Err("the server did not resume the ticket".into());
        }
        io.write_all(&est.finished).await?;
        let (rd, wr) = io.into_split();
        let mut m = Member {
            session: est.session,
            rd,
            wr,
            buf,
        };
        m.send(&ClientMsg::LoginTicket { req: RequestId(1) }).await?;
        match m.recv().await? {
            ServerMsg::LoggedIn { .. } => Ok(m),
            other => Err(format!("login failed: {other:?}").into()),
        }
    }

    async fn send(&mut self, msg: &ClientMsg) -> Result<(), BoxError> {
        let mut plain = Vec::new();
        msg.encode(&mut plain);
        let mut out = Vec::new();
        self.session.seal(&plain, &mut out)?;
        self.wr.write_all(&out).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<ServerMsg, BoxError> {
        loop {
            match self.session.read(&mut self.buf)? {
                Some(Incoming::Data(p)) => return Ok(ServerMsg::decode(&p)?),
                Some(Incoming::Close(_)) => return Err("the server closed the connection".into()),
                None => {
                    if self.rd.read_buf(&mut self.buf).await? == 0 {
                        return Err("the connection ended".into());
                    }
                }
            }
        }
    }
}

/// Latencies of each measured message, in milliseconds.
#[derive(Default)]
struct Samples {
    sent: Vec<f64>,
    first: Vec<f64>,
    last: Vec<f64>,
}

async fn server_run(addr: SocketAddr, tickets: Vec<ResumeTicket>, messages: usize) -> Result<Samples, BoxError> {
    let members = tickets.len();
    let connecting = Instant::now();
    let mut connected = Vec::with_capacity(members);
    let mut tickets = tickets.into_iter();
    loop {
        let batch: Vec<_> = tickets
            .by_ref()
            .take(CONNECT_CONCURRENCY)
            .map(|t| tokio::spawn(Member::connect(addr, t)))
            .collect();
        if batch.is_empty() {
            break;
        }
        for h in batch {
            connected.push(h.await??);
        }
    }
    println!(
        "connect: {members} members logged in in {:.2} s",
        connecting.elapsed().as_secs_f64()
    );

    // Every member but the sender reports the arrival of each room message.
    let (tx, mut arrivals) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut sender = connected.remove(0);
    for mut m in connected {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(msg) = m.recv().await {
                if let ServerMsg::Message(c) = msg
                    && tx.send((c.id.0, Instant::now())).is_err()
                {
                    break;
                }
            }
        });
    }
    drop(tx);

    let room = Target::Room(RoomName::parse("#bench")?);
    let recipients = members - 1;
    let mut samples = Samples::default();
    for n in 0..WARMUP + messages {
        let text = format!("message {n}: {}", "x".repeat(80));
        let t0 = Instant::now();
        let req = RequestId(n as u32 + 2);
        sender
            .send(&ClientMsg::Send {
                req,
                to: room.clone(),
                client_id: format!("c{n}"),
                action: false,
                text,
            })
            .await?;
        let (id, sent_at) = loop {
            match sender.recv().await? {
                ServerMsg::Sent { req: r, id, .. } if r == req => break (id.0, Instant::now()),
                ServerMsg::Error { text, .. } => return Err(format!("send refused: {text}").into()),
                _ => continue,
            }
        };
        let (mut first, mut last, mut got) = (None, t0, 0);
        while got < recipients {
            let (mid, at) = arrivals.recv().await.ok_or("a member's connection ended")?;
            if mid != id {
                return Err(format!("message {mid} arrived while waiting for {id}").into());
            }
            first = Some(first.map_or(at, |f: Instant| f.min(at)));
            last = last.max(at);
            got += 1;
        }
        if n >= WARMUP {
            let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1e3;
            samples.sent.push(ms(sent_at));
            samples.first.push(ms(first.unwrap_or(t0)));
            samples.last.push(ms(last));
        }
    }
    Ok(samples)
}

/// The floor: plain loopback sockets, one writer task per socket fed by a fan-out loop over
/// bounded queues, one reader task per socket.
async fn floor_run(members: usize, messages: usize) -> Result<Samples, BoxError> {
    let recipients = members - 1;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, mut arrivals) = mpsc::unbounded_channel::<Instant>();
    let mut queues = Vec::with_capacity(recipients);
    for _ in 0..recipients {
        let client = TcpStream::connect(addr).await?;
        let (server_side, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        server_side.set_nodelay(true)?;
        let (qtx, mut qrx) = mpsc::channel::<Arc<[u8]>>(16);
        queues.push(qtx);
        let mut server_side = server_side;
        tokio::spawn(async move {
            while let Some(buf) = qrx.recv().await {
                if server_side.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        let tx = tx.clone();
        let mut client = client;
        tokio::spawn(async move {
            let mut buf = [0u8; FLOOR_BYTES];
            while client.read_exact(&mut buf).await.is_ok() {
                if tx.send(Instant::now()).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let payload: Arc<[u8]> = vec![0x5a; FLOOR_BYTES].into();
    let mut samples = Samples::default();
    for n in 0..WARMUP + messages {
        let t0 = Instant::now();
        for q in &queues {
            q.try_send(payload.clone()).map_err(|e| format!("floor queue: {e}"))?;
        }
        let (mut first, mut last) = (None, t0);
        for _ in 0..recipients {
            let at = arrivals.recv().await.ok_or("a floor socket closed")?;
            first = Some(first.map_or(at, |f: Instant| f.min(at)));
            last = last.max(at);
        }
        if n >= WARMUP {
            let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1e3;
            samples.first.push(ms(first.unwrap_or(t0)));
            samples.last.push(ms(last));
        }
    }
    Ok(samples)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn report(label: &str, v: &[f64]) {
    let max = v.iter().copied().fold(0.0, f64::max);
    println!(
        "{label:<34} {:>9.2} {:>9.2} {:>9.2}",
        percentile(v, 0.5),
        percentile(v, 0.99),
        max
    );
}
