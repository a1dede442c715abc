//! A raw im protocol client on im-proto: handshake (full or by ticket), login, sealed
//! messages. Leaner than the im-client library (no home directory, no driver task, no
//! known_hosts), which matters at tens of thousands of connections.
//!
//! For open-loop use a connection splits in two: [`Conn::split`] forks the session (cloning a
//! `Session` forks both directions' state), and each half only ever uses its own direction,
//! so the sender seals and the reader opens without sharing a lock on the hot path.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use im_proto::frame::FrameDecoder;
use im_proto::handshake::{ClientHandshake, ResumeTicket};
use im_proto::msg::{ClientMsg, CloseReason, DeviceId, RequestId, ServerMsg};
use im_proto::session::{Incoming, Session};
use im_proto::{RoomName, UserName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::sys::connect_retry;

/// The password every benchmark account has.
pub const PASSWORD: &str = "im-bench password";

/// What a connection can receive.
#[derive(Debug)]
pub enum Event {
    Msg(ServerMsg),
    /// The server's Close record: nothing follows.
    Closed(CloseReason),
}

pub struct Conn {
    stream: TcpStream,
    session: Session,
    buf: BytesMut,
    pub resumed: bool,
}

/// Connects from `src` and runs the handshake; with a ticket, a resumption (no signature).
pub async fn connect(src: IpAddr, addr: SocketAddr, ticket: Option<&ResumeTicket>) -> Result<Conn> {
    let stream = connect_retry(src, addr).await.context("connect")?;
    handshake(stream, ticket).await
}

pub async fn handshake(mut stream: TcpStream, ticket: Option<&ResumeTicket>) -> Result<Conn> {
    let (mut hs, hello) = ClientHandshake::new(&mut rand::rng(), ticket.cloned());
    stream.write_all(&hello).await?;
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let est = loop {
        let frame = loop {
            if let Some(f) = dec.decode(&mut buf)? {
                break f;
            }
            buf.reserve(4096);
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("server closed during the handshake");
            }
        };
        if let Some(est) = hs.handle(frame)? {
            break est;
        }
    };
    stream.write_all(&est.finished).await?;
    Ok(Conn {
        stream,
        session: est.session,
        buf,
        resumed: est.resumed,
    })
}

/// Seals one message onto `out`.
pub fn seal(session: &mut Session, msg: &ClientMsg, out: &mut Vec<u8>) -> Result<()> {
    let mut plain = Vec::with_capacity(256);
    msg.encode(&mut plain);
    session.seal(&plain, out)?;
    Ok(())
}

fn event(incoming: Incoming) -> Result<Event> {
    Ok(match incoming {
        Incoming::Data(p) => Event::Msg(ServerMsg::decode(&p).map_err(|e| anyhow!("undecodable server message: {e}"))?),
        Incoming::Close(p) => {
            Event::Closed(CloseReason::decode(&p).map_err(|e| anyhow!("undecodable close reason: {e}"))?)
        }
    })
}

