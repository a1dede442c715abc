//! A server address as the user typed it: `HOST`, `HOST:PORT`, `[V6]:PORT`. The port
//! defaults to [`DEFAULT_PORT`]. Its [`key`](ServerAddr::key) (`host:port`, the host exactly
//! as typed) names the server in known_hosts and in the ticket store.

use std::fmt;

use im_proto::limits::DEFAULT_PORT;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// The host to resolve, without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "invalid server address {s:?}: {why} (expected HOST or HOST:PORT)"
            ))
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
            return Err(bad("contains spaces, '/' or control characters"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
                ),
            }
        } else if s.matches(':').count() > 1 {
            // A bare IPv6 address: no port can be given without brackets.
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        };
        Ok(ServerAddr {
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port` (`[v6]:port`): the key in known_hosts and the ticket store.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for ServerAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        ServerAddr::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_v6() {
        let p = |s| ServerAddr::parse(s).unwrap().key();
        assert_eq!(p("chat.example.org"), "chat.example.org:7447");
        assert_eq!(p("chat.example.org:9000"), "chat.example.org:9000");
        assert_eq!(p("127.0.0.1:1"), "127.0.0.1:1");
        assert_eq!(p("[::1]:8000"), "[::1]:8000");
        assert_eq!(p("[::1]"), "[::1]:7447");
        assert_eq!(p("::1"), "[::1]:7447");
        assert_eq!(ServerAddr::parse("[::1]:8000").unwrap().host, "::1");
        for bad in ["", "h:0", "h:x", "h:70000", ":80", "[::1", "a b", "[::1]x"] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
