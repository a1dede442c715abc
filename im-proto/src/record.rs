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
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{BLOCK_LEN, BlowfishCtr, MacKey, hmac_sha256_verify};
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

/// Keystream blocks a direction may compute ahead of its next records: a chat message's
/// record or two. More is wasted work on a connection that goes quiet.
pub const AHEAD_BLOCKS: usize = 32;

/// A direction's expanded key schedule (4 KiB), its keyed MAC and the keystream it computed
/// ahead. CTR keystream does not depend on the data, so a connection can compute it while it
/// waits ([`Sealer::prepare`]) and a record later costs only an XOR and the MAC: that takes
/// the cipher off the path of a room message fanned out to thousands of members.
struct Keyed {
    ctr: BlowfishCtr,
    mac: MacKey,
    /// The keystream of counter blocks `from..`, `len` bytes (whole blocks).
    ahead: Zeroizing<[u8; AHEAD_BLOCKS * BLOCK_LEN]>,
    from: u64,
    len: usize,
}

impl Keyed {
    fn new(keys: &EpochKeys) -> Self {
        Keyed {
            ctr: BlowfishCtr::new(&keys.enc, &keys.iv),
            mac: MacKey::new(&keys.mac[..]),
            ahead: Zeroizing::new([0; AHEAD_BLOCKS * BLOCK_LEN]),
            from: 0,
            len: 0,
        }
    }

    /// XORs one record's `buf` with the keystream from counter block `block` on, taking what
    /// was computed ahead first. The record uses whole blocks, so what is left ahead starts
    /// at the next record's first block.
    fn apply(&mut self, block: u64, buf: &mut [u8]) {
        let ready = if self.from == block { self.len.min(buf.len()) } else { 0 };
        for (b, k) in buf[..ready].iter_mut().zip(self.ahead.iter()) {
            *b ^= k;
        }
        if ready < buf.len() {
            // `ready` is all that was ahead here, whole blocks.
            self.ctr.apply(block + (ready / BLOCK_LEN) as u64, &mut buf[ready..]);
        }
        let used = buf.len().div_ceil(BLOCK_LEN) * BLOCK_LEN;
        if self.from == block && used < self.len {
            self.ahead.copy_within(used..self.len, 0);
            self.len -= used;
        } else {
            self.len = 0;
        }
        self.from = block + (used / BLOCK_LEN) as u64;
    }

    /// Whether everything that may be computed ahead of block `next` is.
    fn is_ready(&self, next: u64) -> bool {
        self.from == next && self.len == self.ahead.len()
    }

    /// Computes the keystream ahead of block `next`, the next record's first.
    fn prepare(&mut self, next: u64) {
        if self.from != next {
            self.from = next;
            self.len = 0;
        }
        let have = self.len;
        let rest = &mut self.ahead[have..];
        rest.fill(0);
        self.ctr.apply(next + (have / BLOCK_LEN) as u64, rest);
        self.len = self.ahead.len();
    }
}

/// One direction's state: the secret, the current epoch's keys and usage, the next sequence
/// number. The expanded Blowfish schedule is built on first use and can be dropped while
/// idle ([`release`](Direction::release)); cloning re-expands rather than copies it.
struct Direction {
    secret: TrafficSecret,
    keys: EpochKeys,
    cipher: Option<Box<Keyed>>,
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

    fn cipher(&mut self) -> &mut Keyed {
        let keys = &self.keys;
        self.cipher.get_or_insert_with(|| Box::new(Keyed::new(keys)))
    }

    /// Whether there is keystream to compute ahead: only while the schedule is held, since
    /// expanding it for that would undo [`release`](Direction::release).
    fn wants_prepare(&self) -> bool {
        self.cipher.as_ref().is_some_and(|k| !k.is_ready(self.blocks))
    }

