//! Rooms, contacts, presence, typing and blocking: the social graph around messages.
//!
//! The session calls in here through a narrow interface: [`handle`] for the requests of this
//! slice, [`may_send`] and [`history_scope`] before a message is stored or history read,
//! [`hidden`] to leave blocked senders' room messages out of catch-up and history, [`fan_out`]
//! from the dispatcher for each committed room message, [`typing`], and [`connected`] /
//! [`disconnected`] for presence.
//!
//! # Layout
//! - `mod.rs` (this file): the interface, [`State`] and the size rule for list replies.
//! - `rooms.rs`: the membership cache, room requests, the moderation rules, room events and
//!   the room fan-out.
//! - `presence.rs`: who is online as far as contacts are concerned, each online user's view
//!   (chosen presence, accepted contacts, blocked users) cached from the accounts database,
//!   and presence updates.
//! - `contacts.rs`: contact requests, acceptance and removal.
//! - `blocks.rs`: blocking, and what a block hides.
//!
//! # Caches and the database
//! The accounts database is the authority; the caches exist so that the per-message paths
//! (fan-out, typing, catch-up filtering) never wait on it. Every change writes the database
//! first and then updates or reloads the cache entries it touches, so a restart (empty caches)
//! loses nothing.

mod blocks;
mod contacts;
mod presence;
mod rooms;

use std::sync::Arc;

use im_proto::limits::{MAX_LIST, MAX_RECORD_PLAINTEXT};
use im_proto::msg::{ClientMsg, DeviceId, ErrorCode, RequestId, ServerMsg};
use im_proto::{RoomName, Target, UserName};

use crate::router::Push;
use crate::session::Identity;
use crate::state::Shared;
use crate::store::accounts::AccountsError;
use crate::store::messages::{Conversation, StoredMessage};

/// The text of every refusal that a block causes. It is the same as for any other refusal of
/// a direct message or a contact request, so that a blocked user cannot tell.
pub const NOT_ALLOWED: &str = "not allowed";

/// Bytes kept free in a list reply for its own fields (kind, request id, room name, count).
const LIST_SLACK: usize = 128;

/// The in-memory side of this module, shared by every connection.
#[derive(Default)]
pub struct State {
    rooms: rooms::Rooms,
    users: presence::Users,
}

/// Why a message or a history read is refused; becomes an `Error` reply.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub text: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Refusal {
            code,
            text: text.into(),
        }
    }

    pub fn reply(self, req: RequestId) -> ServerMsg {
        ServerMsg::error(Some(req), self.code, self.text)
    }

    fn not_allowed(text: impl Into<String>) -> Self {
        Refusal::new(ErrorCode::NotAllowed, text)
    }

    fn no_such_room(room: &RoomName) -> Self {
        Refusal::new(ErrorCode::NoSuchRoom, format!("no room named {room}"))
    }

    fn no_such_user(user: &UserName) -> Self {
        Refusal::new(ErrorCode::NoSuchUser, format!("no user named {user}"))
    }
}

impl From<AccountsError> for Refusal {
    fn from(e: AccountsError) -> Self {
        tracing::error!(error = %e, "accounts database error");
        Refusal::new(ErrorCode::Internal, "internal error")
    }
}

type Reply = Result<ServerMsg, Refusal>;

/// Whether `id` may send to `to` now: the recipient exists and has not blocked the sender, or
/// the sender is a member of the room.
pub async fn may_send(shared: &Arc<Shared>, id: &Identity, to: &Target) -> Result<(), Refusal> {
    match to {
        Target::User(peer) => blocks::may_message(shared, id, peer).await,
        Target::Room(room) => rooms::may_send(shared, id, room).await,
    }
}

/// The conversation a history request reads, and the id up to which it is hidden from the
/// requester (0: nothing hidden): a room member sees the room from the moment they joined.
pub async fn history_scope(shared: &Arc<Shared>, id: &Identity, with: &Target) -> Result<(Conversation, u64), Refusal> {
    match with {
        Target::User(peer) => Ok((Conversation::direct(&id.user, peer), 0)),
        Target::Room(room) => rooms::history_scope(shared, id, room).await,
    }
}

/// Whether a stored message must not reach `id`'s devices (catch-up, history): a room message
/// from a user they block. Direct messages from a blocked user are refused when sent instead.
pub fn hidden(shared: &Shared, id: &Identity, m: &StoredMessage) -> bool {
    matches!(m.to, Target::Room(_)) && shared.social.users.blocks(&id.user, &m.from)
}

/// Routes one committed room message to the room's online members (and the sender's other
/// devices), in the dispatcher's commit order. Without database access: it reads the
/// membership cache, which `may_send` loaded before the message was stored. It yields
/// between turns of members, so that the first members' tasks write while it goes on.
pub async fn fan_out(
    shared: &Arc<Shared>,
    room: &RoomName,
    from: &UserName,
    sender_device: Option<DeviceId>,
    push: &Push,
) {
    rooms::fan_out(shared, room, from, sender_device, push).await;
}

/// Passes a typing notice on: to an accepted contact, or to the online members of a room the
/// typer is in. Never stored.
pub async fn typing(shared: &Arc<Shared>, id: &Identity, to: Target) {
    match to {
        Target::User(peer) => presence::typing_to(shared, id, &peer),
        Target::Room(room) => rooms::typing(shared, id, &room).await,
    }
}

