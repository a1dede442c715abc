//! The data directory: created on first start (mode 0700) with the RSA host key (0600) and the
//! two stores; reused on later starts. A damaged or foreign file is an error that names it,
//! never something to overwrite.
//!
//! ```text
//! <data-dir>/
//!   host_key.pem          RSA-3072 host key, PKCS#8 PEM, 0600
//!   accounts.db           SQLite (WAL): users, devices, tickets, rooms, contacts, blocks
//!   messages/             the message log (fjall)
//!   config.toml           optional
//!   host_key.endorsement  after `rotate-host-key`: the old key's endorsement of the current one
//!   host_key.old.pem      after `rotate-host-key`: the retired key, 0600, no longer used
//!   control.sock          while running: the local control socket (0600)
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use im_proto::handshake::Endorsement;
use im_proto::hostkey::{HOST_KEY_BITS, RsaSigner};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} exists but is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "host key {path} is unreadable or damaged ({detail}); restore it from a backup, or move it away to create a new key (clients will then refuse the changed key)"
    )]
    BadHostKey { path: PathBuf, detail: String },
    #[error("no data directory given and the platform has no default one; use --data-dir")]
    NoDefault,
    #[error("{path}: {detail}")]
    BadEndorsement { path: PathBuf, detail: String },
    #[error(
        "the last rotation's grace period lasts until {until}: rotating again now would strand clients that have not reconnected since (they trust only the key before); wait, or use --force"
    )]
    RotationInProgress { until: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The platform's data directory for the server (e.g. `~/.local/share/im-server`).
    pub fn default_path() -> Result<PathBuf, DataDirError> {
        directories::ProjectDirs::from("", "", "im-server")
            .map(|d| d.data_dir().to_owned())
            .ok_or(DataDirError::NoDefault)
    }

    /// Opens the directory, creating it (0700) if missing.
    pub fn open_or_create(root: &Path) -> Result<DataDir, DataDirError> {
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => return Err(DataDirError::NotADirectory { path: root.to_owned() }),
            Ok(m) => {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %root.display(), "data directory is accessible to other users; tightening to 0700");
                    fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io(root))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(io(root))?;
            }
            Err(e) => return Err(io(root)(e)),
        }
        Ok(DataDir { root: root.to_owned() })
    }

    /// Opens an existing directory without creating anything (admin commands).
    pub fn open_existing(root: &Path) -> Result<DataDir, DataDirError> {
        let m = fs::metadata(root).map_err(io(root))?;
        if !m.is_dir() {
            return Err(DataDirError::NotADirectory { path: root.to_owned() });
        }
        Ok(DataDir { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn host_key_path(&self) -> PathBuf {
        self.root.join("host_key.pem")
    }

    pub fn accounts_path(&self) -> PathBuf {
        self.root.join("accounts.db")
    }

    pub fn messages_path(&self) -> PathBuf {
        self.root.join("messages")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn endorsement_path(&self) -> PathBuf {
        self.root.join("host_key.endorsement")
    }

    pub fn old_host_key_path(&self) -> PathBuf {
        self.root.join("host_key.old.pem")
    }

    pub fn control_socket_path(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// The endorsement of `current` left by [`rotate_host_key`](Self::rotate_host_key), if
    /// there is one and it is for this key. One for another key (a key restored from an
    /// older backup, say) is ignored with a warning: clients would refuse it anyway.
    pub fn endorsement(&self, current: &RsaSigner) -> Result<Option<Endorsement>, DataDirError> {
        let path = self.endorsement_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let e = Endorsement::decode(&bytes).map_err(|e| DataDirError::BadEndorsement {
            path: path.clone(),
            detail: format!("damaged ({e}); remove it to stop endorsing the host key"),
        })?;
        if e.verify(current.public_der()).is_err() {
            tracing::warn!(path = %path.display(), "the endorsement is not for the current host key; ignoring it");
            return Ok(None);
        }
        Ok(Some(e))
    }

    /// Replaces the host key with a new RSA-3072 key that the current key endorses until
    /// `not_after_ms` (PROTOCOL.md §4.3). The current key becomes `host_key.old.pem`. Refuses
    /// while an earlier rotation's grace period lasts, unless `force`: clients follow one
    /// rotation at a time. The running server keeps its key until it restarts.
    pub fn rotate_host_key(&self, now_ms: u64, not_after_ms: u64, force: bool) -> Result<Rotation, DataDirError> {
        let old = self.existing_host_key()?;
        if let Some(e) = self.endorsement(&old)?
            && now_ms < e.not_after_ms
            && !force
        {
            return Err(DataDirError::RotationInProgress {
                until: crate::state::format_ms(e.not_after_ms),
            });
        }
        tracing::info!("generating a new RSA-{HOST_KEY_BITS} host key");
        let bad = |detail: String| DataDirError::BadHostKey {
            path: self.host_key_path(),
            detail,
        };
        let new = RsaSigner::generate(&mut rand::rng(), HOST_KEY_BITS).map_err(|e| bad(e.to_string()))?;
        let pem = new.to_pkcs8_pem().map_err(|e| bad(e.to_string()))?;
        let endorsement = Endorsement::sign(&old, new.public_der(), not_after_ms, &mut rand::rng());
        let mut bytes = Vec::new();
        endorsement.encode(&mut bytes);
        // Every step leaves a usable directory: until the last rename the old key is the host
        // key (and the new endorsement, not being for it, is ignored).
        let staged_key = self.root.join("host_key.new.pem");
        let staged_endorsement = self.root.join("host_key.endorsement.new");
        for p in [&staged_key, &staged_endorsement] {
            remove_if_present(p)?;
        }
        write_private(&staged_key, pem.as_bytes())?;
        write_private(&staged_endorsement, &bytes)?;
        let old_path = self.old_host_key_path();
        remove_if_present(&old_path)?;
        fs::hard_link(self.host_key_path(), &old_path).map_err(io(&old_path))?;
        fs::rename(&staged_endorsement, self.endorsement_path()).map_err(io(&staged_endorsement))?;
        fs::rename(&staged_key, self.host_key_path()).map_err(io(&staged_key))?;
        sync_dir(&self.root)?;
        Ok(Rotation {
            old: old.fingerprint(),
            new: new.fingerprint(),
            not_after_ms,
        })
    }

    /// Loads the host key, generating and saving a new RSA-3072 key on first start.
    pub fn host_key(&self) -> Result<RsaSigner, DataDirError> {
        let path = self.host_key_path();
        match fs::read_to_string(&path) {
            Ok(pem) => RsaSigner::from_pkcs8_pem(&pem).map_err(|e| DataDirError::BadHostKey {
                path,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!("generating a new RSA-{HOST_KEY_BITS} host key");
                let key =
                    RsaSigner::generate(&mut rand::rng(), HOST_KEY_BITS).map_err(|e| DataDirError::BadHostKey {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?;
                let pem = key.to_pkcs8_pem().map_err(|e| DataDirError::BadHostKey {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
                write_private(&path, pem.as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(DataDirError::BadHostKey {
                path,
                detail: e.to_string(),
            }),
        }
    }

    /// Loads the host key without ever creating one.
    pub fn existing_host_key(&self) -> Result<RsaSigner, DataDirError> {
        let path = self.host_key_path();
        let pem = fs::read_to_string(&path).map_err(|e| DataDirError::BadHostKey {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        RsaSigner::from_pkcs8_pem(&pem).map_err(|e| DataDirError::BadHostKey {
            path,
            detail: e.to_string(),
        })
    }
}

/// What [`DataDir::rotate_host_key`] did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub old: String,
    pub new: String,
    pub not_after_ms: u64,
}

fn remove_if_present(path: &Path) -> Result<(), DataDirError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Makes the directory's entries (renames, new files) durable.
pub fn sync_dir(path: &Path) -> Result<(), DataDirError> {
    fs::File::open(path).and_then(|d| d.sync_all()).map_err(io(path))
}

/// Writes a new file readable by its owner only. `create_new`: a key is never overwritten.
/// The file is written under a temporary name and renamed, so a crash never leaves a
/// half-written key behind.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    fs::hard_link(&tmp, path).map_err(io(path))?;
    fs::remove_file(&tmp).map_err(io(&tmp))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_directory_and_refuses_a_damaged_key() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dir = DataDir::open_or_create(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
        fs::write(dir.host_key_path(), "not a key").unwrap();
        let err = dir.host_key().unwrap_err().to_string();
        assert!(err.contains("host_key.pem"), "{err}");
        assert_eq!(fs::read_to_string(dir.host_key_path()).unwrap(), "not a key");
    }

    #[test]
    fn rotation_endorses_the_new_key_keeps_the_old_and_waits_for_its_grace_period() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open_or_create(tmp.path()).unwrap();
        assert!(dir.rotate_host_key(0, 10, false).is_err(), "no key to rotate yet");
        let first = dir.host_key().unwrap();
        assert!(dir.endorsement(&first).unwrap().is_none());
        let r = dir.rotate_host_key(1_000, 5_000, false).unwrap();
        let current = dir.existing_host_key().unwrap();
        assert_eq!(
            (r.old.as_str(), r.new.as_str()),
            (first.fingerprint().as_str(), current.fingerprint().as_str())
        );
        assert_ne!(r.old, r.new);
        let e = dir.endorsement(&current).unwrap().unwrap();
        assert_eq!((e.old_key.as_slice(), e.not_after_ms), (first.public_der(), 5_000));
        e.verify(current.public_der()).unwrap();
        let old = fs::read_to_string(dir.old_host_key_path()).unwrap();
        assert_eq!(
            RsaSigner::from_pkcs8_pem(&old).unwrap().fingerprint(),
            first.fingerprint()
        );
        for p in [dir.host_key_path(), dir.old_host_key_path(), dir.endorsement_path()] {
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                p.display()
            );
        }
        // Not while the grace period lasts (unless forced), and an endorsement is only ever
        // for the key it names.
        let err = dir.rotate_host_key(4_999, 9_000, false).unwrap_err();
        assert!(matches!(err, DataDirError::RotationInProgress { .. }), "{err}");
        assert!(dir.endorsement(&first).unwrap().is_none());
        let again = dir.rotate_host_key(5_000, 9_000, false).unwrap();
        assert_eq!(again.old, current.fingerprint());
        assert!(!tmp.path().join("host_key.new.pem").exists());
    }

    #[test]
    fn private_files_are_0600_and_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("k");
        write_private(&p, b"one").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_private(&p, b"two").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"one");
    }
}
