//! The message log through its public API: ids and timestamps, paging, deduplication,
//! catch-up, reopening, group commit under concurrency, `kill -9`, retention, and refusing
//! directories that are not ours.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use im_proto::{RoomName, Target, UserName};
use im_server::store::messages::{Appended, Conversation, MessageLog, NewMessage, StoreError, StoredMessage};

fn u(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn r(s: &str) -> RoomName {
    RoomName::parse(s).unwrap()
}

fn msg(from: &str, to: &str, client_id: &str, text: &str) -> NewMessage {
    NewMessage {
        from: u(from),
        to: Target::parse(to).unwrap(),
        client_id: client_id.into(),
        action: false,
        text: text.into(),
        sender_device: 0,
    }
}

fn append(log: &MessageLog, from: &str, to: &str, text: &str) -> StoredMessage {
    match log.append_blocking(msg(from, to, "", text)).unwrap() {
        Appended::New(m) => m,
        dup => panic!("unexpected {dup:?}"),
    }
}

fn ids(msgs: &[StoredMessage]) -> Vec<u64> {
    msgs.iter().map(|m| m.id).collect()
}

/// A clock the test moves by hand.
fn manual_clock(start: u64) -> (Arc<AtomicU64>, im_server::store::messages::Clock) {
    let now = Arc::new(AtomicU64::new(start));
    let n = now.clone();
    (now, Arc::new(move || n.load(Ordering::SeqCst)))
}

/// Every message of a conversation, oldest first, read page by page with `after`.
fn whole(log: &MessageLog, conv: &Conversation) -> Vec<StoredMessage> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|m: &StoredMessage| m.id);
        let (page, more) = log.history(conv, None, after.or(Some(0)), 7).unwrap();
        all.extend(page);
        if !more {
            return all;
        }
    }
}

#[test]
fn ids_increase_and_timestamps_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock(1_700_000_000_000);
    let log = MessageLog::open_with_clock(dir.path(), clock).unwrap();
    assert_eq!(log.last_id(), 0);
    let mut got = Vec::new();
    for (i, t) in [5_000u64, 6_000, 4_000, 4_000, 9_000].into_iter().enumerate() {
        now.store(1_700_000_000_000 + t, Ordering::SeqCst);
        got.push(append(&log, "alice", "#general", &format!("m{i}")));
    }
    assert_eq!(ids(&got), [1, 2, 3, 4, 5]);
    let ts: Vec<u64> = got.iter().map(|m| m.ts - 1_700_000_000_000).collect();
    assert_eq!(
        ts,
        [5_000, 6_000, 6_000, 6_000, 9_000],
        "the clock went back, timestamps did not"
    );
    assert_eq!(log.last_id(), 5);
    assert_eq!(log.count().unwrap(), 5);
    // What was stored is what was returned.
    let (page, more) = log.history(&Conversation::Room(r("#general")), None, None, 10).unwrap();
    assert_eq!(page, got);
    assert!(!more);
}

