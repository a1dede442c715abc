//! Sealing and opening records for one direction (PROTOCOL.md §Records).
//!
//! A record is a frame whose payload is `Blowfish-CTR(plaintext) || HMAC-SHA256(mac_key,
//! header || ciphertext)`. The MAC covers the header, so the type, epoch and sequence number
//! are authenticated; it is checked in constant time before anything is decrypted.
//!
//! Each record starts on a fresh counter block: record *n* of an epoch uses counter blocks
//! `iv + B(n)` onward, where `B(n)` is the number of blocks the epoch's earlier records used
//! (`ceil(len / 8)` each). So no counter block is ever used twice under one key.
//!
//! The sender ratchets its key (epoch + 1) before a record once the current key has carried
//! [`REKEY_AFTER_BLOCKS`] blocks or [`REKEY_AFTER_RECORDS`] records; the receiver follows the
//! epoch in the header and refuses a key used past [`KEY_BLOCK_CEILING`] blocks.

use bytes::BytesMut;

use crate::crypto::{BLOCK_LEN, BlowfishCtr, hmac_sha256, hmac_sha256_verify};
use crate::frame::{Frame, FrameType, HEADER_LEN, Header};
use crate::keys::{EpochKeys, TrafficSecret};
use crate::limits::{KEY_BLOCK_CEILING, MAX_RECORD_PLAINTEXT, REKEY_AFTER_BLOCKS, REKEY_AFTER_RECORDS};

/// HMAC-SHA256 tag length: the full 32 bytes, untruncated.
pub const TAG_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record sequence number {got}, expected {expected}: replayed, reordered or dropped record")]
    Sequence { expected: u32, got: u32 },
    #[error("record key epoch {got}, expected {current} or {next}")]
    Epoch { current: u16, next: u32, got: u16 },
    #[error("record authentication failed (tampered or corrupted)")]
    BadMac,
    #[error("the peer used one key for more than {KEY_BLOCK_CEILING} blocks without rekeying")]
    KeyExhausted,
    #[error("record of {0} bytes is larger than the {MAX_RECORD_PLAINTEXT}-byte limit")]
    TooLarge(usize),
    #[error("sequence numbers or key epochs exhausted: the connection must be re-established")]
    Exhausted,
    #[error("{0:?} is not a record frame")]
    NotRecord(FrameType),
}

/// When the sender ratchets. The defaults are the protocol's; tests lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    pub after_blocks: u64,
    pub after_records: u64,
    /// The receiving side's ceiling.
    pub ceiling_blocks: u64,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        RekeyPolicy {
            after_blocks: REKEY_AFTER_BLOCKS,
            after_records: REKEY_AFTER_RECORDS,
            ceiling_blocks: KEY_BLOCK_CEILING,
        }
    }
}

fn blocks_for(len: usize) -> u64 {
    len.div_ceil(BLOCK_LEN) as u64
}

/// One direction's state: the secret, the current epoch's keys and usage, the next sequence
/// number. The expanded Blowfish schedule (4 KiB) is built on first use and can be dropped
/// while idle ([`release`](Direction::release)); cloning re-expands rather than copies it.
struct Direction {
    secret: TrafficSecret,
    keys: EpochKeys,
    cipher: Option<Box<BlowfishCtr>>,
    epoch: u16,
    blocks: u64,
    records: u64,
    seq: u32,
    seq_exhausted: bool,
}

impl Clone for Direction {
    fn clone(&self) -> Self {
        Direction {
            secret: self.secret.clone(),
            keys: self.keys.clone(),
            cipher: None,
            epoch: self.epoch,
            blocks: self.blocks,
            records: self.records,
            seq: self.seq,
            seq_exhausted: self.seq_exhausted,
        }
    }
}

impl Direction {
    fn new(secret: TrafficSecret, first_seq: u32) -> Self {
        let keys = secret.keys();
        Direction {
            secret,
            keys,
            cipher: None,
            epoch: 0,
            blocks: 0,
            records: 0,
            seq: first_seq,
            seq_exhausted: false,
        }
    }

    fn cipher(&mut self) -> &mut BlowfishCtr {
        let keys = &self.keys;
        self.cipher
            .get_or_insert_with(|| Box::new(BlowfishCtr::new(&keys.enc, &keys.iv)))
    }

    fn ratchet(&mut self) -> Result<(), RecordError> {
        let epoch = self.epoch.checked_add(1).ok_or(RecordError::Exhausted)?;
        self.secret = self.secret.ratchet();
        self.keys = self.secret.keys();
        self.cipher = None;
        self.epoch = epoch;
        self.blocks = 0;
        self.records = 0;
        Ok(())
    }