    fn prepare(&mut self) {
        let next = self.blocks;
        if let Some(k) = self.cipher.as_mut() {
            k.prepare(next);
        }
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
        self.seal_with(frame_type, out, |o| o.extend_from_slice(plaintext))
    }

    /// Appends one sealed record frame whose plaintext `write` appends to `out`; it is
    /// encrypted where it lies. A message encoded this way never sits in a buffer of its own,
    /// which saves an allocation and a copy per record (a fan-out seals one per member), and
    /// leaves no plaintext copy behind to wipe. On error `out` is as it was, and what `write`
    /// appended is zeroed first.
    pub fn seal_with(
        &mut self,
        frame_type: FrameType,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), RecordError> {
        if !frame_type.is_record() {
            return Err(RecordError::NotRecord(frame_type));
        }
        if self.dir.seq_exhausted {
            return Err(RecordError::Exhausted);
        }
        let at = out.len();
        out.resize(at + HEADER_LEN, 0);
        let start = out.len();
        write(out);
        let len = out.len() - start;
        if len > MAX_RECORD_PLAINTEXT {
            out[start..].zeroize();
            out.truncate(at);
            return Err(RecordError::TooLarge(len));
        }
        let due = self.dir.blocks >= self.policy.after_blocks || self.dir.records >= self.policy.after_records;
        if due && let Err(e) = self.dir.ratchet() {
            out[start..].zeroize();
            out.truncate(at);
            return Err(e);
        }
        let header = Header::new(frame_type, self.dir.epoch, self.dir.seq, len + TAG_LEN).encode();
        out[at..start].copy_from_slice(&header);
        out.reserve(TAG_LEN);
        let block = self.dir.blocks;
        let keyed = self.dir.cipher();
        keyed.apply(block, &mut out[start..]);
        let tag = keyed.mac.tag(&[&header, &out[start..]]);
        out.extend_from_slice(&tag);
        self.dir.blocks += blocks_for(len);
        self.dir.records += 1;
        self.dir.advance_seq();
        Ok(())
    }

    /// Drops the expanded key schedule while the connection is idle.
    pub fn release(&mut self) {
        self.dir.release();
    }

    /// Whether [`prepare`](Sealer::prepare) has work: the key schedule is held and the
    /// keystream ahead of the next record is not all computed.
    pub fn wants_prepare(&self) -> bool {
        self.dir.wants_prepare()
    }