#[test]
fn history_pages_before_and_after_with_more() {
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(dir.path()).unwrap();
    let room = Conversation::Room(r("#rust"));
    let mut want = Vec::new();
    for i in 0..10 {
        want.push(append(&log, "alice", "#rust", &format!("r{i}")).id);
        // Noise in neighbouring conversations, including one whose key shares a prefix.
        append(&log, "bob", "#rust.x", "noise");
        append(&log, "bob", "alice", "noise");
    }

    // Newest page first, then older pages with `before`.
    let (page, more) = log.history(&room, None, None, 4).unwrap();
    assert_eq!(ids(&page), want[6..]);
    assert!(more);
    let (page, more) = log.history(&room, Some(want[6]), None, 4).unwrap();
    assert_eq!(ids(&page), want[2..6]);
    assert!(more);
    let (page, more) = log.history(&room, Some(want[2]), None, 4).unwrap();
    assert_eq!(ids(&page), want[..2]);
    assert!(!more);

    // Forward paging with `after`.
    let (page, more) = log.history(&room, None, Some(0), 4).unwrap();
    assert_eq!(ids(&page), want[..4]);
    assert!(more);
    let (page, more) = log.history(&room, None, Some(want[3]), 4).unwrap();
    assert_eq!(ids(&page), want[4..8]);
    assert!(more);
    let (page, more) = log.history(&room, None, Some(want[7]), 4).unwrap();
    assert_eq!(ids(&page), want[8..]);
    assert!(!more);
    let (page, more) = log.history(&room, None, Some(want[9]), 4).unwrap();
    assert!(page.is_empty() && !more);

    // Both bounds: the newest of the window.
    let (page, more) = log.history(&room, Some(want[8]), Some(want[1]), 3).unwrap();
    assert_eq!(ids(&page), want[5..8]);
    assert!(more);
    let (page, more) = log.history(&room, Some(want[8]), Some(want[4]), 3).unwrap();
    assert_eq!(ids(&page), want[5..8]);
    assert!(!more);

    // Exact page sizes and degenerate bounds.
    let (page, more) = log.history(&room, None, None, 10).unwrap();
    assert_eq!(ids(&page), want);
    assert!(!more);
    let (page, more) = log.history(&room, None, None, 0).unwrap();
    assert!(page.is_empty() && more);
    assert!(log.history(&room, Some(0), None, 5).unwrap().0.is_empty());
    assert!(log.history(&room, Some(1), None, 5).unwrap().0.is_empty());
    assert!(log.history(&room, None, Some(u64::MAX), 5).unwrap().0.is_empty());
    assert!(
        log.history(&Conversation::Room(r("#empty")), None, None, 5)
            .unwrap()
            .0
            .is_empty()
    );
}

#[test]
fn direct_conversation_is_symmetric() {
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(dir.path()).unwrap();
    let a = append(&log, "alice", "bob", "hi bob");
    let b = append(&log, "bob", "alice", "hi alice");
    append(&log, "alice", "carol", "hi carol");
    let c = append(&log, "alice", "Bob", "case folded");
    let ab = log
        .history(&Conversation::direct(&u("alice"), &u("bob")), None, None, 10)
        .unwrap()
        .0;
    let ba = log
        .history(&Conversation::direct(&u("bob"), &u("alice")), None, None, 10)
        .unwrap()
        .0;
    assert_eq!(ab, vec![a, b, c]);
    assert_eq!(ab, ba);
    assert_eq!(ab[1].to, Target::User(u("alice")));
    // Talking to oneself is a conversation too, stored once.
    let me = append(&log, "alice", "alice", "note to self");
    let (own, _) = log
        .history(&Conversation::direct(&u("alice"), &u("alice")), None, None, 10)
        .unwrap();
    assert_eq!(own, vec![me.clone()]);
    let caught = log.catch_up(&u("alice"), &[], me.id - 1, 10).unwrap();
    assert_eq!(caught, vec![me]);
}

#[test]
fn dedup_by_sender_and_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(dir.path()).unwrap();
    let first = log.append_blocking(msg("alice", "bob", "c-1", "hello")).unwrap();
    let Appended::New(orig) = first else {
        panic!("first append not new: {first:?}")
    };
    // A retransmission, even with a different text or target, returns the original.
    let again = log.append_blocking(msg("alice", "bob", "c-1", "hello")).unwrap();
    assert_eq!(again, Appended::Duplicate(orig.clone()));
    let odd = log
        .append_blocking(msg("alice", "#elsewhere", "c-1", "changed"))
        .unwrap();
    assert_eq!(odd, Appended::Duplicate(orig.clone()));
    // Another sender may use the same client id.
    let other = log.append_blocking(msg("bob", "alice", "c-1", "hello")).unwrap();
    assert!(matches!(&other, Appended::New(m) if m.id == orig.id + 1));
    // Stored once each.
    let conv = Conversation::direct(&u("alice"), &u("bob"));
    let all = log.history(&conv, None, None, 10).unwrap().0;
    assert_eq!(ids(&all), [orig.id, orig.id + 1]);
    assert!(
        log.history(&Conversation::Room(r("#elsewhere")), None, None, 10)
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(log.count().unwrap(), 2);
    let s = log.stats();
    assert_eq!((s.appended, s.duplicates), (2, 2));
    // Dedup survives a reopen.
    drop(log);
    let log = MessageLog::open(dir.path()).unwrap();
    assert_eq!(
        log.append_blocking(msg("alice", "bob", "c-1", "x")).unwrap(),
        Appended::Duplicate(orig)
    );
}

