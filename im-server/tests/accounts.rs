//! The accounts database, through its public API, on real files in temporary directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use im_proto::{RoomName, UserName};
use im_server::store::accounts::{
    APPLICATION_ID, Accounts, AccountsError, ContactOutcome, ContactState, Role, SCHEMA_VERSION, Ticket, UserId,
};
use tempfile::TempDir;
use zeroize::Zeroizing;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
const NOW: u64 = 1_700_000_000_000;

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn room(s: &str) -> RoomName {
    RoomName::parse(s).unwrap()
}

fn fresh() -> (TempDir, PathBuf, Accounts) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.db");
    let db = Accounts::open(&path).unwrap();
    (dir, path, db)
}

fn add(db: &Accounts, name: &str) -> UserId {
    db.create_user(&user(name), HASH, NOW).unwrap()
}

fn names(list: &[UserName]) -> Vec<&str> {
    list.iter().map(UserName::as_str).collect()
}

fn ticket(id: u8, user: UserId, device_id: u64, expires_ms: u64) -> Ticket {
    Ticket {
        id: [id; 16],
        user,
        device_id,
        secret: Zeroizing::new([id ^ 0xff; 32]),
        expires_ms,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn users_are_created_once_under_their_folded_name() {
    let (_dir, _path, db) = fresh();
    let alice = db.create_user(&user("Alice"), HASH, NOW).unwrap();
    let found = db.user(&user("ALICE")).unwrap().expect("alice exists");
    assert_eq!(found.id, alice);
    assert_eq!(found.name.as_str(), "alice");
    assert_eq!(found.password_hash, HASH);
    assert_eq!(found.created_ms, NOW);
    assert_eq!(db.user_by_id(alice).unwrap().unwrap().name, user("alice"));
    assert!(matches!(
        db.create_user(&user("aLiCe"), HASH, NOW + 1),
        Err(AccountsError::Exists(_))
    ));

    let bob = db.create_user(&user("bob"), "other", NOW + 5).unwrap();
    assert_ne!(alice, bob);
    assert_eq!(db.count_users().unwrap(), 2);
    assert_eq!(
        db.list_users().unwrap(),
        vec![(user("alice"), NOW), (user("bob"), NOW + 5)]
    );
    assert!(db.user(&user("carol")).unwrap().is_none());

    db.set_password(bob, "new hash").unwrap();
    assert_eq!(db.user(&user("bob")).unwrap().unwrap().password_hash, "new hash");
    assert!(matches!(
        db.set_password(UserId(999), "x"),
        Err(AccountsError::NotFound("user"))
    ));
    assert!(!format!("{found:?}").contains("argon2"), "Debug shows the hash");
}

#[test]
fn deleting_a_user_takes_everything_of_theirs() {
    let (_dir, _path, db) = fresh();
    let alice = add(&db, "alice");
    let bob = add(&db, "bob");
    db.add_key(alice, b"key", NOW).unwrap();
    db.touch_device(alice, 1, "laptop", NOW).unwrap();
    db.insert_ticket(&ticket(1, alice, 1, NOW + 1000)).unwrap();
    db.join_room(&room("#a"), alice, 0, NOW).unwrap();
    db.join_room(&room("#a"), bob, 0, NOW).unwrap();
    db.contact_request(alice, bob).unwrap();
    db.block(bob, alice).unwrap();

    assert!(db.delete_user(&user("Alice")).unwrap());
    assert!(!db.delete_user(&user("alice")).unwrap());
    assert!(db.user(&user("alice")).unwrap().is_none());
    assert_eq!(db.count_users().unwrap(), 1);
    assert!(!db.has_key(alice, b"key").unwrap());
    assert!(db.devices(alice).unwrap().is_empty());
    assert!(db.ticket(&[1; 16], NOW).unwrap().is_none());
    let members = db.members(&room("#a")).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, user("bob"));
    assert!(db.contacts(bob).unwrap().is_empty());
    assert!(db.blocked(bob).unwrap().is_empty());

    // The id is not handed to the next user.
    let carol = add(&db, "carol");
    assert!(carol > bob);
}

#[test]
fn user_keys() {
    let (_dir, _path, db) = fresh();
    let alice = add(&db, "alice");
    let bob = add(&db, "bob");
    assert!(db.add_key(alice, b"spki-1", NOW).unwrap());
    assert!(!db.add_key(alice, b"spki-1", NOW + 1).unwrap());
    assert!(db.add_key(alice, b"spki-2", NOW + 2).unwrap());
    assert!(db.has_key(alice, b"spki-1").unwrap());
    assert!(!db.has_key(bob, b"spki-1").unwrap());
    let keys = db.keys(alice).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!((keys[0].spki_der.as_slice(), keys[0].added_ms), (&b"spki-1"[..], NOW));
    assert!(db.remove_key(alice, b"spki-1").unwrap());
    assert!(!db.remove_key(alice, b"spki-1").unwrap());
    assert!(!db.has_key(alice, b"spki-1").unwrap());
    assert!(db.has_key(alice, b"spki-2").unwrap());
    assert!(matches!(
        db.add_key(UserId(999), b"k", NOW),
        Err(AccountsError::NotFound("user"))
    ));
}

#[test]
fn devices_and_cursors_that_never_move_back() {
    let (_dir, _path, db) = fresh();
    let alice = add(&db, "alice");
    let bob = add(&db, "bob");
    assert!(db.touch_device(alice, 7, "laptop", NOW).unwrap());
    assert!(!db.touch_device(alice, 7, "old laptop", NOW + 10).unwrap());
    assert!(db.touch_device(alice, u64::MAX, "phone", NOW + 20).unwrap());
    assert!(db.touch_device(bob, 7, "bob's", NOW).unwrap());

    let devices = db.devices(alice).unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].id, 7);
    assert_eq!(devices[0].name, "old laptop");
    assert_eq!((devices[0].created_ms, devices[0].last_seen_ms), (NOW, NOW + 10));
    assert_eq!(devices[0].cursor, 0);
    assert_eq!(devices[1].id, u64::MAX);

    assert_eq!(db.cursor(alice, 7).unwrap(), Some(0));
    assert_eq!(db.advance_cursor(alice, 7, 100).unwrap(), 100);
    assert_eq!(db.advance_cursor(alice, 7, 40).unwrap(), 100);
    assert_eq!(db.cursor(alice, 7).unwrap(), Some(100));
    assert_eq!(db.advance_cursor(alice, u64::MAX, 5).unwrap(), 5);
    assert_eq!(db.cursor(bob, 7).unwrap(), Some(0), "cursors are per user and device");
    assert_eq!(db.cursor(alice, 8).unwrap(), None);
    assert!(matches!(
        db.advance_cursor(alice, 8, 1),
        Err(AccountsError::NotFound("device"))
    ));

    // The batched form (live sessions' periodic saves): one commit, forward only, a device
    // that is gone skipped rather than failing the others.
    db.advance_cursors(&[(alice, 7, 150), (alice, u64::MAX, 3), (alice, 8, 9), (bob, 7, 20)])
        .unwrap();
    assert_eq!(db.cursor(alice, 7).unwrap(), Some(150));
    assert_eq!(
        db.cursor(alice, u64::MAX).unwrap(),
        Some(5),
        "a cursor never moves back"
    );
    assert_eq!(db.cursor(alice, 8).unwrap(), None);
    assert_eq!(db.cursor(bob, 7).unwrap(), Some(20));

    assert!(db.remove_device(alice, 7).unwrap());
    assert!(!db.remove_device(alice, 7).unwrap());
    assert_eq!(db.devices(alice).unwrap().len(), 1);
    assert_eq!(db.cursor(bob, 7).unwrap(), Some(20));
    assert!(matches!(
        db.touch_device(UserId(999), 1, "x", NOW),
        Err(AccountsError::NotFound("user"))
    ));
}

