//! The library's one error type. Every variant says what a user needs to act on it, and maps
//! to an exit code of the command ([`Error::exit_code`]) and a stable machine name for JSON
//! output ([`Error::code_name`]). No variant ever holds a password, key or ticket secret.

use std::path::PathBuf;

use im_proto::handshake::HandshakeError;
use im_proto::msg::{CloseReason, ErrorCode};

use crate::exit_code;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the user: a malformed server address, a missing user name.
    #[error("{0}")]
    Usage(String),

    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },

    /// The TCP connection ended, or a read or write failed, without a Close from the server.
    #[error("connection lost: {0}")]
    ConnectionLost(String),

    /// The server ended the connection with a Close record.
    #[error("server closed the connection: {0}")]
    Closed(CloseReason),

    /// The server sent a Reject frame instead of a handshake.
    #[error("server refused the connection: {code}{}{}", if text.is_empty() { String::new() } else { format!(": {text}") }, retry_hint(*retry_after_ms))]
    Rejected {
        code: ErrorCode,
        text: String,
        retry_after_ms: Option<u32>,
    },

    /// The handshake failed: a bad signature or MAC (tampering, or not an im server).
    #[error("handshake with {server} failed: {source}")]
    Handshake {
        server: String,
        #[source]
        source: HandshakeError,
    },

    /// The server broke the protocol (undecodable message, unexpected reply).
    #[error("protocol error: {0}")]
    Protocol(String),

    #[error("no answer from the server within {0} s")]
    Timeout(u64),

    /// An unknown host key, and nothing allowed pinning it.
    #[error(
        "the host key of {server} is not known (fingerprint {fingerprint}); refusing to connect without a terminal to ask.\n\
         Check the fingerprint with the server's operator, then rerun with --trust-fingerprint {fingerprint} (or --accept-new)"
    )]
    HostKeyUnknown { server: String, fingerprint: String },

    /// The user declined an unknown host key at the prompt.
    #[error("host key of {server} ({fingerprint}) not accepted")]
    HostKeyDeclined { server: String, fingerprint: String },

    /// The host key differs from the one pinned in known_hosts: maybe an attack.
    #[error(
        "WARNING: THE HOST KEY OF {server} HAS CHANGED. Someone could be intercepting the connection, or the server's key was replaced.\n\
         pinned:    {pinned}\n\
         presented: {presented}\n\
         If the change is expected, remove the old pin (line {line} of {file}), e.g.: sed -i '{line}d' '{file}'",
        file = file.display()
    )]
    HostKeyChanged {
        server: String,
        pinned: String,
        presented: String,
        file: PathBuf,
        line: usize,
    },

    /// `--trust-fingerprint` named another key than the server presented.
    #[error("host key of {server} is {presented}, not the expected {expected}")]
    HostKeyMismatch {
        server: String,
        expected: String,
        presented: String,
    },

    /// The server answered a request with `Error`.
    #[error("{code}{}{}", if text.is_empty() { String::new() } else { format!(": {text}") }, retry_hint(*retry_after_ms))]
    Server {
        code: ErrorCode,
        text: String,
        retry_after_ms: Option<u32>,
    },

    /// No way to authenticate: no ticket, no key, no password source.
    #[error("cannot log in: {0}")]
    NoCredentials(String),

    /// The client refused something before sending it (text too long, invalid name).
    #[error("{0}")]
    Refused(String),

    /// A local file or folder could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Local {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A local file has bad contents (config, ticket, key).
    #[error("{} is invalid: {detail}", path.display())]
    BadFile { path: PathBuf, detail: String },

    /// The client's background task is gone (the client was closed).
    #[error("the client is closed")]
    ClientClosed,
}

fn retry_hint(ms: Option<u32>) -> String {
    ms.map(|ms| format!(" (retry after {ms} ms)")).unwrap_or_default()
}

