//! Rooms end to end: the real `im-server` binary, driven by the real `im-client` (and, for the
//! member that never reads, the raw protocol client).

mod harness;

use harness::raw::Raw;
use harness::*;
use serde_json::Value;

/// Many short-lived client processes from one address: lift the per-address handshake and
/// login limits, which are not what these tests are about.
const CONFIG: &str = "[limits]\nhandshakes_per_ip_per_sec = 1000\nhandshake_burst_per_ip = 1000\nlogins_per_ip_per_min = 10000\nlogins_per_account_per_min = 10000\n";

fn of_type(values: &[Value], t: &str) -> Vec<Value> {
    values.iter().filter(|v| v["type"] == t).cloned().collect()
}

fn texts(values: &[Value]) -> Vec<String> {
    of_type(values, "message")
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn three_members_receive_live_and_an_offline_member_catches_up() {
    let server = Server::start_with_config(Some(CONFIG));
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(|n| server.user(n));
    for c in [&alice, &bob, &carol, &dave] {
        c.cmd(&["join", "#lounge"]).ok();
    }
    let rooms = dave.cmd(&["--json", "rooms"]).ok().json();
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    assert_eq!(
        (&rooms[0]["room"], &rooms[0]["members"], &rooms[0]["joined"]),
        (&"#lounge".into(), &4.into(), &true.into())
    );
    let members = dave.cmd(&["--json", "members", "#lounge"]).ok().json();
    let roles: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m["user"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("alice", "owner"),
            ("bob", "member"),
            ("carol", "member"),
            ("dave", "member")
        ]
    );

    // Each listener is a device of its own, so none of them is the sending device.
    let listeners: Vec<(Client, Background)> = [&alice, &bob, &carol]
        .into_iter()
        .map(|c| {
            let device = c.device("listener");
            let bg = listen(&device, 3);
            (device, bg)
        })
        .collect();
    for (d, _) in &listeners {
        wait_online(&dave, "#lounge", &d.user);
    }
    alice.cmd(&["send", "#lounge", "hello room"]).ok();
    bob.cmd(&["send", "#lounge", "hi alice"]).ok();
    alice.cmd(&["send", "--me", "#lounge", "waves"]).ok();
    for (d, bg) in listeners {
        let got = bg.wait_json();
        assert_eq!(
            texts(&got),
            ["hello room", "hi alice", "waves"],
            "{}'s listener: {got:?}",
            d.user
        );
        let first = &of_type(&got, "message")[0];
        assert_eq!(
            (&first["from"], &first["room"], &first["action"]),
            (&"alice".into(), &"#lounge".into(), &false.into())
        );
        assert_eq!(of_type(&got, "message")[2]["action"], true);
    }

    // Dave was offline throughout: he catches up on all three, in order, once.
    let got = dave
        .cmd(&["--json", "listen", "--count", "3", "--timeout", "20"])
        .ok()
        .json();
    assert_eq!(texts(&got), ["hello room", "hi alice", "waves"]);
    let hist = dave.cmd(&["--json", "history", "#lounge"]).ok().json();
    assert_eq!(texts(&hist), ["hello room", "hi alice", "waves"]);
}