#[test]
fn tickets_expire_and_are_revoked_per_device() {
    let (_dir, _path, db) = fresh();
    let alice = add(&db, "alice");
    let bob = add(&db, "bob");
    for device in [1, 2, 3] {
        db.touch_device(alice, device, "d", NOW).unwrap();
    }
    db.touch_device(bob, 1, "d", NOW).unwrap();
    db.insert_ticket(&ticket(1, alice, 1, NOW + 100)).unwrap();
    db.insert_ticket(&ticket(2, alice, 1, NOW + 100)).unwrap();
    db.insert_ticket(&ticket(3, alice, 2, NOW + 100)).unwrap();
    db.insert_ticket(&ticket(4, alice, 3, NOW + 100)).unwrap();
    db.insert_ticket(&ticket(5, bob, 1, NOW + 100)).unwrap();
    assert!(matches!(
        db.insert_ticket(&ticket(1, alice, 2, NOW)),
        Err(AccountsError::Exists(_))
    ));
    assert!(matches!(
        db.insert_ticket(&ticket(9, alice, 99, NOW)),
        Err(AccountsError::NotFound("device"))
    ));

    let t = db.ticket(&[3; 16], NOW).unwrap().expect("ticket 3");
    assert_eq!((t.user, t.user_name.as_str(), t.device_id), (alice, "alice", 2));
    assert_eq!(*t.secret, [3 ^ 0xff; 32]);
    assert_eq!(t.expires_ms, NOW + 100);
    assert!(!format!("{t:?}").contains("252"), "Debug shows the secret");
    assert!(db.ticket(&[3; 16], NOW + 99).unwrap().is_some());
    assert!(
        db.ticket(&[3; 16], NOW + 100).unwrap().is_none(),
        "expired at expires_ms"
    );
    assert!(db.ticket(&[8; 16], NOW).unwrap().is_none());

    // Logout of device 1: its two tickets go, the others stay.
    assert_eq!(db.delete_tickets_of_device(alice, 1).unwrap(), 2);
    assert!(db.ticket(&[1; 16], NOW).unwrap().is_none());
    assert!(db.ticket(&[2; 16], NOW).unwrap().is_none());
    assert!(db.ticket(&[3; 16], NOW).unwrap().is_some());

    // Password change from device 3: every other device of alice loses its tickets; bob's stay.
    db.insert_ticket(&ticket(1, alice, 1, NOW + 100)).unwrap();
    assert_eq!(db.delete_tickets_except_device(alice, 3).unwrap(), 2);
    assert!(db.ticket(&[1; 16], NOW).unwrap().is_none());
    assert!(db.ticket(&[3; 16], NOW).unwrap().is_none());
    assert!(db.ticket(&[4; 16], NOW).unwrap().is_some());
    assert!(db.ticket(&[5; 16], NOW).unwrap().is_some());

    // Removing a device takes its tickets.
    assert!(db.remove_device(alice, 3).unwrap());
    assert!(db.ticket(&[4; 16], NOW).unwrap().is_none());

    // Single tickets, all of a user's, and the expired ones.
    db.insert_ticket(&ticket(6, alice, 1, NOW + 10)).unwrap();
    db.insert_ticket(&ticket(7, alice, 2, NOW + 10)).unwrap();
    assert!(db.delete_ticket(&[6; 16]).unwrap());
    assert!(!db.delete_ticket(&[6; 16]).unwrap());
    assert_eq!(db.delete_tickets_of_user(alice).unwrap(), 1);
    db.insert_ticket(&ticket(8, alice, 1, NOW + 10)).unwrap();
    assert_eq!(db.purge_expired_tickets(NOW + 9).unwrap(), 0);
    assert_eq!(db.purge_expired_tickets(NOW + 10).unwrap(), 1);
    assert!(db.ticket(&[5; 16], NOW).unwrap().is_some());
    assert_eq!(db.purge_expired_tickets(NOW + 1000).unwrap(), 1);
    assert!(db.ticket(&[5; 16], NOW).unwrap().is_none());
}