#[test]
fn catch_up_merges_direct_messages_and_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(dir.path()).unwrap();
    let users = ["alice", "bob", "carol"];
    let targets = ["alice", "bob", "carol", "#a", "#b", "#c"];
    let mut all = Vec::new();
    // A deterministic mix of senders and targets.
    let mut x = 7u32;
    for i in 0..120 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let from = users[(x >> 8) as usize % users.len()];
        let to = targets[(x >> 16) as usize % targets.len()];
        all.push(append(&log, from, to, &format!("m{i}")));
    }
    let room_joined_late = all[60].id;
    let rooms = [(r("#a"), 0), (r("#b"), room_joined_late)];
    let expected = |after: u64| -> Vec<StoredMessage> {
        all.iter()
            .filter(|m| m.id > after)
            .filter(|m| match &m.to {
                Target::User(to) => m.from == u("bob") || *to == u("bob"),
                Target::Room(room) => rooms.iter().any(|(r, from)| r == room && m.id > *from),
            })
            .cloned()
            .collect()
    };
    for after in [0, 1, 30, 59, 61, 100, 119, 120, 500] {
        for limit in [1, 5, 17, 1000] {
            let got = log.catch_up(&u("bob"), &rooms, after, limit).unwrap();
            let mut want = expected(after);
            want.truncate(limit);
            assert_eq!(ids(&got), ids(&want), "after {after} limit {limit}");
            assert_eq!(got, want);
        }
    }
    // It really mixes: DMs in, DMs out, and both rooms, and leaves out #c and others' DMs.
    let got = log.catch_up(&u("bob"), &rooms, 0, 1000).unwrap();
    assert!(
        got.iter()
            .any(|m| m.from == u("bob") && matches!(m.to, Target::User(_)))
    );
    assert!(got.iter().any(|m| m.to == Target::User(u("bob")) && m.from != u("bob")));
    assert!(got.iter().any(|m| m.to == Target::Room(r("#a"))));
    assert!(got.iter().any(|m| m.to == Target::Room(r("#b"))));
    assert!(got.iter().all(|m| m.to != Target::Room(r("#c"))));
    assert!(
        !got.iter()
            .any(|m| m.to == Target::Room(r("#b")) && m.id <= room_joined_late)
    );
    // Listing a room twice does not repeat its messages.
    let twice = log.catch_up(&u("bob"), &[(r("#a"), 0), (r("#a"), 0)], 0, 1000).unwrap();
    let mut seen = ids(&twice);
    seen.dedup();
    assert_eq!(seen.len(), twice.len());
    assert_eq!(log.catch_up(&u("bob"), &rooms, 0, 0).unwrap(), vec![]);
}

