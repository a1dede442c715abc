//! One connection's bytes: reading frames with a buffer that is released while idle, writing
//! coalesced records, and the server side of the handshake.
//!
//! Memory is what limits idle connections, so an idle connection holds no read or write
//! buffer: reads wait for readiness and go through the stack until bytes arrive, and both
//! buffers are dropped once drained.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use im_proto::frame::{Frame, FrameDecoder, FrameError};
use im_proto::handshake::{HandshakeError, Reject, ServerEstablished, ServerHandshake, ServerInputs};
use im_proto::msg::ErrorCode;
use im_proto::session::{Incoming, Session, SessionError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::state::{Shared, now_ms};
use crate::store::accounts::TicketRecord;

/// Read chunk reserved when data is ready.
const READ_CHUNK: usize = 4096;
/// Input buffered while a write is blocked; past this the peer must wait for us.
const MAX_INPUT_WHILE_WRITING: usize = 256 * 1024;
/// A write buffer grown past this by a burst is freed rather than kept.
const KEEP_WRITE_BUFFER: usize = 16 * 1024;

/// A byte stream the server can serve: TCP in production, an in-memory pipe in tests and
/// fuzzing.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Waits for input and appends it to `buf`; `Ok(0)` at end of stream. Cancel-safe, so it
    /// can sit in a `select!`. TCP waits for readiness first and reserves buffer space only
    /// once data is there, so an idle connection holds no read buffer.
    fn read_ready(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
}

impl ByteStream for tokio::net::TcpStream {
    async fn read_ready(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        // `poll_read_ready` keeps the task's waker in the socket's one reader slot; the
        // `readable()` future would add it to a waiter list and take it out again every
        // time the session wakes for something else.
        std::future::poll_fn(|cx| {
            loop {
                if let Err(e) = std::task::ready!(self.poll_read_ready(cx)) {
                    return Poll::Ready(Err(e));
                }
                // Readiness can be stale (the last read did not drain the socket), so an
                // empty buffer reads into the stack first and gets heap space only once bytes
                // are there.
                let r = if buf.is_empty() {
                    let mut chunk = [0u8; READ_CHUNK];
                    self.try_read(&mut chunk)
                        .inspect(|&n| buf.extend_from_slice(&chunk[..n]))
                } else {
                    buf.reserve(READ_CHUNK);
                    self.try_read_buf(buf)
                };
                match r {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            }
        })
        .await
    }
}

impl ByteStream for tokio::io::DuplexStream {
    async fn read_ready(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        buf.reserve(READ_CHUNK);
        self.read_buf(buf).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("connection closed by the peer")]
    Eof,
    #[error("connection cut in the middle of a frame")]
    Truncated,
    #[error("refused: {0}")]
    Refused(&'static str),
}

/// A connection's stream and its (usually empty) buffers.
pub struct Transport<S> {
    pub stream: S,
    rbuf: BytesMut,
    pub wbuf: Vec<u8>,
}

impl<S: ByteStream> Transport<S> {
    pub fn new(stream: S) -> Self {
        Transport {
            stream,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
        }
    }

    /// Reads more bytes; `Eof` when the peer closed.
    async fn fill(&mut self) -> Result<(), ConnError> {
        let n = self.stream.read_ready(&mut self.rbuf).await?;
        self.check_eof(n, false)
    }

    fn check_eof(&self, n: usize, mid_frame: bool) -> Result<(), ConnError> {
        match n {
            0 if self.rbuf.is_empty() && !mid_frame => Err(ConnError::Eof),
            0 => Err(ConnError::Truncated),
            _ => Ok(()),
        }
    }

    fn release_read(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
    }

    /// The next plaintext handshake frame.
    pub async fn frame(&mut self, decoder: &mut FrameDecoder) -> Result<Frame, ConnError> {
        loop {
            if let Some(f) = decoder.decode(&mut self.rbuf)? {
                self.release_read();
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// The next opened record, if one is already buffered (no waiting).
    pub fn buffered(&mut self, session: &mut Session) -> Result<Option<Incoming>, ConnError> {
        let r = session.read(&mut self.rbuf)?;
        self.release_read();
        Ok(r)
    }

    /// Waits for more input and buffers it. Cancel-safe: it can sit in a `select!` beside
    /// the push queue. Returns the byte count for [`Transport::after_read`].
    pub async fn read(&mut self) -> io::Result<usize> {
        self.stream.read_ready(&mut self.rbuf).await
    }

    /// Turns a zero-byte read into `Eof` (a clean end between records) or `Truncated`.
    pub fn after_read(&self, n: usize, session: &Session) -> Result<(), ConnError> {
        self.check_eof(n, session.is_mid_frame())
    }

    /// Reads until more input is buffered (outside a `select!`).
    pub async fn read_more(&mut self, session: &Session) -> Result<(), ConnError> {
        let n = self.read().await?;
        self.after_read(n, session)
    }

    /// Writes everything queued in `wbuf`, then frees a buffer a burst grew.
    ///
    /// While the peer is not taking our bytes, this keeps taking theirs (up to
    /// [`MAX_INPUT_WHILE_WRITING`]): a client that is itself blocked writing, say acks during
    /// a long catch-up, would otherwise deadlock with us. What it reads stays buffered for
    /// the session to handle next.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        let mut pos = 0;
        let mut peer_done = false;
        std::future::poll_fn(|cx| {
            while pos < self.wbuf.len() {
                match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf[pos..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero))),
                    Poll::Ready(Ok(n)) => pos += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending if peer_done || self.rbuf.len() >= MAX_INPUT_WHILE_WRITING => return Poll::Pending,
                    Poll::Pending => {
                        self.rbuf.reserve(READ_CHUNK);
                        match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf) {
                            Poll::Ready(Ok(0)) => peer_done = true,
                            Poll::Ready(Ok(_)) => {}
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
        .await?;
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WRITE_BUFFER {
            self.wbuf = Vec::new();
        }
        Ok(())
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }
}

/// What the handshake established.
pub struct Established {
    pub session: Session,
    pub exporter: zeroize::Zeroizing<[u8; 32]>,
    /// The ticket a resumption presented; `LoginTicket` logs in as its user and device.
    pub ticket: Option<TicketRecord>,
}

/// Runs the server side of the handshake: rate limit, ticket lookup or RSA signature on the
/// blocking pool, Finished check.
pub async fn handshake<S: ByteStream>(
    t: &mut Transport<S>,
    shared: &Arc<Shared>,
    ip: IpAddr,
) -> Result<Established, ConnError> {
    let mut outcome = crate::metrics::HandshakeOutcome::default();
    let mut decoder = FrameDecoder::new();
    let frame = t.frame(&mut decoder).await?;
    if let Err(wait) = shared.limits.handshakes_per_ip.check(&ip) {
        reject(
            t,
            ErrorCode::RateLimited,
            wait.as_millis() as u32,
            "too many handshakes from your address",
        )
        .await;
        return Err(ConnError::Refused("handshake rate limit"));
    }
    let hello = match ServerHandshake::read_client_hello(frame) {
        Ok(h) => h,
        Err(e @ (HandshakeError::NoCommonVersion(_) | HandshakeError::NoCommonSuite(_))) => {
            reject(t, ErrorCode::Protocol, 0, &e.to_string()).await;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut ticket = None;
    if let Some(id) = hello.ticket_id() {
        ticket = shared.db(move |a| a.ticket(&id, now_ms())).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ticket lookup failed; falling back to a full handshake");
            None
        });
    }
    let inputs = ServerInputs::random(&mut rand::rng());
    let (expect, out) = match &ticket {
        Some(tk) => {
            outcome.resumed();
            hello.resume(inputs, &tk.secret)
        }
        None => {
            let key = shared.host_key.clone();
            // A rotation's endorsement goes out until its grace period ends (PROTOCOL.md §4.3).
            let endorsement = shared.endorsement.clone().filter(|e| now_ms() < e.not_after_ms);
            tokio::task::spawn_blocking(move || {
                hello.full_endorsed(inputs, &key, endorsement.as_deref(), &mut rand::rng())
            })
            .await
            .map_err(|_| ConnError::Refused("signing worker failed"))?
        }
    };
    t.write_raw(&out).await?;
    let fin = t.frame(&mut decoder).await?;
    let ServerEstablished { session, exporter, .. } = expect.read_finished(fin)?;
    outcome.ok();
    Ok(Established {
        session,
        exporter,
        ticket,
    })
}

async fn reject<S: ByteStream>(t: &mut Transport<S>, code: ErrorCode, retry_after_ms: u32, text: &str) {
    let frame = Reject {
        code: code.code(),
        retry_after_ms,
        text: text.to_owned(),
    }
    .to_frame();
    let _ = t.write_raw(&frame).await;
    let _ = t.stream.shutdown().await;
}

/// Refuses a connection before reading anything (per-address limits, shutdown).
pub async fn refuse<S: ByteStream>(stream: S, code: ErrorCode, retry_after_ms: u32, text: &str) {
    let mut t = Transport::new(stream);
    reject(&mut t, code, retry_after_ms, text).await;
}
