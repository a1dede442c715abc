//! Devices with their delivery cursors, and resumption tickets.
//!
//! A device is one client installation of a user, named by a 64-bit id the client chose. Its
//! cursor is the highest message id it has acknowledged, so it catches up from there when it
//! logs in; cursors only move forward. A resumption ticket belongs to one device and goes with
//! it.

use std::fmt;

use im_proto::UserName;
use im_proto::limits::TICKET_ID_LEN;
use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use super::{Accounts, AccountsError, Cached, DbUserName, Result, UserId, device_id_of, device_key, ensure_user};

/// Bytes of a ticket's secret.
pub const TICKET_SECRET_LEN: usize = 32;

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: u64,
    pub name: String,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    /// The highest message id delivered to and acknowledged by this device.
    pub cursor: u64,
}

/// A resumption ticket to store. The secret is key material: it is wiped on drop and never
/// shown by `Debug`.
#[derive(Clone)]
pub struct Ticket {
    pub id: [u8; TICKET_ID_LEN],
    pub user: UserId,
    pub device_id: u64,
    pub secret: Zeroizing<[u8; TICKET_SECRET_LEN]>,
    pub expires_ms: u64,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &Hex(&self.id))
            .field("user", &self.user)
            .field("device_id", &self.device_id)
            .field("secret", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// A stored ticket found by its id, with its owner's name for the login that follows.
#[derive(Clone)]
pub struct TicketRecord {
    pub user: UserId,
    pub user_name: UserName,
    pub device_id: u64,
    pub secret: Zeroizing<[u8; TICKET_SECRET_LEN]>,
    pub expires_ms: u64,
}

impl fmt::Debug for TicketRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketRecord")
            .field("user", &self.user)
            .field("user_name", &self.user_name)
            .field("device_id", &self.device_id)
            .field("secret", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn device_exists(c: &rusqlite::Connection, user: UserId, device_id: u64) -> Result<bool> {
    let found = c
        .row(
            "SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2",
            params![user.0, device_key(device_id)],
            |_| Ok(()),
        )
        .optional()?;
    Ok(found.is_some())
}

impl Accounts {
    /// Records that the device logged in: creates it (cursor 0) or updates its name and last
    /// seen time. True if the device is new.
    pub fn touch_device(&self, user: UserId, device_id: u64, name: &str, now_ms: u64) -> Result<bool> {
        self.write(|c| {
            ensure_user(c, user)?;
            let created = !device_exists(c, user, device_id)?;
            c.exec(
                "INSERT INTO devices (user_id, device_id, name, created_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (user_id, device_id) DO UPDATE
                 SET name = excluded.name, last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
                params![user.0, device_key(device_id), name, now_ms],
            )?;
            Ok(created)
        })
    }

    /// The user's devices, oldest first.
    pub fn devices(&self, user: UserId) -> Result<Vec<DeviceRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT device_id, name, created_ms, last_seen_ms, cursor FROM devices
                 WHERE user_id = ?1 ORDER BY created_ms, device_id",
            )?;
            let rows = stmt.query_map(params![user.0], |r| {
                Ok(DeviceRecord {
                    id: device_id_of(r.get(0)?),
                    name: r.get(1)?,
                    created_ms: r.get(2)?,
                    last_seen_ms: r.get(3)?,
                    cursor: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Forgets a device and its tickets. False if there was no such device.
    pub fn remove_device(&self, user: UserId, device_id: u64) -> Result<bool> {
        self.write(|c| {
            // The tickets go by the foreign key's cascade.
            let n = c.exec(
                "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
                params![user.0, device_key(device_id)],
            )?;
            Ok(n > 0)
        })
    }

    /// The device's delivery cursor; `None` for an unknown device.
    pub fn cursor(&self, user: UserId, device_id: u64) -> Result<Option<u64>> {
        self.read(|c| {
            Ok(c.row(
                "SELECT cursor FROM devices WHERE user_id = ?1 AND device_id = ?2",
                params![user.0, device_key(device_id)],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    /// Moves the device's cursor up to `up_to`, never back (an acknowledgement that arrives
    /// late changes nothing). Returns the cursor now stored.
    pub fn advance_cursor(&self, user: UserId, device_id: u64, up_to: u64) -> Result<u64> {
        self.write(|c| {
            let cursor = c
                .row(
                    "UPDATE devices SET cursor = max(cursor, ?3)
                     WHERE user_id = ?1 AND device_id = ?2 RETURNING cursor",
                    params![user.0, device_key(device_id), up_to],
                    |r| r.get(0),
                )
                .optional()?;
            cursor.ok_or(AccountsError::NotFound("device"))
        })
    }

    /// [`advance_cursor`](Accounts::advance_cursor) for many devices in one transaction (one
    /// commit). Devices that are gone are skipped.
    pub fn advance_cursors(&self, updates: &[(UserId, u64, u64)]) -> Result<()> {
        self.write(|c| {
            for &(user, device_id, up_to) in updates {
                c.exec(
                    "UPDATE devices SET cursor = max(cursor, ?3) WHERE user_id = ?1 AND device_id = ?2",
                    params![user.0, device_key(device_id), up_to],
                )?;
            }
            Ok(())
        })
    }

    /// Stores a ticket. The device must exist ([`Accounts::touch_device`] first);
    /// [`AccountsError::Exists`] if the id is taken.
    pub fn insert_ticket(&self, ticket: &Ticket) -> Result<()> {
        self.write(|c| {
            if !device_exists(c, ticket.user, ticket.device_id)? {
                return Err(AccountsError::NotFound("device"));
            }
            let n = c.exec(
                "INSERT INTO tickets (id, user_id, device_id, secret, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                params![
                    &ticket.id[..],
                    ticket.user.0,
                    device_key(ticket.device_id),
                    &ticket.secret[..],
                    ticket.expires_ms
                ],
            )?;
            if n == 0 {
                Err(AccountsError::Exists("ticket"))
            } else {
                Ok(())
            }
        })
    }

    /// The ticket with this id, unless it has expired (`expires_ms <= now_ms`) or was revoked.
    pub fn ticket(&self, id: &[u8; TICKET_ID_LEN], now_ms: u64) -> Result<Option<TicketRecord>> {
        self.read(|c| {
            Ok(c.row(
                "SELECT t.user_id, u.name, t.device_id, t.secret, t.expires_ms
                 FROM tickets t JOIN users u ON u.id = t.user_id
                 WHERE t.id = ?1 AND t.expires_ms > ?2",
                params![&id[..], now_ms],
                |r| {
                    // Copied straight from SQLite's buffer into wiped memory, never into a Vec.
                    let mut secret = Zeroizing::new([0u8; TICKET_SECRET_LEN]);
                    let stored = r.get_ref(3)?.as_blob()?;
                    if stored.len() != TICKET_SECRET_LEN {
                        return Err(rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Blob,
                            format!("ticket secret of {} bytes", stored.len()).into(),
                        ));
                    }
                    secret.copy_from_slice(stored);
                    Ok(TicketRecord {
                        user: UserId(r.get(0)?),
                        user_name: r.get::<_, DbUserName>(1)?.0,
                        device_id: device_id_of(r.get(2)?),
                        secret,
                        expires_ms: r.get(4)?,
                    })
                },
            )
            .optional()?)
        })
    }

    /// Revokes one ticket (a ticket that has been used, when tickets are single-use). False if
    /// there was none.
    pub fn delete_ticket(&self, id: &[u8; TICKET_ID_LEN]) -> Result<bool> {
        self.write(|c| Ok(c.exec("DELETE FROM tickets WHERE id = ?1", params![&id[..]])? > 0))
    }

    /// Revokes the device's tickets (logout). Returns how many there were.
    pub fn delete_tickets_of_device(&self, user: UserId, device_id: u64) -> Result<u64> {
        self.write(|c| {
            let n = c.exec(
                "DELETE FROM tickets WHERE user_id = ?1 AND device_id = ?2",
                params![user.0, device_key(device_id)],
            )?;
            Ok(n as u64)
        })
    }

    /// Revokes the tickets of all the user's devices but `keep_device` (after a password change
    /// made from that device). Returns how many there were.
    pub fn delete_tickets_except_device(&self, user: UserId, keep_device: u64) -> Result<u64> {
        self.write(|c| {
            let n = c.exec(
                "DELETE FROM tickets WHERE user_id = ?1 AND device_id <> ?2",
                params![user.0, device_key(keep_device)],
            )?;
            Ok(n as u64)
        })
    }

    /// Revokes every ticket of the user (a password reset by the administrator).
    pub fn delete_tickets_of_user(&self, user: UserId) -> Result<u64> {
        self.write(|c| Ok(c.exec("DELETE FROM tickets WHERE user_id = ?1", params![user.0])? as u64))
    }

    /// Deletes the tickets expired at `now_ms`. Returns how many.
    pub fn purge_expired_tickets(&self, now_ms: u64) -> Result<u64> {
        self.write(|c| Ok(c.exec("DELETE FROM tickets WHERE expires_ms <= ?1", params![now_ms])? as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let t = Ticket {
            id: [0xab; TICKET_ID_LEN],
            user: UserId(7),
            device_id: 9,
            secret: Zeroizing::new([0x5a; TICKET_SECRET_LEN]),
            expires_ms: 1,
        };
        let shown = format!("{t:?}");
        assert!(shown.contains("abab"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("5a") && !shown.contains("90"), "{shown}");
    }
}
