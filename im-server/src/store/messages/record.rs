//! The bytes on disk: keys and values of the five keyspaces, and their decoders.
//!
//! Every decoder here is total: it takes any byte string and returns either a value or a
//! one-line description of what is wrong with it (the caller wraps that in
//! [`StoreError::Corrupt`](super::StoreError::Corrupt) with the path). Lengths are checked
//! against the bytes actually present before anything is sliced, so corrupt input can neither
//! panic nor make us allocate more than the input's own size.
//!
//! Names never contain a 0x00 byte (see [`im_proto::name`]), so 0x00 terminates a name inside
//! a key, and no conversation key is a prefix of another one: a range scan over one
//! conversation never strays into the next.
//!
//! | keyspace | key                                         | value                        |
//! |----------|---------------------------------------------|------------------------------|
//! | `msgs`   | conversation key, id (u64 BE)               | message record (below)       |
//! | `ids`    | id (u64 BE)                                 | ts (u64 BE), conversation key|
//! | `inbox`  | user, 0x00, id (u64 BE)   (DMs only)        | the other party's user name  |
//! | `dedup`  | day (u32 BE), from, 0x00, client_id         | id (u64 BE), ts (u64 BE)     |
//! | `meta`   | `format`                                    | `im-message-log`, u32 BE ver |
//! | `meta`   | `high-water`                                | last id (u64 BE), last ts    |
//!
//! Conversation key: `d`, smaller user, 0x00, larger user, 0x00 for a direct conversation;
//! `r`, room name (with its `#`), 0x00 for a room.
//!
//! Message record, version 1 (all integers big-endian):
//!
//! ```text
//! u8  record version = 1
//! u64 id
//! u64 ts              milliseconds since the Unix epoch, UTC
//! u8  flags           bit 0: action ("/me"); other bits must be 0
//! u64 sender device   0 for none
//! u8  len, bytes      sender user name
//! u8  len, bytes      target: a user name, or a room name starting with '#'
//! u8  len, bytes      client_id (UTF-8)
//! u32 len, bytes      text (UTF-8)
//! ```
//! and nothing after the text.

use im_proto::{RoomName, Target, UserName};

use super::{Conversation, StoredMessage};

/// The only message record version this code writes and reads.
pub(super) const RECORD_VERSION: u8 = 1;

/// The dedup window is bucketed by UTC day so that expired entries form a key prefix range.
pub(super) const DAY_MS: u64 = 24 * 60 * 60 * 1000;

const FLAG_ACTION: u8 = 1;

/// Which dedup bucket a timestamp falls in.
pub(super) fn day_of(ts: u64) -> u32 {
    u32::try_from(ts / DAY_MS).unwrap_or(u32::MAX)
}

// ---- keys ----

pub(super) fn conv_key(conv: &Conversation) -> Vec<u8> {
    match conv {
        Conversation::Direct(a, b) => {
            // Canonical order even if someone built the variant by hand.
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            let mut k = Vec::with_capacity(3 + a.as_str().len() + b.as_str().len());
            k.push(b'd');
            k.extend_from_slice(a.as_str().as_bytes());
            k.push(0);
            k.extend_from_slice(b.as_str().as_bytes());
            k.push(0);
            k
        }
        Conversation::Room(r) => {
            let mut k = Vec::with_capacity(2 + r.as_str().len());
            k.push(b'r');
            k.extend_from_slice(r.as_str().as_bytes());
            k.push(0);
            k
        }
    }
}

pub(super) fn decode_conv_key(b: &[u8]) -> Result<Conversation, String> {
    let (&tag, rest) = b.split_first().ok_or("empty conversation key")?;
    let mut parts = rest.split(|&c| c == 0);
    let conv = match tag {
        b'd' => {
            let a = user(parts.next().unwrap_or_default())?;
            let b = user(parts.next().unwrap_or_default())?;
            if a > b {
                return Err("direct conversation key not in canonical order".into());
            }
            Conversation::Direct(a, b)
        }
        b'r' => Conversation::Room(room(parts.next().unwrap_or_default())?),
        t => return Err(format!("unknown conversation key tag {t:#04x}")),
    };
    // After the last terminator there must be exactly one empty piece.
    if parts.next() != Some(&[][..]) || parts.next().is_some() {
        return Err("malformed conversation key".into());
    }
    Ok(conv)
}

