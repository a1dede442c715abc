//! Presence, and the cached view of each online user: the presence they chose, their accepted
//! contacts and the users they block.
//!
//! A user is online from their first device's login to their last device's logout. While
//! online, their [`View`] is cached here, so the per-message paths (room fan-out, typing,
//! catch-up filtering) ask memory, not the database. Every change to what a view holds writes
//! the database and then reloads the views it touches ([`refresh`]); each load takes a
//! sequence number first and a view is only replaced by a newer load, so of two loads racing,
//! the one that read the database last wins.
//!
//! Presence goes only to accepted contacts (and not to those the user blocks). What contacts
//! were last told is remembered per user (`shown`), and an update is pushed only when the
//! presence they would see changes: computing and pushing it under the lock keeps updates in
//! the order of the changes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use im_proto::UserName;
use im_proto::msg::{ContactState, Presence, PresenceInfo, RequestId, ServerMsg};

use super::{Reply, fit, opt_str_size, str_size};
use crate::router::Push;
use crate::session::Identity;
use crate::state::Shared;
use crate::store::accounts::{AccountsError, UserId};

/// Online users, by name.
#[derive(Default)]
pub(super) struct Users {
    map: RwLock<HashMap<UserName, Online>>,
    /// Orders view loads: see the module documentation.
    seq: AtomicU64,
}

/// One online user.
pub(super) struct Online {
    /// Their logged-in connections.
    devices: usize,
    /// `None` until loaded from the database (just after the first login).
    view: Option<View>,
    /// What their contacts were last told.
    shown: Shown,
}

/// What an online user chose and who they know, as cached from the accounts database.
pub(super) struct View {
    seq: u64,
    chosen: Presence,
    text: Option<String>,
    /// Accepted contacts only.
    contacts: HashSet<UserName>,
    blocked: HashSet<UserName>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Shown {
    presence: Presence,
    text: Option<String>,
}

const OFFLINE: Shown = Shown {
    presence: Presence::Offline,
    text: None,
};

impl Online {
    /// The presence contacts should see now.
    fn effective(&self) -> Shown {
        match &self.view {
            Some(v) if self.devices > 0 && v.chosen != Presence::Offline => Shown {
                presence: v.chosen,
                text: v.text.clone(),
            },
            _ => OFFLINE,
        }
    }

    fn blocks(&self, other: &UserName) -> bool {
        self.view.as_ref().is_some_and(|v| v.blocked.contains(other))
    }
}

impl Users {
    pub(super) fn read(&self) -> RwLockReadGuard<'_, HashMap<UserName, Online>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<UserName, Online>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether online user `blocker` blocks `other` (false for users who are not online:
    /// their messages are not being delivered anyway).
    pub(super) fn blocks(&self, blocker: &UserName, other: &UserName) -> bool {
        self.cached_block(blocker, other).unwrap_or(false)
    }

    /// Whether `user` blocks `other`, from their cached view: `None` when `user` is not online
    /// or their view is still loading, and only the database can say (and whether they exist).
    pub(super) fn cached_block(&self, user: &UserName, other: &UserName) -> Option<bool> {
        self.read()
            .get(user)
            .and_then(|u| u.view.as_ref())
            .map(|v| v.blocked.contains(other))
    }

