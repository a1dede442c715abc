//! The data directory: created on first start (mode 0700) with the RSA host key (0600) and the
//! two stores; reused on later starts. A damaged or foreign file is an error that names it,
//! never something to overwrite.
//!
//! ```text
//! <data-dir>/
//!   host_key.pem     RSA-3072 host key, PKCS#8 PEM, 0600
//!   accounts.db      SQLite (WAL): users, devices, tickets, rooms, contacts, blocks
//!   messages/        the message log (fjall)
//!   config.toml      optional
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    fn private_files_are_0600_and_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("k");
        write_private(&p, b"one").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_private(&p, b"two").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"one");
    }
}
