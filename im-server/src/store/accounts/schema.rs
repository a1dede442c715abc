//! What makes a file ours, and how its schema grows.
//!
//! A file is ours when SQLite's header carries [`APPLICATION_ID`]. A file that is not SQLite,
//! or is another program's SQLite database, is refused before anything is written to it (not
//! even the switch to WAL, which rewrites two header bytes). `PRAGMA user_version` counts the
//! [`MIGRATIONS`] applied; the missing ones run at open, all in one transaction together with
//! the new version number, so a crash leaves either the old schema or the new one.
//!
//! To change the schema, append a script to [`MIGRATIONS`]; never edit one that has shipped.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{AccountsError, BUSY_TIMEOUT, FILE_MODE, Result};

/// `PRAGMA application_id` of an accounts database: "imAc" in ASCII.
pub const APPLICATION_ID: i32 = i32::from_be_bytes(*b"imAc");

/// The schema version this code writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1];

/// Version 1. Conventions: `STRICT` tables; times are milliseconds since the Unix epoch;
/// message ids and cursors are the message log's ids (below 2^53); device ids are the client's
/// 64-bit id stored as the `i64` with the same bits; every reference to a user or room cascades
/// on delete, so deleting a user leaves nothing of theirs behind.
const V1: &str = r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE CHECK (name <> ''),
    password_hash TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    -- The presence status the user chose (the protocol's code) and its text.
    presence      INTEGER NOT NULL DEFAULT 0 CHECK (presence BETWEEN 0 AND 255),
    presence_text TEXT
) STRICT;

-- RSA public keys (SubjectPublicKeyInfo DER) a user may log in with.
CREATE TABLE user_keys (
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    spki_der BLOB    NOT NULL,
    added_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, spki_der)
) STRICT, WITHOUT ROWID;

-- cursor: the highest message id delivered to (and acknowledged by) the device.
CREATE TABLE devices (
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id    INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    cursor       INTEGER NOT NULL DEFAULT 0 CHECK (cursor >= 0),
    PRIMARY KEY (user_id, device_id)
) STRICT, WITHOUT ROWID;

-- Resumption tickets: bound to one device, gone with it.
CREATE TABLE tickets (
    id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
    user_id    INTEGER NOT NULL,
    device_id  INTEGER NOT NULL,
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    expires_ms INTEGER NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX tickets_by_device ON tickets (user_id, device_id);
CREATE INDEX tickets_by_expiry ON tickets (expires_ms);

CREATE TABLE rooms (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE CHECK (name LIKE '#_%'),
    topic      TEXT,
    created_ms INTEGER NOT NULL
) STRICT;

-- role: 0 member, 1 operator, 2 owner. joined_at_msg_id: the member sees history from there.
CREATE TABLE memberships (
    room_id          INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id          INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role             INTEGER NOT NULL CHECK (role IN (0, 1, 2)),
    joined_at_msg_id INTEGER NOT NULL CHECK (joined_at_msg_id >= 0),
    joined_ms        INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX memberships_by_user ON memberships (user_id, room_id);

CREATE TABLE bans (
    room_id   INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    by_user   INTEGER REFERENCES users (id) ON DELETE SET NULL,
    banned_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) STRICT, WITHOUT ROWID;

-- One row per pair of users, whoever asked first: (from_user asked to_user), accepted or not.
CREATE TABLE contacts (
    from_user INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    to_user   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    accepted  INTEGER NOT NULL DEFAULT 0 CHECK (accepted IN (0, 1)),
    PRIMARY KEY (from_user, to_user),
    CHECK (from_user <> to_user)
) STRICT, WITHOUT ROWID;
CREATE INDEX contacts_by_to ON contacts (to_user, from_user);
CREATE UNIQUE INDEX contacts_one_per_pair
    ON contacts (min(from_user, to_user), max(from_user, to_user));

CREATE TABLE blocks (
    blocker INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (blocker, blocked),
    CHECK (blocker <> blocked)
) STRICT, WITHOUT ROWID;
"#;

/// Refuses a file that is not SQLite or carries another program's application id, by reading
/// its header ourselves, before SQLite opens (and might write to) it. An empty file is a new
/// database.
pub(super) fn check_file_header(path: &Path) -> Result<()> {
    let foreign = |reason: String| AccountsError::Foreign {
        path: path.to_owned(),
        reason,
    };
    let io_err = |source| AccountsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut header = Vec::with_capacity(100);
    File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .map_err(io_err)?;
    if header.is_empty() {
        return Ok(());
    }
    if header.len() < 100 || !header.starts_with(b"SQLite format 3\0") {
        return Err(foreign("not a SQLite database".into()));
    }
    let app_id = i32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(wrong_application_id(path, app_id));
    }
    Ok(())
}

/// Sets the connection up and checks, reading only, that the file is ours and not too new;
/// then (and only then) switches it to WAL and tightens its mode.
pub(super) fn prepare(conn: Connection, path: &Path) -> Result<Connection> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    check_identity(path, app_id, version, objects)?;

    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AccountsError::Io {
            path: path.to_owned(),
            source: io::Error::other(format!("cannot switch to WAL journal mode (still {mode})")),
        });
    }
    // NORMAL would lose the last commits on power loss; an acknowledged write must survive.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted password hashes and ticket secrets are overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;

    let io_err = |source| AccountsError::Io {
        path: path.to_owned(),
        source,
    };
    let perms = fs::metadata(path).map_err(io_err)?.permissions();
    if perms.mode() & 0o777 != FILE_MODE {
        fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE)).map_err(io_err)?;
    }
    Ok(conn)
}

fn wrong_application_id(path: &Path, app_id: i32) -> AccountsError {
    AccountsError::Foreign {
        path: path.to_owned(),
        reason: format!("application_id {app_id:#010x}, not {APPLICATION_ID:#010x}"),
    }
}

fn check_identity(path: &Path, app_id: i32, version: i64, objects: i64) -> Result<()> {
    let foreign = |reason: String| AccountsError::Foreign {
        path: path.to_owned(),
        reason,
    };
    if app_id != APPLICATION_ID {
        if app_id != 0 {
            return Err(wrong_application_id(path, app_id));
        }
        // Application id 0 is a new, empty file; anything with content but no id is not ours.
        if version != 0 || objects != 0 {
            return Err(foreign(
                "a SQLite database of another program (application_id 0)".into(),
            ));
        }
    }
    if version > SCHEMA_VERSION {
        return Err(AccountsError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 0 {
        return Err(AccountsError::Corrupt {
            path: path.to_owned(),
            detail: format!("negative schema version {version}"),
        });
    }
    Ok(())
}

/// Applies the missing migrations and stamps the version and application id, in one
/// transaction. The checks are repeated under the write lock: another process may have
/// migrated the file since [`prepare`] looked.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let app_id: i32 = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    check_identity(path, app_id, version, objects)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // check_identity bounds version to 0..=SCHEMA_VERSION.
    let applied = usize::try_from(version).unwrap_or(0);
    for script in &MIGRATIONS[applied..] {
        tx.execute_batch(script)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.commit()?;
    Ok(())
}
