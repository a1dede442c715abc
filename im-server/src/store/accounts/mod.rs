//! The accounts database: everything durable except the message log.
//!
//! Users and their password hashes and public keys, devices with their delivery cursors,
//! resumption tickets, rooms, memberships and bans, contacts, blocks, and the presence status
//! each user chose. It is small, relational and read-mostly, so it lives in one SQLite file in
//! WAL mode; the message log, which is append-heavy, lives elsewhere (see [`super::messages`]).
//!
//! The API is synchronous: the server calls it from worker threads (`spawn_blocking`), never
//! from the reactor. One [`Accounts`] holds one connection behind a mutex; the admin CLI opens
//! the same file from another process while the server runs, which WAL and a busy timeout
//! make safe. Every write runs in a `BEGIN IMMEDIATE` transaction and is durable when the call
//! returns (`synchronous = FULL`).
//!
//! Permission rules (who may kick whom, who may see whose presence) belong to the server; this
//! layer keeps the data consistent and nothing more.
//!
//! # Layout
//! - `schema`: the file checks at open (SQLite? ours? not too new?) and the migrations.
//! - `users`: users, password hashes, public keys, presence status.
//! - `devices`: devices with delivery cursors, and resumption tickets.
//! - `rooms`: rooms, topics, memberships with roles, bans.
//! - `social`: contacts (mutual) and blocks.

mod devices;
mod rooms;
mod schema;
mod social;
mod users;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use im_proto::{RoomName, UserName};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

pub use devices::{DeviceRecord, TICKET_SECRET_LEN, Ticket, TicketRecord};
pub use rooms::{JoinOutcome, Membership, Role, RoomMember, RoomSummary};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use social::{Contact, ContactOutcome, ContactState};
pub use users::{UserKey, UserRecord};

/// How long a statement waits for another connection's write lock (the admin CLI, or a
/// second server thread) before giving up with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: more than the store has, so none is parsed twice.
const STATEMENT_CACHE: usize = 128;

/// Unix permissions of the database file (and, because SQLite copies them, of its `-wal` and
/// `-shm` files): it holds password hashes and ticket secrets.
pub const FILE_MODE: u32 = 0o600;

/// A user's row id: stable for the life of the account and never reused for another user
/// (`AUTOINCREMENT`), so an id held in memory cannot come to mean someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

/// What went wrong in the accounts database.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// The thing to create is already there ("user", "ticket").
    #[error("{0} already exists")]
    Exists(&'static str),
    /// The thing named is not there ("user", "room", "device", "member").
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The user is banned from the room.
    #[error("banned from {0}")]
    Banned(RoomName),
    /// The request makes no sense whatever the data ("cannot add yourself as a contact").
    #[error("{0}")]
    Invalid(&'static str),
    /// Creating, reading or setting the permissions of the database file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not ours: not SQLite at all, or another program's SQLite database.
    #[error("{} is not an im accounts database ({reason}); refusing to touch it", path.display())]
    Foreign { path: PathBuf, reason: String },
    /// The file was written by a newer server, whose schema this one does not know.
    #[error(
        "{}: database schema version {found} is newer than this server supports ({supported})",
        path.display()
    )]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    /// The file is ours but holds something that cannot be right (a malformed name, an
    /// unknown role, damaged pages).
    #[error("{} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("accounts database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T, E = AccountsError> = std::result::Result<T, E>;