#[test]
fn reopen_keeps_everything_and_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut before = Vec::new();
    {
        let log = MessageLog::open(dir.path()).unwrap();
        for i in 0..20 {
            before.push(append(
                &log,
                "alice",
                if i % 2 == 0 { "bob" } else { "#r" },
                &format!("{i}"),
            ));
        }
        // Dropping the last handle drains and stops the writer and releases the lock.
    }
    let log = MessageLog::open(dir.path()).unwrap();
    assert_eq!(log.last_id(), 20);
    assert_eq!(log.count().unwrap(), 20);
    let caught = log.catch_up(&u("alice"), &[(r("#r"), 0)], 0, 100).unwrap();
    assert_eq!(caught, before);
    let next = append(&log, "bob", "alice", "after reopen");
    assert_eq!(next.id, 21);
    assert!(next.ts >= before.last().unwrap().ts);
    // Closing through one handle stops appends for all; reads go on until the last drop.
    let other = log.clone();
    log.close().unwrap();
    let err = other.append_blocking(msg("bob", "alice", "", "too late")).unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    assert_eq!(
        other
            .history(&Conversation::direct(&u("alice"), &u("bob")), None, None, 100)
            .unwrap()
            .0
            .len(),
        11
    );
    other.clone().close().unwrap(); // twice is harmless
    drop(other);
    let log = MessageLog::open(dir.path()).unwrap();
    assert_eq!(log.last_id(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_group_committed() {
    const TASKS: usize = 64;
    const EACH: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let to = if t % 2 == 0 {
                    format!("u{}", t + 1)
                } else {
                    "#busy".to_string()
                };
                let m = msg(&format!("u{t}"), &to, &format!("{t}-{i}"), "x");
                match log.append(m).await.unwrap() {
                    Appended::New(m) => got.push(m),
                    dup => panic!("unexpected {dup:?}"),
                }
            }
            got
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let mut all_ids = ids(&acked);
    all_ids.sort_unstable();
    assert_eq!(
        all_ids,
        (1..=(TASKS * EACH) as u64).collect::<Vec<_>>(),
        "ids distinct and dense"
    );

    let reader = log.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let mut stored = reader
            .catch_up(&u("nobody"), &[(r("#busy"), 0)], 0, usize::MAX)
            .unwrap();
        for t in (0..TASKS).step_by(2) {
            let conv = Conversation::direct(&u(&format!("u{t}")), &u(&format!("u{}", t + 1)));
            stored.extend(whole(&reader, &conv));
        }
        stored.sort_by_key(|m| m.id);
        stored
    })
    .await
    .unwrap();
    acked.sort_by_key(|m| m.id);
    assert_eq!(stored, acked, "every acknowledged message is readable as acknowledged");

    let stats = log.stats();
    assert_eq!(stats.appended, (TASKS * EACH) as u64);
    assert!(stats.commits < stats.appended, "no batching happened: {stats:?}");
    assert!(stats.commits >= 1);
}

/// Set in the child process of [`acknowledged_messages_survive_kill_9`]: the directory to
/// append to.
const CRASH_CHILD_DIR: &str = "IM_MESSAGE_LOG_CRASH_CHILD_DIR";
const CRASH_WRITERS: usize = 8;

