//! Contacts: mutual, by request and acceptance. Both sides' devices hear of every change
//! (`ContactUpdate`), and an accepted contact starts to see the other's presence at once.

use std::sync::Arc;

use im_proto::UserName;
use im_proto::msg::{Contact, ContactState, ErrorCode, RequestId, ServerMsg};

use super::{NOT_ALLOWED, Refusal, Reply, fit, opt_str_size, presence, str_size};
use crate::router::Push;
use crate::session::Identity;
use crate::state::Shared;
use crate::store::accounts::{self, ContactOutcome, UserId};

fn wire_state(s: accounts::ContactState) -> ContactState {
    match s {
        accounts::ContactState::Incoming => ContactState::Incoming,
        accounts::ContactState::Outgoing => ContactState::Outgoing,
        accounts::ContactState::Accepted => ContactState::Accepted,
    }
}

fn contact_update(user: &UserName, state: Option<ContactState>) -> Push {
    Push::from([ServerMsg::ContactUpdate {
        user: user.clone(),
        state,
    }])
}

fn not_yourself(id: &Identity, user: &UserName) -> Result<(), Refusal> {
    if &id.user == user {
        return Err(Refusal::new(ErrorCode::BadRequest, "you cannot be your own contact"));
    }
    Ok(())
}

/// The other user's id; `no_such_user` if there is none.
async fn uid_of(shared: &Shared, user: &UserName) -> Result<UserId, Refusal> {
    let name = user.clone();
    match shared.db(move |a| a.user(&name)).await? {
        Some(r) => Ok(r.id),
        None => Err(Refusal::no_such_user(user)),
    }
}

/// `ContactRequest`: asks `user`, or accepts at once if they had asked. Refused, with the
/// same text as any refusal, when `user` blocks the asker.
pub(super) async fn request(shared: &Arc<Shared>, id: &Identity, req: RequestId, user: UserName) -> Reply {
    not_yourself(id, &user)?;
    let (me, name) = (id.uid, user.clone());
    let outcome = shared
        .db(move |a| {
            let Some(them) = a.user(&name)? else { return Ok(None) };
            if a.is_blocked(them.id, me)? {
                return Ok(Some((them.id, None)));
            }
            Ok(Some((them.id, Some(a.contact_request(me, them.id)?))))
        })
        .await?;
    match outcome {
        None => Err(Refusal::no_such_user(&user)),
        Some((_, None)) => Err(Refusal::not_allowed(NOT_ALLOWED)),
        Some((_, Some(ContactOutcome::Requested))) => {
            shared
                .router
                .push_to_user(&user, &contact_update(&id.user, Some(ContactState::Incoming)), None);
            shared.router.push_to_user(
                &id.user,
                &contact_update(&user, Some(ContactState::Outgoing)),
                Some(id.device),
            );
            Ok(ServerMsg::Ok { req })
        }
        Some((them, Some(ContactOutcome::Accepted))) => {
            accepted(shared, id, &user, them).await;
            Ok(ServerMsg::Ok { req })
        }
        Some((_, Some(ContactOutcome::AlreadyRequested | ContactOutcome::AlreadyContacts))) => {
            Ok(ServerMsg::Ok { req })
        }
    }
}

/// `ContactAccept`: accepts `user`'s pending request.
pub(super) async fn accept(shared: &Arc<Shared>, id: &Identity, req: RequestId, user: UserName) -> Reply {
    not_yourself(id, &user)?;
    let them = uid_of(shared, &user).await?;
    let me = id.uid;
    if !shared.db(move |a| a.contact_accept(me, them)).await? {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            format!("{user} has not asked to be your contact"),
        ));
    }
    accepted(shared, id, &user, them).await;
    Ok(ServerMsg::Ok { req })
}

/// Both sides are contacts now: tell both, reload both views, and show each the other's
/// presence.
async fn accepted(shared: &Shared, id: &Identity, user: &UserName, them: UserId) {
    shared.router.push_to_user(
        &id.user,
        &contact_update(user, Some(ContactState::Accepted)),
        Some(id.device),
    );
    shared
        .router
        .push_to_user(user, &contact_update(&id.user, Some(ContactState::Accepted)), None);
    presence::refresh(shared, &id.user, id.uid).await;
    presence::refresh(shared, user, them).await;
    presence::tell(shared, &id.user, user);
    presence::tell(shared, user, &id.user);
}

/// `ContactRemove`: ends a contact, withdraws a request or declines one, for both sides.
pub(super) async fn remove(shared: &Arc<Shared>, id: &Identity, req: RequestId, user: UserName) -> Reply {
    not_yourself(id, &user)?;
    let them = uid_of(shared, &user).await?;
    let me = id.uid;
    if !shared.db(move |a| a.contact_remove(me, them)).await? {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            format!("{user} is not a contact and no request is pending"),
        ));
    }
    shared
        .router
        .push_to_user(&id.user, &contact_update(&user, None), Some(id.device));
    shared.router.push_to_user(&user, &contact_update(&id.user, None), None);
    presence::refresh(shared, &id.user, id.uid).await;
    presence::refresh(shared, &user, them).await;
    Ok(ServerMsg::Ok { req })
}

/// `ListContacts`: contacts and pending requests both ways, with presence for accepted ones.
pub(super) async fn list(shared: &Arc<Shared>, id: &Identity, req: RequestId) -> Reply {
    let uid = id.uid;
    let rows = shared.db(move |a| a.contacts(uid)).await?;
    let contacts: Vec<Contact> = rows
        .into_iter()
        .map(|c| {
            let state = wire_state(c.state);
            let (presence, text) = presence::seen_by(shared, &id.user, &c.name, state);
            Contact {
                user: c.name,
                state,
                presence,
                text,
            }
        })
        .collect();
    let contacts = fit("contacts", contacts, |c| {
        str_size(c.user.as_str()) + 2 + opt_str_size(c.text.as_deref())
    });
    Ok(ServerMsg::Contacts { req, contacts })
}