#[test]
fn rooms_members_roles_topics_and_bans() {
    let (_dir, _path, db) = fresh();
    let alice = add(&db, "alice");
    let bob = add(&db, "bob");
    let carol = add(&db, "carol");
    let rust = room("#Rust");

    let first = db.join_room(&rust, alice, 10, NOW).unwrap();
    assert!(first.created && !first.already_member);
    assert_eq!(first.role, Role::Owner);
    let second = db.join_room(&room("#rust"), bob, 20, NOW).unwrap();
    assert!(!second.created && !second.already_member);
    assert_eq!(second.role, Role::Member);
    let again = db.join_room(&rust, bob, 99, NOW).unwrap();
    assert!(again.already_member && !again.created);
    assert_eq!(again.role, Role::Member);
    db.join_room(&room("#go"), bob, 30, NOW).unwrap();

    assert_eq!(db.count_rooms().unwrap(), 2);
    let rooms = db.rooms().unwrap();
    assert_eq!(rooms.len(), 2);
    assert_eq!((rooms[0].name.as_str(), rooms[0].members), ("#go", 1));
    assert_eq!((rooms[1].name.as_str(), rooms[1].members), ("#rust", 2));
    let of_bob = db.rooms_of(bob).unwrap();
    assert_eq!(of_bob.len(), 2);
    assert_eq!((of_bob[1].room.as_str(), of_bob[1].joined_at_msg_id), ("#rust", 20));
    assert_eq!(of_bob[0].role, Role::Owner);
    let members = db.members(&rust).unwrap();
    let listed: Vec<_> = members.iter().map(|m| (m.name.as_str(), m.user, m.role)).collect();
    assert_eq!(listed, vec![("alice", alice, Role::Owner), ("bob", bob, Role::Member)]);
    assert_eq!(db.member_role(&rust, bob).unwrap(), Some(Role::Member));
    assert_eq!(db.member_role(&rust, carol).unwrap(), None);
    assert_eq!(db.member_role(&room("#none"), bob).unwrap(), None);

    // Topics.
    assert_eq!(db.topic(&rust).unwrap(), None);
    db.set_topic(&rust, Some("all things rust")).unwrap();
    assert_eq!(db.topic(&rust).unwrap().as_deref(), Some("all things rust"));
    assert_eq!(db.rooms().unwrap()[1].topic.as_deref(), Some("all things rust"));
    db.set_topic(&rust, None).unwrap();
    assert_eq!(db.topic(&rust).unwrap(), None);
    assert!(matches!(db.topic(&room("#none")), Err(AccountsError::NotFound("room"))));
    assert!(matches!(
        db.set_topic(&room("#none"), Some("x")),
        Err(AccountsError::NotFound(_))
    ));

    // Roles.
    db.set_role(&rust, bob, Role::Operator).unwrap();
    assert_eq!(db.member_role(&rust, bob).unwrap(), Some(Role::Operator));
    assert!(matches!(
        db.set_role(&rust, carol, Role::Owner),
        Err(AccountsError::NotFound(_))
    ));

    // A ban takes the member out and keeps them out until unbanned.
    assert!(db.ban(&rust, bob, alice, NOW).unwrap());
    assert!(!db.ban(&rust, bob, alice, NOW).unwrap());
    assert!(db.is_banned(&rust, bob).unwrap());
    assert!(!db.is_banned(&rust, alice).unwrap());
    assert!(!db.is_banned(&room("#go"), bob).unwrap());
    assert_eq!(db.member_role(&rust, bob).unwrap(), None);
    assert_eq!(names(&db.banned(&rust).unwrap()), ["bob"]);
    assert!(matches!(db.join_room(&rust, bob, 50, NOW), Err(AccountsError::Banned(r)) if r == rust));
    assert_eq!(db.members(&rust).unwrap().len(), 1);
    assert!(db.ban(&rust, carol, alice, NOW).unwrap(), "a non-member can be banned");
    assert!(matches!(
        db.ban(&room("#none"), bob, alice, NOW),
        Err(AccountsError::NotFound("room"))
    ));
    assert!(db.unban(&rust, bob).unwrap());
    assert!(!db.unban(&rust, bob).unwrap());
    let back = db.join_room(&rust, bob, 60, NOW).unwrap();
    assert_eq!(back.role, Role::Member, "a rejoin starts over as a member");
    assert_eq!(db.rooms_of(bob).unwrap()[1].joined_at_msg_id, 60);

    // Leaving; a room outlives its members and its next joiner owns it.
    assert!(db.leave_room(&rust, bob).unwrap());
    assert!(!db.leave_room(&rust, bob).unwrap());
    assert!(!db.leave_room(&room("#none"), bob).unwrap());
    assert!(db.leave_room(&rust, alice).unwrap());
    assert_eq!(db.count_rooms().unwrap(), 2);
    assert_eq!(db.rooms().unwrap()[1].members, 0);
    assert!(db.members(&rust).unwrap().is_empty());
    let revived = db.join_room(&rust, bob, 70, NOW).unwrap();
    assert!(!revived.created);
    assert_eq!(revived.role, Role::Owner);
    assert!(matches!(
        db.members(&room("#none")),
        Err(AccountsError::NotFound("room"))
    ));
    assert!(matches!(
        db.join_room(&room("#x"), UserId(999), 0, NOW),
        Err(AccountsError::NotFound("user"))
    ));
    assert_eq!(db.count_rooms().unwrap(), 2, "a failed join creates no room");
}

