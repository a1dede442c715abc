//! The client's home: everything a client keeps between runs.
//!
//! ```text
//! config.toml            default server and user (TOML)
//! known_hosts            host-key pins (see known_hosts)
//! user_key.pem           the user's RSA login key, PKCS#8 PEM, mode 0600
//! device_id              this device's id, chosen at random on first use
//! tickets/SERVER@USER    the newest resumption ticket per server and user, mode 0600
//! ```
//!
//! `--home DIR` or `IM_HOME` puts all of it in DIR. Without them the platform's folders are
//! used (the `directories` crate): the config in the config folder, the rest in the data
//! folder. Files holding secrets are written with mode 0600 (via a temporary file and a
//! rename, so a crash never leaves half a file), folders with 0700.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use im_proto::UserName;
use im_proto::handshake::{ResumeTicket, TicketId};
use im_proto::hostkey::RsaSigner;
use im_proto::limits::{MAX_DEVICE_NAME, TICKET_ID_LEN};
use im_proto::msg::{DeviceId, TICKET_SECRET_LEN, Timestamp};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::known_hosts::KnownHosts;
use crate::server_addr::ServerAddr;

/// The environment variable that names the home folder.
pub const HOME_ENV: &str = "IM_HOME";

/// The persistent defaults in `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Default server, `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Default user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A resumption ticket as stored: id, secret (zeroized on drop) and expiry.
#[derive(Clone)]
pub struct StoredTicket {
    pub id: TicketId,
    pub secret: Zeroizing<[u8; TICKET_SECRET_LEN]>,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for StoredTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTicket")
            .field("id", &hex::encode(&self.id[..4]))
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl StoredTicket {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    pub fn to_resume(&self) -> ResumeTicket {
        ResumeTicket {
            id: self.id,
            secret: self.secret.clone(),
        }
    }

    fn encode(&self) -> Zeroizing<String> {
        let secret = Zeroizing::new(hex::encode(&self.secret[..]));
        Zeroizing::new(format!(
            "id = {}\nsecret = {}\nexpires_at = {}\n",
            hex::encode(self.id),
            secret.as_str(),
            self.expires_at.0
        ))
    }

    fn decode(text: &str) -> Option<StoredTicket> {
        let (mut id, mut secret, mut expires) = (None, None, None);
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k.trim() {
                "id" => {
                    let mut b = [0u8; TICKET_ID_LEN];
                    hex::decode_to_slice(v, &mut b).ok()?;
                    id = Some(b);
                }
                "secret" => {
                    let mut b = Zeroizing::new([0u8; TICKET_SECRET_LEN]);
                    hex::decode_to_slice(v, &mut b[..]).ok()?;
                    secret = Some(b);
                }
                "expires_at" => expires = Some(Timestamp(v.parse().ok()?)),
                _ => {}
            }
        }
        Some(StoredTicket {
            id: id?,
            secret: secret?,
            expires_at: expires?,
        })
    }
}

/// The folders a client keeps its state in.
#[derive(Debug, Clone)]
pub struct Home {
    config_dir: PathBuf,
    data_dir: PathBuf,
}

impl Home {
    /// Everything in one folder (`--home DIR`, `IM_HOME`).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Home {
            config_dir: dir.clone(),
            data_dir: dir,
        }
    }

    /// `explicit` if given, else `IM_HOME`, else the platform's folders.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self, Error> {
        if let Some(dir) = explicit.or_else(|| std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
        {
            return Ok(Home::at(dir));
        }
        let dirs = directories::ProjectDirs::from("", "", "im").ok_or_else(|| {
            Error::Usage(format!(
                "cannot find a home folder for the client: set {HOME_ENV} or use --home DIR"
            ))
        })?;
        Ok(Home {
            config_dir: dirs.config_dir().to_owned(),
            data_dir: dirs.data_dir().to_owned(),
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.data_dir.join("known_hosts")
    }

    pub fn known_hosts(&self) -> KnownHosts {
        KnownHosts::new(self.known_hosts_path())
    }

    /// Where `keygen` writes the user key, and where logins look for one.
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("user_key.pem")
    }

    pub fn device_id_path(&self) -> PathBuf {
        self.data_dir.join("device_id")
    }

    pub fn ticket_path(&self, server: &ServerAddr, user: &UserName) -> PathBuf {
        let name: String = format!("{}@{}", server.key(), user)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.data_dir.join("tickets").join(name)
    }

    pub fn load_config(&self) -> Result<Config, Error> {
        let path = self.config_path();
        match fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Error::BadFile {
                path,
                detail: e.message().to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::local("cannot read", path, e)),
        }
    }

    pub fn save_config(&self, config: &Config) -> Result<(), Error> {
        let path = self.config_path();
        let text = toml::to_string(config).map_err(|e| Error::BadFile {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_file(&path, text.as_bytes(), false)
    }

    /// This device's id: read from the home, or chosen at random and saved on first use.
    pub fn device_id(&self) -> Result<DeviceId, Error> {
        let path = self.device_id_path();
        match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(DeviceId::new)
                .ok_or_else(|| Error::BadFile {
                    path,
                    detail: "not a device id (a number from 1 to 2^53-1)".into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = DeviceId::random();
                write_file(&path, format!("{id}\n").as_bytes(), true)?;
                Ok(id)
            }
            Err(e) => Err(Error::local("cannot read", path, e)),
        }
    }

    pub fn load_ticket(&self, server: &ServerAddr, user: &UserName) -> Result<Option<StoredTicket>, Error> {
        let path = self.ticket_path(server, user);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                // A damaged ticket is not worth failing for: the login falls back to a full one.
                Ok(StoredTicket::decode(&text))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::local("cannot read", path, e)),
        }
    }

    pub fn save_ticket(&self, server: &ServerAddr, user: &UserName, ticket: &StoredTicket) -> Result<(), Error> {
        write_file(&self.ticket_path(server, user), ticket.encode().as_bytes(), true)
    }

    /// Deletes the stored ticket; `Ok(false)` when there was none.
    pub fn delete_ticket(&self, server: &ServerAddr, user: &UserName) -> Result<bool, Error> {
        let path = self.ticket_path(server, user);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::local("cannot delete", path, e)),
        }
    }
}