/// The child: appends from several tasks as fast as it can and prints every acknowledged id,
/// until it is killed (or, as a safety net, after two minutes).
fn crash_child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = MessageLog::open(dir).unwrap();
        let pid = std::process::id();
        let mut tasks = Vec::new();
        for t in 0..CRASH_WRITERS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let to = if n % 3 == 0 {
                        "#crash".to_string()
                    } else {
                        "sink".to_string()
                    };
                    let cid = format!("{pid}-{t}-{n}");
                    let m = msg(&format!("w{t}"), &to, &cid, &format!("text of {cid}"));
                    let stored = log.append(m).await.unwrap().into_message();
                    // Only now, after the durable commit, is the message acknowledged.
                    println!("ACK {} {}", stored.id, stored.client_id);
                }
            }));
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(120), async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
    });
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_DIR) {
        crash_child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<u64, String> = HashMap::new();
    let mut stored_before = 0;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "acknowledged_messages_survive_kill_9", "--nocapture"])
            .env(CRASH_CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Read a few hundred acknowledgements, kill the child mid-stream, then read what it
        // printed before it died: those, the newest, are the ones most at risk.
        let want = 200 + 150 * round;
        let mut this_round = Vec::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut killed = false;
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if this_round.len() >= want && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
            // A line is one write(2) of less than PIPE_BUF bytes: whole or absent. Check anyway.
            let Some(rest) = line.strip_prefix("ACK ").and_then(|l| l.strip_suffix('\n')) else {
                continue;
            };
            let (id, cid) = rest.split_once(' ').unwrap();
            let id: u64 = id.parse().unwrap();
            assert!(
                acked.insert(id, cid.to_string()).is_none(),
                "id {id} acknowledged twice"
            );
            this_round.push(id);
        }
        child.wait().unwrap();
        assert!(killed && this_round.len() >= want, "the child stopped early");
        assert!(
            this_round.iter().all(|&id| id > stored_before),
            "round {round}: an id was handed out again after a crash"
        );

        // Reopen and count every message: each acknowledged id exactly once, with its own
        // content, and nothing else but a gapless run of ids.
        let log = MessageLog::open(dir.path()).unwrap();
        let mut found: HashMap<u64, (usize, String)> = HashMap::new();
        let mut convs = vec![Conversation::Room(RoomName::parse("#crash").unwrap())];
        convs.extend((0..CRASH_WRITERS).map(|t| Conversation::direct(&u(&format!("w{t}")), &u("sink"))));
        for conv in &convs {
            for m in whole(&log, conv) {
                assert_eq!(m.text, format!("text of {}", m.client_id));
                let e = found.entry(m.id).or_insert((0, m.client_id.clone()));
                e.0 += 1;
            }
        }
        for (id, cid) in &acked {
            match found.get(id) {
                Some((1, c)) => assert_eq!(c, cid, "id {id} holds another message"),
                Some((n, _)) => panic!("acknowledged id {id} stored {n} times"),
                None => panic!("round {round}: acknowledged id {id} lost after kill -9"),
            }
        }
        let mut all: Vec<u64> = found.keys().copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=log.last_id()).collect::<Vec<_>>(),
            "ids not gapless after recovery"
        );
        assert_eq!(log.count().unwrap(), log.last_id());
        stored_before = log.last_id();
        drop(log);
    }
}

#[test]
fn retention_deletes_old_and_keeps_new() {
    let dir = tempfile::tempdir().unwrap();
    let day = 24 * 60 * 60 * 1000;
    let (now, clock) = manual_clock(100 * day);
    let log = MessageLog::open_with_clock(dir.path(), clock).unwrap();
    let mut old = Vec::new();
    for i in 0..5 {
        old.push(append(&log, "alice", if i % 2 == 0 { "bob" } else { "#r" }, "old"));
    }
    now.store(101 * day, Ordering::SeqCst);
    let mut new = Vec::new();
    for i in 0..3 {
        new.push(append(&log, "bob", if i % 2 == 0 { "alice" } else { "#r" }, "new"));
    }
    assert_eq!(log.count().unwrap(), 8);

    // In small batches: 2 + 2 + 1, then nothing more to do.
    let cutoff = 100 * day + 1;
    assert_eq!(log.delete_older_than(cutoff, 2).unwrap(), 2);
    assert_eq!(log.delete_older_than(cutoff, 2).unwrap(), 2);
    assert_eq!(log.delete_older_than(cutoff, 2).unwrap(), 1);
    assert_eq!(log.delete_older_than(cutoff, 2).unwrap(), 0);
    assert_eq!(log.count().unwrap(), 3);

    // Gone from history and from catch-up (so the inbox entries went too); the new stay.
    let rooms = [(r("#r"), 0)];
    assert_eq!(log.catch_up(&u("alice"), &rooms, 0, 100).unwrap(), new);
    assert_eq!(log.catch_up(&u("bob"), &rooms, 0, 100).unwrap(), new);
    let dm = log
        .history(&Conversation::direct(&u("alice"), &u("bob")), None, None, 100)
        .unwrap()
        .0;
    assert_eq!(ids(&dm), [new[0].id, new[2].id]);
    // Ids keep going up.
    assert_eq!(append(&log, "carol", "#r", "later").id, 9);
}

