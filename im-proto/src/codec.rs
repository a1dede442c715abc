//! `tokio_util::codec` glue: a thin adapter so clients can use `Framed`. The protocol logic
//! stays in [`crate::frame`] and [`crate::session`]; this module only moves bytes.
//!
//! Use [`FrameCodec`] during the handshake (handshake frames are built by
//! [`crate::handshake`] and written as raw bytes), then switch the `Framed` to
//! [`SessionCodec`] with `Framed::map_codec`, which keeps any bytes already read.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{Frame, FrameDecoder, FrameError};
use crate::session::{Incoming, Session, SessionError};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Plaintext framing for the handshake: frames in, raw bytes out.
#[derive(Debug, Default)]
pub struct FrameCodec(FrameDecoder);

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(self.0.decode(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(f) => Ok(Some(f)),
            None if src.is_empty() && !self.0.is_mid_frame() => Ok(None),
            None => Err(CodecError::Truncated),
        }
    }
}

impl Encoder<Vec<u8>> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// What a [`SessionCodec`] seals.
#[derive(Debug, Clone, Copy)]
pub enum Outgoing<'a> {
    /// One encoded message.
    Data(&'a [u8]),
    /// An encoded close reason; the last record this side sends.
    Close(&'a [u8]),
}

/// The established session as a codec: records in, plaintexts out, and back.
pub struct SessionCodec {
    pub session: Session,
    scratch: Vec<u8>,
}

impl SessionCodec {
    pub fn new(session: Session) -> Self {
        SessionCodec {
            session,
            scratch: Vec::new(),
        }
    }
}

impl Decoder for SessionCodec {
    type Item = Incoming;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        Ok(self.session.read(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        match self.decode(src)? {
            Some(i) => Ok(Some(i)),
            None if src.is_empty() && !self.session.is_mid_frame() => Ok(None),
            None => Err(CodecError::Truncated),
        }
    }
}

impl Encoder<Outgoing<'_>> for SessionCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outgoing<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.scratch.clear();
        match item {
            Outgoing::Data(p) => self.session.seal(p, &mut self.scratch)?,
            Outgoing::Close(p) => self.session.seal_close(p, &mut self.scratch)?,
        }
        dst.extend_from_slice(&self.scratch);
        Ok(())
    }
}