pub(super) fn msg_key(conv_key: &[u8], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(conv_key.len() + 8);
    k.extend_from_slice(conv_key);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn inbox_key(user: &UserName, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + 9);
    k.extend_from_slice(user.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn dedup_key(day: u32, from: &UserName, client_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + from.as_str().len() + client_id.len());
    k.extend_from_slice(&day.to_be_bytes());
    k.extend_from_slice(from.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(client_id.as_bytes());
    k
}

/// The id at the end of a `msgs`, `ids` or `inbox` key.
pub(super) fn id_suffix(key: &[u8]) -> Result<u64, String> {
    key.len()
        .checked_sub(8)
        .and_then(|at| key.get(at..))
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| format!("key of {} bytes is too short to end in an id", key.len()))
}

// ---- small values ----

pub(super) fn encode_id_entry(ts: u64, conv_key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + conv_key.len());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(conv_key);
    v
}

/// `ids` value: the message's timestamp and its conversation key.
pub(super) fn decode_id_entry(v: &[u8]) -> Result<(u64, Conversation), String> {
    let mut r = Reader(v);
    let ts = r.u64()?;
    Ok((ts, decode_conv_key(r.0)?))
}

pub(super) fn encode_pair(a: u64, b: u64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&a.to_be_bytes());
    v[8..].copy_from_slice(&b.to_be_bytes());
    v
}

/// `dedup` value (id, ts) and `meta/high-water` value (last id, last ts).
pub(super) fn decode_pair(v: &[u8]) -> Result<(u64, u64), String> {
    let mut r = Reader(v);
    let pair = (r.u64()?, r.u64()?);
    r.finish()?;
    Ok(pair)
}

pub(super) fn decode_user(v: &[u8]) -> Result<UserName, String> {
    user(v)
}

// ---- message records ----

pub(super) fn encode_record(m: &StoredMessage) -> Vec<u8> {
    let to = m.to.as_str();
    let mut v = Vec::with_capacity(
        1 + 8 + 8 + 1 + 8 + 3 + m.from.as_str().len() + to.len() + m.client_id.len() + 4 + m.text.len(),
    );
    v.push(RECORD_VERSION);
    v.extend_from_slice(&m.id.to_be_bytes());
    v.extend_from_slice(&m.ts.to_be_bytes());
    v.push(if m.action { FLAG_ACTION } else { 0 });
    v.extend_from_slice(&m.sender_device.to_be_bytes());
    // Lengths were checked against the protocol limits before the message got here (names
    // are at most 65 bytes, client ids at most MAX_CLIENT_ID, texts at most MAX_TEXT).
    for s in [m.from.as_str(), to, &m.client_id] {
        v.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
        v.extend_from_slice(&s.as_bytes()[..s.len().min(255)]);
    }
    v.extend_from_slice(&u32::try_from(m.text.len()).unwrap_or(u32::MAX).to_be_bytes());
    v.extend_from_slice(m.text.as_bytes());
    v
}

pub(super) fn decode_record(v: &[u8]) -> Result<StoredMessage, String> {
    let mut r = Reader(v);
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(format!("unknown message record version {version}"));
    }
    let id = r.u64()?;
    let ts = r.u64()?;
    let flags = r.u8()?;
    if flags & !FLAG_ACTION != 0 {
        return Err(format!("unknown message flags {flags:#04x}"));
    }
    let sender_device = r.u64()?;
    let len = usize::from(r.u8()?);
    let from = user(r.bytes(len)?)?;
    let len = usize::from(r.u8()?);
    let to = target(r.bytes(len)?)?;
    let len = usize::from(r.u8()?);
    let client_id = utf8(r.bytes(len)?, "client id")?;
    let len = usize::try_from(r.u32()?).map_err(|_| "text length overflows")?;
    let text = utf8(r.bytes(len)?, "text")?;
    r.finish()?;
    Ok(StoredMessage {
        id,
        ts,
        from,
        to,
        client_id,
        action: flags & FLAG_ACTION != 0,
        text,
        sender_device,
    })
}

// ---- decoding helpers ----

/// A cursor over a byte slice whose every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("field of {n} bytes but only {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let b = self.bytes(N)?;
        <[u8; N]>::try_from(b).map_err(|_| "short read".to_string())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_be_bytes)
    }

    fn finish(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.0.len()))
        }
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String, String> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| format!("{what} is not UTF-8"))
}

