//! Users, their password hashes and public keys, and the presence status they chose.

use std::fmt;

use im_proto::UserName;
use rusqlite::{OptionalExtension, params};

use super::{Accounts, AccountsError, Cached, DbUserName, Result, UserId, ensure_user};

/// A user as stored. The hash is an Argon2id PHC string (hashing happens elsewhere); it is not
/// shown by `Debug`, so a logged record does not hand out material for offline guessing.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub name: UserName,
    pub password_hash: String,
    pub created_ms: u64,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// A public key a user may log in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    /// The RSA public key as SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
    pub added_ms: u64,
}

/// Reads the columns `id, name, password_hash, created_ms`, in that order.
fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: UserId(row.get(0)?),
        name: row.get::<_, DbUserName>(1)?.0,
        password_hash: row.get(2)?,
        created_ms: row.get(3)?,
    })
}

impl Accounts {
    /// Creates a user; [`AccountsError::Exists`] if the name is taken.
    pub fn create_user(&self, name: &UserName, password_hash: &str, now_ms: u64) -> Result<UserId> {
        self.write(|c| {
            let id = c
                .row(
                    "INSERT INTO users (name, password_hash, created_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING RETURNING id",
                    params![name.as_str(), password_hash, now_ms],
                    |r| r.get(0),
                )
                .optional()?;
            id.map(UserId).ok_or(AccountsError::Exists("user"))
        })
    }

    /// The user with this name, if any.
    pub fn user(&self, name: &UserName) -> Result<Option<UserRecord>> {
        self.read(|c| {
            let sql = "SELECT id, name, password_hash, created_ms FROM users WHERE name = ?1";
            Ok(c.row(sql, params![name.as_str()], user_row).optional()?)
        })
    }

    /// The user with this id, if any.
    pub fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        self.read(|c| {
            let sql = "SELECT id, name, password_hash, created_ms FROM users WHERE id = ?1";
            Ok(c.row(sql, params![id.0], user_row).optional()?)
        })
    }

    /// Replaces the password hash. Tickets are not touched: revoke them with
    /// [`Accounts::delete_tickets_except_device`] or [`Accounts::delete_tickets_of_user`].
    pub fn set_password(&self, user: UserId, password_hash: &str) -> Result<()> {
        self.write(|c| {
            let n = c.exec(
                "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                params![user.0, password_hash],
            )?;
            if n == 0 {
                Err(AccountsError::NotFound("user"))
            } else {
                Ok(())
            }
        })
    }

    /// Deletes a user and everything of theirs: keys, devices, tickets, memberships, bans,
    /// contacts and blocks, both ways. Rooms they own stay. False if there was no such user.
    pub fn delete_user(&self, name: &UserName) -> Result<bool> {
        self.write(|c| Ok(c.exec("DELETE FROM users WHERE name = ?1", params![name.as_str()])? > 0))
    }

    /// Every user with their creation time, by name.
    pub fn list_users(&self) -> Result<Vec<(UserName, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT name, created_ms FROM users ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, DbUserName>(0)?.0, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub fn count_users(&self) -> Result<u64> {
        self.read(|c| Ok(c.row("SELECT count(*) FROM users", [], |r| r.get(0))?))
    }

    /// Allows the key (SubjectPublicKeyInfo DER) to log in as the user. False if it already
    /// could.
    pub fn add_key(&self, user: UserId, spki_der: &[u8], now_ms: u64) -> Result<bool> {
        self.write(|c| {
            ensure_user(c, user)?;
            let n = c.exec(
                "INSERT INTO user_keys (user_id, spki_der, added_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![user.0, spki_der, now_ms],
            )?;
            Ok(n > 0)
        })
    }

    /// False if the key was not the user's.
    pub fn remove_key(&self, user: UserId, spki_der: &[u8]) -> Result<bool> {
        self.write(|c| {
            let n = c.exec(
                "DELETE FROM user_keys WHERE user_id = ?1 AND spki_der = ?2",
                params![user.0, spki_der],
            )?;
            Ok(n > 0)
        })
    }

    pub fn has_key(&self, user: UserId, spki_der: &[u8]) -> Result<bool> {
        self.read(|c| {
            let found = c
                .row(
                    "SELECT 1 FROM user_keys WHERE user_id = ?1 AND spki_der = ?2",
                    params![user.0, spki_der],
                    |_| Ok(()),
                )
                .optional()?;
            Ok(found.is_some())
        })
    }

    /// The user's keys, oldest first.
    pub fn keys(&self, user: UserId) -> Result<Vec<UserKey>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT spki_der, added_ms FROM user_keys WHERE user_id = ?1
                 ORDER BY added_ms, spki_der",
            )?;
            let rows = stmt.query_map(params![user.0], |r| {
                Ok(UserKey {
                    spki_der: r.get(0)?,
                    added_ms: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Stores the presence the user chose (the protocol's status code and an optional text);
    /// it survives restarts. Whether they are online is the server's in-memory business.
    pub fn set_presence(&self, user: UserId, status: u8, text: Option<&str>) -> Result<()> {
        self.write(|c| {
            let n = c.exec(
                "UPDATE users SET presence = ?2, presence_text = ?3 WHERE id = ?1",
                params![user.0, status, text],
            )?;
            if n == 0 {
                Err(AccountsError::NotFound("user"))
            } else {
                Ok(())
            }
        })
    }

    /// The presence the user last chose: `(0, None)` until they choose one.
    pub fn presence(&self, user: UserId) -> Result<(u8, Option<String>)> {
        self.read(|c| {
            let found = c
                .row(
                    "SELECT presence, presence_text FROM users WHERE id = ?1",
                    params![user.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            found.ok_or(AccountsError::NotFound("user"))
        })
    }
}