/// Handles a request of this slice. Refusals and database failures become `Error` replies;
/// the session goes on.
pub async fn handle(shared: &Arc<Shared>, id: &Identity, msg: ClientMsg) -> Result<ServerMsg, AccountsError> {
    let Some(req) = msg.request_id() else {
        return Ok(ServerMsg::error(
            None,
            ErrorCode::BadRequest,
            format!("{} is not a request", msg.name()),
        ));
    };
    let reply = match msg {
        ClientMsg::Join { room, .. } => rooms::join(shared, id, req, room).await,
        ClientMsg::Leave { room, .. } => rooms::leave(shared, id, req, room).await,
        ClientMsg::ListRooms { .. } => rooms::list(shared, id, req).await,
        ClientMsg::Members { room, .. } => rooms::members(shared, req, room).await,
        ClientMsg::Topic { room, topic, .. } => rooms::topic(shared, id, req, room, topic).await,
        ClientMsg::Kick { room, user, .. } => rooms::moderate(shared, id, req, rooms::Action::Kick, room, user).await,
        ClientMsg::Ban { room, user, .. } => rooms::moderate(shared, id, req, rooms::Action::Ban, room, user).await,
        ClientMsg::Unban { room, user, .. } => rooms::moderate(shared, id, req, rooms::Action::Unban, room, user).await,
        ClientMsg::Op { room, user, .. } => rooms::moderate(shared, id, req, rooms::Action::Op, room, user).await,
        ClientMsg::Deop { room, user, .. } => rooms::moderate(shared, id, req, rooms::Action::Deop, room, user).await,
        ClientMsg::ContactRequest { user, .. } => contacts::request(shared, id, req, user).await,
        ClientMsg::ContactAccept { user, .. } => contacts::accept(shared, id, req, user).await,
        ClientMsg::ContactRemove { user, .. } => contacts::remove(shared, id, req, user).await,
        ClientMsg::ListContacts { .. } => contacts::list(shared, id, req).await,
        ClientMsg::SetPresence { presence, text, .. } => presence::set(shared, id, req, presence, text).await,
        ClientMsg::GetPresence { users, .. } => Ok(presence::get(shared, id, req, users)),
        ClientMsg::Block { user, .. } => blocks::block(shared, id, req, user).await,
        ClientMsg::Unblock { user, .. } => blocks::unblock(shared, id, req, user).await,
        ClientMsg::ListBlocked { .. } => blocks::list(shared, id, req).await,
        other => Err(Refusal::new(
            ErrorCode::Unsupported,
            format!("{} is not supported by this server", other.name()),
        )),
    };
    Ok(reply.unwrap_or_else(|refusal| refusal.reply(req)))
}

/// A device of `id` logged in (after the router attached it, before its catch-up).
pub async fn connected(shared: &Arc<Shared>, id: &Identity) {
    presence::connected(shared, id).await;
}

/// A connection of `id` ended (after the router forgot it).
pub async fn disconnected(shared: &Arc<Shared>, id: &Identity) {
    presence::disconnected(shared, id);
}

/// Cuts a list reply so that it fits in one record (and in `MAX_LIST` entries), logging what
/// was left out. `size` is an item's encoded size.
fn fit<T>(what: &str, mut items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<T> {
    let budget = MAX_RECORD_PLAINTEXT - LIST_SLACK;
    let mut used = 0;
    let mut keep = 0;
    for item in &items {
        let s = size(item);
        if keep == MAX_LIST || used + s > budget {
            break;
        }
        used += s;
        keep += 1;
    }
    if keep < items.len() {
        tracing::warn!(
            list = what,
            total = items.len(),
            sent = keep,
            "list cut to fit one record"
        );
        items.truncate(keep);
    }
    items
}

/// Encoded size of a `str` field.
fn str_size(s: &str) -> usize {
    2 + s.len()
}

/// Encoded size of an `opt str` field.
fn opt_str_size(s: Option<&str>) -> usize {
    1 + s.map_or(0, str_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_list_still_encodes_within_one_record() {
        let room = RoomName::parse("#big").unwrap();
        let members: Vec<im_proto::msg::Member> = (0..MAX_LIST)
            .map(|i| im_proto::msg::Member {
                user: UserName::parse(&format!("{i:0>32}")).unwrap(),
                role: im_proto::msg::Role::Member,
                online: true,
            })
            .collect();
        let members = fit("members", members, |m| str_size(m.user.as_str()) + 2);
        assert!(members.len() > 1000 && members.len() < MAX_LIST);
        let mut out = Vec::new();
        ServerMsg::MemberList {
            req: RequestId(u32::MAX),
            room,
            members,
        }
        .encode(&mut out);
        assert!(out.len() <= MAX_RECORD_PLAINTEXT, "{} bytes", out.len());
        assert!(
            out.len() > MAX_RECORD_PLAINTEXT - 2 * LIST_SLACK,
            "cut far too short: {} bytes",
            out.len()
        );
    }

    #[test]
    fn a_short_list_is_untouched() {
        assert_eq!(fit("x", vec![1, 2, 3], |_| 10), vec![1, 2, 3]);
    }
}
