//! Rooms: membership, topics, moderation, room events and the room fan-out.
//!
//! # The membership cache
//! Each room in use has a [`Room`] entry: its members with their role and the id they joined
//! at, loaded from the accounts database the first time the room is needed (by a send, a
//! join, a request) and kept for the life of the process. The fan-out reads only this cache,
//! so a room message costs no database access. Changes of membership are serialised per room
//! (`Room::changes`) and write the database first, then the cache.
//!
//! A join records the id of the last committed message, under the cache's write lock, as the
//! joiner's `joined_at`: the fan-out gives a member only messages after it, and history and
//! catch-up use the same id from the database. A message committed after that id is
//! dispatched after the lock is released, so it cannot miss the new member.
//!
//! # Who may do what
//! See [`permitted`]: operators kick, ban and unban; only the owner ops and deops; nobody acts
//! on someone of their own rank or above (so the owner cannot be kicked, banned or de-opped,
//! and operators cannot act on each other). Topics are set by operators and read by members.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use im_proto::msg::{
    DeviceId, ErrorCode, Member as MemberInfo, RequestId, RoomEventKind, RoomInfo, ServerMsg, Timestamp,
};
use im_proto::{RoomName, Target, UserName};

use super::{Refusal, Reply, fit, opt_str_size, presence, str_size};
use crate::router::Push;
use crate::session::Identity;
use crate::state::{Shared, now_ms};
use crate::store::accounts::{AccountsError, Role, UserId};
use crate::store::messages::Conversation;

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// The membership cache: every room loaded so far.
#[derive(Default)]
pub(super) struct Rooms {
    map: RwLock<HashMap<RoomName, Arc<Room>>>,
}

/// One room's members, as in the accounts database.
#[derive(Default)]
pub(super) struct Room {
    /// Held across each change of membership or role (database write, then cache), so two
    /// changes cannot interleave and leave the cache disagreeing with the database.
    changes: tokio::sync::Mutex<()>,
    members: RwLock<BTreeMap<UserName, Member>>,
}

#[derive(Clone, Copy, Debug)]
struct Member {
    uid: UserId,
    role: Role,
    /// Messages up to this id were committed before the member joined. 0 for members loaded
    /// from the database: they joined before the room was loaded, so every message dispatched
    /// since is theirs.
    joined_at: u64,
}

impl Rooms {
    fn cached(&self, room: &RoomName) -> Option<Arc<Room>> {
        read(&self.map).get(room).cloned()
    }

    fn insert(&self, room: &RoomName, entry: Room) -> Arc<Room> {
        write(&self.map)
            .entry(room.clone())
            .or_insert_with(|| Arc::new(entry))
            .clone()
    }
}

