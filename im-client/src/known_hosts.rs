//! Host-key pins, like SSH's `known_hosts`: one line per server,
//!
//! ```text
//! # comment
//! chat.example.org:7447 SHA256:hv6kM9uG46gppM1IcLXugU5pAcdLZPVtB4Hmgj/Cf3o
//! ```
//!
//! keyed by `host:port` as the user typed the host ([`ServerAddr::key`]). The value is the
//! key's fingerprint (SHA-256 of its SubjectPublicKeyInfo DER), which is all a pin needs.
//! Lines are never rewritten by the client: a changed key is refused, and the error says
//! which line to remove.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::home::ensure_dir;
use crate::server_addr::ServerAddr;

/// What known_hosts says about a server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostStatus {
    /// Pinned, and the key matches.
    Match,
    /// No pin for this server.
    Unknown,
    /// Pinned to another key: `line` (1-based) of the file holds the old pin.
    Changed { pinned: String, line: usize },
}

/// The known_hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
}

impl KnownHosts {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KnownHosts { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<String, Error> {
        match fs::read_to_string(&self.path) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::local("cannot read", &self.path, e)),
        }
    }

    /// The pinned fingerprint of `server` and its line number, if any.
    pub fn lookup(&self, server: &ServerAddr) -> Result<Option<(String, usize)>, Error> {
        let key = server.key();
        let text = self.read()?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            if let (Some(host), Some(fp)) = (parts.next(), parts.next())
                && host == key
            {
                return Ok(Some((fp.to_owned(), i + 1)));
            }
        }
        Ok(None)
    }

    pub fn check(&self, server: &ServerAddr, fingerprint: &str) -> Result<HostStatus, Error> {
        Ok(match self.lookup(server)? {
            None => HostStatus::Unknown,
            Some((pinned, _)) if pinned == fingerprint => HostStatus::Match,
            Some((pinned, line)) => HostStatus::Changed { pinned, line },
        })
    }

    /// Appends a pin for `server`.
    pub fn add(&self, server: &ServerAddr, fingerprint: &str) -> Result<(), Error> {
        if let Some(dir) = self.path.parent() {
            ensure_dir(dir)?;
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::local("cannot write", &self.path, e))?;
        let line = format!("{} {}\n", server.key(), fingerprint);
        f.write_all(line.as_bytes())
            .map_err(|e| Error::local("cannot write", &self.path, e))
    }
}

/// Asks a person whether to trust a server's key: gets the server (`host:port`) and the
/// fingerprint, says yes or no.
pub type AskHost = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// What to do with a server whose key is not pinned yet.
#[derive(Clone)]
pub enum UnknownHost {
    /// Refuse ([`Error::HostKeyUnknown`]): the safe default without a terminal.
    Refuse,
    /// Pin it (`--accept-new`).
    AcceptNew,
    /// Ask: the function gets the server key (`host:port`) and the fingerprint, and says
    /// whether to trust it. It runs on a blocking thread, so it may prompt on a terminal.
    Ask(AskHost),
}

impl std::fmt::Debug for UnknownHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnknownHost::Refuse => "Refuse",
            UnknownHost::AcceptNew => "AcceptNew",
            UnknownHost::Ask(_) => "Ask(..)",
        })
    }
}

/// How a connection decides to trust the server's host key.
#[derive(Debug, Clone)]
pub struct HostKeyPolicy {
    pub known_hosts: KnownHosts,
    pub unknown: UnknownHost,
    /// `--trust-fingerprint`: the key must have this fingerprint, pinned or not; an unknown
    /// server with it is pinned without asking.
    pub expected: Option<String>,
}

