//! Primitive field encoding shared by every decoder: big-endian integers, length-prefixed
//! strings and byte strings, counted lists.
//!
//! The reader is total: every read checks the remaining length first and every length or
//! count is checked against a limit *and* against the bytes actually left, so no input can
//! make a decoder panic or allocate more than the input it was given.

use crate::limits::MAX_ID;

/// A field could not be decoded. Carries the field name so the error tells a peer's author
/// exactly which byte was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: {field} needs {need} more bytes, {have} left")]
    Truncated {
        field: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{field} is {len} long, the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} is not valid UTF-8")]
    Utf8 { field: &'static str },
    #[error("{field} has invalid value {value}")]
    Invalid { field: &'static str, value: u64 },
    #[error("{0}")]
    Name(#[from] crate::name::NameError),
    #[error("{0} trailing bytes after the last field")]
    Trailing(usize),
}

/// Reads fields from a byte slice, front to back.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was consumed: trailing garbage is an error, not ignored, so
    /// two implementations can never disagree about what a message meant.
    pub fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.buf.len()))
        }
    }

    pub fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated {
                field,
                need: n,
                have: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(field, N)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A server-assigned id or timestamp: a u64 that must be at most 2^53 - 1.
    pub fn id(&mut self, field: &'static str) -> Result<u64, WireError> {
        let v = self.u64(field)?;
        if v > MAX_ID {
            return Err(WireError::Invalid { field, value: v });
        }
        Ok(v)
    }

    /// A boolean is one byte, 0 or 1; anything else is an error.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::Invalid { field, value: v.into() }),
        }
    }

    /// Byte string with a u16 length prefix, at most `max` bytes.
    pub fn blob(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(WireError::TooLong { field, len, max });
        }
        self.bytes(field, len)
    }

    /// UTF-8 string with a u16 length prefix (in bytes), at most `max` bytes.
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.blob(field, max)?).map_err(|_| WireError::Utf8 { field })
    }

    /// List count (u16), at most `max`, and never more than the bytes left divided by the
    /// smallest possible item, so a count cannot reserve memory the input does not back.
    pub fn count(&mut self, field: &'static str, max: usize, min_item: usize) -> Result<usize, WireError> {
        let n = usize::from(self.u16(field)?);
        let backed = self.remaining() / min_item.max(1);
        if n > max || n > backed {
            return Err(WireError::TooLong {
                field,
                len: n,
                max: max.min(backed),
            });
        }
        Ok(n)
    }
}

/// Appends fields to a byte vector. Lengths are checked by the caller's types (a value that
/// exceeds its limit is refused before encoding), so writing cannot fail except on a
/// programming error, which `debug_assert` catches in tests.
pub struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Writer { buf }
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// u16 length prefix then the bytes. Lengths above u16::MAX are clamped by a
    /// debug assertion: every caller's limit is far below it.
    pub fn blob(&mut self, b: &[u8]) -> &mut Self {
        debug_assert!(b.len() <= usize::from(u16::MAX));
        self.u16(b.len() as u16).bytes(b)
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.blob(s.as_bytes())
    }

    pub fn count(&mut self, n: usize) -> &mut Self {
        debug_assert!(n <= usize::from(u16::MAX));
        self.u16(n as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_total() {
        let mut r = Reader::new(&[0, 5, b'a']);
        assert!(matches!(r.str("s", 10), Err(WireError::Truncated { .. })));
        let mut r = Reader::new(&[0, 2, 0xff, 0xfe]);
        assert_eq!(r.str("s", 10), Err(WireError::Utf8 { field: "s" }));
        let mut r = Reader::new(&[0, 11]);
        assert!(matches!(r.blob("b", 10), Err(WireError::TooLong { .. })));
        let mut r = Reader::new(&[2]);
        assert!(r.bool("b").is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0]);
        assert!(matches!(r.count("n", 100_000, 1), Err(WireError::TooLong { .. })));
        let max = u64::MAX.to_be_bytes();
        let mut r = Reader::new(&max);
        assert!(r.id("id").is_err());
    }
}
