//! One connection to a server: runs the handshake over a byte stream, then reads and writes
//! messages as records. Nothing else: no login, no host-key trust, no request bookkeeping
//! (those are in `client`).
//!
//! The stream is a `tokio_util::codec::Framed`, first with im-proto's plaintext
//! [`FrameCodec`] for the handshake, then switched with `map_codec` (which keeps any bytes
//! already read) to the [`SessionCodec`] that seals and opens records.

use futures_util::{SinkExt, StreamExt};
use im_proto::codec::{CodecError, FrameCodec, Outgoing, SessionCodec};
use im_proto::handshake::{ClientHandshake, HandshakeError, ResumeTicket};
use im_proto::msg::{ClientMsg, CloseReason, ErrorCode, MsgError, ServerMsg};
use im_proto::session::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use zeroize::Zeroizing;

use crate::error::Error;

/// What the handshake established, besides the session itself.
pub struct Established {
    /// The server accepted the resumption ticket: it is authenticated by the ticket, and
    /// there is no host key to check.
    pub resumed: bool,
    /// The host key (SubjectPublicKeyInfo DER) that signed a full handshake. Check it
    /// against the pin before sending anything secret.
    pub host_key: Option<Vec<u8>>,
    /// The host key's endorsement by its predecessor during a rotation (not yet verified).
    pub endorsement: Option<im_proto::handshake::Endorsement>,
    /// This connection's exporter value, which a user key signs to log in.
    pub exporter: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

/// One thing read from the server.
#[derive(Debug)]
pub enum Received {
    Message(ServerMsg),
    /// A reserved (sealed) message kind from a newer server: ignored.
    Reserved(u16),
    /// The server's Close record: nothing follows.
    Closed(CloseReason),
}

/// An established connection over any byte stream (TCP in practice, a duplex pipe in tests).
pub struct Connection<S = TcpStream> {
    framed: Framed<S, SessionCodec>,
    scratch: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Runs the client side of the handshake; `ticket` asks for a resumption. `server` only
    /// labels errors.
    pub async fn handshake(
        stream: S,
        ticket: Option<ResumeTicket>,
        server: &str,
    ) -> Result<(Self, Established), Error> {
        let (mut hs, hello) = {
            // ThreadRng is not Send: keep it out of the future's state.
            let mut rng = rand::rng();
            ClientHandshake::new(&mut rng, ticket)
        };
        let mut framed = Framed::new(stream, FrameCodec::default());
        framed.send(hello).await.map_err(codec_error)?;
        let est = loop {
            let frame = match framed.next().await {
                Some(frame) => frame.map_err(codec_error)?,
                None => {
                    return Err(Error::ConnectionLost(
                        "the server closed the connection during the handshake".into(),
                    ));
                }
            };
            if let Some(est) = hs.handle(frame).map_err(|e| handshake_error(e, server))? {
                break est;
            }
        };
        framed.send(est.finished).await.map_err(codec_error)?;
        let framed = framed.map_codec(|_| SessionCodec::new(est.session));
        let info = Established {
            resumed: est.resumed,
            host_key: est.host_key,
            endorsement: est.endorsement,
            exporter: est.exporter,
        };
        Ok((
            Connection {
                framed,
                scratch: Vec::new(),
            },
            info,
        ))
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), Error> {
        self.scratch.clear();
        msg.encode(&mut self.scratch);
        let result = self
            .framed
            .send(Outgoing::Data(&self.scratch))
            .await
            .map_err(codec_error);
        // The buffer may have held a password: clear it before it is reused or dropped.
        zeroize::Zeroize::zeroize(&mut self.scratch);
        result
    }

    /// The next message. A connection that ends without a Close record is an error.
    pub async fn recv(&mut self) -> Result<Received, Error> {
        match self.framed.next().await {
            None => Err(Error::ConnectionLost(
                "the server ended the connection without a Close".into(),
            )),
            Some(Err(e)) => Err(codec_error(e)),
            Some(Ok(Incoming::Close(bytes))) => CloseReason::decode(&bytes)
                .map(Received::Closed)
                .map_err(|e| Error::Protocol(format!("bad close reason: {e}"))),
            Some(Ok(Incoming::Data(bytes))) => match ServerMsg::decode(&bytes) {
                Ok(msg) => Ok(Received::Message(msg)),
                Err(MsgError::Reserved(kind)) => Ok(Received::Reserved(kind)),
                Err(e) => Err(Error::Protocol(e.to_string())),
            },
        }
    }

    /// Sends a Close record and flushes it; nothing can be sent afterwards.
    pub async fn close(&mut self, reason: &CloseReason) -> Result<(), Error> {
        let mut bytes = Vec::new();
        reason.encode(&mut bytes);
        self.framed.send(Outgoing::Close(&bytes)).await.map_err(codec_error)
    }

    /// Closes with `normal` and shuts the write side down, ignoring errors: the end of a
    /// connection that did its job.
    pub async fn shutdown(mut self) {
        let _ = self.close(&CloseReason::new(ErrorCode::Normal, "bye")).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(self.framed.get_mut()).await;
    }
}

fn codec_error(e: CodecError) -> Error {
    match e {
        CodecError::Io(e) => Error::ConnectionLost(e.to_string()),
        CodecError::Truncated => Error::ConnectionLost("the connection was cut in the middle of a frame".into()),
        CodecError::Frame(e) => Error::Protocol(e.to_string()),
        CodecError::Session(e) => Error::Protocol(e.to_string()),
    }
}

fn handshake_error(e: HandshakeError, server: &str) -> Error {
    match e {
        HandshakeError::Rejected {
            code,
            retry_after_ms,
            text,
        } => Error::Rejected {
            code: ErrorCode::from_wire(code),
            text,
            retry_after_ms,
        },
        source => Error::Handshake {
            server: server.to_owned(),
            source,
        },
    }
}
