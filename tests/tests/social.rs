//! Contacts, presence and blocking end to end: the real `im-server` binary, driven by the
//! real `im-client`.

mod harness;

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

/// (user, state, status) of each contact.
fn contacts(c: &Client) -> Vec<(String, String, String)> {
    c.cmd(&["--json", "contacts"])
        .ok()
        .json()
        .iter()
        .map(|v| {
            (
                v["user"].as_str().unwrap().into(),
                v["state"].as_str().unwrap().into(),
                v["status"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn contact(user: &str, state: &str, status: &str) -> (String, String, String) {
    (user.into(), state.into(), status.into())
}

/// The presence `viewer` is shown of `user`: (status, text).
fn presence(viewer: &Client, user: &str) -> (String, Option<String>) {
    let v = viewer.cmd(&["--json", "presence", user]).ok().json();
    assert_eq!(v.len(), 1, "{v:?}");
    (
        v[0]["status"].as_str().unwrap().into(),
        v[0]["text"].as_str().map(str::to_owned),
    )
}

#[test]
fn an_accepted_contact_sees_presence_and_a_stranger_does_not() {
    let server = Server::start_with_config(Some(CONFIG));
    let [alice, bob, mallory] = ["alice", "bob", "mallory"].map(|n| server.user(n));

    alice.cmd(&["contacts", "add", "bob"]).ok();
    assert_eq!(contacts(&alice), [contact("bob", "outgoing", "offline")]);
    assert_eq!(contacts(&bob), [contact("alice", "incoming", "offline")]);
    alice.cmd(&["contacts", "add", "nobody"]).code_is(6);
    bob.cmd(&["contacts", "accept", "mallory"]).code_is(6);
    bob.cmd(&["contacts", "accept", "alice"]).ok();
    assert_eq!(contacts(&alice), [contact("bob", "accepted", "offline")]);
    assert!(contacts(&mallory).is_empty());

    // Bob and mallory listen; a room lets an observer (who is nobody's contact, so its
    // polling tells bob nothing) see that both are connected.
    let observer = server.user("observer");
    for c in [&observer, &bob, &mallory] {
        c.cmd(&["join", "#lobby"]).ok();
    }
    let bob_sees = listen(&bob, 1);
    let mallory_sees = listen(&mallory, 1);
    wait_online(&observer, "#lobby", "bob");
    wait_online(&observer, "#lobby", "mallory");
    // Alice comes online, goes away with a status text, and goes offline again; then a
    // direct message to each marks the end (pushes arrive in order).
    alice.cmd(&["status", "away", "--text", "at lunch"]).ok();
    alice.cmd(&["send", "bob", "end"]).ok();
    alice.cmd(&["send", "mallory", "end"]).ok();

    let seen = bob_sees.wait_json();
    let updates: Vec<(String, Option<String>)> = of_type(&seen, "presence")
        .iter()
        .filter(|p| p["user"] == "alice")
        .map(|p| {
            (
                p["status"].as_str().unwrap().into(),
                p["text"].as_str().map(str::to_owned),
            )
        })
        .collect();
    // `status`: online at login, then away, then offline as its session ends; `send`: away
    // again at login (the choice is kept), then the message, which the dispatcher may push
    // after that session has already ended (offline) or before.
    let online = ("online".to_owned(), None);
    let away = ("away".to_owned(), Some("at lunch".to_owned()));
    let offline = ("offline".to_owned(), None);
    let expected = [online, away.clone(), offline.clone(), away];
    assert!(
        updates == expected || updates[..] == [&expected[..], &[offline]].concat(),
        "{seen:?}"
    );
    assert_eq!(texts(&seen), ["end"]);
    let seen = mallory_sees.wait_json();
    assert!(of_type(&seen, "presence").is_empty(), "a stranger was told: {seen:?}");
    assert_eq!(texts(&seen), ["end"]);

    // While alice is online, a contact asking sees her chosen status; a stranger sees offline.
    let _alice_online = alice
        .device("phone")
        .command(&["--json", "listen", "--timeout", "60"])
        .spawn();
    wait_for("alice away, as bob sees her", || {
        presence(&bob, "alice") == ("away".into(), Some("at lunch".into()))
    });
    assert_eq!(contacts(&bob), [contact("alice", "accepted", "away")]);
    assert_eq!(presence(&mallory, "alice"), ("offline".into(), None));
    // Removing the contact ends it for both, and with it the presence.
    bob.cmd(&["contacts", "remove", "alice"]).ok();
    assert!(contacts(&alice).is_empty());
    assert_eq!(presence(&bob, "alice"), ("offline".into(), None));
}

#[test]
fn a_block_refuses_direct_messages_silently_and_hides_room_messages() {
    let server = Server::start_with_config(Some(CONFIG));
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|n| server.user(n));
    for c in [&alice, &bob, &carol] {
        c.cmd(&["join", "#room"]).ok();
    }
    alice.cmd(&["block", "bob"]).ok();
    alice.cmd(&["block", "nobody"]).code_is(6);
    let blocked = alice.cmd(&["--json", "blocked"]).ok().json();
    assert_eq!(
        blocked.iter().map(|v| v["user"].as_str().unwrap()).collect::<Vec<_>>(),
        ["bob"]
    );

    // Bob's direct message and contact request are refused, and nothing says why.
    let dm = bob.cmd(&["--json", "send", "alice", "hello?"]).code_is(6);
    let dm_error = dm.json_error();
    assert_eq!(dm_error["code"], "not_allowed");
    let request = bob.cmd(&["--json", "contacts", "add", "alice"]).code_is(6);
    let request_error = request.json_error();
    assert_eq!(request_error["code"], "not_allowed");
    for e in [&dm_error, &request_error] {
        let text = e["message"].as_str().unwrap().to_lowercase();
        assert!(!text.contains("block"), "the refusal reveals the block: {e}");
    }
    assert_eq!(
        dm_error["message"], request_error["message"],
        "the same neutral text for both"
    );
    // Carol is not blocked.
    carol.cmd(&["send", "alice", "hi alice"]).ok();

    // Room messages: bob's never reach alice, neither live, nor in catch-up, nor in history.
    // (A new device catches up on carol's direct message first.)
    let live = listen(&alice.device("phone"), 2);
    wait_online(&carol, "#room", "alice");
    // Online, alice's block is answered from memory: still refused, the same way.
    let online_dm = bob.cmd(&["--json", "send", "alice", "you are online"]).code_is(6);
    assert_eq!(online_dm.json_error(), dm_error);
    bob.cmd(&["send", "#room", "bob live"]).ok();
    carol.cmd(&["send", "#room", "carol live"]).ok();
    assert_eq!(texts(&live.wait_json()), ["hi alice", "carol live"]);
    let caught_up = alice
        .cmd(&["--json", "listen", "--count", "2", "--timeout", "20"])
        .ok()
        .json();
    assert_eq!(texts(&caught_up), ["hi alice", "carol live"]);
    assert_eq!(
        texts(&alice.cmd(&["--json", "history", "#room"]).ok().json()),
        ["carol live"]
    );
    // Others still see bob.
    assert_eq!(
        texts(&carol.cmd(&["--json", "history", "#room"]).ok().json()),
        ["bob live", "carol live"]
    );

    // Unblocked, bob gets through again.
    alice.cmd(&["unblock", "bob"]).ok();
    alice.cmd(&["unblock", "bob"]).code_is(6);
    bob.cmd(&["send", "alice", "hello again"]).ok();
    let got = alice
        .cmd(&["--json", "listen", "--count", "1", "--timeout", "20"])
        .ok()
        .json();
    assert_eq!(texts(&got), ["hello again"]);
    assert_eq!(
        texts(&alice.cmd(&["--json", "history", "#room"]).ok().json()),
        ["bob live", "carol live"]
    );
}