#[test]
fn a_late_joiner_sees_the_room_only_from_joining() {
    let mut server = Server::start_with_config(Some(CONFIG));
    let alice = server.user("alice");
    let erin = server.user("erin");
    alice.cmd(&["join", "#r"]).ok();
    alice.cmd(&["send", "#r", "before erin"]).ok();
    // Not a member: no sending, no history.
    erin.cmd(&["send", "#r", "let me in"]).code_is(6);
    erin.cmd(&["history", "#r"]).code_is(6);
    erin.cmd(&["history", "#nowhere"]).code_is(6);
    erin.cmd(&["send", "#nowhere", "anyone?"]).code_is(6);
    erin.cmd(&["join", "#r"]).ok();
    alice.cmd(&["send", "#r", "after erin"]).ok();

    let got = erin
        .cmd(&["--json", "listen", "--count", "1", "--timeout", "20"])
        .ok()
        .json();
    assert_eq!(texts(&got), ["after erin"]);
    assert_eq!(
        texts(&erin.cmd(&["--json", "history", "#r"]).ok().json()),
        ["after erin"]
    );
    assert_eq!(
        texts(&alice.cmd(&["--json", "history", "#r"]).ok().json()),
        ["before erin", "after erin"]
    );

    // The join point is stored, not just cached.
    server.restart();
    assert_eq!(
        texts(&erin.cmd(&["--json", "history", "#r"]).ok().json()),
        ["after erin"]
    );
    // Leaving ends access; rejoining starts a new window.
    erin.cmd(&["leave", "#r"]).ok();
    erin.cmd(&["history", "#r"]).code_is(6);
    alice.cmd(&["send", "#r", "while erin was away"]).ok();
    erin.cmd(&["join", "#r"]).ok();
    alice.cmd(&["send", "#r", "welcome back"]).ok();
    assert_eq!(
        texts(&erin.cmd(&["--json", "history", "#r"]).ok().json()),
        ["welcome back"]
    );
}

#[test]
fn topic_and_moderation_follow_the_roles() {
    let server = Server::start_with_config(Some(CONFIG));
    let [alice, bob, carol, watcher] = ["alice", "bob", "carol", "watcher"].map(|n| server.user(n));
    for c in [&alice, &bob, &carol, &watcher] {
        c.cmd(&["join", "#mod"]).ok();
    }
    // The watcher's listener sees every room event up to alice's closing message.
    let events = listen(&watcher, 1);
    wait_online(&alice, "#mod", "watcher");

    // A plain member may do nothing of the kind (exit 6: refused).
    bob.cmd(&["topic", "#mod", "bob's room now"]).code_is(6);
    let refused = bob.cmd(&["--json", "kick", "#mod", "carol"]).code_is(6);
    assert_eq!(refused.json_error()["code"], "not_allowed");
    bob.cmd(&["ban", "#mod", "carol"]).code_is(6);
    bob.cmd(&["op", "#mod", "bob"]).code_is(6);
    // Outsiders cannot even read the topic.
    server.user("outsider").cmd(&["topic", "#mod"]).code_is(6);

    // The owner makes bob an operator; operators set the topic, members read it.
    alice.cmd(&["op", "#mod", "bob"]).ok();
    bob.cmd(&["topic", "#mod", "Welcome to #mod"]).ok();
    let topic = carol.cmd(&["--json", "topic", "#mod"]).ok().json();
    assert_eq!(topic[0]["topic"], "Welcome to #mod");
    // An operator cannot act on the owner, op others, or kick a fellow operator.
    bob.cmd(&["kick", "#mod", "alice"]).code_is(6);
    bob.cmd(&["ban", "#mod", "alice"]).code_is(6);
    bob.cmd(&["op", "#mod", "carol"]).code_is(6);
    alice.cmd(&["deop", "#mod", "alice"]).code_is(6);

    // Kicked: out of the room, but free to come back.
    bob.cmd(&["kick", "#mod", "carol"]).ok();
    carol.cmd(&["send", "#mod", "still here?"]).code_is(6);
    carol.cmd(&["history", "#mod"]).code_is(6);
    carol.cmd(&["join", "#mod"]).ok();
    // Banned: out, and kept out until unbanned.
    bob.cmd(&["ban", "#mod", "carol"]).ok();
    carol.cmd(&["join", "#mod"]).code_is(6);
    carol.cmd(&["send", "#mod", "let me back"]).code_is(6);
    carol.cmd(&["topic", "#mod"]).code_is(6);
    bob.cmd(&["unban", "#mod", "carol"]).ok();
    carol.cmd(&["join", "#mod"]).ok();
    // De-opped, bob is a plain member again.
    alice.cmd(&["deop", "#mod", "bob"]).ok();
    bob.cmd(&["kick", "#mod", "carol"]).code_is(6);
    let members = alice.cmd(&["--json", "members", "#mod"]).ok().json();
    let roles: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m["user"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("alice", "owner"),
            ("bob", "member"),
            ("carol", "member"),
            ("watcher", "member")
        ]
    );
    // The owner may remove an operator.
    alice.cmd(&["op", "#mod", "bob"]).ok();
    alice.cmd(&["kick", "#mod", "bob"]).ok();

    alice.cmd(&["send", "#mod", "that's all"]).ok();
    let seen = events.wait_json();
    let log: Vec<(String, String, Option<String>)> = of_type(&seen, "room_event")
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["user"].as_str().unwrap().to_owned(),
                e["by"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let expected: Vec<(String, String, Option<String>)> = [
        ("op", "bob", Some("alice")),
        ("topic", "bob", None),
        ("kick", "carol", Some("bob")),
        ("join", "carol", None),
        ("ban", "carol", Some("bob")),
        ("unban", "carol", Some("bob")),
        ("join", "carol", None),
        ("deop", "bob", Some("alice")),
        ("op", "bob", Some("alice")),
        ("kick", "bob", Some("alice")),
    ]
    .into_iter()
    .map(|(e, u, b)| (e.to_owned(), u.to_owned(), b.map(str::to_owned)))
    .collect();
    assert_eq!(log, expected, "{seen:?}");
    let topic_event = of_type(&seen, "room_event")
        .into_iter()
        .find(|e| e["event"] == "topic")
        .unwrap();
    assert_eq!(topic_event["topic"], "Welcome to #mod");
    assert_eq!(texts(&seen), ["that's all"]);
}

