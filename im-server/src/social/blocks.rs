//! Blocking: one-sided and silent. A blocked user's direct messages and contact requests are
//! refused with the text every other refusal uses ([`NOT_ALLOWED`]), their typing is dropped,
//! their room messages never reach the blocker's devices (live, catch-up or history), and the
//! blocker appears offline to them.

use std::sync::Arc;

use im_proto::UserName;
use im_proto::msg::{ErrorCode, RequestId, ServerMsg};

use super::{NOT_ALLOWED, Refusal, Reply, fit, presence, str_size};
use crate::session::Identity;
use crate::state::Shared;

/// Whether `id` may send a direct message to `peer`: `peer` exists and does not block them.
///
/// An online peer's cached view answers (every send to them would otherwise wait on the
/// database, through the blocking pool); a block takes effect there once the blocker's view
/// is reloaded, right after the database write, as for room messages.
pub(super) async fn may_message(shared: &Shared, id: &Identity, peer: &UserName) -> Result<(), Refusal> {
    let blocked = match shared.social.users.cached_block(peer, &id.user) {
        Some(blocked) => Some(blocked),
        None => {
            let (me, name) = (id.uid, peer.clone());
            shared
                .db(move |a| match a.user(&name)? {
                    Some(r) => Ok(Some(r.id != me && a.is_blocked(r.id, me)?)),
                    None => Ok(None),
                })
                .await?
        }
    };
    match blocked {
        None => Err(Refusal::no_such_user(peer)),
        Some(true) => Err(Refusal::not_allowed(NOT_ALLOWED)),
        Some(false) => Ok(()),
    }
}

pub(super) async fn block(shared: &Arc<Shared>, id: &Identity, req: RequestId, user: UserName) -> Reply {
    if id.user == user {
        return Err(Refusal::new(ErrorCode::BadRequest, "you cannot block yourself"));
    }
    let (me, name) = (id.uid, user.clone());
    let found = shared
        .db(move |a| match a.user(&name)? {
            Some(r) => a.block(me, r.id).map(|_| true),
            None => Ok(false),
        })
        .await?;
    if !found {
        return Err(Refusal::no_such_user(&user));
    }
    presence::refresh(shared, &id.user, id.uid).await;
    presence::hide_from(shared, &id.user, &user);
    Ok(ServerMsg::Ok { req })
}

pub(super) async fn unblock(shared: &Arc<Shared>, id: &Identity, req: RequestId, user: UserName) -> Reply {
    let (me, name) = (id.uid, user.clone());
    let outcome = shared
        .db(move |a| match a.user(&name)? {
            Some(r) => a.unblock(me, r.id).map(Some),
            None => Ok(None),
        })
        .await?;
    match outcome {
        None => Err(Refusal::no_such_user(&user)),
        Some(false) => Err(Refusal::new(ErrorCode::NotFound, format!("you do not block {user}"))),
        Some(true) => {
            presence::refresh(shared, &id.user, id.uid).await;
            presence::tell(shared, &id.user, &user);
            Ok(ServerMsg::Ok { req })
        }
    }
}

pub(super) async fn list(shared: &Arc<Shared>, id: &Identity, req: RequestId) -> Reply {
    let uid = id.uid;
    let users = shared.db(move |a| a.blocked(uid)).await?;
    let users = fit("blocked", users, |u| str_size(u.as_str()));
    Ok(ServerMsg::Blocked { req, users })
}
