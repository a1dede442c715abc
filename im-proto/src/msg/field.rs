//! How each field type is written and read, on top of the primitives in [`crate::wire`].
//!
//! Two traits, because some types carry their own rules and some need a parameter: a
//! [`Field`] knows its one encoding (a user name, an id, an enum byte); a [`Codec`] is the
//! encoding of a type that needs one (a `String` with a byte limit, a list with a count
//! limit). The catalogue macros call both through [`Codec`], with [`Plain`] standing for
//! "the type's own [`Field`] encoding".

use crate::limits::{MAX_CLIENT_ID, MAX_PAGE, MAX_ROOM_NAME, MAX_USER_NAME};
use crate::name::{NameError, RoomName, Target, UserName};
use crate::wire::{Reader, WireError, Writer};

use super::RequestId;

/// A type with exactly one wire encoding.
pub(crate) trait Field: Sized {
    fn put(&self, w: &mut Writer<'_>);
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError>;
}

/// A type that appears in lists. `MIN_LEN` is its smallest encoding, so that a list count can
/// be checked against the bytes actually left before anything is allocated.
pub(crate) trait Item: Field {
    const MIN_LEN: usize;
}

/// The encoding of a `T`, chosen per field.
pub(crate) trait Codec<T> {
    fn write(&self, w: &mut Writer<'_>, v: &T);
    fn read(&self, r: &mut Reader<'_>, field: &'static str) -> Result<T, WireError>;
}

/// The type's own [`Field`] encoding.
pub(crate) struct Plain;

impl<T: Field> Codec<T> for Plain {
    fn write(&self, w: &mut Writer<'_>, v: &T) {
        v.put(w);
    }

    fn read(&self, r: &mut Reader<'_>, field: &'static str) -> Result<T, WireError> {
        T::get(r, field)
    }
}

/// UTF-8 text of at most this many bytes; also for `Option<String>`.
pub(crate) struct Text(pub usize);

impl Codec<String> for Text {
    fn write(&self, w: &mut Writer<'_>, v: &String) {
        debug_assert!(v.len() <= self.0, "text of {} bytes over its limit {}", v.len(), self.0);
        w.str(v);
    }

    fn read(&self, r: &mut Reader<'_>, field: &'static str) -> Result<String, WireError> {
        Ok(r.str(field, self.0)?.to_owned())
    }
}

impl Codec<Option<String>> for Text {
    fn write(&self, w: &mut Writer<'_>, v: &Option<String>) {
        write_option(w, v, |w, s| self.write(w, s));
    }

    fn read(&self, r: &mut Reader<'_>, field: &'static str) -> Result<Option<String>, WireError> {
        read_option(r, field, |r| self.read(r, field))
    }
}

/// A byte string of at most this many bytes.
pub(crate) struct Bytes(pub usize);

impl Codec<Vec<u8>> for Bytes {
    fn write(&self, w: &mut Writer<'_>, v: &Vec<u8>) {
        debug_assert!(v.len() <= self.0, "{} bytes over the limit {}", v.len(), self.0);
        w.blob(v);
    }

    fn read(&self, r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u8>, WireError> {
        Ok(r.blob(field, self.0)?.to_vec())
    }
}

/// A counted list of at most this many items.
pub(crate) struct List(pub usize);

impl<T: Item> Codec<Vec<T>> for List {
    fn write(&self, w: &mut Writer<'_>, v: &Vec<T>) {
        debug_assert!(v.len() <= self.0, "{} items over the limit {}", v.len(), self.0);
        w.count(v.len());
        for item in v {
            item.put(w);
        }
    }

    fn read(&self, r: &mut Reader<'_>, field: &'static str) -> Result<Vec<T>, WireError> {
        // `count` has checked n against the bytes left, so this capacity is input-backed.
        let n = r.count(field, self.0, T::MIN_LEN)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(T::get(r, field)?);
        }
        Ok(items)
    }
}

/// A client's deduplication key: 1 to `MAX_CLIENT_ID` bytes of printable ASCII without space,
/// so that it can be logged, put in a file name or compared byte-wise without surprises.
pub(crate) struct ClientIdText;

impl ClientIdText {
    pub(crate) fn is_valid(s: &str) -> bool {
        (1..=MAX_CLIENT_ID).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
    }
}

impl Codec<String> for ClientIdText {
    fn write(&self, w: &mut Writer<'_>, v: &String) {
        debug_assert!(Self::is_valid(v), "invalid client id {v:?}");
        w.str(v);
    }

