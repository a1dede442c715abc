//! The wire unit: a 16-byte big-endian header, then the payload.
//!
//! ```text
//!  0      2    3     4       6       8              12             16
//!  | magic | ver | type | flags | epoch | sequence      | length        | payload ...
//! ```
//!
//! Nothing in a header is trusted before it is checked: the header is validated as soon as
//! its 16 bytes are in, so an oversized length is refused before a single payload byte is
//! buffered. Sequence numbers and epochs are checked by the state machines that own them
//! ([`crate::handshake`], [`crate::record`]).

use bytes::{Buf, BytesMut};

use crate::limits::{MAX_FRAME_PAYLOAD, MAX_HANDSHAKE_PAYLOAD};
use crate::record::TAG_LEN;

pub const HEADER_LEN: usize = 16;
/// "IM" in ASCII.
pub const MAGIC: u16 = 0x494D;
/// Version of the framing itself. Protocol versions are negotiated in the handshake.
pub const FRAME_VERSION: u8 = 1;

/// What a frame carries. Handshake frames are plaintext; record frames are encrypted and
/// authenticated, their type covered by the MAC (it is in the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    ClientHello = 0x01,
    ServerHello = 0x02,
    ServerAuth = 0x03,
    /// Plaintext refusal before keys exist (busy, rate-limited, unsupported version).
    /// Unauthenticated, so a receiver only ever ends the handshake on it.
    Reject = 0x0F,
    Finished = 0x10,
    Data = 0x11,
    Close = 0x12,
}

impl FrameType {
    pub fn from_u8(v: u8) -> Option<FrameType> {
        Some(match v {
            0x01 => FrameType::ClientHello,
            0x02 => FrameType::ServerHello,
            0x03 => FrameType::ServerAuth,
            0x0F => FrameType::Reject,
            0x10 => FrameType::Finished,
            0x11 => FrameType::Data,
            0x12 => FrameType::Close,
            _ => return None,
        })
    }

    /// Record frames are sealed by the record layer; the others travel in plaintext.
    pub fn is_record(self) -> bool {
        matches!(self, FrameType::Finished | FrameType::Data | FrameType::Close)
    }

    fn max_payload(self) -> usize {
        if self.is_record() {
            MAX_FRAME_PAYLOAD
        } else {
            MAX_HANDSHAKE_PAYLOAD
        }
    }
}

/// A frame header that passed every check that needs no connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub frame_type: FrameType,
    pub epoch: u16,
    pub seq: u32,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {0:#06x}: not an im peer")]
    BadMagic(u16),
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("reserved flags {0:#06x} set")]
    BadFlags(u16),
    #[error("{frame_type:?} frame of {len} bytes is outside the allowed {min}..={max}")]
    BadLength {
        frame_type: FrameType,
        len: u32,
        min: usize,
        max: usize,
    },
    #[error("handshake frame with key epoch {0}")]
    BadEpoch(u16),
}

impl Header {
    pub fn new(frame_type: FrameType, epoch: u16, seq: u32, len: usize) -> Header {
        debug_assert!(len <= frame_type.max_payload());
        Header {
            frame_type,
            epoch,
            seq,
            len: len as u32,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2] = FRAME_VERSION;
        b[3] = self.frame_type as u8;
        // b[4..6]: flags, all reserved and zero in version 1.
        b[6..8].copy_from_slice(&self.epoch.to_be_bytes());
        b[8..12].copy_from_slice(&self.seq.to_be_bytes());
        b[12..16].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Total: every 16-byte input gives a header or an error.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        let be16 = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if be16(0) != MAGIC {
            return Err(FrameError::BadMagic(be16(0)));
        }
        if b[2] != FRAME_VERSION {
            return Err(FrameError::BadVersion(b[2]));
        }
        let frame_type = FrameType::from_u8(b[3]).ok_or(FrameError::UnknownType(b[3]))?;
        if be16(4) != 0 {
            return Err(FrameError::BadFlags(be16(4)));
        }
        let (epoch, seq, len) = (be16(6), be32(8), be32(12));
        let (min, max) = if frame_type.is_record() {
            (TAG_LEN, MAX_FRAME_PAYLOAD)
        } else {
            (0, MAX_HANDSHAKE_PAYLOAD)
        };
        if (len as usize) < min || len as usize > max {
            return Err(FrameError::BadLength {
                frame_type,
                len,
                min,
                max,
            });
        }
        if !frame_type.is_record() && epoch != 0 {
            return Err(FrameError::BadEpoch(epoch));
        }
        Ok(Header {
            frame_type,
            epoch,
            seq,
            len,
        })
    }
}