/// Reads a PKCS#8 PEM RSA private key.
pub fn load_key(path: &Path) -> Result<RsaSigner, Error> {
    let pem = Zeroizing::new(fs::read_to_string(path).map_err(|e| Error::local("cannot read key file", path, e))?);
    RsaSigner::from_pkcs8_pem(&pem).map_err(|e| Error::BadFile {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Writes a private key with mode 0600; refuses to replace an existing file.
pub fn save_key(path: &Path, key: &RsaSigner) -> Result<(), Error> {
    let pem = key.to_pkcs8_pem().map_err(|e| Error::BadFile {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ensure_dir(dir)?;
    }
    let mut f = open_private(path, true).map_err(|e| Error::local("cannot create key file", path, e))?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::local("cannot write key file", path, e))
}

/// A default device name: "im-client on HOST".
pub fn default_device_name() -> String {
    let host = fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into());
    let mut name: String = format!("im-client on {host}")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    while name.len() > MAX_DEVICE_NAME {
        name.pop();
    }
    name
}

/// Creates a folder (and its parents) with mode 0700 if it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), Error> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| Error::local("cannot create folder", dir, e))
}

fn open_private(path: &Path, create_new: bool) -> std::io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.write(true);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Replaces `path` atomically: a temporary file in the same folder, then a rename. Private
/// files get mode 0600 from the start, so a secret is never readable by others.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = if private {
            open_private(&tmp, false)?
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?
        };
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::local("cannot write", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn device_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let id = home.device_id().unwrap();
        assert_eq!(home.device_id().unwrap(), id);
        assert_eq!(Home::at(dir.path().join("home")).device_id().unwrap(), id);
        #[cfg(unix)]
        assert_eq!(mode(&home.device_id_path()), 0o600);
        fs::write(home.device_id_path(), "0\n").unwrap();
        assert!(matches!(home.device_id(), Err(Error::BadFile { .. })));
    }

    #[test]
    fn tickets_round_trip_privately_per_server_and_user() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let server = ServerAddr::parse("[::1]:7000").unwrap();
        let alice = UserName::parse("alice").unwrap();
        let bob = UserName::parse("bob").unwrap();
        assert!(home.load_ticket(&server, &alice).unwrap().is_none());
        let t = StoredTicket {
            id: [7; 16],
            secret: Zeroizing::new([9; 32]),
            expires_at: Timestamp(1_800_000_000_000),
        };
        home.save_ticket(&server, &alice, &t).unwrap();
        let path = home.ticket_path(&server, &alice);
        assert_eq!(path.file_name().unwrap(), "___1__7000@alice");
        #[cfg(unix)]
        {
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir.path().join("tickets")), 0o700);
        }
        let back = home.load_ticket(&server, &alice).unwrap().unwrap();
        assert_eq!(
            (back.id, *back.secret, back.expires_at),
            (t.id, *t.secret, t.expires_at)
        );
        assert!(home.load_ticket(&server, &bob).unwrap().is_none());
        assert!(back.is_expired(Timestamp(1_800_000_000_000)));
        assert!(!back.is_expired(Timestamp(1_799_999_999_999)));
        let debug = format!("{back:?}");
        assert!(debug.contains("redacted") && !debug.contains("0909"), "{debug}");
        assert!(home.delete_ticket(&server, &alice).unwrap());
        assert!(!home.delete_ticket(&server, &alice).unwrap());
        assert!(home.load_ticket(&server, &alice).unwrap().is_none());
    }

    #[test]
    fn config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        assert_eq!(home.load_config().unwrap(), Config::default());
        let c = Config {
            server: Some("chat.example.org:7447".into()),
            user: Some("alice".into()),
        };
        home.save_config(&c).unwrap();
        assert_eq!(home.load_config().unwrap(), c);
        assert_eq!(
            fs::read_to_string(home.config_path()).unwrap(),
            "server = \"chat.example.org:7447\"\nuser = \"alice\"\n"
        );
        fs::write(home.config_path(), "server = 3\n").unwrap();
        assert!(matches!(home.load_config(), Err(Error::BadFile { .. })));
    }

    #[test]
    fn keys_are_written_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = RsaSigner::from_pkcs8_pem(include_str!("../../im-proto/tests/data/user_key.pem")).unwrap();
        let path = dir.path().join("sub").join("k.pem");
        save_key(&path, &key).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load_key(&path).unwrap().public_der(), key.public_der());
        assert!(matches!(save_key(&path, &key), Err(Error::Local { .. })));
        assert!(matches!(
            load_key(&dir.path().join("none.pem")),
            Err(Error::Local { .. })
        ));
        fs::write(dir.path().join("bad.pem"), "junk").unwrap();
        assert!(matches!(
            load_key(&dir.path().join("bad.pem")),
            Err(Error::BadFile { .. })
        ));
    }

    #[test]
    fn device_name_fits() {
        let n = default_device_name();
        assert!(!n.is_empty() && n.len() <= MAX_DEVICE_NAME);
    }
}