#[test]
fn contacts_are_mutual() {
    let (_dir, _path, db) = fresh();
    let alice = add(&db, "alice");
    let bob = add(&db, "bob");
    let carol = add(&db, "carol");
    let state = |me, who: &str| {
        db.contacts(me)
            .unwrap()
            .into_iter()
            .find(|c| c.name.as_str() == who)
            .map(|c| c.state)
    };

    assert_eq!(db.contact_request(alice, bob).unwrap(), ContactOutcome::Requested);
    assert_eq!(
        db.contact_request(alice, bob).unwrap(),
        ContactOutcome::AlreadyRequested
    );
    assert_eq!(state(alice, "bob"), Some(ContactState::Outgoing));
    assert_eq!(state(bob, "alice"), Some(ContactState::Incoming));
    assert!(!db.are_contacts(alice, bob).unwrap());
    assert!(!db.contact_accept(alice, bob).unwrap(), "accepting one's own request");
    assert!(!db.contact_accept(carol, alice).unwrap(), "accepting no request");

    assert!(db.contact_accept(bob, alice).unwrap());
    assert!(!db.contact_accept(bob, alice).unwrap());
    assert!(db.are_contacts(alice, bob).unwrap() && db.are_contacts(bob, alice).unwrap());
    assert_eq!(state(alice, "bob"), Some(ContactState::Accepted));
    assert_eq!(state(bob, "alice"), Some(ContactState::Accepted));
    assert_eq!(db.contact_request(bob, alice).unwrap(), ContactOutcome::AlreadyContacts);
    assert_eq!(db.contacts(bob).unwrap()[0].user, alice);

    // Asking someone who asked you accepts.
    assert_eq!(db.contact_request(carol, alice).unwrap(), ContactOutcome::Requested);
    assert_eq!(db.contact_request(alice, carol).unwrap(), ContactOutcome::Accepted);
    assert!(db.are_contacts(carol, alice).unwrap());
    assert_eq!(db.contacts(alice).unwrap().len(), 2);

    // Either side ends it for both.
    assert!(db.contact_remove(bob, alice).unwrap());
    assert!(!db.contact_remove(alice, bob).unwrap());
    assert!(!db.are_contacts(alice, bob).unwrap());
    assert_eq!(state(alice, "bob"), None);
    assert!(db.contacts(bob).unwrap().is_empty());
    assert!(db.contact_remove(alice, carol).unwrap());
    assert!(db.contacts(carol).unwrap().is_empty());

    // A declined request is gone; one can ask again.
    db.contact_request(bob, carol).unwrap();
    assert!(db.contact_remove(carol, bob).unwrap());
    assert_eq!(db.contact_request(bob, carol).unwrap(), ContactOutcome::Requested);

    assert!(matches!(
        db.contact_request(alice, alice),
        Err(AccountsError::Invalid(_))
    ));
    assert!(matches!(
        db.contact_request(alice, UserId(999)),
        Err(AccountsError::NotFound(_))
    ));
}

