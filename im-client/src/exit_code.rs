//! The exit codes of the `im-client` command, in one place. Scripts rely on them: they are
//! part of the command's stable interface, documented in its `--help`.
//!
//! [`crate::Error::exit_code`] maps every library error to one of these, and
//! [`for_error_code`] maps the server's error codes.

use im_proto::msg::ErrorCode;

/// Success; also `listen` ending at `--timeout` when no `--count` was asked for.
pub const SUCCESS: u8 = 0;
/// `listen` reached `--timeout` before `--count` messages arrived.
pub const LISTEN_TIMEOUT: u8 = 1;
/// Usage error: bad arguments or options, missing server or user (clap exits 2 too).
pub const USAGE: u8 = 2;
/// Cannot connect to the server, or the connection was lost or closed by the server.
pub const CONNECT: u8 = 3;
/// Authentication failed: wrong password or key, no credentials available, device revoked.
pub const AUTH: u8 = 4;
/// The server's host key is unknown (and there is no terminal to ask), or it changed.
pub const HOST_KEY: u8 = 5;
/// Refused: no such user or room, not allowed, too large, name taken; whether the client or
/// the server caught it.
pub const REFUSED: u8 = 6;
/// Rate-limited by the server; the retry-after advice is printed on stderr.
pub const RATE_LIMITED: u8 = 7;
/// Local error: the home folder is not writable, a password or key file is unreadable.
pub const LOCAL: u8 = 8;

/// The exit code for a server error code, in an `Error` reply, a Close reason or a Reject.
pub fn for_error_code(code: ErrorCode) -> u8 {
    use ErrorCode::*;
    match code {
        Unauthenticated | AuthFailed | TicketInvalid | Revoked => AUTH,
        BadRequest | Unsupported | TooLarge | RegistrationClosed | Exists | InvalidName | WeakPassword | NoSuchUser
        | NoSuchRoom | NotMember | NotAllowed | NotFound => REFUSED,
        RateLimited => RATE_LIMITED,
        Normal | Protocol | QueueOverflow | IdleTimeout | LoginTimeout | ShuttingDown | Internal => CONNECT,
        Unknown(_) => REFUSED,
    }
}