#[test]
fn foreign_and_unknown_directories_are_refused() {
    // A non-empty directory that is not a store: refused, and left as it was.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"precious").unwrap();
    let err = MessageLog::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("not a message log"),
        "{text}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    assert_eq!(std::fs::read(dir.path().join("notes.txt")).unwrap(), b"precious");

    // A file where the directory should be.
    let file = dir.path().join("notes.txt");
    assert!(MessageLog::open(&file).is_err());

    // Something with a garbage storage version marker.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("version"), b"not fjall").unwrap();
    let err = MessageLog::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");

    // Another program's fjall database.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("theirs", fjall::KeyspaceCreateOptions::default).unwrap();
        ks.insert("k", "v").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = MessageLog::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");

    // Another program's fjall database that happens to have a "meta" keyspace: refused,
    // and none of our keyspaces get created in it.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("meta", fjall::KeyspaceCreateOptions::default).unwrap();
        ks.insert("schema", "theirs").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = MessageLog::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        assert_eq!(db.keyspace_count(), 1, "keyspaces were created in a foreign database");
    }

    // Our own creation cut short (empty keyspaces of ours, no format marker yet): completed.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        db.keyspace("msgs", fjall::KeyspaceCreateOptions::default).unwrap();
    }
    let log = MessageLog::open(dir.path()).unwrap();
    assert_eq!(append(&log, "a", "b", "works").id, 1);
    drop(log);

    // A message log from a future version.
    let dir = tempfile::tempdir().unwrap();
    MessageLog::open(dir.path()).unwrap().close().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let meta = db.keyspace("meta", fjall::KeyspaceCreateOptions::default).unwrap();
        let mut v = b"im-message-log".to_vec();
        v.extend_from_slice(&99u32.to_be_bytes());
        meta.insert("format", v).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = MessageLog::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::UnknownVersion { found: 99, .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));

    // A log that is already open.
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(dir.path()).unwrap();
    let err = MessageLog::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    drop(log);

    // A missing directory is created, an empty one is used.
    let dir = tempfile::tempdir().unwrap();
    MessageLog::open(&dir.path().join("a/b")).unwrap();
    MessageLog::open(dir.path().join("a/b").as_path()).unwrap();
    let empty = tempfile::tempdir().unwrap();
    MessageLog::open(empty.path()).unwrap();
}

#[test]
fn routing_sink_gets_new_messages_in_id_order_and_sender_device_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = MessageLog::open_with_sink(dir.path(), Box::new(move |b| tx.send(b).unwrap())).unwrap();
    let mut m = msg("alice", "bob", "c1", "from a phone");
    m.sender_device = 4711;
    let first = log.append_blocking(m.clone()).unwrap().into_message();
    assert_eq!(first.sender_device, 4711);
    assert!(matches!(log.append_blocking(m).unwrap(), Appended::Duplicate(_)));
    let second = append(&log, "bob", "#r", "no device");
    let routed: Vec<StoredMessage> = std::iter::from_fn(|| rx.try_recv().ok()).flatten().collect();
    assert_eq!(
        routed,
        vec![first.clone(), second],
        "new messages once each, in id order"
    );
    let (page, _) = log
        .history(&Conversation::direct(&u("bob"), &u("alice")), None, None, 5)
        .unwrap();
    assert_eq!(page, vec![first]);
    assert_eq!(
        page[0].sender_device, 4711,
        "the device survives the round trip to disk"
    );
}

#[test]
fn a_blocking_sink_holds_the_next_sender_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let log = MessageLog::open_with_sink(dir.path(), Box::new(move |b| tx.send(b).unwrap())).unwrap();
    let first = append(&log, "alice", "bob", "fills the sink");
    let second = std::thread::spawn({
        let log = log.clone();
        move || append(&log, "alice", "bob", "waits for room")
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!second.is_finished(), "acknowledged while routing had no room for it");
    assert_eq!(rx.recv().unwrap(), [first]);
    let second = second.join().unwrap();
    assert_eq!(rx.recv().unwrap(), [second]);
}