/// The accounts database. `Send + Sync`: share it in an `Arc` between worker threads.
pub struct Accounts {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// Opens the database at `path`, creating it (mode 0600) if it does not exist, and brings
    /// its schema up to date in one transaction.
    ///
    /// Refuses, without writing a byte, a file that is not a SQLite database, a SQLite
    /// database of another program, and one written by a newer server.
    pub fn open(path: &Path) -> Result<Accounts> {
        let io_err = |source| AccountsError::Io {
            path: path.to_owned(),
            source,
        };
        create_private(path).map_err(io_err)?;
        schema::check_file_header(path)?;
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| file_error(path, e))?;
        let mut conn = schema::prepare(conn, path).map_err(|e| file_error_of(path, e))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn, path).map_err(|e| file_error_of(path, e))?;
        Ok(Accounts {
            conn: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies a consistent snapshot of the database to `dest` with SQLite's online backup,
    /// while other connections keep reading and writing. `dest` must not exist yet (a backup
    /// never overwrites a file); it is created with mode 0600, and removed again if the copy
    /// fails.
    pub fn backup_to(&self, dest: &Path) -> Result<()> {
        backup_connection(&self.lock(), dest)
    }

    /// [`backup_to`](Accounts::backup_to) for a database nobody has open here: opens `src`
    /// read-only, so it neither migrates nor otherwise changes it (a backup taken before an
    /// upgrade must still suit the old version).
    pub fn backup_file(src: &Path, dest: &Path) -> Result<()> {
        schema::check_file_header(src)?;
        let conn = Connection::open_with_flags(
            src,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| file_error(src, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        backup_connection(&conn, dest)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held cannot leave a half-done write behind: the
        // transaction it was in rolled back when it was dropped.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in a read transaction, so that its statements see one snapshot.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let run = || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run().map_err(|e| self.classify(e))
    }

    /// Runs `f` in a write transaction. `BEGIN IMMEDIATE` takes the write lock up front (waiting
    /// up to [`BUSY_TIMEOUT`] for it), so a transaction that reads before it writes cannot fail
    /// with a stale snapshot when another connection wrote in between.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let run = || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run().map_err(|e| self.classify(e))
    }

    /// Turns errors that mean "the stored data is wrong" into [`AccountsError::Corrupt`].
    fn classify(&self, e: AccountsError) -> AccountsError {
        match e {
            AccountsError::Sqlite(e) if is_bad_data(&e) => AccountsError::Corrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            },
            other => other,
        }
    }
}

fn backup_connection(conn: &Connection, dest: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(dest)
        .map_err(|source| AccountsError::Io {
            path: dest.to_owned(),
            source,
        })?;
    let copied = conn.backup(rusqlite::MAIN_DB, dest, None::<fn(rusqlite::backup::Progress)>);
    if let Err(e) = copied {
        // Half a copy is worse than none: it looks like a backup.
        let _ = std::fs::remove_file(dest);
        return Err(e.into());
    }
    Ok(())
}

/// Creates the file with mode 0600 if it is missing, so that SQLite never creates it with the
/// umask's looser mode. An existing file is left alone here; [`schema::prepare`] tightens its
/// mode once it is known to be ours.
fn create_private(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_bad_data(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => true,
        rusqlite::Error::SqliteFailure(f, _) => f.code == ErrorCode::DatabaseCorrupt,
        _ => false,
    }
}

/// Maps an error met while opening to one that names the file.
fn file_error(path: &Path, e: rusqlite::Error) -> AccountsError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => AccountsError::Foreign {
            path: path.to_owned(),
            reason: "not a SQLite database".into(),
        },
        _ if is_bad_data(&e) => AccountsError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        _ => AccountsError::Sqlite(e),
    }
}

fn file_error_of(path: &Path, e: AccountsError) -> AccountsError {
    match e {
        AccountsError::Sqlite(e) => file_error(path, e),
        other => other,
    }
}

/// A user name read back from the database: it must already be in canonical (folded) form,
/// or the file has been tampered with.
struct DbUserName(UserName);

impl FromSql for DbUserName {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        match UserName::parse(s) {
            Ok(name) if name.as_str() == s => Ok(DbUserName(name)),
            Ok(_) => Err(FromSqlError::Other(
                format!("user name {s:?} is not case-folded").into(),
            )),
            Err(e) => Err(FromSqlError::Other(Box::new(e))),
        }
    }
}

/// A room name read back from the database; see [`DbUserName`].
struct DbRoomName(RoomName);

impl FromSql for DbRoomName {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        match RoomName::parse(s) {
            Ok(name) if name.as_str() == s => Ok(DbRoomName(name)),
            Ok(_) => Err(FromSqlError::Other(
                format!("room name {s:?} is not case-folded").into(),
            )),
            Err(e) => Err(FromSqlError::Other(Box::new(e))),
        }
    }
}

/// Device ids are any 64-bit value the client picked; SQLite integers are signed, so they are
/// stored as the `i64` with the same bits.
fn device_key(id: u64) -> i64 {
    id.cast_signed()
}

fn device_id_of(key: i64) -> u64 {
    key.cast_unsigned()
}

/// `query_row` and `execute` through the connection's statement cache: the message path runs
/// the same few statements on every send, and parsing them each time showed in profiles.
trait Cached {
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl Cached for Connection {
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// Fails with `NotFound("user")` unless the user exists. Inside a write transaction this is
/// race-free; the foreign keys are the backstop.
fn ensure_user(conn: &Connection, user: UserId) -> Result<()> {
    let found = conn
        .row("SELECT 1 FROM users WHERE id = ?1", params![user.0], |_| Ok(()))
        .optional()?;
    found.ok_or(AccountsError::NotFound("user"))
}