/// A whole frame as received: its raw header bytes (the MAC covers them) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub raw_header: [u8; HEADER_LEN],
    pub payload: BytesMut,
}

impl Frame {
    /// The frame's bytes as they crossed the wire (transcripts hash exactly these).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.extend_from_slice(&self.raw_header);
        v.extend_from_slice(&self.payload);
        v
    }
}

/// Appends one frame (header and payload) to `out`.
pub fn write_frame(out: &mut Vec<u8>, frame_type: FrameType, epoch: u16, seq: u32, payload: &[u8]) {
    out.extend_from_slice(&Header::new(frame_type, epoch, seq, payload.len()).encode());
    out.extend_from_slice(payload);
}

/// Splits a byte stream into frames, however it was chunked.
///
/// Call [`decode`](FrameDecoder::decode) whenever bytes were appended to the buffer. It holds
/// at most one header of state, so any number of connections can share the idea of a buffer
/// policy without this type caring where the bytes live.
#[derive(Debug, Default, Clone)]
pub struct FrameDecoder {
    pending: Option<([u8; HEADER_LEN], Header)>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one complete frame off the front of `buf`, if there is one. After an error the
    /// stream is unusable: the connection must end.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let (raw_header, header) = match self.pending {
            Some(p) => p,
            None => {
                if buf.len() < HEADER_LEN {
                    return Ok(None);
                }
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(&buf[..HEADER_LEN]);
                let header = Header::decode(&raw)?;
                buf.advance(HEADER_LEN);
                self.pending = Some((raw, header));
                (raw, header)
            }
        };
        let len = header.len as usize;
        if buf.len() < len {
            buf.reserve(len - buf.len());
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(Frame {
            header,
            raw_header,
            payload: buf.split_to(len),
        }))
    }

    /// True when a frame has been started but not finished: a stream ending now was cut.
    pub fn is_mid_frame(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header::new(FrameType::Data, 3, 0x0102_0304, 200);
        let b = h.encode();
        assert_eq!(hex::encode(b), "494d01110000000301020304000000c8");
        assert_eq!(Header::decode(&b), Ok(h));
    }

    #[test]
    fn header_rejects_each_bad_field() {
        let good = Header::new(FrameType::Data, 0, 1, 40).encode();
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            Header::decode(&b)
        };
        assert!(matches!(with(0, 0), Err(FrameError::BadMagic(_))));
        assert!(matches!(with(2, 2), Err(FrameError::BadVersion(2))));
        assert!(matches!(with(3, 0x42), Err(FrameError::UnknownType(0x42))));
        assert!(matches!(with(5, 1), Err(FrameError::BadFlags(1))));
        assert!(matches!(with(12, 1), Err(FrameError::BadLength { .. })));
        assert!(matches!(with(15, 3), Err(FrameError::BadLength { .. }))); // shorter than a tag
        let hello = Header::new(FrameType::ClientHello, 0, 0, 10).encode();
        let mut b = hello;
        b[7] = 1;
        assert!(matches!(Header::decode(&b), Err(FrameError::BadEpoch(1))));
    }

    #[test]
    fn decoder_refuses_oversized_length_before_buffering() {
        let mut h = Header::new(FrameType::Data, 0, 0, 40).encode();
        h[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut buf = BytesMut::from(&h[..]);
        assert!(FrameDecoder::new().decode(&mut buf).is_err());
    }

    #[test]
    fn decoder_waits_for_whole_frames() {
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameType::ClientHello, 0, 0, b"hello");
        write_frame(&mut wire, FrameType::ClientHello, 0, 1, b"");
        let mut d = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &wire {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].payload[..], b"hello");
        assert_eq!(got[1].header.seq, 1);
        assert!(!d.is_mid_frame());
    }
}
