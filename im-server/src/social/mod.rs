//! Rooms, contacts, presence, typing and blocking: the social graph around messages.
//!
//! The session calls in here through a narrow interface: [`handle`] for the requests of this
//! slice, [`may_send`] and [`history_scope`] before a message is stored or history read,
//! [`fan_out`] from the dispatcher for each committed room message, [`typing`], and
//! [`connected`] / [`disconnected`] for presence.

use std::sync::Arc;

use im_proto::msg::{DeviceId, ErrorCode, RequestId, ServerMsg};
use im_proto::{RoomName, Target, UserName};

use crate::session::Identity;
use crate::state::Shared;
use crate::store::accounts::AccountsError;
use crate::store::messages::Conversation;

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
}

impl From<AccountsError> for Refusal {
    fn from(e: AccountsError) -> Self {
        tracing::error!(error = %e, "accounts database error");
        Refusal::new(ErrorCode::Internal, "internal error")
    }
}

/// Whether `id` may send to `to` now: the recipient exists (and has not blocked the sender),
/// or the sender is a member of the room.
pub async fn may_send(shared: &Arc<Shared>, id: &Identity, to: &Target) -> Result<(), Refusal> {
    match to {
        Target::User(peer) => {
            let name = peer.clone();
            match shared.db(move |a| a.user(&name)).await? {
                Some(_) => Ok(()),
                None => Err(Refusal::new(ErrorCode::NoSuchUser, format!("no user named {peer}"))),
            }
        }
        Target::Room(room) => Err(Refusal::new(
            ErrorCode::Unsupported,
            format!("rooms ({room}) are not supported by this server yet"),
        )),
    }
}

/// The conversation a history request reads, and the id up to which it is hidden from the
/// requester (0: nothing hidden).
pub async fn history_scope(shared: &Arc<Shared>, id: &Identity, with: &Target) -> Result<(Conversation, u64), Refusal> {
    let _ = shared;
    match with {
        Target::User(peer) => Ok((Conversation::direct(&id.user, peer), 0)),
        Target::Room(room) => Err(Refusal::new(
            ErrorCode::Unsupported,
            format!("rooms ({room}) are not supported by this server yet"),
        )),
    }
}

/// Routes one committed room message to the room's online members.
pub fn fan_out(
    shared: &Arc<Shared>,
    room: &RoomName,
    from: &UserName,
    sender_device: Option<DeviceId>,
    push: &Arc<ServerMsg>,
) {
    let _ = room;
    shared.router.push_to_user(from, push, sender_device);
}

/// Passes a typing notice on. Never stored.
pub async fn typing(shared: &Arc<Shared>, id: &Identity, to: Target) {
    if let Target::User(peer) = &to {
        let push = Arc::new(ServerMsg::TypingNotice {
            from: id.user.clone(),
            to: Target::User(peer.clone()),
        });
        shared.router.push_to_user(peer, &push, None);
    }
}

/// Handles a request of this slice.
pub async fn handle(
    shared: &Arc<Shared>,
    id: &Identity,
    msg: im_proto::msg::ClientMsg,
) -> Result<ServerMsg, AccountsError> {
    let _ = (shared, id);
    Ok(ServerMsg::error(
        msg.request_id(),
        ErrorCode::Unsupported,
        format!("{} is not supported by this server yet", msg.name()),
    ))
}

/// A device of `id` logged in.
pub async fn connected(shared: &Arc<Shared>, id: &Identity) {
    let _ = (shared, id);
}

/// A connection of `id` ended (after the router forgot it).
pub async fn disconnected(shared: &Arc<Shared>, id: &Identity) {
    let _ = (shared, id);
}