/// A stored name must be valid and already in canonical (folded) form.
fn user(b: &[u8]) -> Result<UserName, String> {
    let s = utf8(b, "user name")?;
    match UserName::parse(&s) {
        Ok(u) if u.as_str() == s => Ok(u),
        _ => Err(format!(
            "invalid stored user name {:?}",
            s.chars().take(40).collect::<String>()
        )),
    }
}

fn room(b: &[u8]) -> Result<RoomName, String> {
    let s = utf8(b, "room name")?;
    match RoomName::parse(&s) {
        Ok(r) if r.as_str() == s => Ok(r),
        _ => Err(format!(
            "invalid stored room name {:?}",
            s.chars().take(40).collect::<String>()
        )),
    }
}

fn target(b: &[u8]) -> Result<Target, String> {
    if b.first() == Some(&b'#') {
        room(b).map(Target::Room)
    } else {
        user(b).map(Target::User)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    fn sample() -> StoredMessage {
        StoredMessage {
            id: 42,
            ts: 1_700_000_000_000,
            from: u("alice"),
            to: Target::parse("#rust").unwrap(),
            client_id: "c-1".into(),
            action: true,
            text: "héllo".into(),
            sender_device: 77,
        }
    }

    #[test]
    fn record_round_trips() {
        let m = sample();
        assert_eq!(decode_record(&encode_record(&m)).unwrap(), m);
        let dm = StoredMessage {
            to: Target::User(u("bob")),
            action: false,
            text: String::new(),
            ..m
        };
        assert_eq!(decode_record(&encode_record(&dm)).unwrap(), dm);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = encode_record(&sample());
        for n in 0..bytes.len() {
            assert!(decode_record(&bytes[..n]).is_err(), "prefix of {n} bytes accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_record(&longer).is_err());
    }

    #[test]
    fn corrupt_fields_are_refused_not_panicked_on() {
        let good = encode_record(&sample());
        // Flip every byte to every interesting value: never a panic; bad versions, flags,
        // lengths and names are errors.
        for i in 0..good.len() {
            for x in [0x00, 0x01, 0x23, 0x41, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = x;
                let _ = decode_record(&b);
            }
        }
        let mut b = good.clone();
        b[0] = 2;
        assert!(decode_record(&b).unwrap_err().contains("version"));
        let mut b = good.clone();
        b[17] = 0x02;
        assert!(decode_record(&b).unwrap_err().contains("flags"));
        let mut b = good.clone();
        b[27] = b'A'; // "alice" -> "Alice": not canonical
        assert!(decode_record(&b).is_err());
        // A huge text length must not allocate: it is checked against what is there.
        let mut b = good;
        let at = b.len() - "héllo".len() - 4;
        b[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_record(&b).is_err());
    }

    #[test]
    fn conversation_keys_round_trip_and_do_not_prefix_each_other() {
        let convs = [
            Conversation::direct(&u("bob"), &u("alice")),
            Conversation::direct(&u("al"), &u("ice")),
            Conversation::direct(&u("a"), &u("lice")),
            Conversation::Room(RoomName::parse("#r").unwrap()),
            Conversation::Room(RoomName::parse("#r.x").unwrap()),
        ];
        for c in &convs {
            assert_eq!(&decode_conv_key(&conv_key(c)).unwrap(), c);
            for d in &convs {
                if c != d {
                    assert!(!conv_key(d).starts_with(&conv_key(c)), "{c:?} prefixes {d:?}");
                }
            }
        }
        // Hand-built non-canonical direct conversations land in the same key.
        assert_eq!(
            conv_key(&Conversation::Direct(u("bob"), u("alice"))),
            conv_key(&Conversation::direct(&u("alice"), &u("bob")))
        );
        for bad in [
            &b""[..],
            b"x",
            b"dalice",
            b"dalice\0",
            b"dbob\0alice\0",
            b"r#a\0\0",
            b"r#a",
        ] {
            assert!(decode_conv_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn small_values_are_checked() {
        assert_eq!(decode_pair(&encode_pair(1, 2)).unwrap(), (1, 2));
        assert!(decode_pair(&[0; 15]).is_err());
        assert!(decode_pair(&[0; 17]).is_err());
        assert_eq!(id_suffix(&msg_key(b"r#a\0", 7)).unwrap(), 7);
        assert!(id_suffix(&[1, 2, 3]).is_err());
        assert!(decode_id_entry(&[0; 7]).is_err());
    }
}