    fn advance_seq(&mut self) {
        match self.seq.checked_add(1) {
            Some(s) => self.seq = s,
            None => self.seq_exhausted = true,
        }
    }

    fn release(&mut self) {
        self.cipher = None;
    }
}

/// The sending half of a record layer.
#[derive(Clone)]
pub struct Sealer {
    dir: Direction,
    policy: RekeyPolicy,
}

impl Sealer {
    pub fn new(secret: TrafficSecret, first_seq: u32, policy: RekeyPolicy) -> Self {
        Sealer {
            dir: Direction::new(secret, first_seq),
            policy,
        }
    }

    /// Appends one sealed record frame to `out`.
    pub fn seal(&mut self, frame_type: FrameType, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if !frame_type.is_record() {
            return Err(RecordError::NotRecord(frame_type));
        }
        if plaintext.len() > MAX_RECORD_PLAINTEXT {
            return Err(RecordError::TooLarge(plaintext.len()));
        }
        if self.dir.seq_exhausted {
            return Err(RecordError::Exhausted);
        }
        if self.dir.blocks >= self.policy.after_blocks || self.dir.records >= self.policy.after_records {
            self.dir.ratchet()?;
        }
        let header = Header::new(frame_type, self.dir.epoch, self.dir.seq, plaintext.len() + TAG_LEN).encode();
        out.reserve(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let block = self.dir.blocks;
        self.dir.cipher().apply(block, &mut out[start..]);
        let tag = hmac_sha256(&self.dir.keys.mac[..], &[&header, &out[start..]]);
        out.extend_from_slice(&tag);
        self.dir.blocks += blocks_for(plaintext.len());
        self.dir.records += 1;
        self.dir.advance_seq();
        Ok(())
    }

    /// Drops the expanded key schedule while the connection is idle.
    pub fn release(&mut self) {
        self.dir.release();
    }

    pub fn epoch(&self) -> u16 {
        self.dir.epoch
    }

    pub fn next_seq(&self) -> u32 {
        self.dir.seq
    }
}

/// The receiving half of a record layer.
#[derive(Clone)]
pub struct Opener {
    dir: Direction,
    policy: RekeyPolicy,
}

impl Opener {
    pub fn new(secret: TrafficSecret, first_seq: u32, policy: RekeyPolicy) -> Self {
        Opener {
            dir: Direction::new(secret, first_seq),
            policy,
        }
    }

    /// Authenticates and decrypts one record frame in place, returning its plaintext. Any
    /// error is fatal for the connection: the state is left unchanged, but a stream with a
    /// bad record in it cannot be resynchronised.
    pub fn open(&mut self, frame: Frame) -> Result<BytesMut, RecordError> {
        let h = frame.header;
        if !h.frame_type.is_record() {
            return Err(RecordError::NotRecord(h.frame_type));
        }
        if self.dir.seq_exhausted || h.seq != self.dir.seq {
            return Err(RecordError::Sequence {
                expected: self.dir.seq,
                got: h.seq,
            });
        }
        let next_epoch = u32::from(self.dir.epoch) + 1;
        let ratcheted = if h.epoch == self.dir.epoch {
            None
        } else if u32::from(h.epoch) == next_epoch {
            let mut d = self.dir.clone();
            d.ratchet()?;
            Some(d)
        } else {
            return Err(RecordError::Epoch {
                current: self.dir.epoch,
                next: next_epoch,
                got: h.epoch,
            });
        };
        let dir = ratcheted.as_ref().unwrap_or(&self.dir);
        let mut payload = frame.payload;
        // The frame decoder guarantees at least TAG_LEN bytes for record frames; check anyway
        // so this function stays total for frames built by hand.
        let Some(ct_len) = payload.len().checked_sub(TAG_LEN) else {
            return Err(RecordError::BadMac);
        };
        let (ct, tag) = payload.split_at(ct_len);
        if !hmac_sha256_verify(&dir.keys.mac[..], &[&frame.raw_header, ct], tag) {
            return Err(RecordError::BadMac);
        }
        let blocks = blocks_for(ct_len);
        if dir.blocks + blocks > self.policy.ceiling_blocks {
            return Err(RecordError::KeyExhausted);
        }
        if let Some(d) = ratcheted {
            self.dir = d;
        }
        payload.truncate(ct_len);
        let block = self.dir.blocks;
        self.dir.cipher().apply(block, &mut payload);
        self.dir.blocks += blocks;
        self.dir.records += 1;
        self.dir.advance_seq();
        Ok(payload)
    }

    pub fn release(&mut self) {
        self.dir.release();
    }

    pub fn epoch(&self) -> u16 {
        self.dir.epoch
    }

    pub fn next_seq(&self) -> u32 {
        self.dir.seq
    }
}
