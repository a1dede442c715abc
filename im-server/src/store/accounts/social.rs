//! Contacts and blocks.
//!
//! Contacts are mutual: one user asks, the other accepts (or asks back, which accepts), and
//! either can end it for both. Blocks are one-sided and independent of contacts; what a block
//! prevents (messages, contact requests, presence) is the server's rule.

use im_proto::UserName;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Accounts, AccountsError, Cached, DbUserName, Result, UserId, ensure_user};

/// Where a contact stands, seen from one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContactState {
    /// They asked; we have not accepted.
    Incoming,
    /// We asked; they have not accepted.
    Outgoing,
    /// Both agreed.
    Accepted,
}

/// What [`Accounts::contact_request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactOutcome {
    /// A new request is waiting for the other user.
    Requested,
    /// We had asked already; nothing changed.
    AlreadyRequested,
    /// The other user had asked us, so the request accepted theirs.
    Accepted,
    /// We were contacts already; nothing changed.
    AlreadyContacts,
}

/// One of a user's contacts or pending requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub user: UserId,
    pub name: UserName,
    pub state: ContactState,
}

/// The row between two users, if any: (who asked, accepted).
fn pair(c: &Connection, a: UserId, b: UserId) -> Result<Option<(UserId, bool)>> {
    Ok(c.row(
        "SELECT from_user, accepted FROM contacts
         WHERE (from_user = ?1 AND to_user = ?2) OR (from_user = ?2 AND to_user = ?1)",
        params![a.0, b.0],
        |r| Ok((UserId(r.get(0)?), r.get(1)?)),
    )
    .optional()?)
}

fn not_self(a: UserId, b: UserId, what: &'static str) -> Result<()> {
    if a == b {
        Err(AccountsError::Invalid(what))
    } else {
        Ok(())
    }
}

impl Accounts {
    /// `from` asks `to` to be contacts. If `to` had already asked `from`, they are contacts now.
    pub fn contact_request(&self, from: UserId, to: UserId) -> Result<ContactOutcome> {
        not_self(from, to, "cannot add yourself as a contact")?;
        self.write(|c| {
            ensure_user(c, from)?;
            ensure_user(c, to)?;
            Ok(match pair(c, from, to)? {
                Some((_, true)) => ContactOutcome::AlreadyContacts,
                Some((asker, false)) if asker == from => ContactOutcome::AlreadyRequested,
                Some(_) => {
                    c.exec(
                        "UPDATE contacts SET accepted = 1 WHERE from_user = ?1 AND to_user = ?2",
                        params![to.0, from.0],
                    )?;
                    ContactOutcome::Accepted
                }
                None => {
                    c.exec(
                        "INSERT INTO contacts (from_user, to_user) VALUES (?1, ?2)",
                        params![from.0, to.0],
                    )?;
                    ContactOutcome::Requested
                }
            })
        })
    }

    /// Accepts `other`'s request to `me`. False if there was no such pending request.
    pub fn contact_accept(&self, me: UserId, other: UserId) -> Result<bool> {
        self.write(|c| {
            let n = c.exec(
                "UPDATE contacts SET accepted = 1
                 WHERE from_user = ?1 AND to_user = ?2 AND accepted = 0",
                params![other.0, me.0],
            )?;
            Ok(n > 0)
        })
    }

    /// Ends whatever there is between the two, for both: a contact, a request either way (so
    /// this also declines and withdraws). False if there was nothing.
    pub fn contact_remove(&self, me: UserId, other: UserId) -> Result<bool> {
        self.write(|c| {
            let n = c.exec(
                "DELETE FROM contacts
                 WHERE (from_user = ?1 AND to_user = ?2) OR (from_user = ?2 AND to_user = ?1)",
                params![me.0, other.0],
            )?;
            Ok(n > 0)
        })
    }

    /// The user's contacts and pending requests both ways, by name.
    pub fn contacts(&self, user: UserId) -> Result<Vec<Contact>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.name, c.accepted, c.from_user = ?1
                 FROM contacts c JOIN users u
                   ON u.id = CASE WHEN c.from_user = ?1 THEN c.to_user ELSE c.from_user END
                 WHERE c.from_user = ?1 OR c.to_user = ?1
                 ORDER BY u.name",
            )?;
            let rows = stmt.query_map(params![user.0], |r| {
                let accepted: bool = r.get(2)?;
                let outgoing: bool = r.get(3)?;
                Ok(Contact {
                    user: UserId(r.get(0)?),
                    name: r.get::<_, DbUserName>(1)?.0,
                    state: match (accepted, outgoing) {
                        (true, _) => ContactState::Accepted,
                        (false, true) => ContactState::Outgoing,
                        (false, false) => ContactState::Incoming,
                    },
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// True if the two are contacts (accepted).
    pub fn are_contacts(&self, a: UserId, b: UserId) -> Result<bool> {
        self.read(|c| Ok(matches!(pair(c, a, b)?, Some((_, true)))))
    }

    /// `me` blocks `other`. True if they were not blocked before.
    pub fn block(&self, me: UserId, other: UserId) -> Result<bool> {
        not_self(me, other, "cannot block yourself")?;
        self.write(|c| {
            ensure_user(c, me)?;
            ensure_user(c, other)?;
            let n = c.exec(
                "INSERT INTO blocks (blocker, blocked) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![me.0, other.0],
            )?;
            Ok(n > 0)
        })
    }

    /// False if `other` was not blocked.
    pub fn unblock(&self, me: UserId, other: UserId) -> Result<bool> {
        self.write(|c| {
            let n = c.exec(
                "DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2",
                params![me.0, other.0],
            )?;
            Ok(n > 0)
        })
    }

    /// The users `me` blocks, by name.
    pub fn blocked(&self, me: UserId) -> Result<Vec<UserName>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.name FROM blocks b JOIN users u ON u.id = b.blocked
                 WHERE b.blocker = ?1 ORDER BY u.name",
            )?;
            let rows = stmt.query_map(params![me.0], |r| Ok(r.get::<_, DbUserName>(0)?.0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// True if `blocker` blocks `blocked`.
    pub fn is_blocked(&self, blocker: UserId, blocked: UserId) -> Result<bool> {
        self.read(|c| {
            let found = c
                .row(
                    "SELECT 1 FROM blocks WHERE blocker = ?1 AND blocked = ?2",
                    params![blocker.0, blocked.0],
                    |_| Ok(()),
                )
                .optional()?;
            Ok(found.is_some())
        })
    }
}