/// The room's cache entry, loading it from the database if needed; `None`: no such room.
async fn get(shared: &Shared, room: &RoomName) -> Result<Option<Arc<Room>>, AccountsError> {
    if let Some(r) = shared.social.rooms.cached(room) {
        return Ok(Some(r));
    }
    let name = room.clone();
    let members = shared
        .db(move |a| match a.members(&name) {
            Ok(m) => Ok(Some(m)),
            Err(AccountsError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
    let Some(members) = members else { return Ok(None) };
    let members = members
        .into_iter()
        .map(|m| {
            (
                m.name,
                Member {
                    uid: m.user,
                    role: m.role,
                    joined_at: 0,
                },
            )
        })
        .collect();
    // A concurrent load or join may have inserted it meanwhile: theirs is kept.
    Ok(Some(shared.social.rooms.insert(
        room,
        Room {
            changes: Default::default(),
            members: RwLock::new(members),
        },
    )))
}

async fn existing(shared: &Shared, room: &RoomName) -> Result<Arc<Room>, Refusal> {
    get(shared, room).await?.ok_or_else(|| Refusal::no_such_room(room))
}

fn role_of(r: &Room, user: &UserName) -> Option<Role> {
    read(&r.members).get(user).map(|m| m.role)
}

fn wire_role(role: Role) -> im_proto::msg::Role {
    match role {
        Role::Member => im_proto::msg::Role::Member,
        Role::Operator => im_proto::msg::Role::Operator,
        Role::Owner => im_proto::msg::Role::Owner,
    }
}

fn not_in(room: &RoomName) -> Refusal {
    Refusal::new(ErrorCode::NotMember, format!("you are not in {room}"))
}

/// Whether `id` may send to the room: they are a member.
pub(super) async fn may_send(shared: &Shared, id: &Identity, room: &RoomName) -> Result<(), Refusal> {
    let r = existing(shared, room).await?;
    match role_of(&r, &id.user) {
        Some(_) => Ok(()),
        None => Err(Refusal::not_allowed(format!("you are not a member of {room}"))),
    }
}

/// History of a room: for members only, from the message after the one they joined at.
pub(super) async fn history_scope(
    shared: &Shared,
    id: &Identity,
    room: &RoomName,
) -> Result<(Conversation, u64), Refusal> {
    let (uid, name) = (id.uid, room.clone());
    let membership = shared
        .db(move |a| {
            if let Some(m) = a.rooms_of(uid)?.into_iter().find(|m| m.room == name) {
                return Ok(Some(Some(m.joined_at_msg_id)));
            }
            match a.topic(&name) {
                Ok(_) => Ok(Some(None)),
                Err(AccountsError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
    match membership {
        None => Err(Refusal::no_such_room(room)),
        Some(None) => Err(Refusal::not_allowed(format!(
            "only members of {room} may read its history"
        ))),
        Some(Some(joined_at)) => Ok((Conversation::Room(room.clone()), joined_at)),
    }
}

/// Members pushed to per turn of a room message's fan-out. The dispatcher yields between
/// turns, so the members pushed so far are written while it goes on: a fan-out to thousands
/// otherwise ran its whole loop (about a microsecond per member) before the first member's
/// task could write, and the last member waited for both.
const FAN_OUT_TURN: usize = 64;

/// Pushes a room message to every online member who joined before it and does not block
/// its sender; the sending device has its `Sent`. Called by the dispatcher alone, which
/// routes nothing else until this returns, so every member still gets messages in id order.
pub(super) async fn fan_out(
    shared: &Arc<Shared>,
    room: &RoomName,
    from: &UserName,
    sender_device: Option<DeviceId>,
    push: &Push,
) {
    match shared.social.rooms.cached(room) {
        Some(r) => deliver(shared, &r, from, sender_device, push).await,
        None => {
            // Only a message stored without `may_send` (a server-side tool) finds the room
            // unloaded: load it, then deliver, off the dispatcher.
            tracing::warn!(%room, "room message for a room not in the cache; delivering late");
            let (shared, room, from, push) = (shared.clone(), room.clone(), from.clone(), push.clone());
            tokio::spawn(async move {
                match get(&shared, &room).await {
                    Ok(Some(r)) => deliver(&shared, &r, &from, sender_device, &push).await,
                    Ok(None) => tracing::warn!(%room, "message to a room that does not exist"),
                    Err(e) => tracing::error!(%room, error = %e, "loading room members failed"),
                }
            });
        }
    }
}

/// [`FAN_OUT_TURN`] members at a time, in name order, each turn under the locks and resuming
/// after the last name of the one before: members who join meanwhile joined after the
/// message and are skipped, members who leave are not visited.
async fn deliver(shared: &Shared, r: &Room, from: &UserName, sender_device: Option<DeviceId>, push: &Push) {
    use std::ops::Bound::{Excluded, Unbounded};
    let id = match push.first() {
        Some(ServerMsg::Message(m)) => m.id.0,
        _ => u64::MAX,
    };
    let mut after: Option<UserName> = None;
    loop {
        let (visited, last) = {
            let members = read(&r.members);
            let users = shared.social.users.read();
            let turn = match &after {
                Some(a) => members.range::<UserName, _>((Excluded(a), Unbounded)),
                None => members.range::<UserName, _>(..),
            };
            let (mut visited, mut last) = (0, None);
            for (name, m) in turn.take(FAN_OUT_TURN) {
                (visited, last) = (visited + 1, Some(name));
                if m.joined_at >= id || !presence::receives_from(&users, name, from) {
                    continue;
                }
                let except = if name == from { sender_device } else { None };
                shared.router.push_to_user(name, push, except);
            }
            (visited, last.cloned())
        };
        if visited < FAN_OUT_TURN {
            return;
        }
        after = last;
        tokio::task::yield_now().await;
    }
}

/// A typing notice to a room: to its online members but the typer, if the typer is in it.
pub(super) async fn typing(shared: &Shared, id: &Identity, room: &RoomName) {
    let r = match get(shared, room).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => return tracing::error!(%room, error = %e, "loading room members failed"),
    };
    let members = read(&r.members);
    if !members.contains_key(&id.user) {
        return;
    }
    let push = Push::from([ServerMsg::TypingNotice {
        from: id.user.clone(),
        to: Target::Room(room.clone()),
    }]);
    let users = shared.social.users.read();
    for name in members.keys().filter(|n| **n != id.user) {
        if presence::receives_from(&users, name, &id.user) {
            shared.router.push_to_user(name, &push, None);
        }
    }
}

/// Pushes a room event to the room's members and to `subject`, who may have just left it.
fn event(
    shared: &Shared,
    r: &Room,
    room: &RoomName,
    kind: RoomEventKind,
    user: &UserName,
    by: Option<&UserName>,
    topic: Option<String>,
) {
    let push = Push::from([ServerMsg::RoomEvent {
        room: room.clone(),
        kind,
        user: user.clone(),
        by: by.cloned(),
        topic,
        ts: Timestamp(now_ms()),
    }]);
    let members = read(&r.members);
    for name in members.keys() {
        shared.router.push_to_user(name, &push, None);
    }
    if !members.contains_key(user) {
        shared.router.push_to_user(user, &push, None);
    }
}

/// `Join`: creates the room if needed (the creator owns it). Banned users are refused.
pub(super) async fn join(shared: &Arc<Shared>, id: &Identity, req: RequestId, room: RoomName) -> Reply {
    let r = match get(shared, &room).await? {
        Some(r) => r,
        None => shared.social.rooms.insert(&room, Room::default()),
    };
    let _changes = r.changes.lock().await;
    if role_of(&r, &id.user).is_some() {
        return Ok(ServerMsg::Ok { req });
    }
    let (uid, name) = (id.uid, room.clone());
    if shared.db(move |a| a.is_banned(&name, uid)).await? {
        return Err(Refusal::not_allowed(format!("you are banned from {room}")));
    }
    // In the cache before the database, with the last committed id read under the lock: see
    // the module documentation.
    let joined_at = {
        let mut members = write(&r.members);
        let joined_at = shared.log.last_id();
        members.insert(
            id.user.clone(),
            Member {
                uid,
                role: Role::Member,
                joined_at,
            },
        );
        joined_at
    };
    let name = room.clone();
    match shared.db(move |a| a.join_room(&name, uid, joined_at, now_ms())).await {
        Ok(outcome) => {
            if let Some(m) = write(&r.members).get_mut(&id.user) {
                m.role = outcome.role;
            }
            if outcome.created {
                tracing::info!(%room, owner = %id.user, "room created");
            }
        }
        Err(e) => {
            write(&r.members).remove(&id.user);
            return Err(match e {
                AccountsError::Banned(_) => Refusal::not_allowed(format!("you are banned from {room}")),
                e => e.into(),
            });
        }
    }
    event(shared, &r, &room, RoomEventKind::Join, &id.user, None, None);
    Ok(ServerMsg::Ok { req })
}

/// `Leave`.
pub(super) async fn leave(shared: &Arc<Shared>, id: &Identity, req: RequestId, room: RoomName) -> Reply {
    let r = existing(shared, &room).await?;
    let _changes = r.changes.lock().await;
    if role_of(&r, &id.user).is_none() {
        return Err(not_in(&room));
    }
    let (uid, name) = (id.uid, room.clone());
    shared.db(move |a| a.leave_room(&name, uid)).await?;
    write(&r.members).remove(&id.user);
    event(shared, &r, &room, RoomEventKind::Leave, &id.user, None, None);
    Ok(ServerMsg::Ok { req })
}

/// `ListRooms`: every room, with its member count and topic, and whether the asker is in it.
pub(super) async fn list(shared: &Arc<Shared>, id: &Identity, req: RequestId) -> Reply {
    let uid = id.uid;
    let (rooms, mine) = shared.db(move |a| Ok((a.rooms()?, a.rooms_of(uid)?))).await?;
    let rooms: Vec<RoomInfo> = rooms
        .into_iter()
        .map(|r| RoomInfo {
            joined: mine.iter().any(|m| m.room == r.name),
            room: r.name,
            members: r.members,
            topic: r.topic,
        })
        .collect();
    let rooms = fit("rooms", rooms, |r| {
        str_size(r.room.as_str()) + 4 + opt_str_size(r.topic.as_deref()) + 1
    });
    Ok(ServerMsg::Rooms { req, rooms })
}

/// `Members`: anyone may see who is in a room, with their roles and who is online.
pub(super) async fn members(shared: &Arc<Shared>, req: RequestId, room: RoomName) -> Reply {
    let r = existing(shared, &room).await?;
    let list: Vec<(UserName, Role)> = read(&r.members).iter().map(|(n, m)| (n.clone(), m.role)).collect();
    let members: Vec<MemberInfo> = list
        .into_iter()
        .map(|(user, role)| MemberInfo {
            online: shared.social.users.appears_online(&user),
            user,
            role: wire_role(role),
        })
        .collect();
    let members = fit("members", members, |m| str_size(m.user.as_str()) + 2);
    Ok(ServerMsg::MemberList { req, room, members })
}

/// `Topic`: members read it; operators set it (an empty topic clears it).
pub(super) async fn topic(
    shared: &Arc<Shared>,
    id: &Identity,
    req: RequestId,
    room: RoomName,
    topic: Option<String>,
) -> Reply {
    let r = existing(shared, &room).await?;
    let role = role_of(&r, &id.user);
    let name = room.clone();
    match topic {
        None => {
            if role.is_none() {
                return Err(not_in(&room));
            }
            let topic = shared.db(move |a| a.topic(&name)).await?;
            Ok(ServerMsg::TopicIs { req, room, topic })
        }
        Some(text) => {
            if role.is_none_or(|r| r < Role::Operator) {
                return Err(Refusal::not_allowed(format!(
                    "only operators of {room} may set its topic"
                )));
            }
            let topic = Some(text).filter(|t| !t.is_empty());
            let t = topic.clone();
            shared.db(move |a| a.set_topic(&name, t.as_deref())).await?;
            event(shared, &r, &room, RoomEventKind::Topic, &id.user, None, topic.clone());
            Ok(ServerMsg::TopicIs { req, room, topic })
        }
    }
}

/// A moderation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Kick,
    Ban,
    Unban,
    Op,
    Deop,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Kick => "kick",
            Action::Ban => "ban",
            Action::Unban => "unban",
            Action::Op => "op",
            Action::Deop => "deop",
        }
    }
}

/// Why a moderation request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Denied {
    /// Kick, ban and unban need an operator (or the owner).
    NotOperator,
    /// Op and deop need the owner.
    NotOwner,
    /// The target's rank is the actor's or above.
    Outranked,
    /// The target must be in the room (kick, op, deop).
    TargetNotIn,
}

/// `a` may act on `t`: the owner on anyone else, an operator on plain members.
fn outranks(a: Role, t: Role) -> bool {
    matches!(
        (a, t),
        (Role::Owner, Role::Member | Role::Operator) | (Role::Operator, Role::Member)
    )
}

/// The moderation rules: whether a user with role `actor` in the room (`None`: not in it) may
/// do `action` to a user with role `target` (`None`: not in it).
pub(super) fn permitted(action: Action, actor: Option<Role>, target: Option<Role>) -> Result<(), Denied> {
    let actor = actor.unwrap_or(Role::Member);
    match action {
        Action::Kick | Action::Ban | Action::Unban if actor < Role::Operator => Err(Denied::NotOperator),
        Action::Op | Action::Deop if actor != Role::Owner => Err(Denied::NotOwner),
        Action::Unban => Ok(()),
        Action::Ban => match target {
            None => Ok(()),
            Some(t) if outranks(actor, t) => Ok(()),
            Some(_) => Err(Denied::Outranked),
        },
        Action::Kick | Action::Op | Action::Deop => match target {
            None => Err(Denied::TargetNotIn),
            Some(Role::Owner) if action == Action::Op => Ok(()), // already more than an operator
            Some(t) if outranks(actor, t) => Ok(()),
            Some(_) => Err(Denied::Outranked),
        },
    }
}

/// `Kick`, `Ban`, `Unban`, `Op`, `Deop`.
pub(super) async fn moderate(
    shared: &Arc<Shared>,
    id: &Identity,
    req: RequestId,
    action: Action,
    room: RoomName,
    user: UserName,
) -> Reply {
    let r = existing(shared, &room).await?;
    let _changes = r.changes.lock().await;
    let target = read(&r.members).get(&user).copied();
    if let Err(denied) = permitted(action, role_of(&r, &id.user), target.map(|m| m.role)) {
        let verb = action.verb();
        return Err(match denied {
            Denied::NotOperator => Refusal::not_allowed(format!("only operators of {room} may {verb}")),
            Denied::NotOwner => Refusal::not_allowed(format!("only the owner of {room} may {verb}")),
            Denied::Outranked => Refusal::not_allowed(format!("you may not {verb} {user} in {room}")),
            Denied::TargetNotIn => Refusal::new(ErrorCode::NotMember, format!("{user} is not in {room}")),
        });
    }
    let uid = match target {
        Some(m) => m.uid,
        None => {
            let name = user.clone();
            match shared.db(move |a| a.user(&name)).await? {
                Some(u) => u.id,
                None => return Err(Refusal::no_such_user(&user)),
            }
        }
    };
    let (name, by) = (room.clone(), id.uid);
    let kind = match action {
        Action::Kick => {
            shared.db(move |a| a.leave_room(&name, uid)).await?;
            write(&r.members).remove(&user);
            RoomEventKind::Kick
        }
        Action::Ban => {
            let newly = shared.db(move |a| a.ban(&name, uid, by, now_ms())).await?;
            write(&r.members).remove(&user);
            if !newly && target.is_none() {
                return Ok(ServerMsg::Ok { req });
            }
            RoomEventKind::Ban
        }
        Action::Unban => {
            if !shared.db(move |a| a.unban(&name, uid)).await? {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("{user} is not banned from {room}"),
                ));
            }
            RoomEventKind::Unban
        }
        Action::Op | Action::Deop => {
            let (role, kind) = match action {
                Action::Op => (Role::Operator, RoomEventKind::Op),
                _ => (Role::Member, RoomEventKind::Deop),
            };
            if target.is_some_and(|m| m.role == role || m.role == Role::Owner) {
                return Ok(ServerMsg::Ok { req }); // nothing changes
            }
            shared.db(move |a| a.set_role(&name, uid, role)).await?;
            if let Some(m) = write(&r.members).get_mut(&user) {
                m.role = role;
            }
            kind
        }
    };
    tracing::info!(%room, user = %user, by = %id.user, action = action.verb(), "moderation");
    event(shared, &r, &room, kind, &user, Some(&id.user), None);
    Ok(ServerMsg::Ok { req })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Role::*;

    #[test]
    fn plain_members_and_outsiders_moderate_nothing() {
        for actor in [None, Some(Member)] {
            for action in [Kick, Ban, Unban] {
                assert_eq!(
                    permitted(action, actor, Some(Member)),
                    Err(Denied::NotOperator),
                    "{action:?}"
                );
            }
            for action in [Op, Deop] {
                assert_eq!(
                    permitted(action, actor, Some(Member)),
                    Err(Denied::NotOwner),
                    "{action:?}"
                );
            }
        }
    }

    #[test]
    fn operators_act_on_members_only() {
        assert_eq!(permitted(Kick, Some(Operator), Some(Member)), Ok(()));
        assert_eq!(permitted(Ban, Some(Operator), Some(Member)), Ok(()));
        assert_eq!(
            permitted(Ban, Some(Operator), None),
            Ok(()),
            "a ban may come before a join"
        );
        assert_eq!(permitted(Unban, Some(Operator), None), Ok(()));
        for target in [Operator, Owner] {
            assert_eq!(permitted(Kick, Some(Operator), Some(target)), Err(Denied::Outranked));
            assert_eq!(permitted(Ban, Some(Operator), Some(target)), Err(Denied::Outranked));
        }
        assert_eq!(permitted(Op, Some(Operator), Some(Member)), Err(Denied::NotOwner));
        assert_eq!(permitted(Deop, Some(Operator), Some(Operator)), Err(Denied::NotOwner));
    }

    #[test]
    fn the_owner_acts_on_everyone_but_themselves() {
        for action in [Kick, Ban, Op, Deop] {
            assert_eq!(permitted(action, Some(Owner), Some(Member)), Ok(()), "{action:?}");
            assert_eq!(permitted(action, Some(Owner), Some(Operator)), Ok(()), "{action:?}");
        }
        assert_eq!(permitted(Kick, Some(Owner), Some(Owner)), Err(Denied::Outranked));
        assert_eq!(permitted(Ban, Some(Owner), Some(Owner)), Err(Denied::Outranked));
        assert_eq!(permitted(Deop, Some(Owner), Some(Owner)), Err(Denied::Outranked));
        assert_eq!(permitted(Op, Some(Owner), Some(Owner)), Ok(()), "a no-op");
    }

    #[test]
    fn kick_op_and_deop_need_the_target_in_the_room() {
        assert_eq!(permitted(Kick, Some(Owner), None), Err(Denied::TargetNotIn));
        assert_eq!(permitted(Op, Some(Owner), None), Err(Denied::TargetNotIn));
        assert_eq!(permitted(Deop, Some(Owner), None), Err(Denied::TargetNotIn));
    }
}