impl HostKeyPolicy {
    /// Decides about `fingerprint` presented by `server`, pinning it when that is allowed.
    /// A changed key is always refused.
    pub async fn verify(&self, server: &ServerAddr, fingerprint: &str) -> Result<(), Error> {
        let status = self.known_hosts.check(server, fingerprint)?;
        if let HostStatus::Changed { pinned, line } = status {
            return Err(Error::HostKeyChanged {
                server: server.key(),
                pinned,
                presented: fingerprint.to_owned(),
                file: self.known_hosts.path().to_owned(),
                line,
            });
        }
        if let Some(expected) = &self.expected
            && expected != fingerprint
        {
            return Err(Error::HostKeyMismatch {
                server: server.key(),
                expected: expected.clone(),
                presented: fingerprint.to_owned(),
            });
        }
        if status == HostStatus::Match {
            return Ok(());
        }
        let trusted = self.expected.is_some()
            || match &self.unknown {
                UnknownHost::AcceptNew => true,
                UnknownHost::Refuse => {
                    return Err(Error::HostKeyUnknown {
                        server: server.key(),
                        fingerprint: fingerprint.to_owned(),
                    });
                }
                UnknownHost::Ask(ask) => {
                    let (ask, key, fp) = (ask.clone(), server.key(), fingerprint.to_owned());
                    tokio::task::spawn_blocking(move || ask(&key, &fp))
                        .await
                        .unwrap_or(false)
                }
            };
        if !trusted {
            return Err(Error::HostKeyDeclined {
                server: server.key(),
                fingerprint: fingerprint.to_owned(),
            });
        }
        self.known_hosts.add(server, fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> ServerAddr {
        ServerAddr::parse(s).unwrap()
    }

    #[test]
    fn unknown_match_changed() {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts::new(dir.path().join("known_hosts"));
        assert_eq!(kh.check(&addr("a.example"), "SHA256:one").unwrap(), HostStatus::Unknown);
        kh.add(&addr("a.example"), "SHA256:one").unwrap();
        kh.add(&addr("b.example:9000"), "SHA256:two").unwrap();
        assert_eq!(
            kh.check(&addr("a.example:7447"), "SHA256:one").unwrap(),
            HostStatus::Match
        );
        assert_eq!(
            kh.check(&addr("b.example:9000"), "SHA256:two").unwrap(),
            HostStatus::Match
        );
        assert_eq!(
            kh.check(&addr("b.example:9000"), "SHA256:three").unwrap(),
            HostStatus::Changed {
                pinned: "SHA256:two".into(),
                line: 2
            }
        );
        // Another port is another server.
        assert_eq!(kh.check(&addr("b.example"), "SHA256:two").unwrap(), HostStatus::Unknown);
        assert_eq!(
            fs::read_to_string(kh.path()).unwrap(),
            "a.example:7447 SHA256:one\nb.example:9000 SHA256:two\n"
        );
    }

    #[test]
    fn comments_and_blank_lines_count_in_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, "# pins\n\nh:1 SHA256:x\n").unwrap();
        let kh = KnownHosts::new(&path);
        assert_eq!(
            kh.check(&addr("h:1"), "SHA256:y").unwrap(),
            HostStatus::Changed {
                pinned: "SHA256:x".into(),
                line: 3
            }
        );
    }

    fn policy(dir: &Path, unknown: UnknownHost, expected: Option<&str>) -> HostKeyPolicy {
        HostKeyPolicy {
            known_hosts: KnownHosts::new(dir.join("known_hosts")),
            unknown,
            expected: expected.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn policy_refuses_unknown_pins_new_and_always_refuses_changed() {
        let dir = tempfile::tempdir().unwrap();
        let h = addr("h:1");
        let err = policy(dir.path(), UnknownHost::Refuse, None)
            .verify(&h, "SHA256:a")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::HostKeyUnknown { .. }), "{err}");
        assert!(err.to_string().contains("SHA256:a"));
        let err = policy(dir.path(), UnknownHost::Ask(Arc::new(|_, _| false)), None)
            .verify(&h, "SHA256:a")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::HostKeyDeclined { .. }), "{err}");
        let err = policy(dir.path(), UnknownHost::Refuse, Some("SHA256:b"))
            .verify(&h, "SHA256:a")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::HostKeyMismatch { .. }), "{err}");
        policy(dir.path(), UnknownHost::Refuse, Some("SHA256:a"))
            .verify(&h, "SHA256:a")
            .await
            .unwrap();
        policy(dir.path(), UnknownHost::Refuse, None)
            .verify(&h, "SHA256:a")
            .await
            .unwrap();
        for unknown in [UnknownHost::AcceptNew, UnknownHost::Ask(Arc::new(|_, _| true))] {
            let err = policy(dir.path(), unknown, None)
                .verify(&h, "SHA256:c")
                .await
                .unwrap_err();
            assert!(matches!(err, Error::HostKeyChanged { line: 1, .. }), "{err}");
        }
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = asked.clone();
        let ask = UnknownHost::Ask(Arc::new(move |server, fp| {
            flag.store(
                server == "other:2" && fp == "SHA256:z",
                std::sync::atomic::Ordering::SeqCst,
            );
            true
        }));
        policy(dir.path(), ask, None)
            .verify(&addr("other:2"), "SHA256:z")
            .await
            .unwrap();
        assert!(asked.load(std::sync::atomic::Ordering::SeqCst));
        policy(dir.path(), UnknownHost::Refuse, None)
            .verify(&addr("other:2"), "SHA256:z")
            .await
            .unwrap();
    }
}
