//! Rooms, their topics, memberships with roles, and bans.
//!
//! A room is created by its first join, and that user owns it. It outlives its members (its
//! history, topic and bans stay); whoever joins a room nobody is in becomes its owner. Who may
//! kick, ban or change roles is the server's rule, not this module's.

use im_proto::{RoomName, UserName};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Accounts, AccountsError, Cached, DbRoomName, DbUserName, Result, UserId, ensure_user};

/// A member's standing in a room, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Member,
    Operator,
    Owner,
}

impl Role {
    fn code(self) -> i64 {
        match self {
            Role::Member => 0,
            Role::Operator => 1,
            Role::Owner => 2,
        }
    }
}

impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.code().into())
    }
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_i64()? {
            0 => Ok(Role::Member),
            1 => Ok(Role::Operator),
            2 => Ok(Role::Owner),
            n => Err(FromSqlError::Other(format!("unknown role {n}").into())),
        }
    }
}

/// What [`Accounts::join_room`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The room did not exist and was created.
    pub created: bool,
    /// The user was a member already; nothing changed.
    pub already_member: bool,
    /// The user's role in the room now.
    pub role: Role,
}

/// One line of the room list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub name: RoomName,
    pub members: u32,
    pub topic: Option<String>,
}

/// A room a user is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub room: RoomName,
    /// The member sees the room's messages from this id on.
    pub joined_at_msg_id: u64,
    pub role: Role,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMember {
    pub user: UserId,
    pub name: UserName,
    pub role: Role,
}

