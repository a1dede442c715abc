//! Backups and restores of the data directory, while the server runs or not.
//!
//! **Consistency.** A backup is two snapshots, taken in this order: the accounts database
//! (SQLite's online backup API, one transaction's view), then the message log (a fjall
//! snapshot, see `store/messages/backup.rs`). Neither stops the server. The order matters:
//! every id the accounts database can mention (a device's cursor, a member's join point) was
//! committed to the log before the accounts snapshot, so the log snapshot, taken after, holds
//! it. Restored, no cursor points past the log's last id, and new ids continue above it, so
//! no device skips a message. Every message acknowledged before the backup began is in it.
//!
//! A backup is a directory like a data directory, plus `backup.toml` (what it holds):
//!
//! ```text
//! <backup>/
//!   backup.toml           format, server version, time, last message id, message count
//!   accounts.db           SQLite, 0600
//!   messages/             the message log (fjall), 0700
//!   host_key.pem          0600; with host_key.endorsement and host_key.old.pem if present
//!   config.toml           if present
//! ```
//!
//! A running server writes its backup into `<data-dir>/backup.partial-<ms>/` (a sandboxed
//! service may write nowhere else), and `im-server backup` moves it to its destination.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datadir::{DataDir, DataDirError, sync_dir};
use crate::state::{Shared, format_ms, now_ms};
use crate::store::accounts::{Accounts, AccountsError};
use crate::store::messages::{MessageLog, StoreError};

/// The manifest's name inside a backup.
pub const MANIFEST: &str = "backup.toml";
/// The backup layout this code writes and restores.
pub const FORMAT: u32 = 1;
/// Prefix of the staging directories a running server writes backups into.
pub const STAGING_PREFIX: &str = "backup.partial-";