#[test]
fn blocks_are_one_sided() {
    let (_dir, _path, db) = fresh();
    let alice = add(&db, "alice");
    let bob = add(&db, "bob");
    let carol = add(&db, "carol");
    assert!(db.block(alice, carol).unwrap());
    assert!(db.block(alice, bob).unwrap());
    assert!(!db.block(alice, bob).unwrap());
    assert_eq!(names(&db.blocked(alice).unwrap()), ["bob", "carol"]);
    assert!(db.is_blocked(alice, bob).unwrap());
    assert!(!db.is_blocked(bob, alice).unwrap());
    assert!(db.blocked(bob).unwrap().is_empty());
    assert!(db.unblock(alice, bob).unwrap());
    assert!(!db.unblock(alice, bob).unwrap());
    assert!(!db.is_blocked(alice, bob).unwrap());
    assert_eq!(names(&db.blocked(alice).unwrap()), ["carol"]);
    assert!(matches!(db.block(alice, alice), Err(AccountsError::Invalid(_))));
    assert!(matches!(db.block(alice, UserId(999)), Err(AccountsError::NotFound(_))));
}

#[test]
fn presence_status_is_kept() {
    let (_dir, path, db) = fresh();
    let alice = add(&db, "alice");
    assert_eq!(db.presence(alice).unwrap(), (0, None));
    db.set_presence(alice, 2, Some("at lunch")).unwrap();
    assert_eq!(db.presence(alice).unwrap(), (2, Some("at lunch".to_owned())));
    db.set_presence(alice, 255, None).unwrap();
    drop(db);
    let db = Accounts::open(&path).unwrap();
    assert_eq!(db.presence(alice).unwrap(), (255, None));
    assert!(matches!(db.presence(UserId(999)), Err(AccountsError::NotFound("user"))));
    assert!(matches!(
        db.set_presence(UserId(999), 1, None),
        Err(AccountsError::NotFound(_))
    ));
}