#[test]
fn a_slow_member_is_disconnected_while_the_others_keep_receiving() {
    let _heavy = heavy();
    // The queue is longer than the client's send window of 32, so a member that reads keeps
    // up with the burst; a member that never reads overflows it once its socket buffers fill.
    let server = Server::start_with_config(Some(&format!(
        "{CONFIG}outbound_queue = 256\nmessages_per_user_per_sec = 100000\nmessage_burst_per_user = 100000\n"
    )));
    let [alice, bob, carol, slow] = ["alice", "bob", "carol", "slow"].map(|n| server.user(n));
    for c in [&alice, &bob, &carol, &slow] {
        c.cmd(&["join", "#busy"]).ok();
    }
    const N: usize = 3000;
    let readers: Vec<_> = [&bob, &carol]
        .into_iter()
        .map(|c| {
            let mut bg = c
                .command(&["--json", "listen", "--count", &N.to_string(), "--timeout", "90"])
                .spawn();
            // Drain the listener's output while the burst runs: a full pipe would stall it.
            std::thread::spawn(move || {
                let mut got = 0;
                while let Some(v) = bg.next_json() {
                    if v["type"] == "message" {
                        got += 1;
                    }
                }
                (got, bg.wait())
            })
        })
        .collect();
    // A member that never reads a byte.
    let raw = Raw::login(&server.addr, "slow", &slow.password);
    for u in ["bob", "carol", "slow"] {
        wait_online(&alice, "#busy", u);
    }
    let text = "x".repeat(4000);
    let input: String = (0..N).map(|i| format!("{i} {text}\n")).collect();
    alice.command(&["send", "--lines", "#busy"]).stdin(input).run().ok();
    for (reader, who) in readers.into_iter().zip(["bob", "carol"]) {
        let (got, out) = reader.join().unwrap();
        assert_eq!(
            got,
            N,
            "{who} got {got} of {N}: {:?} {}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        assert!(out.status.success(), "{who}'s listen: {:?}", out.status);
    }
    // Who was disconnected for being slow, from the server's log.
    let overflowed = || -> Vec<String> {
        plain(&server.log())
            .lines()
            .filter(|l| l.contains("session ended") && l.contains("queue_overflow"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("user="))
                    .map(str::to_owned)
            })
            .collect()
    };
    wait_for("the slow member's queue_overflow", || !overflowed().is_empty());
    assert_eq!(overflowed(), ["slow"], "log:\n{}", server.log());
    drop(raw);
}

/// The text without ANSI colour sequences.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