const ACCOUNTS: &str = "accounts.db";
const MESSAGES: &str = "messages";
const HOST_KEY: &str = "host_key.pem";
/// Copied when present; private (0600) like the host key, except the config.
const OPTIONAL: &[&str] = &["host_key.endorsement", "host_key.old.pem", "config.toml"];
/// Files that belong to the accounts database or the host key and go when they are replaced.
const COMPANIONS: &[&str] = &[
    "accounts.db-wal",
    "accounts.db-shm",
    "host_key.endorsement",
    "host_key.old.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error(transparent)]
    Messages(#[from] StoreError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("{} already exists; choose another destination, or use --force to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("{} is not empty and not a backup; refusing to replace it", path.display())]
    NotReplaceable { path: PathBuf },
    #[error("{} is not an im-server backup: {detail}", path.display())]
    NotABackup { path: PathBuf, detail: String },
    #[error("the server is running on {}: {detail}", path.display())]
    Running { path: PathBuf, detail: String },
    #[error(
        "{} already holds {}; use --force to replace them (they are moved aside, not deleted)",
        dir.display(),
        files.join(", ")
    )]
    WouldOverwrite { dir: PathBuf, files: Vec<String> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a backup holds: `backup.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub server_version: String,
    /// When the snapshots were taken: milliseconds since the Unix epoch, and readable.
    pub created_ms: u64,
    pub created: String,
    /// The highest message id in the backup, and how many messages it holds.
    pub last_message_id: u64,
    pub messages: u64,
    /// The top-level entries, besides the manifest.
    pub files: Vec<String>,
}

/// Writes a complete backup into `dest`, which must not exist. `copy_accounts` copies the
/// accounts database to the path it is given; it runs first (see the module doc).
pub fn write(
    dir: &DataDir,
    dest: &Path,
    copy_accounts: impl FnOnce(&Path) -> Result<(), AccountsError>,
    log: &MessageLog,
) -> Result<Manifest, BackupError> {
    fs::DirBuilder::new().mode(0o700).create(dest).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::Exists { path: dest.to_owned() }
        } else {
            io(dest)(e)
        }
    })?;
    let written = write_into(dir, dest, copy_accounts, log);
    if written.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    written
}

fn write_into(
    dir: &DataDir,
    dest: &Path,
    copy_accounts: impl FnOnce(&Path) -> Result<(), AccountsError>,
    log: &MessageLog,
) -> Result<Manifest, BackupError> {
    let created_ms = now_ms();
    copy_accounts(&dest.join(ACCOUNTS))?;
    let copied = log.backup_to(&dest.join(MESSAGES))?;
    let mut files = vec![ACCOUNTS.to_owned(), MESSAGES.to_owned()];
    copy_file(&dir.host_key_path(), &dest.join(HOST_KEY))?;
    files.push(HOST_KEY.to_owned());
    for name in OPTIONAL {
        let src = dir.root().join(name);
        if src.exists() {
            copy_file(&src, &dest.join(name))?;
            files.push((*name).to_owned());
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_ms,
        created: format!("{} UTC", format_ms(created_ms)),
        last_message_id: copied.last_id,
        messages: copied.messages,
        files,
    };
    let text = toml::to_string(&manifest).map_err(|e| BackupError::NotABackup {
        path: dest.to_owned(),
        detail: e.to_string(),
    })?;
    let path = dest.join(MANIFEST);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&path))?;
    sync_dir(dest)?;
    Ok(manifest)
}

/// Inside a running server: writes a backup into a new staging directory in the data
/// directory and returns its path. Earlier staging directories (of a backup command that
/// died before it moved them) are removed first.
pub fn stage(shared: &Shared, dir: &DataDir) -> Result<(PathBuf, Manifest), BackupError> {
    remove_stale_staging(dir);
    let staging = dir.root().join(format!("{STAGING_PREFIX}{}", now_ms()));
    let accounts = shared.accounts.clone();
    let manifest = write(dir, &staging, |p| accounts.backup_to(p), &shared.log)?;
    Ok((staging, manifest))
}

fn remove_stale_staging(dir: &DataDir) {
    let Ok(entries) = fs::read_dir(dir.root()) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Without a running server: opens the log (which also proves no server holds it) and
/// backs up straight from the files, reading the accounts database without changing it.
pub fn offline(dir: &DataDir, dest: &Path) -> Result<Manifest, BackupError> {
    let log = open_log_unless_running(dir)?;
    let manifest = write(dir, dest, |p| Accounts::backup_file(&dir.accounts_path(), p), &log);
    log.close()?;
    manifest
}

fn open_log_unless_running(dir: &DataDir) -> Result<MessageLog, BackupError> {
    match MessageLog::open(&dir.messages_path()) {
        Err(StoreError::Locked { .. }) => Err(BackupError::Running {
            path: dir.root().to_owned(),
            detail: "its message log is locked, but its control socket does not answer".into(),
        }),
        r => Ok(r?),
    }
}

/// Before writing a backup to `dest`: refuses an existing destination unless `force`, and
/// even then anything but an empty directory or an earlier backup.
pub fn check_destination(dest: &Path, force: bool) -> Result<(), BackupError> {
    let Ok(mut entries) = fs::read_dir(dest) else {
        return if dest.exists() {
            Err(BackupError::Exists { path: dest.to_owned() })
        } else {
            Ok(())
        };
    };
    if !force {
        return Err(BackupError::Exists { path: dest.to_owned() });
    }
    if entries.next().is_some() && !dest.join(MANIFEST).is_file() {
        return Err(BackupError::NotReplaceable { path: dest.to_owned() });
    }
    Ok(())
}

/// Moves a finished backup from `staged` to `dest` (checked by [`check_destination`]),
/// replacing what is there. A rename when both are on one file system; else a copy, made
/// complete under a temporary name before it takes the final one.
pub fn place(staged: &Path, dest: &Path) -> Result<(), BackupError> {
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(io(dest))?;
    }
    match fs::rename(staged, dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let partial = sibling(dest, ".partial");
            let _ = fs::remove_dir_all(&partial);
            copy_dir(staged, &partial)?;
            fs::rename(&partial, dest).map_err(io(dest))?;
            fs::remove_dir_all(staged).map_err(io(staged))?;
        }
        Err(e) => return Err(io(dest)(e)),
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// `dest` with `suffix` appended to its file name.
pub fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    dest.with_file_name(name)
}

/// Reads and checks a backup's manifest.
pub fn read_manifest(src: &Path) -> Result<Manifest, BackupError> {
    let path = src.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(|e| BackupError::NotABackup {
        path: src.to_owned(),
        detail: format!("cannot read {MANIFEST}: {e}"),
    })?;
    let m: Manifest = toml::from_str(&text).map_err(|e| BackupError::NotABackup {
        path: src.to_owned(),
        detail: format!("{MANIFEST}: {e}"),
    })?;
    if m.format != FORMAT {
        return Err(BackupError::NotABackup {
            path: src.to_owned(),
            detail: format!("backup format {} (this server restores format {FORMAT})", m.format),
        });
    }
    Ok(m)
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub users: u64,
    pub rooms: u64,
    /// The files put in place.
    pub files: Vec<String>,
    /// Where the files the restore replaced were moved, if there were any.
    pub replaced: Option<PathBuf>,
}

/// Puts the backup in `src` into the data directory `root` (created if missing), with the
/// server stopped: `running` says whether a control socket answered there, and a locked
/// message log also counts as running. Without `force` it refuses to replace anything; with
/// it, replaced files are moved into `<root>/replaced-<ms>/`. The backup is copied into
/// `<root>/restore.partial/` and checked (the log opens and matches the manifest, the
/// accounts database opens) before anything in `root` is touched.
pub fn restore(src: &Path, root: &Path, force: bool, running: bool) -> Result<Restored, BackupError> {
    let manifest = read_manifest(src)?;
    for required in [ACCOUNTS, MESSAGES, HOST_KEY] {
        if !src.join(required).exists() {
            return Err(BackupError::NotABackup {
                path: src.to_owned(),
                detail: format!("{required} is missing"),
            });
        }
    }
    let dir = DataDir::open_or_create(root)?;
    if running {
        return Err(BackupError::Running {
            path: root.to_owned(),
            detail: "stop it first (a restore replaces its files)".into(),
        });
    }
    if dir.messages_path().exists() {
        open_log_unless_running(&dir)?.close()?;
    }
    let mut incoming: Vec<&str> = vec![ACCOUNTS, MESSAGES, HOST_KEY];
    incoming.extend(OPTIONAL.iter().copied().filter(|n| src.join(n).exists()));
    let companions = COMPANIONS.iter().copied().filter(|n| !incoming.contains(n));
    let outgoing: Vec<&str> = incoming.iter().copied().chain(companions).collect();
    let present: Vec<&str> = outgoing.into_iter().filter(|n| root.join(n).exists()).collect();
    if !present.is_empty() && !force {
        return Err(BackupError::WouldOverwrite {
            dir: root.to_owned(),
            files: present.iter().map(|s| (*s).to_owned()).collect(),
        });
    }

    let staging = root.join("restore.partial");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    copy_dir_entries(src, &staging, &incoming)?;
    let (users, rooms) = match check_staged(src, &staging, &manifest) {
        Ok(counts) => counts,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };

    let replaced = if present.is_empty() {
        None
    } else {
        let aside = root.join(format!("replaced-{}", now_ms()));
        fs::DirBuilder::new().mode(0o700).create(&aside).map_err(io(&aside))?;
        for name in &present {
            fs::rename(root.join(name), aside.join(name)).map_err(io(&root.join(name)))?;
        }
        Some(aside)
    };
    // The accounts database may have left a WAL beside it while being checked: it goes along.
    let mut placed: Vec<String> = Vec::new();
    for entry in fs::read_dir(&staging).map_err(io(&staging))? {
        let name = entry.map_err(io(&staging))?.file_name();
        fs::rename(staging.join(&name), root.join(&name)).map_err(io(&root.join(&name)))?;
        placed.push(name.to_string_lossy().into_owned());
    }
    placed.sort();
    fs::remove_dir(&staging).map_err(io(&staging))?;
    sync_dir(root)?;
    Ok(Restored {
        manifest,
        users,
        rooms,
        files: placed,
        replaced,
    })
}

/// Opens the staged copy as the server would and checks it against the manifest; returns
/// the numbers of users and rooms.
fn check_staged(src: &Path, staging: &Path, manifest: &Manifest) -> Result<(u64, u64), BackupError> {
    let not_backup = |detail: String| BackupError::NotABackup {
        path: src.to_owned(),
        detail,
    };
    let log = MessageLog::open(&staging.join(MESSAGES))?;
    let (last, count) = (log.last_id(), log.count()?);
    log.close()?;
    if last != manifest.last_message_id || count != manifest.messages {
        return Err(not_backup(format!(
            "its message log holds {count} messages up to id {last}, its manifest says {} up to {}",
            manifest.messages, manifest.last_message_id
        )));
    }
    let pem = fs::read_to_string(staging.join(HOST_KEY)).map_err(io(&staging.join(HOST_KEY)))?;
    im_proto::hostkey::RsaSigner::from_pkcs8_pem(&pem).map_err(|e| not_backup(format!("{HOST_KEY}: {e}")))?;
    let accounts = Accounts::open(&staging.join(ACCOUNTS))?;
    Ok((accounts.count_users()?, accounts.count_rooms()?))
}

/// Copies the named entries of `src` into the new directory `dest`.
fn copy_dir_entries(src: &Path, dest: &Path, names: &[&str]) -> Result<(), BackupError> {
    fs::DirBuilder::new().mode(0o700).create(dest).map_err(io(dest))?;
    for name in names {
        let from = src.join(name);
        if from.is_dir() {
            copy_dir(&from, &dest.join(name))?;
        } else {
            copy_file(&from, &dest.join(name))?;
        }
    }
    sync_dir(dest)?;
    Ok(())
}

/// Copies a directory tree; directories get 0700, files keep their mode (then fsynced).
fn copy_dir(src: &Path, dest: &Path) -> Result<(), BackupError> {
    fs::DirBuilder::new().mode(0o700).create(dest).map_err(io(dest))?;
    for entry in fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        if entry.file_type().map_err(io(&from))?.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            copy_file(&from, &to)?;
        }
    }
    sync_dir(dest)?;
    Ok(())
}

/// Copies one file with its mode and makes it durable. Every file of a data directory is
/// private except the config, which keeps its own mode.
fn copy_file(src: &Path, dest: &Path) -> Result<(), BackupError> {
    fs::copy(src, dest).map_err(io(src))?;
    fs::File::open(dest).and_then(|f| f.sync_all()).map_err(io(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_never_clobbered_by_accident() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("b");
        check_destination(&dest, false).unwrap();
        fs::create_dir(&dest).unwrap();
        assert!(matches!(
            check_destination(&dest, false),
            Err(BackupError::Exists { .. })
        ));
        check_destination(&dest, true).unwrap();
        fs::write(dest.join("precious"), "x").unwrap();
        assert!(matches!(
            check_destination(&dest, true),
            Err(BackupError::NotReplaceable { .. })
        ));
        fs::write(dest.join(MANIFEST), "").unwrap();
        check_destination(&dest, true).unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, "").unwrap();
        assert!(check_destination(&file, true).is_err());
        assert_eq!(sibling(&dest, ".partial"), tmp.path().join("b.partial"));
    }
}