    /// Computes up to [`AHEAD_BLOCKS`] of keystream for the next records, so that sealing
    /// them costs only an XOR and the MAC. For idle moments; it never changes what is sealed.
    pub fn prepare(&mut self) {
        self.dir.prepare();
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

    /// [`Sealer::wants_prepare`] for the records to come.
    pub fn wants_prepare(&self) -> bool {
        self.dir.wants_prepare()
    }

    /// [`Sealer::prepare`] for the records to come: opening them then costs only the MAC
    /// check and an XOR.
    pub fn prepare(&mut self) {
        self.dir.prepare();
    }

    pub fn epoch(&self) -> u16 {
        self.dir.epoch
    }

    pub fn next_seq(&self) -> u32 {
        self.dir.seq
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::frame::FrameDecoder;

    /// What a sender or receiver does between records.
    #[derive(Debug, Clone)]
    enum Step {
        Record(usize),
        Prepare,
        Release,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            6 => (0usize..600).prop_map(Step::Record),
            3 => Just(Step::Prepare),
            1 => Just(Step::Release),
        ];
        proptest::collection::vec(step, 1..40)
    }

    fn policy() -> RekeyPolicy {
        // Low, so that ratchets happen within a test and ahead keystream crosses them.
        RekeyPolicy {
            after_blocks: 300,
            after_records: 7,
            ceiling_blocks: 1_000,
        }
    }

    proptest! {
        /// Computing keystream ahead, at any moment, changes nothing on the wire, and a
        /// receiver computing ahead at other moments opens every record.
        #[test]
        fn keystream_ahead_is_invisible(sender in steps(), receiver in steps()) {
            let secret = TrafficSecret::from_bytes([7; 32]);
            let mut plain = Sealer::new(secret.clone(), 1, policy());
            let mut ahead = Sealer::new(secret.clone(), 1, policy());
            let mut opener = Opener::new(secret, 1, policy());
            // Between two records the receiver does what its steps say, up to the next Record.
            let mut receiver = receiver.iter().chain([&Step::Record(0)]).cycle();
            let (mut wire, mut sent) = (Vec::new(), Vec::new());
            for (i, step) in sender.iter().enumerate() {
                match step {
                    Step::Record(len) => {
                        let pt: Vec<u8> = (0..*len).map(|b| (b * 31 + i) as u8).collect();
                        let mut a = Vec::new();
                        plain.seal(FrameType::Data, &pt, &mut a).unwrap();
                        ahead.seal(FrameType::Data, &pt, &mut wire).unwrap();
                        prop_assert_eq!(&a[..], &wire[wire.len() - a.len()..]);
                        sent.push(pt);
                    }
                    Step::Prepare => {
                        ahead.prepare();
                        prop_assert!(!ahead.wants_prepare());
                    }
                    Step::Release => {
                        ahead.release();
                        prop_assert!(!ahead.wants_prepare());
                    }
                }
            }
            let mut buf = BytesMut::from(&wire[..]);
            let mut frames = FrameDecoder::new();
            for pt in &sent {
                loop {
                    match receiver.next() {
                        Some(Step::Prepare) => opener.prepare(),
                        Some(Step::Release) => opener.release(),
                        _ => break,
                    }
                }
                let frame = frames.decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(&opener.open(frame).unwrap()[..], &pt[..]);
            }
        }
    }

    /// A plaintext written in place that turns out too large leaves `out` and the sealer as
    /// they were, at a record where the sealer is due to ratchet too.
    #[test]
    fn an_oversized_record_written_in_place_changes_nothing() {
        let policy = RekeyPolicy {
            after_records: 1,
            ..RekeyPolicy::default()
        };
        let secret = TrafficSecret::from_bytes([7; 32]);
        let (mut tried, mut clean) = (Sealer::new(secret.clone(), 1, policy), Sealer::new(secret, 1, policy));
        let (mut out, mut want) = (b"queued".to_vec(), b"queued".to_vec());
        tried.seal(FrameType::Data, b"first", &mut out).unwrap();
        clean.seal(FrameType::Data, b"first", &mut want).unwrap();
        let too_large = |o: &mut Vec<u8>| o.resize(o.len() + MAX_RECORD_PLAINTEXT + 1, b'x');
        let before = out.clone();
        assert!(matches!(
            tried.seal_with(FrameType::Data, &mut out, too_large),
            Err(RecordError::TooLarge(n)) if n == MAX_RECORD_PLAINTEXT + 1
        ));
        assert_eq!(out, before);
        assert_eq!(tried.epoch(), 0, "no ratchet for a record that was not sent");
        tried
            .seal_with(FrameType::Data, &mut out, |o| o.extend_from_slice(b"second"))
            .unwrap();
        clean.seal(FrameType::Data, b"second", &mut want).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn only_a_held_schedule_is_worth_preparing() {
        let mut s = Sealer::new(TrafficSecret::from_bytes([7; 32]), 1, RekeyPolicy::default());
        assert!(!s.wants_prepare(), "no schedule yet: preparing would expand one");
        s.seal(FrameType::Data, b"hi", &mut Vec::new()).unwrap();
        assert!(s.wants_prepare());
        s.prepare();
        assert!(!s.wants_prepare());
        s.seal(FrameType::Data, b"hi", &mut Vec::new()).unwrap();
        assert!(s.wants_prepare(), "a record used some of what was ahead");
        s.release();
        assert!(!s.wants_prepare());
    }
}