impl Conn {
    pub async fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        let mut out = Vec::new();
        seal(&mut self.session, msg, &mut out)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// The next message or Close; an error at end of stream.
    pub async fn recv(&mut self) -> Result<Event> {
        loop {
            if let Some(i) = self.session.read(&mut self.buf)? {
                return event(i);
            }
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed without a Close record");
            }
        }
    }

    /// Waits for the reply to `req`, answering pings and skipping pushes.
    pub async fn reply(&mut self, req: RequestId) -> Result<ServerMsg> {
        loop {
            match self.recv().await? {
                Event::Msg(ServerMsg::Ping { nonce }) => self.send(&ClientMsg::Pong { nonce }).await?,
                Event::Msg(m) if m.request_id() == Some(req) => return Ok(m),
                Event::Msg(_) => {}
                Event::Closed(r) => bail!("server closed: {} ({})", r.text, r.code.name()),
            }
        }
    }

    /// `LoginTicket` after a resumed handshake.
    pub async fn login_ticket(&mut self) -> Result<()> {
        if !self.resumed {
            bail!("the server did not accept the ticket (full handshake instead)");
        }
        let req = RequestId(1);
        self.send(&ClientMsg::LoginTicket { req }).await?;
        match self.reply(req).await? {
            ServerMsg::LoggedIn { .. } => Ok(()),
            other => bail!("ticket login refused: {}", describe(&other)),
        }
    }

    /// Password login of a new device; returns the ticket the server pushes after it.
    pub async fn login_password(&mut self, user: &UserName, device: DeviceId) -> Result<ResumeTicket> {
        let req = RequestId(1);
        self.send(&ClientMsg::LoginPassword {
            req,
            user: user.clone(),
            password: PASSWORD.into(),
            device_id: device,
            device_name: "im-bench".into(),
        })
        .await?;
        match self.reply(req).await? {
            ServerMsg::LoggedIn { .. } => {}
            other => bail!("password login refused: {}", describe(&other)),
        }
        self.ticket().await
    }

    /// Creates the account over the protocol (an Argon2 hash on the server); returns the ticket.
    pub async fn register(&mut self, user: &UserName, device: DeviceId) -> Result<ResumeTicket> {
        let req = RequestId(1);
        self.send(&ClientMsg::Register {
            req,
            user: user.clone(),
            password: PASSWORD.into(),
            device_id: device,
            device_name: "im-bench".into(),
        })
        .await?;
        match self.reply(req).await? {
            ServerMsg::LoggedIn { .. } => {}
            other => bail!("registration refused: {}", describe(&other)),
        }
        self.ticket().await
    }

    async fn ticket(&mut self) -> Result<ResumeTicket> {
        loop {
            match self.recv().await? {
                Event::Msg(ServerMsg::Ticket { ticket_id, secret, .. }) => {
                    return Ok(ResumeTicket {
                        id: ticket_id,
                        secret: secret.into_zeroizing(),
                    });
                }
                Event::Msg(_) => {}
                Event::Closed(r) => bail!("server closed: {}", r.text),
            }
        }
    }

    /// Round trip: the session is fully up (after login, its catch-up is done) once the Pong
    /// is back.
    pub async fn ping(&mut self, nonce: u64) -> Result<()> {
        self.send(&ClientMsg::Ping { nonce }).await?;
        loop {
            match self.recv().await? {
                Event::Msg(ServerMsg::Pong { nonce: n }) if n == nonce => return Ok(()),
                Event::Msg(ServerMsg::Ping { nonce }) => self.send(&ClientMsg::Pong { nonce }).await?,
                Event::Msg(_) => {}
                Event::Closed(r) => bail!("server closed: {}", r.text),
            }
        }
    }

    pub async fn join(&mut self, req: u32, room: &RoomName) -> Result<()> {
        let req = RequestId(req);
        self.send(&ClientMsg::Join {
            req,
            room: room.clone(),
        })
        .await?;
        match self.reply(req).await? {
            ServerMsg::Ok { .. } => Ok(()),
            other => bail!("join {room} refused: {}", describe(&other)),
        }
    }

    pub fn split(self) -> (Reader, Writer) {
        let (r, w) = self.stream.into_split();
        let writer = Writer::spawn(w, self.session.clone());
        let reader = Reader {
            stream: r,
            session: self.session,
            buf: self.buf,
        };
        (reader, writer)
    }
}

/// A short text for a reply that was not the one hoped for.
pub fn describe(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Error { code, text, .. } => format!("{} ({})", text, code.name()),
        other => other.name().to_owned(),
    }
}

/// The receiving half.
pub struct Reader {
    stream: OwnedReadHalf,
    session: Session,
    buf: BytesMut,
}

impl Reader {
    /// A reader over a stream whose session was keyed without a handshake.
    pub fn new(stream: OwnedReadHalf, session: Session) -> Reader {
        Reader {
            stream,
            session,
            buf: BytesMut::new(),
        }
    }

    /// Every complete record that has arrived, or waits for more. Empty only never: returns at
    /// least one event, or an error at end of stream.
    pub async fn recv_batch(&mut self, events: &mut Vec<Event>) -> Result<()> {
        loop {
            while let Some(i) = self.session.read(&mut self.buf)? {
                events.push(event(i)?);
            }
            if !events.is_empty() {
                return Ok(());
            }
            self.buf.reserve(8192);
            // While the runtime has nothing else to run, compute the keystream of the records
            // to come, as the server does: a room's recipients share the bench's one core, and
            // decrypting 5,000 records one after another would otherwise be part of the time
            // to the last one.
            let read = tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.buf) => r?,
                _ = im_server::idle::next(), if self.session.wants_prepare() => {
                    self.session.prepare();
                    continue;
                }
            };
            if read == 0 {
                bail!("connection closed without a Close record");
            }
        }
    }
}

/// The sending half: a task owns the socket's write half and its direction of the session,
/// fed by an unbounded queue. So a sender on an open-loop schedule never waits for the server
/// (a stalled server shows as latency, not as a slower sender), and a reader answering a ping
/// never waits behind a sender blocked on a full socket (which could deadlock with a server
/// that is itself blocked writing to this client).
#[derive(Clone)]
pub struct Writer(mpsc::UnboundedSender<Vec<ClientMsg>>);

impl Writer {
    fn spawn(mut stream: OwnedWriteHalf, mut session: Session) -> Writer {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<ClientMsg>>();
        tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(mut batch) = rx.recv().await {
                while let Ok(more) = rx.try_recv() {
                    batch.extend(more);
                }
                out.clear();
                for m in &batch {
                    if seal(&mut session, m, &mut out).is_err() {
                        return;
                    }
                }
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                if out.capacity() > 64 * 1024 {
                    out = Vec::new();
                }
            }
        });
        Writer(tx)
    }

    /// Queues the messages; they are sealed and written in one go, in order.
    pub async fn send_all(&self, msgs: &[ClientMsg]) -> Result<()> {
        self.0.send(msgs.to_vec()).map_err(|_| anyhow!("connection closed"))
    }

    pub async fn send(&self, msg: ClientMsg) -> Result<()> {
        self.0.send(vec![msg]).map_err(|_| anyhow!("connection closed"))
    }
}
