//! An established connection: both record directions, the frame decoder, and the Close
//! rules. A clean end is an authenticated Close record, so a cut connection is always
//! distinguishable from a finished one, and nothing is accepted after a Close.

use bytes::BytesMut;

use crate::frame::{Frame, FrameDecoder, FrameError, FrameType};
use crate::record::{Opener, RecordError, Sealer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("unexpected {0:?} frame after the handshake")]
    UnexpectedFrame(FrameType),
    #[error("data after the peer's Close")]
    AfterClose,
    #[error("this side already sent Close")]
    Closed,
}

/// One opened record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A Data record's plaintext: one encoded message.
    Data(BytesMut),
    /// The peer's Close record's plaintext: an encoded close reason. The peer sends nothing
    /// after it.
    Close(BytesMut),
}

/// Cloning forks the session (both directions' state, including sequence numbers), which
/// lets tests replay one recorded exchange against many mutated copies cheaply.
#[derive(Clone)]
pub struct Session {
    sealer: Sealer,
    opener: Opener,
    decoder: FrameDecoder,
    peer_closed: bool,
    we_closed: bool,
}

impl Session {
    /// A session over two directions keyed elsewhere. The handshake is what makes them; a
    /// stand-in for a peer (im-bench's fan-out floor, which seals one record for many
    /// recipients keyed alike) may too.
    pub fn new(sealer: Sealer, opener: Opener) -> Self {
        Session {
            sealer,
            opener,
            decoder: FrameDecoder::new(),
            peer_closed: false,
            we_closed: false,
        }
    }

    /// Appends a sealed Data record carrying `plaintext` (one encoded message) to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        if self.we_closed {
            return Err(SessionError::Closed);
        }
        Ok(self.sealer.seal(FrameType::Data, plaintext, out)?)
    }

    /// Appends a sealed Data record whose plaintext (one encoded message) `write` appends to
    /// `out`, encrypted in place: see [`Sealer::seal_with`].
    pub fn seal_with(&mut self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), SessionError> {
        if self.we_closed {
            return Err(SessionError::Closed);
        }
        Ok(self.sealer.seal_with(FrameType::Data, out, write)?)
    }

    /// Appends a sealed Close record; nothing can be sent after it.
    pub fn seal_close(&mut self, reason: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        if self.we_closed {
            return Err(SessionError::Closed);
        }
        self.sealer.seal(FrameType::Close, reason, out)?;
        self.we_closed = true;
        Ok(())
    }

    /// Opens one frame received after the handshake.
    pub fn open(&mut self, frame: Frame) -> Result<Incoming, SessionError> {
        if self.peer_closed {
            return Err(SessionError::AfterClose);
        }
        let frame_type = frame.header.frame_type;
        if !matches!(frame_type, FrameType::Data | FrameType::Close) {
            return Err(SessionError::UnexpectedFrame(frame_type));
        }
        let plaintext = self.opener.open(frame)?;
        if frame_type == FrameType::Close {
            self.peer_closed = true;
            return Ok(Incoming::Close(plaintext));
        }
        Ok(Incoming::Data(plaintext))
    }

    /// Takes the next complete record off the front of `buf` and opens it.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, SessionError> {
        if self.peer_closed && !buf.is_empty() {
            return Err(SessionError::AfterClose);
        }
        match self.decoder.decode(buf)? {
            Some(frame) => self.open(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a stream that ends now ended in the middle of a frame (a cut, not a close).
    pub fn is_mid_frame(&self) -> bool {
        self.decoder.is_mid_frame()
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Drops both expanded key schedules (8 KiB) while the connection is idle; the next
    /// record re-expands them from the 56-byte keys.
    pub fn release(&mut self) {
        self.sealer.release();
        self.opener.release();
    }

    /// [`release`](Session::release) for the sending direction only: a connection that only
    /// receives keeps its sealer busy and its opener idle.
    pub fn release_sealer(&mut self) {
        self.sealer.release();
    }

    /// [`release`](Session::release) for the receiving direction only.
    pub fn release_opener(&mut self) {
        self.opener.release();
    }

    /// Whether either direction has keystream to compute ahead (see [`Sealer::prepare`]).
    pub fn wants_prepare(&self) -> bool {
        self.sealer.wants_prepare() || self.opener.wants_prepare()
    }

    /// Computes keystream ahead for the records to come in both directions, where their key
    /// schedules are held: for a connection with nothing else to do.
    pub fn prepare(&mut self) {
        self.sealer.prepare();
        self.opener.prepare();
    }

    /// Current key epochs (send, receive): for tests and diagnostics.
    pub fn epochs(&self) -> (u16, u16) {
        (self.sealer.epoch(), self.opener.epoch())
    }
}
