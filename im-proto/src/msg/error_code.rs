//! Error codes, shared by `Error` replies and Close reasons, and the Close reason itself.
//!
//! On the wire only the number travels; the snake_case name is derived from it, so programs
//! (and the CLI's JSON output) match on a stable word while the wire stays small. An unknown
//! number is kept as [`ErrorCode::Unknown`] rather than refused: a newer server may add codes,
//! and an older client should still show the text that came with them.

use std::fmt;

use crate::limits::MAX_REASON;
use crate::wire::{Reader, WireError, Writer};

use super::field::{Codec, Field, Text};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $code:literal $Var:ident $name:literal, )+) => {
        /// Why a request failed or a connection closed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $Var, )+
            /// A code this build does not know. Holds only unassigned numbers: decoding never
            /// produces `Unknown(100)`, it produces `BadRequest`.
            Unknown(u16),
        }

        impl ErrorCode {
            /// Every known code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$( ErrorCode::$Var ),+];

            pub fn code(self) -> u16 {
                match self {
                    $( ErrorCode::$Var => $code, )+
                    ErrorCode::Unknown(code) => code,
                }
            }

            /// The stable machine name, such as `"rate_limited"`; `"unknown"` for unknown codes.
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$Var => $name, )+
                    ErrorCode::Unknown(_) => "unknown",
                }
            }

            pub fn from_code(code: u16) -> Option<Self> {
                match code {
                    $( $code => Some(ErrorCode::$Var), )+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// Not an error: a clean close (logout, quit). Only in Close reasons.
    0 Normal "normal",

    /// The request was well-formed but makes no sense (acknowledging a future id, accepting a
    /// contact request that does not exist, logging in twice).
    100 BadRequest "bad_request",
    /// A message could not be decoded: unknown kind, bad field, trailing bytes. The
    /// connection ends.
    101 Protocol "protocol",
    /// A reserved kind (sealed messages) or a feature this server does not offer. The
    /// connection stays.
    102 Unsupported "unsupported",
    /// Over a limit this server enforces, stricter than the protocol's own.
    103 TooLarge "too_large",

    /// The request needs a logged-in session.
    200 Unauthenticated "unauthenticated",
    /// Wrong user name or password, or a key that is not the user's or a bad signature. One
    /// code for all, so a reply does not reveal whether an account exists.
    201 AuthFailed "auth_failed",
    /// The resumption ticket is unknown, expired or revoked: log in afresh.
    202 TicketInvalid "ticket_invalid",
    /// This server does not accept new accounts.
    203 RegistrationClosed "registration_closed",
    /// The name is taken (a user name at registration, a key already added).
    204 Exists "exists",
    /// The name is well-formed but not allowed here (reserved names).
    205 InvalidName "invalid_name",
    /// The new password is too short or too common.
    206 WeakPassword "weak_password",
    /// This device was revoked or its login ended elsewhere (password change): log in again.
    207 Revoked "revoked",

    /// No such user.
    300 NoSuchUser "no_such_user",
    /// No such room.
    301 NoSuchRoom "no_such_room",
    /// The request needs membership of the room.
    302 NotMember "not_member",
    /// Not permitted: missing rights, blocked, banned. Deliberately vague, so a reply does not
    /// tell a user that someone blocked them.
    303 NotAllowed "not_allowed",
    /// The device, key or contact request named does not exist.
    304 NotFound "not_found",

    /// Too many requests; `retry_after_ms` says when to try again.
    400 RateLimited "rate_limited",
    /// The client read too slowly and its outbound queue filled up. It catches up on
    /// reconnect.
    401 QueueOverflow "queue_overflow",
    /// Nothing received for too long.
    402 IdleTimeout "idle_timeout",
    /// No successful login within the time allowed after the handshake.
    403 LoginTimeout "login_timeout",
    /// The server is stopping; reconnect after `retry_after_ms` if given.
    404 ShuttingDown "shutting_down",

    /// A fault on the server; the request may be retried.
    500 Internal "internal",
}

impl ErrorCode {
    /// Decoding is total: an unassigned number becomes `Unknown`.
    pub fn from_wire(code: u16) -> Self {
        Self::from_code(code).unwrap_or(ErrorCode::Unknown(code))
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unknown(code) => write!(f, "unknown ({code})"),
            known => f.write_str(known.name()),
        }
    }
}

impl Field for ErrorCode {
    fn put(&self, w: &mut Writer<'_>) {
        w.u16(self.code());
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        r.u16(field).map(Self::from_wire)
    }
}

/// Why a connection ended: the payload of the Close record, which the session layer seals like
/// any other record. Separate from the message enums because it is not a message: it is the
/// last thing on a connection, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: ErrorCode,
    /// For people; at most `MAX_REASON` bytes.
    pub text: String,
}

impl CloseReason {
    /// Cuts `text` to `MAX_REASON` bytes (on a character boundary) so it always encodes.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        CloseReason {
            code,
            text: clip(text.into(), MAX_REASON),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        self.code.put(&mut w);
        Text(MAX_REASON).write(&mut w, &self.text);
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let reason = CloseReason {
            code: ErrorCode::get(&mut r, "code")?,
            text: Text(MAX_REASON).read(&mut r, "text")?,
        };
        r.finish()?;
        Ok(reason)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.text)
        }
    }
}

/// Shortens `s` to at most `max` bytes without splitting a character.
pub(crate) fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
