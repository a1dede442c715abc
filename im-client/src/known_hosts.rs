//! Host-key pins, like SSH's `known_hosts`: one line per server,
//!
//! ```text
//! # comment
//! chat.example.org:7447 SHA256:hv6kM9uG46gppM1IcLXugU5pAcdLZPVtB4Hmgj/Cf3o
//! ```
//!
//! keyed by `host:port` as the user typed the host ([`ServerAddr::key`]). The value is the
//! key's fingerprint (SHA-256 of its SubjectPublicKeyInfo DER), which is all a pin needs.
//! A changed key is refused, and the error says which line to remove. The one exception is a
//! planned rotation (PROTOCOL.md §4.3): a new key that the pinned key endorsed, within the
//! endorsement's grace period, replaces the pin on its line without asking.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use im_proto::crypto::fingerprint;
use im_proto::handshake::Endorsement;

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

    /// Replaces the fingerprint on `line` (1-based), which must be `server`'s pin to `old`,
    /// with `new`; every other line stays as it was. Written to a temporary file and renamed,
    /// so a crash leaves the old file or the new one, never half of one.
    pub fn replace(&self, server: &ServerAddr, line: usize, old: &str, new: &str) -> Result<(), Error> {
        let text = self.read()?;
        let key = server.key();
        let mut out = String::with_capacity(text.len() + new.len());
        let mut replaced = false;
        for (i, l) in text.lines().enumerate() {
            let mut parts = l.split_whitespace();
            if i + 1 == line && parts.next() == Some(key.as_str()) && parts.next() == Some(old) {
                out.push_str(&format!("{key} {new}"));
                replaced = true;
            } else {
                out.push_str(l);
            }
            out.push('\n');
        }
        if !replaced {
            return Err(Error::local(
                "cannot update",
                &self.path,
                std::io::Error::other(format!("line {line} no longer pins {key} to {old}")),
            ));
        }
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(out.as_bytes())?;
            f.sync_all()?;
            if let Ok(meta) = fs::metadata(&self.path) {
                fs::set_permissions(&tmp, meta.permissions())?;
            }
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::local("cannot write", &self.path, e)
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

/// Whether a presented key that differs from the pin is a planned rotation to follow
/// (PROTOCOL.md §4.3): the endorsement's old key is the pinned one, its signature over the
/// presented key verifies, and its grace period has not ended at `now_ms`. Anything else,
/// including an endorsement by a key that was never pinned here, is a changed key.
pub fn endorsed_by_pin(pinned: &str, presented: &[u8], endorsement: Option<&Endorsement>, now_ms: u64) -> bool {
    let Some(e) = endorsement else {
        return false;
    };
    fingerprint(&e.old_key) == pinned && now_ms < e.not_after_ms && e.verify(presented).is_ok()
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
    /// Decides about the key (SubjectPublicKeyInfo DER) a full handshake presented, with the
    /// endorsement that came with it. A changed key that the pinned key endorsed replaces
    /// the pin (with a notice in the log); everything else is [`verify`](Self::verify).
    /// Returns the fingerprint of a pin this replaced.
    pub async fn verify_key(
        &self,
        server: &ServerAddr,
        host_key: &[u8],
        endorsement: Option<&Endorsement>,
    ) -> Result<Option<String>, Error> {
        let presented = fingerprint(host_key);
        if let HostStatus::Changed { pinned, line } = self.known_hosts.check(server, &presented)?
            && self.expected.as_ref().is_none_or(|e| *e == presented)
        {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if endorsed_by_pin(&pinned, host_key, endorsement, now_ms) {
                self.known_hosts.replace(server, line, &pinned, &presented)?;
                tracing::warn!(
                    server = %server.key(),
                    "the server rotated its host key: {pinned} endorsed {presented}; {} updated",
                    self.known_hosts.path().display()
                );
                return Ok(Some(pinned));
            }
        }
        self.verify(server, &presented).await.map(|()| None)
    }

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

    #[test]
    fn replace_rewrites_only_the_pinned_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, "# pins\nh:1 SHA256:x\nh:2 SHA256:x\n").unwrap();
        let kh = KnownHosts::new(&path);
        kh.replace(&addr("h:2"), 3, "SHA256:x", "SHA256:y").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# pins\nh:1 SHA256:x\nh:2 SHA256:y\n"
        );
        // A line that no longer says what it said when it was read is left alone.
        assert!(kh.replace(&addr("h:2"), 3, "SHA256:x", "SHA256:z").is_err());
        assert!(kh.replace(&addr("h:2"), 2, "SHA256:x", "SHA256:z").is_err());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# pins\nh:1 SHA256:x\nh:2 SHA256:y\n"
        );
    }

    /// Two fixed RSA keys, so tests never generate one (im-proto's test keys).
    fn keys() -> (im_proto::hostkey::RsaSigner, im_proto::hostkey::RsaSigner) {
        let load = |pem| im_proto::hostkey::RsaSigner::from_pkcs8_pem(pem).unwrap();
        (
            load(include_str!("../../im-proto/tests/data/host_key.pem")),
            load(include_str!("../../im-proto/tests/data/other_host_key.pem")),
        )
    }

    #[test]
    fn a_rotation_is_followed_only_when_the_pinned_key_endorsed_it_in_time() {
        let (old, new) = keys();
        let mut rng = rand::rng();
        let pinned = old.fingerprint();
        let e = Endorsement::sign(&old, new.public_der(), 2_000, &mut rng);
        assert!(endorsed_by_pin(&pinned, new.public_der(), Some(&e), 1_999));
        // No endorsement; the period is over; another key is presented; another key is pinned.
        assert!(!endorsed_by_pin(&pinned, new.public_der(), None, 1_999));
        assert!(!endorsed_by_pin(&pinned, new.public_der(), Some(&e), 2_000));
        assert!(!endorsed_by_pin(&pinned, old.public_der(), Some(&e), 1_999));
        assert!(!endorsed_by_pin("SHA256:other", new.public_der(), Some(&e), 1_999));
        // An endorsement by the new key itself, claiming to be the old one: bad signature.
        let forged = Endorsement {
            old_key: old.public_der().to_vec(),
            ..Endorsement::sign(&new, new.public_der(), 2_000, &mut rng)
        };
        assert!(!endorsed_by_pin(&pinned, new.public_der(), Some(&forged), 1_999));
    }

    #[tokio::test]
    async fn verify_key_repins_an_endorsed_key_and_refuses_others() {
        let (old, new) = keys();
        let dir = tempfile::tempdir().unwrap();
        let h = addr("h:1");
        let p = policy(dir.path(), UnknownHost::Refuse, None);
        p.known_hosts.add(&addr("other:1"), &old.fingerprint()).unwrap();
        p.known_hosts.add(&h, &old.fingerprint()).unwrap();
        let by_new = Endorsement::sign(&new, old.public_der(), u64::MAX, &mut rand::rng());
        // Not endorsed by the pinned key: a changed key, and the file is untouched.
        let err = p.verify_key(&h, new.public_der(), Some(&by_new)).await.unwrap_err();
        assert!(matches!(err, Error::HostKeyChanged { line: 2, .. }), "{err}");
        let expired = Endorsement::sign(&old, new.public_der(), 1, &mut rand::rng());
        let err = p.verify_key(&h, new.public_der(), Some(&expired)).await.unwrap_err();
        assert!(matches!(err, Error::HostKeyChanged { .. }), "{err}");
        // --trust-fingerprint naming another key wins over the endorsement.
        let e = Endorsement::sign(&old, new.public_der(), u64::MAX, &mut rand::rng());
        let strict = policy(dir.path(), UnknownHost::Refuse, Some("SHA256:something-else"));
        assert!(strict.verify_key(&h, new.public_der(), Some(&e)).await.is_err());
        // Endorsed by the pin, in time: re-pinned, no question asked.
        assert_eq!(
            p.verify_key(&h, new.public_der(), Some(&e)).await.unwrap(),
            Some(old.fingerprint())
        );
        assert_eq!(p.known_hosts.check(&h, &new.fingerprint()).unwrap(), HostStatus::Match);
        assert_eq!(
            p.known_hosts.check(&addr("other:1"), &old.fingerprint()).unwrap(),
            HostStatus::Match
        );
        // From now on the new key simply matches; the old one is a changed key.
        assert_eq!(p.verify_key(&h, new.public_der(), None).await.unwrap(), None);
        assert!(p.verify_key(&h, old.public_der(), None).await.is_err());
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