impl Error {
    /// The exit code of the `im-client` command for this error (see [`crate::exit_code`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit_code::USAGE,
            Error::Connect { .. }
            | Error::ConnectionLost(_)
            | Error::Handshake { .. }
            | Error::Protocol(_)
            | Error::Timeout(_)
            | Error::ClientClosed => exit_code::CONNECT,
            Error::Closed(reason) => match reason.code {
                ErrorCode::RateLimited => exit_code::RATE_LIMITED,
                ErrorCode::Revoked | ErrorCode::AuthFailed | ErrorCode::Unauthenticated | ErrorCode::TicketInvalid => {
                    exit_code::AUTH
                }
                _ => exit_code::CONNECT,
            },
            Error::Rejected { code, .. } => match code {
                ErrorCode::RateLimited => exit_code::RATE_LIMITED,
                _ => exit_code::CONNECT,
            },
            Error::HostKeyUnknown { .. }
            | Error::HostKeyDeclined { .. }
            | Error::HostKeyChanged { .. }
            | Error::HostKeyMismatch { .. } => exit_code::HOST_KEY,
            Error::Server { code, .. } => exit_code::for_error_code(*code),
            Error::NoCredentials(_) => exit_code::AUTH,
            Error::Refused(_) => exit_code::REFUSED,
            Error::Local { .. } | Error::BadFile { .. } => exit_code::LOCAL,
        }
    }

    /// A stable machine name for the JSON `error` object: the server's error code name when
    /// the server said it, else a client-side name.
    pub fn code_name(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Connect { .. } => "connect",
            Error::ConnectionLost(_) => "connection_lost",
            Error::Closed(reason) => reason.code.name(),
            Error::Rejected { code, .. } | Error::Server { code, .. } => code.name(),
            Error::Handshake { .. } => "handshake",
            Error::Protocol(_) => "protocol",
            Error::Timeout(_) => "timeout",
            Error::HostKeyUnknown { .. } => "host_key_unknown",
            Error::HostKeyDeclined { .. } => "host_key_declined",
            Error::HostKeyChanged { .. } => "host_key_changed",
            Error::HostKeyMismatch { .. } => "host_key_mismatch",
            Error::NoCredentials(_) => "no_credentials",
            Error::Refused(_) => "refused",
            Error::Local { .. } | Error::BadFile { .. } => "local",
            Error::ClientClosed => "client_closed",
        }
    }

    /// The server's advice on when to retry, if it gave one.
    pub fn retry_after_ms(&self) -> Option<u32> {
        match self {
            Error::Rejected { retry_after_ms, .. } | Error::Server { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    /// The server's error code, when the server said one.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Closed(reason) => Some(reason.code),
            Error::Rejected { code, .. } | Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn local(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Local {
            what,
            path: path.into(),
            source,
        }
    }

    /// Whether retrying later on a new connection could help (used by reconnection).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::ConnectionLost(_) | Error::Timeout(_) | Error::Rejected { .. } => true,
            Error::Closed(reason) => matches!(
                reason.code,
                ErrorCode::ShuttingDown
                    | ErrorCode::QueueOverflow
                    | ErrorCode::IdleTimeout
                    | ErrorCode::LoginTimeout
                    | ErrorCode::Internal
                    | ErrorCode::RateLimited
            ),
            Error::Server { code, .. } => {
                matches!(
                    code,
                    ErrorCode::ShuttingDown | ErrorCode::Internal | ErrorCode::RateLimited
                )
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_code_has_an_exit_code() {
        let expect = |code: ErrorCode| -> u8 {
            match code.name() {
                "unauthenticated" | "auth_failed" | "ticket_invalid" | "revoked" => 4,
                "rate_limited" => 7,
                "normal" | "protocol" | "queue_overflow" | "idle_timeout" | "login_timeout" | "shutting_down"
                | "internal" => 3,
                _ => 6,
            }
        };
        for &code in ErrorCode::ALL {
            let err = Error::Server {
                code,
                text: String::new(),
                retry_after_ms: None,
            };
            assert_eq!(err.exit_code(), expect(code), "{code}");
            assert_eq!(err.code_name(), code.name());
        }
        assert_eq!(exit_code::for_error_code(ErrorCode::Unknown(999)), exit_code::REFUSED);
    }

    #[test]
    fn client_side_errors_map_to_their_exit_codes() {
        let io = || std::io::Error::other("x");
        let cases: Vec<(Error, u8, &str)> = vec![
            (Error::Usage("x".into()), 2, "usage"),
            (
                Error::Connect {
                    server: "h:1".into(),
                    source: io(),
                },
                3,
                "connect",
            ),
            (Error::ConnectionLost("eof".into()), 3, "connection_lost"),
            (
                Error::Closed(CloseReason::new(ErrorCode::ShuttingDown, "bye")),
                3,
                "shutting_down",
            ),
            (Error::Closed(CloseReason::new(ErrorCode::Revoked, "")), 4, "revoked"),
            (
                Error::Rejected {
                    code: ErrorCode::RateLimited,
                    text: "slow".into(),
                    retry_after_ms: Some(5),
                },
                7,
                "rate_limited",
            ),
            (
                Error::HostKeyUnknown {
                    server: "h:1".into(),
                    fingerprint: "SHA256:x".into(),
                },
                5,
                "host_key_unknown",
            ),
            (
                Error::HostKeyChanged {
                    server: "h:1".into(),
                    pinned: "a".into(),
                    presented: "b".into(),
                    file: "/k".into(),
                    line: 3,
                },
                5,
                "host_key_changed",
            ),
            (Error::NoCredentials("x".into()), 4, "no_credentials"),
            (Error::Refused("too long".into()), 6, "refused"),
            (Error::local("cannot write", "/x", io()), 8, "local"),
            (Error::Timeout(5), 3, "timeout"),
        ];
        for (err, exit, name) in cases {
            assert_eq!(err.exit_code(), exit, "{err}");
            assert_eq!(err.code_name(), name, "{err}");
        }
    }

    #[test]
    fn messages_carry_the_retry_advice_and_removal_hint() {
        let err = Error::Server {
            code: ErrorCode::RateLimited,
            text: "slow down".into(),
            retry_after_ms: Some(1500),
        };
        assert_eq!(err.to_string(), "rate_limited: slow down (retry after 1500 ms)");
        assert_eq!(err.retry_after_ms(), Some(1500));
        let err = Error::HostKeyChanged {
            server: "h:1".into(),
            pinned: "SHA256:old".into(),
            presented: "SHA256:new".into(),
            file: "/home/k".into(),
            line: 2,
        };
        let text = err.to_string();
        assert!(text.contains("SHA256:old") && text.contains("SHA256:new"), "{text}");
        assert!(
            text.contains("line 2 of /home/k") && text.contains("sed -i '2d' '/home/k'"),
            "{text}"
        );
    }
}