fn pragma(path: &Path, name: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_query_value(None, name, |r| r.get(0)).unwrap()
}

#[test]
fn reopening_keeps_everything_and_migrates_once() {
    let (_dir, path, db) = fresh();
    let alice = add(&db, "alice");
    db.touch_device(alice, 1, "laptop", NOW).unwrap();
    db.advance_cursor(alice, 1, 42).unwrap();
    db.join_room(&room("#a"), alice, 0, NOW).unwrap();
    db.set_topic(&room("#a"), Some("t")).unwrap();
    drop(db);

    for _ in 0..3 {
        let db = Accounts::open(&path).unwrap();
        assert_eq!(db.user(&user("alice")).unwrap().unwrap().id, alice);
        assert_eq!(db.cursor(alice, 1).unwrap(), Some(42));
        assert_eq!(db.topic(&room("#a")).unwrap().as_deref(), Some("t"));
        assert_eq!(db.path(), path);
    }
    assert_eq!(pragma(&path, "user_version"), SCHEMA_VERSION);
    assert_eq!(pragma(&path, "application_id"), i64::from(APPLICATION_ID));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn a_newer_schema_is_refused() {
    let (_dir, path, db) = fresh();
    drop(db);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 98).unwrap();
    drop(conn);
    let err = Accounts::open(&path).unwrap_err();
    assert!(matches!(err, AccountsError::TooNew { found, supported, .. }
        if found == SCHEMA_VERSION + 98 && supported == SCHEMA_VERSION));
    let text = err.to_string();
    let expected = format!(
        "database schema version {} is newer than this server supports ({SCHEMA_VERSION})",
        SCHEMA_VERSION + 98
    );
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

/// Opens `path` as accounts, expecting a refusal that names the path and leaves the file (and
/// its directory) exactly as it was.
fn assert_refused(path: &Path) -> AccountsError {
    let before = fs::read(path).unwrap();
    let dir_before = list_dir(path.parent().unwrap());
    let err = Accounts::open(path).unwrap_err();
    assert!(matches!(err, AccountsError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert_eq!(fs::read(path).unwrap(), before, "the refused file was changed");
    assert_eq!(
        list_dir(path.parent().unwrap()),
        dir_before,
        "files appeared next to it"
    );
    err
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn another_programs_sqlite_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "application_id", 0x1234_5678).unwrap();
    conn.execute_batch("CREATE TABLE users (x); INSERT INTO users VALUES ('precious');")
        .unwrap();
    drop(conn);
    let err = assert_refused(&path);
    assert!(err.to_string().contains("0x12345678"), "{err}");

    // No application id at all, but tables: still not ours.
    let plain = dir.path().join("plain.db");
    let conn = rusqlite::Connection::open(&plain).unwrap();
    conn.execute_batch("CREATE TABLE notes (x); INSERT INTO notes VALUES (1);")
        .unwrap();
    drop(conn);
    assert_refused(&plain);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("notes.txt");
    fs::write(&long, "not a database\n".repeat(200)).unwrap();
    let err = assert_refused(&long);
    assert!(err.to_string().contains("not a SQLite database"), "{err}");
    let short = dir.path().join("short");
    fs::write(&short, b"hi").unwrap();
    assert_refused(&short);
}

#[test]
fn the_file_is_private() {
    let (dir, path, db) = fresh();
    let alice = add(&db, "alice");
    db.touch_device(alice, 1, "d", NOW).unwrap();
    assert_eq!(mode(&path), 0o600);
    let wal = dir.path().join("accounts.db-wal");
    assert!(wal.exists(), "not in WAL mode");
    assert_eq!(mode(&wal), 0o600);
    drop(db);

    // An empty file left with a looser mode (say, by a crash right after creation) is tightened.
    let loose = dir.path().join("loose.db");
    fs::write(&loose, b"").unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    Accounts::open(&loose).unwrap();
    assert_eq!(mode(&loose), 0o600);
}

#[test]
fn two_connections_write_at_once() {
    fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<Accounts>();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.db");
    let start = Arc::new(Barrier::new(2));
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|prefix| {
            let (path, start) = (path.clone(), start.clone());
            thread::spawn(move || {
                // Both open the new file at once, too: one creates the schema, the other sees it.
                start.wait();
                let db = Accounts::open(&path).unwrap();
                for i in 0..50 {
                    let id = db.create_user(&user(&format!("{prefix}{i}")), HASH, NOW).unwrap();
                    db.touch_device(id, 1, "d", NOW).unwrap();
                    db.join_room(&room("#all"), id, i, NOW).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("a writer failed");
    }
    let db = Accounts::open(&path).unwrap();
    assert_eq!(db.count_users().unwrap(), 100);
    assert_eq!(db.rooms().unwrap()[0].members, 100);
    let owners = db
        .members(&room("#all"))
        .unwrap()
        .iter()
        .filter(|m| m.role == Role::Owner)
        .count();
    assert_eq!(owners, 1);
}

#[test]
fn a_writer_waits_for_another_process_lock() {
    let (_dir, path, db) = fresh();
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; UPDATE users SET presence = 0;")
        .unwrap();
    let release = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    // Without the busy timeout this fails at once with "database is locked".
    add(&db, "alice");
    release.join().unwrap();
    assert_eq!(db.count_users().unwrap(), 1);
}

#[test]
fn malformed_names_read_back_are_reported_as_corruption() {
    let (_dir, path, db) = fresh();
    add(&db, "alice");
    drop(db);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO users (name, password_hash, created_ms) VALUES ('Not Ok', '', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let db = Accounts::open(&path).unwrap();
    let err = db.list_users().unwrap_err();
    assert!(matches!(err, AccountsError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert!(db.user(&user("alice")).unwrap().is_some(), "the good rows still read");
}

#[test]
fn online_backup() {
    let (dir, _path, db) = fresh();
    let alice = add(&db, "alice");
    db.join_room(&room("#a"), alice, 0, NOW).unwrap();
    let dest = dir.path().join("backup.db");
    db.backup_to(&dest).unwrap();
    add(&db, "bob"); // after the snapshot
    assert_eq!(mode(&dest), 0o600);

    let err = db.backup_to(&dest).unwrap_err();
    assert!(matches!(err, AccountsError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("backup.db"), "{err}");

    let copy = Accounts::open(&dest).unwrap();
    assert_eq!(copy.list_users().unwrap(), vec![(user("alice"), NOW)]);
    assert_eq!(copy.member_role(&room("#a"), alice).unwrap(), Some(Role::Owner));
}