fn room_id(c: &Connection, room: &RoomName) -> Result<Option<i64>> {
    Ok(
        c.row("SELECT id FROM rooms WHERE name = ?1", params![room.as_str()], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

fn existing_room(c: &Connection, room: &RoomName) -> Result<i64> {
    room_id(c, room)?.ok_or(AccountsError::NotFound("room"))
}

fn role_in(c: &Connection, room: i64, user: UserId) -> Result<Option<Role>> {
    Ok(c.row(
        "SELECT role FROM memberships WHERE room_id = ?1 AND user_id = ?2",
        params![room, user.0],
        |r| r.get(0),
    )
    .optional()?)
}

fn banned_in(c: &Connection, room: i64, user: UserId) -> Result<bool> {
    let found = c
        .row(
            "SELECT 1 FROM bans WHERE room_id = ?1 AND user_id = ?2",
            params![room, user.0],
            |_| Ok(()),
        )
        .optional()?;
    Ok(found.is_some())
}

impl Accounts {
    /// Puts the user in the room, creating it (with the user as owner) if it does not exist.
    /// [`AccountsError::Banned`] if the user is banned from it. Joining a room one is in
    /// changes nothing.
    pub fn join_room(&self, room: &RoomName, user: UserId, joined_at_msg_id: u64, now_ms: u64) -> Result<JoinOutcome> {
        self.write(|c| {
            ensure_user(c, user)?;
            let (id, created) = match room_id(c, room)? {
                Some(id) => (id, false),
                None => {
                    let id = c.row(
                        "INSERT INTO rooms (name, created_ms) VALUES (?1, ?2) RETURNING id",
                        params![room.as_str(), now_ms],
                        |r| r.get(0),
                    )?;
                    (id, true)
                }
            };
            if banned_in(c, id, user)? {
                return Err(AccountsError::Banned(room.clone()));
            }
            if let Some(role) = role_in(c, id, user)? {
                return Ok(JoinOutcome {
                    created,
                    already_member: true,
                    role,
                });
            }
            let empty: bool = c.row(
                "SELECT NOT EXISTS (SELECT 1 FROM memberships WHERE room_id = ?1)",
                params![id],
                |r| r.get(0),
            )?;
            let role = if empty { Role::Owner } else { Role::Member };
            c.exec(
                "INSERT INTO memberships (room_id, user_id, role, joined_at_msg_id, joined_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, user.0, role, joined_at_msg_id, now_ms],
            )?;
            Ok(JoinOutcome {
                created,
                already_member: false,
                role,
            })
        })
    }

    /// Takes the user out of the room: leaving, or being kicked. False if they were not in it.
    pub fn leave_room(&self, room: &RoomName, user: UserId) -> Result<bool> {
        self.write(|c| {
            let n = c.exec(
                "DELETE FROM memberships
                 WHERE room_id = (SELECT id FROM rooms WHERE name = ?1) AND user_id = ?2",
                params![room.as_str(), user.0],
            )?;
            Ok(n > 0)
        })
    }

    /// Every room with its member count and topic, by name (empty rooms included).
    pub fn rooms(&self) -> Result<Vec<RoomSummary>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.name, (SELECT count(*) FROM memberships m WHERE m.room_id = r.id), r.topic
                 FROM rooms r ORDER BY r.name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(RoomSummary {
                    name: r.get::<_, DbRoomName>(0)?.0,
                    members: r.get(1)?,
                    topic: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The rooms the user is in, by name.
    pub fn rooms_of(&self, user: UserId) -> Result<Vec<Membership>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.name, m.joined_at_msg_id, m.role
                 FROM memberships m JOIN rooms r ON r.id = m.room_id
                 WHERE m.user_id = ?1 ORDER BY r.name",
            )?;
            let rows = stmt.query_map(params![user.0], |r| {
                Ok(Membership {
                    room: r.get::<_, DbRoomName>(0)?.0,
                    joined_at_msg_id: r.get(1)?,
                    role: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The room's members, by name; [`AccountsError::NotFound`] if there is no such room.
    pub fn members(&self, room: &RoomName) -> Result<Vec<RoomMember>> {
        self.read(|c| {
            let id = existing_room(c, room)?;
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.name, m.role FROM memberships m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = ?1 ORDER BY u.name",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                Ok(RoomMember {
                    user: UserId(r.get(0)?),
                    name: r.get::<_, DbUserName>(1)?.0,
                    role: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The user's role in the room; `None` if they are not in it (or there is no such room).
    pub fn member_role(&self, room: &RoomName, user: UserId) -> Result<Option<Role>> {
        self.read(|c| match room_id(c, room)? {
            Some(id) => role_in(c, id, user),
            None => Ok(None),
        })
    }

    /// Sets or clears the room's topic.
    pub fn set_topic(&self, room: &RoomName, topic: Option<&str>) -> Result<()> {
        self.write(|c| {
            let n = c.exec(
                "UPDATE rooms SET topic = ?2 WHERE name = ?1",
                params![room.as_str(), topic],
            )?;
            if n == 0 {
                Err(AccountsError::NotFound("room"))
            } else {
                Ok(())
            }
        })
    }

    /// The room's topic; [`AccountsError::NotFound`] if there is no such room.
    pub fn topic(&self, room: &RoomName) -> Result<Option<String>> {
        self.read(|c| {
            let topic = c
                .row("SELECT topic FROM rooms WHERE name = ?1", params![room.as_str()], |r| {
                    r.get(0)
                })
                .optional()?;
            topic.ok_or(AccountsError::NotFound("room"))
        })
    }

    /// Changes a member's role; [`AccountsError::NotFound`] if they are not in the room.
    pub fn set_role(&self, room: &RoomName, user: UserId, role: Role) -> Result<()> {
        self.write(|c| {
            let n = c.exec(
                "UPDATE memberships SET role = ?3
                 WHERE room_id = (SELECT id FROM rooms WHERE name = ?1) AND user_id = ?2",
                params![room.as_str(), user.0, role],
            )?;
            if n == 0 {
                Err(AccountsError::NotFound("member"))
            } else {
                Ok(())
            }
        })
    }

    /// Bans the user from the room, taking them out of it; they cannot join again until
    /// unbanned. True if they were not banned before.
    pub fn ban(&self, room: &RoomName, user: UserId, by: UserId, now_ms: u64) -> Result<bool> {
        self.write(|c| {
            let id = existing_room(c, room)?;
            ensure_user(c, user)?;
            ensure_user(c, by)?;
            c.exec(
                "DELETE FROM memberships WHERE room_id = ?1 AND user_id = ?2",
                params![id, user.0],
            )?;
            let n = c.exec(
                "INSERT INTO bans (room_id, user_id, by_user, banned_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![id, user.0, by.0, now_ms],
            )?;
            Ok(n > 0)
        })
    }

    /// Lifts a ban. False if the user was not banned.
    pub fn unban(&self, room: &RoomName, user: UserId) -> Result<bool> {
        self.write(|c| {
            let n = c.exec(
                "DELETE FROM bans
                 WHERE room_id = (SELECT id FROM rooms WHERE name = ?1) AND user_id = ?2",
                params![room.as_str(), user.0],
            )?;
            Ok(n > 0)
        })
    }

    pub fn is_banned(&self, room: &RoomName, user: UserId) -> Result<bool> {
        self.read(|c| match room_id(c, room)? {
            Some(id) => banned_in(c, id, user),
            None => Ok(false),
        })
    }

    /// The users banned from the room, by name; [`AccountsError::NotFound`] if there is no such
    /// room.
    pub fn banned(&self, room: &RoomName) -> Result<Vec<UserName>> {
        self.read(|c| {
            let id = existing_room(c, room)?;
            let mut stmt = c.prepare_cached(
                "SELECT u.name FROM bans b JOIN users u ON u.id = b.user_id
                 WHERE b.room_id = ?1 ORDER BY u.name",
            )?;
            let rows = stmt.query_map(params![id], |r| Ok(r.get::<_, DbUserName>(0)?.0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    pub fn count_rooms(&self) -> Result<u64> {
        self.read(|c| Ok(c.row("SELECT count(*) FROM rooms", [], |r| r.get(0))?))
    }
}