    /// Whether `user` is online and not hiding it, for member lists.
    pub(super) fn appears_online(&self, user: &UserName) -> bool {
        self.read()
            .get(user)
            .is_some_and(|u| u.view.as_ref().is_none_or(|v| v.chosen != Presence::Offline))
    }
}

/// Whether a push from `from` should go to `user` now: they are online and do not block
/// `from`. For fan-outs, which hold the map's read lock over a whole room.
pub(super) fn receives_from(users: &HashMap<UserName, Online>, user: &UserName, from: &UserName) -> bool {
    users.get(user).is_some_and(|u| !u.blocks(from))
}

/// What `viewer` may see of `user`'s presence: the real one for an accepted contact who does
/// not block them, offline otherwise. Nothing leaks to strangers.
fn visible(users: &HashMap<UserName, Online>, viewer: &UserName, user: &UserName) -> Shown {
    let contact = users
        .get(viewer)
        .and_then(|v| v.view.as_ref())
        .is_some_and(|v| v.contacts.contains(user));
    match users.get(user) {
        Some(u) if contact && !u.blocks(viewer) => u.effective(),
        _ => OFFLINE,
    }
}

fn update(user: &UserName, shown: &Shown) -> Push {
    Push::from([ServerMsg::PresenceUpdate(PresenceInfo {
        user: user.clone(),
        presence: shown.presence,
        text: shown.text.clone(),
    })])
}

/// The presence code stored in the accounts database: 0 until the user first chooses one.
fn chosen_from_db(code: u8) -> Presence {
    match code {
        0 => Presence::Online,
        c => Presence::from_u8(c).unwrap_or_else(|| {
            tracing::warn!(
                code = c,
                "unknown presence code in the accounts database; treating it as online"
            );
            Presence::Online
        }),
    }
}

async fn load(shared: &Shared, uid: UserId, seq: u64) -> Result<View, AccountsError> {
    shared
        .db(move |a| {
            let (code, text) = a.presence(uid)?;
            let contacts = a
                .contacts(uid)?
                .into_iter()
                .filter(|c| c.state == crate::store::accounts::ContactState::Accepted)
                .map(|c| c.name)
                .collect();
            let blocked = a.blocked(uid)?.into_iter().collect();
            Ok(View {
                seq,
                chosen: chosen_from_db(code),
                text,
                contacts,
                blocked,
            })
        })
        .await
}

/// Reloads the view of `user` (if online) from the database, after a change to it.
pub(super) async fn refresh(shared: &Shared, user: &UserName, uid: UserId) {
    let users = &shared.social.users;
    if !users.read().contains_key(user) {
        return;
    }
    let seq = users.seq.fetch_add(1, Ordering::Relaxed) + 1;
    match load(shared, uid, seq).await {
        Ok(view) => {
            if let Some(u) = users.write().get_mut(user)
                && u.view.as_ref().is_none_or(|v| v.seq < view.seq)
            {
                u.view = Some(view);
            }
        }
        Err(e) => tracing::error!(%user, error = %e, "loading the user's contacts and blocks failed"),
    }
}

/// Tells `user`'s contacts their presence, if it changed from what they were last told.
pub(super) fn broadcast(shared: &Shared, user: &UserName) {
    let mut users = shared.social.users.write();
    let Some(u) = users.get_mut(user) else { return };
    let now = u.effective();
    let Some(view) = &u.view else { return };
    if now == u.shown {
        return;
    }
    let push = update(user, &now);
    for c in view.contacts.iter().filter(|c| !view.blocked.contains(*c)) {
        shared.router.push_to_user(c, &push, None);
    }
    u.shown = now;
}

/// Tells `to` the presence of `about`, when `to` has just become able to see it (a contact
/// accepted, a block lifted).
pub(super) fn tell(shared: &Shared, about: &UserName, to: &UserName) {
    let users = shared.social.users.read();
    let Some(u) = users.get(about) else { return };
    let contact = u.view.as_ref().is_some_and(|v| v.contacts.contains(to));
    if contact && !u.blocks(to) && u.shown != OFFLINE {
        shared.router.push_to_user(to, &update(about, &u.shown), None);
    }
}

/// Makes `user` appear offline to `other`, who they have just blocked.
pub(super) fn hide_from(shared: &Shared, user: &UserName, other: &UserName) {
    let users = shared.social.users.read();
    if users.get(user).is_some_and(|u| u.shown != OFFLINE) {
        shared.router.push_to_user(other, &update(user, &OFFLINE), None);
    }
}

pub(super) async fn connected(shared: &Shared, id: &Identity) {
    let users = &shared.social.users;
    let load_needed = {
        let mut map = users.write();
        let u = map.entry(id.user.clone()).or_insert_with(|| Online {
            devices: 0,
            view: None,
            shown: OFFLINE,
        });
        u.devices += 1;
        u.view.is_none()
    };
    if load_needed {
        refresh(shared, &id.user, id.uid).await;
    }
    broadcast(shared, &id.user);
}

pub(super) fn disconnected(shared: &Shared, id: &Identity) {
    let mut users = shared.social.users.write();
    let Some(u) = users.get_mut(&id.user) else { return };
    u.devices = u.devices.saturating_sub(1);
    if u.devices > 0 {
        return;
    }
    if let Some(u) = users.remove(&id.user)
        && let Some(view) = &u.view
        && u.shown != OFFLINE
    {
        let push = update(&id.user, &OFFLINE);
        for c in view.contacts.iter().filter(|c| !view.blocked.contains(*c)) {
            shared.router.push_to_user(c, &push, None);
        }
    }
}

/// `SetPresence`: stored (it outlives the session), then told to contacts.
pub(super) async fn set(
    shared: &Arc<Shared>,
    id: &Identity,
    req: RequestId,
    presence: Presence,
    text: Option<String>,
) -> Reply {
    let text = text.filter(|t| !t.is_empty());
    let uid = id.uid;
    shared
        .db(move |a| a.set_presence(uid, presence.to_u8(), text.as_deref()))
        .await?;
    refresh(shared, &id.user, id.uid).await;
    broadcast(shared, &id.user);
    Ok(ServerMsg::Ok { req })
}

/// `GetPresence`: real presence for accepted contacts, `offline` for everyone else.
pub(super) fn get(shared: &Shared, id: &Identity, req: RequestId, names: Vec<UserName>) -> ServerMsg {
    let entries: Vec<PresenceInfo> = {
        let users = shared.social.users.read();
        names
            .into_iter()
            .map(|user| {
                let s = visible(&users, &id.user, &user);
                PresenceInfo {
                    user,
                    presence: s.presence,
                    text: s.text,
                }
            })
            .collect()
    };
    let entries = fit("presence", entries, |p| {
        str_size(p.user.as_str()) + 1 + opt_str_size(p.text.as_deref())
    });
    ServerMsg::PresenceList { req, entries }
}

/// The presence `viewer` sees of `user`, for the contact list.
pub(super) fn seen_by(
    shared: &Shared,
    viewer: &UserName,
    user: &UserName,
    state: ContactState,
) -> (Presence, Option<String>) {
    if state != ContactState::Accepted {
        return (Presence::Offline, None);
    }
    let s = visible(&shared.social.users.read(), viewer, user);
    (s.presence, s.text)
}

/// A typing notice to `peer`: only between accepted contacts, never to one who blocks the
/// typer.
pub(super) fn typing_to(shared: &Shared, id: &Identity, peer: &UserName) {
    let users = shared.social.users.read();
    let contact = users
        .get(&id.user)
        .and_then(|u| u.view.as_ref())
        .is_some_and(|v| v.contacts.contains(peer));
    if contact && receives_from(&users, peer, &id.user) {
        let push = Push::from([ServerMsg::TypingNotice {
            from: id.user.clone(),
            to: im_proto::Target::User(peer.clone()),
        }]);
        shared.router.push_to_user(peer, &push, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    fn online(chosen: Presence, contacts: &[&str], blocked: &[&str]) -> Online {
        Online {
            devices: 1,
            view: Some(View {
                seq: 1,
                chosen,
                text: Some("at lunch".into()),
                contacts: contacts.iter().map(|s| name(s)).collect(),
                blocked: blocked.iter().map(|s| name(s)).collect(),
            }),
            shown: OFFLINE,
        }
    }

    #[test]
    fn presence_is_visible_only_to_accepted_contacts_not_blocked() {
        let mut users = HashMap::new();
        users.insert(name("alice"), online(Presence::Away, &["bob", "carol"], &["carol"]));
        users.insert(name("bob"), online(Presence::Online, &["alice"], &[]));
        users.insert(name("carol"), online(Presence::Online, &["alice"], &[]));
        users.insert(name("mallory"), online(Presence::Online, &[], &[]));
        let away = Shown {
            presence: Presence::Away,
            text: Some("at lunch".into()),
        };
        assert_eq!(visible(&users, &name("bob"), &name("alice")), away);
        // Carol is a contact, but alice blocks her.
        assert_eq!(visible(&users, &name("carol"), &name("alice")), OFFLINE);
        // A stranger learns nothing.
        assert_eq!(visible(&users, &name("mallory"), &name("alice")), OFFLINE);
        // An offline contact is offline.
        users.remove(&name("alice"));
        assert_eq!(visible(&users, &name("bob"), &name("alice")), OFFLINE);
    }

    #[test]
    fn choosing_offline_hides_the_status_text() {
        let u = online(Presence::Offline, &[], &[]);
        assert_eq!(u.effective(), OFFLINE);
        let unloaded = Online {
            devices: 1,
            view: None,
            shown: OFFLINE,
        };
        assert_eq!(unloaded.effective(), OFFLINE);
        assert_eq!(chosen_from_db(0), Presence::Online);
        assert_eq!(chosen_from_db(3), Presence::Busy);
    }

    #[test]
    fn blocked_users_do_not_receive() {
        let mut users = HashMap::new();
        users.insert(name("alice"), online(Presence::Online, &[], &["mallory"]));
        assert!(!receives_from(&users, &name("alice"), &name("mallory")));
        assert!(receives_from(&users, &name("alice"), &name("bob")));
        assert!(
            !receives_from(&users, &name("bob"), &name("alice")),
            "bob is not online"
        );
    }
}