    fn read(&self, r: &mut Reader<'_>, field: &'static str) -> Result<String, WireError> {
        let s = r.str(field, MAX_CLIENT_ID)?;
        if s.is_empty() {
            return Err(WireError::Invalid { field, value: 0 });
        }
        if let Some(b) = s.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
            return Err(WireError::Invalid { field, value: b.into() });
        }
        Ok(s.to_owned())
    }
}

/// A history page size: 1 to `MAX_PAGE`. Zero is refused rather than read as "default", so a
/// request always says what it wants.
pub(crate) struct PageSize;

impl Codec<u16> for PageSize {
    fn write(&self, w: &mut Writer<'_>, v: &u16) {
        debug_assert!((1..=MAX_PAGE).contains(&usize::from(*v)), "page size {v}");
        w.u16(*v);
    }

    fn read(&self, r: &mut Reader<'_>, field: &'static str) -> Result<u16, WireError> {
        let v = r.u16(field)?;
        if (1..=MAX_PAGE).contains(&usize::from(v)) {
            Ok(v)
        } else {
            Err(WireError::Invalid { field, value: v.into() })
        }
    }
}

/// Presence byte 0 (absent) or 1 (present), then the value.
fn write_option<T>(w: &mut Writer<'_>, v: &Option<T>, put: impl FnOnce(&mut Writer<'_>, &T)) {
    w.bool(v.is_some());
    if let Some(v) = v {
        put(w, v);
    }
}

fn read_option<'a, T>(
    r: &mut Reader<'a>,
    field: &'static str,
    get: impl FnOnce(&mut Reader<'a>) -> Result<T, WireError>,
) -> Result<Option<T>, WireError> {
    // Same rule as a bool: exactly 0 or 1, so an option has one encoding.
    if r.bool(field)? { get(r).map(Some) } else { Ok(None) }
}

impl<T: Field> Field for Option<T> {
    fn put(&self, w: &mut Writer<'_>) {
        write_option(w, self, |w, v| v.put(w));
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        read_option(r, field, |r| T::get(r, field))
    }
}

impl Field for bool {
    fn put(&self, w: &mut Writer<'_>) {
        w.bool(*self);
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        r.bool(field)
    }
}

impl Field for u32 {
    fn put(&self, w: &mut Writer<'_>) {
        w.u32(*self);
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        r.u32(field)
    }
}

impl Field for u64 {
    fn put(&self, w: &mut Writer<'_>) {
        w.u64(*self);
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        r.u64(field)
    }
}

impl<const N: usize> Field for [u8; N] {
    fn put(&self, w: &mut Writer<'_>) {
        w.bytes(self);
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        r.array(field)
    }
}

/// Longest room name on the wire: the `#` plus `MAX_ROOM_NAME` characters. Also the longest
/// target, since user names are shorter.
const MAX_ROOM_NAME_BYTES: usize = MAX_ROOM_NAME + 1;

/// Names must arrive already folded: `Alice` is refused, not read as `alice`. Otherwise one
/// message would have two encodings, and a peer that compares names byte-wise (a log, a cache
/// key, a signature) could be fooled.
fn canonical<N>(
    raw: &str,
    parsed: Result<N, NameError>,
    as_str: fn(&N) -> &str,
    err: fn(String) -> NameError,
) -> Result<N, WireError> {
    let name = parsed?;
    if as_str(&name) == raw {
        Ok(name)
    } else {
        Err(err(raw.to_owned()).into())
    }
}

impl Field for UserName {
    fn put(&self, w: &mut Writer<'_>) {
        w.str(self.as_str());
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        let raw = r.str(field, MAX_USER_NAME)?;
        canonical(raw, UserName::parse(raw), UserName::as_str, NameError::User)
    }
}

impl Item for UserName {
    /// Length prefix and one character.
    const MIN_LEN: usize = 3;
}

impl Field for RoomName {
    fn put(&self, w: &mut Writer<'_>) {
        w.str(self.as_str());
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        let raw = r.str(field, MAX_ROOM_NAME_BYTES)?;
        canonical(raw, RoomName::parse(raw), RoomName::as_str, NameError::Room)
    }
}

impl Field for Target {
    fn put(&self, w: &mut Writer<'_>) {
        w.str(self.as_str());
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        let raw = r.str(field, MAX_ROOM_NAME_BYTES)?;
        let err = if raw.starts_with('#') {
            NameError::Room
        } else {
            NameError::User
        };
        canonical(raw, Target::parse(raw), Target::as_str, err)
    }
}

/// The request id in a `req` field, whether it is always there or (in `Error`) optional.
pub(crate) trait AsReq {
    fn as_req(&self) -> Option<RequestId>;
}

impl AsReq for RequestId {
    fn as_req(&self) -> Option<RequestId> {
        Some(*self)
    }
}

impl AsReq for Option<RequestId> {
    fn as_req(&self) -> Option<RequestId> {
        *self
    }
}
