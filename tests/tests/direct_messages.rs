//! Direct messages end to end: the real `im-server` binary, driven by the real `im-client`.

mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::*;
use serde_json::Value;

fn messages(run: &Run) -> Vec<Value> {
    run.json().into_iter().filter(|v| v["type"] == "message").collect()
}

#[test]
fn offline_delivery_once_with_the_documented_fields() {
    let server = Server::start();
    let alice = server.user("alice");
    let bob = server.user("bob");
    let sent = alice.cmd(&["--json", "send", "bob", "hello", "bob"]).ok();
    let sent = &sent.json()[0];
    assert_eq!(sent["type"], "sent");
    let id = sent["id"].as_u64().expect("integer id");

    let got = bob.cmd(&["--json", "listen", "--count", "1", "--timeout", "20"]).ok();
    let m = &messages(&got)[0];
    assert_eq!(m["id"].as_u64(), Some(id));
    assert_eq!(m["from"], "alice");
    assert_eq!(m["to"], "bob");
    assert_eq!(m["text"], "hello bob");
    assert_eq!(m["action"], false);
    let ts = m["ts"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.contains('T'),
        "RFC 3339 with milliseconds: {ts}"
    );

    // A second listen does not repeat it: with nothing new it times out with exit 0 and no message.
    let again = bob.cmd(&["--json", "listen", "--timeout", "2"]).ok();
    assert!(messages(&again).is_empty(), "repeated: {}", again.stdout());
}

#[test]
fn every_device_receives_and_the_senders_other_devices_too() {
    let server = Server::start();
    let alice = server.user("alice");
    let alice2 = alice.device("phone");
    alice2.cmd(&["whoami"]).ok();
    let bob = server.user("bob");
    let bob2 = bob.device("phone");
    bob2.cmd(&["whoami"]).ok();
    alice.cmd(&["send", "bob", "to both devices"]).ok();
    for dev in [&bob, &bob2, &alice2] {
        let got = dev.cmd(&["--json", "listen", "--count", "1", "--timeout", "20"]).ok();
        assert_eq!(messages(&got)[0]["text"], "to both devices");
    }
    // The sending device does not get its own message back as "missed".
    let own = alice.cmd(&["--json", "listen", "--timeout", "2"]).ok();
    assert!(messages(&own).is_empty(), "{}", own.stdout());
}

#[test]
fn send_from_stdin_and_by_lines() {
    let server = Server::start();
    let alice = server.user("alice");
    let bob = server.user("bob");
    alice
        .command(&["send", "bob"])
        .stdin("one message\nacross two lines\n")
        .run()
        .ok();
    let lines = alice
        .command(&["--json", "send", "--lines", "bob"])
        .stdin("first\nsecond\nthird\n")
        .run()
        .ok();
    assert_eq!(lines.json().iter().filter(|v| v["type"] == "sent").count(), 3);
    let got = bob.cmd(&["--json", "listen", "--count", "4", "--timeout", "20"]).ok();
    let texts: Vec<_> = messages(&got)
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["one message\nacross two lines", "first", "second", "third"]);
}

#[test]
fn a_retried_send_with_the_same_client_id_is_stored_once() {
    let server = Server::start();
    let alice = server.user("alice");
    let bob = server.user("bob");
    let a = alice
        .cmd(&["--json", "send", "--client-id", "order-42", "bob", "pay 5"])
        .ok();
    let b = alice
        .cmd(&["--json", "send", "--client-id", "order-42", "bob", "pay 5"])
        .ok();
    assert_eq!(a.json()[0]["id"], b.json()[0]["id"]);
    let hist = bob.cmd(&["--json", "history", "alice"]).ok();
    assert_eq!(messages(&hist).len(), 1, "{}", hist.stdout());
}

#[test]
fn history_pages_backwards_and_survives_a_restart() {
    let mut server = Server::start();
    let alice = server.user("alice");
    let bob = server.user("bob");
    let input: String = (0..25).map(|i| format!("m{i}\n")).collect();
    alice.command(&["send", "--lines", "bob"]).stdin(input).run().ok();
    let page = bob.cmd(&["--json", "history", "alice", "--limit", "10"]).ok();
    let first = messages(&page);
    assert_eq!(
        first.iter().map(|m| m["text"].as_str().unwrap()).collect::<Vec<_>>(),
        (15..25).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let oldest = first[0]["id"].as_u64().unwrap().to_string();
    let older = bob
        .cmd(&["--json", "history", "alice", "--limit", "10", "--before", &oldest])
        .ok();
    assert_eq!(messages(&older)[9]["text"], "m14");
    assert_eq!(messages(&older)[0]["text"], "m5");

    server.restart();
    let after = bob.cmd(&["--json", "history", "alice", "--limit", "100"]).ok();
    assert_eq!(messages(&after).len(), 25);
}

/// Several clients send concurrently; the server is killed with SIGKILL in the middle; after
/// a restart every message that was acknowledged is stored exactly once and delivered.
#[test]
fn kill_9_during_a_burst_loses_no_acknowledged_message() {
    let _heavy = heavy();
    let mut server = Server::start_with_config(Some(
        "[limits]\nmessages_per_user_per_sec = 100000\nmessage_burst_per_user = 100000\n",
    ));
    let bob = server.user("bob");
    let senders: Vec<Client> = (0..4).map(|i| server.user(&format!("s{i}"))).collect();
    let running: Vec<Background> = senders
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let input: String = (0..3000).map(|n| format!("s{i}-{n}\n")).collect();
            let mut cmd = s.command(&["--json", "send", "--lines", "bob"]);
            cmd.cmd.stdin(std::process::Stdio::piped());
            let mut child = cmd
                .cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(input.as_bytes());
            });
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            (Proc { child }, stdout)
        })
        .map(|(proc, stdout)| Background::from_parts(proc, stdout))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill9();
    let mut acked: HashMap<u64, String> = HashMap::new();
    for bg in running {
        for v in bg.wait_json() {
            if v["type"] == "sent" {
                acked.insert(
                    v["id"].as_u64().unwrap(),
                    v["client_id"].as_str().unwrap_or("").to_owned(),
                );
            }
        }
    }
    assert!(
        acked.len() > 50,
        "only {} acknowledged before the kill: too few to mean anything",
        acked.len()
    );
    server.restart();
    // No --count: more may be stored than was acknowledged, and all of it must come.
    let got = bob.cmd(&["--json", "listen", "--timeout", "5"]).ok();
    let delivered = messages(&got);
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for m in &delivered {
        *seen.entry(m["id"].as_u64().unwrap()).or_default() += 1;
    }
    for id in acked.keys() {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "acknowledged message {id} delivered {:?} times",
            seen.get(id)
        );
    }
    // Stored exactly once: no two stored messages share a sender's client id.
    let mut by_client_id: HashMap<(String, String), u64> = HashMap::new();
    for m in &delivered {
        let key = (
            m["from"].as_str().unwrap().to_owned(),
            m["text"].as_str().unwrap().to_owned(),
        );
        assert!(
            by_client_id.insert(key.clone(), m["id"].as_u64().unwrap()).is_none(),
            "{key:?} stored twice"
        );
    }
}
