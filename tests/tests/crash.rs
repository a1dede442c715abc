//! `kill -9` of the server at random moments of a multi-client send storm, twenty times over
//! on the same data directory: after each restart every acknowledged message is stored
//! exactly once and is delivered. (The stores' own recovery from a torn write is tested at
//! the store level: `im-server/tests/torn_writes.rs`.)

mod harness;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;

fn messages(values: &[Value]) -> Vec<&Value> {
    values.iter().filter(|v| v["type"] == "message").collect()
}

const CYCLES: usize = 20;
/// Senders storm, and the checks run one `im-client` (so one handshake) per history page.
const NO_LIMITS: &str = "[limits]\nmessages_per_user_per_sec = 100000\nmessage_burst_per_user = 100000\n\
                         handshakes_per_ip_per_sec = 100000\nhandshake_burst_per_ip = 100000\n";
const SENDERS: usize = 3;

/// Starts `sender` sending `lines` to bob, one message per line, printing a `sent` line per
/// acknowledgement.
fn storm(sender: &Client, lines: String) -> Background {
    let mut cmd = sender.command(&["--json", "send", "--lines", "bob"]);
    let mut child = cmd
        .cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(lines.as_bytes());
    });
    let stdout = BufReader::new(child.stdout.take().unwrap());
    Background::from_parts(Proc { child }, stdout)
}

#[test]
fn kill_9_twenty_times_during_a_send_storm_loses_nothing_and_stores_nothing_twice() {
    let _heavy = heavy();
    let mut server = Server::start_with_config(Some(NO_LIMITS));
    let bob = server.user("bob");
    let senders: Vec<Client> = (0..SENDERS).map(|i| server.user(&format!("s{i}"))).collect();
    // id -> text of every acknowledged message, and how often each id was delivered.
    let mut acked: HashMap<u64, String> = HashMap::new();
    let mut delivered: HashMap<u64, usize> = HashMap::new();
    let mut texts_by_id: HashMap<u64, String> = HashMap::new();
    let mut storm_ms = Vec::new();
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let running: Vec<(usize, Background)> = senders
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let lines: String = (0..1500).map(|n| format!("c{cycle}-s{i}-{n}\n")).collect();
                (i, storm(s, lines))
            })
            .collect();
        let ms = rand::random_range(250..650);
        storm_ms.push(ms);
        std::thread::sleep(Duration::from_millis(ms));
        server.kill9();
        let mut this_cycle = 0;
        for (i, bg) in running {
            let sent: Vec<Value> = bg.wait_json().into_iter().filter(|v| v["type"] == "sent").collect();
            // Sends are acknowledged in order: the n-th `sent` line is line n.
            for (n, v) in sent.iter().enumerate() {
                let id = v["id"].as_u64().unwrap();
                let text = format!("c{cycle}-s{i}-{n}");
                assert!(
                    acked.insert(id, text).is_none(),
                    "cycle {cycle}: id {id} acknowledged twice"
                );
                this_cycle += 1;
            }
        }
        server.restart();
        // Everything acknowledged so far is delivered now, each message once (a listen that
        // ends cleanly has saved its cursor, so nothing comes twice).
        // Every message on this server is to bob and ids have no gaps, so what bob has not
        // got yet is exactly the ids above the last one he got, up to the last one stored.
        let last_stored = senders
            .iter()
            .filter_map(|s| {
                let page = bob.cmd(&["--json", "history", &s.user, "--limit", "1"]).ok().json();
                page.iter()
                    .find(|v| v["type"] == "message")
                    .map(|m| m["id"].as_u64().unwrap())
            })
            .max()
            .unwrap_or(0);
        for attempt in 0.. {
            let last_delivered = delivered.keys().max().copied().unwrap_or(0);
            if last_delivered >= last_stored {
                break;
            }
            let count = (last_stored - last_delivered).to_string();
            let args: &[&str] = match attempt {
                0 | 1 => &["--json", "listen", "--count", &count, "--timeout", "30"],
                // After a repeat (which the final assertion reports), a listen to the end.
                2 => &["--json", "listen", "--timeout", "2"],
                _ => panic!(
                    "cycle {cycle} ({ms} ms of storm, {this_cycle} acknowledged): messages up to {last_stored} \
                     stored, only up to {last_delivered} delivered; server log:\n{}",
                    server.log()
                ),
            };
            let got = bob.cmd(args);
            assert_eq!(got.code(), 0, "cycle {cycle}: listen failed: {}", got.stderr());
            for m in got.json().iter().filter(|v| v["type"] == "message") {
                let id = m["id"].as_u64().unwrap();
                *delivered.entry(id).or_default() += 1;
                texts_by_id.insert(id, m["text"].as_str().unwrap().to_owned());
            }
        }
        for (id, text) in &acked {
            assert_eq!(
                texts_by_id.get(id),
                Some(text),
                "cycle {cycle} ({ms} ms of storm, {this_cycle} acknowledged): acknowledged message {id} missing \
                 after the restart; server log:\n{}",
                server.log()
            );
        }
    }
    // What is left (stored but never acknowledged) comes too; then nothing is doubled.
    let rest = bob.cmd(&["--json", "listen", "--timeout", "2"]).ok().json();
    for m in rest.iter().filter(|v| v["type"] == "message") {
        let id = m["id"].as_u64().unwrap();
        *delivered.entry(id).or_default() += 1;
        texts_by_id.insert(id, m["text"].as_str().unwrap().to_owned());
    }
    // Every listen ended cleanly, after the server had saved the cursor its acks moved: no
    // message came twice.
    let repeats: usize = delivered.values().map(|n| n - 1).sum();
    assert_eq!(repeats, 0, "deliveries repeated; server log:\n{}", server.log());
    let mut stored_texts: Vec<&String> = texts_by_id.values().collect();
    stored_texts.sort();
    let distinct = {
        let mut d = stored_texts.clone();
        d.dedup();
        d.len()
    };
    assert_eq!(distinct, stored_texts.len(), "a message was stored under two ids");
    // The stored history agrees: each acknowledged message once in its conversation.
    for (i, s) in senders.iter().enumerate() {
        let mut ids = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let mut args = vec!["--json", "history", "bob", "--limit", "500"];
            let b = before.map(|b| b.to_string());
            if let Some(b) = &b {
                args.extend(["--before", b]);
            }
            let page = s.cmd(&args).ok().json();
            let page_ids: Vec<u64> = page
                .iter()
                .filter(|v| v["type"] == "message")
                .map(|m| m["id"].as_u64().unwrap())
                .collect();
            ids.extend(&page_ids);
            let more = page.iter().any(|v| v["type"] == "history_end" && v["more"] == true);
            match (more, page_ids.first()) {
                (true, Some(&oldest)) => before = Some(oldest),
                _ => break,
            }
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "s{i}: an id twice in history");
        for (id, text) in &acked {
            if text.contains(&format!("-s{i}-")) {
                assert!(
                    sorted.binary_search(id).is_ok(),
                    "s{i}: acknowledged {id} not in history"
                );
            }
        }
    }
    println!(
        "{CYCLES} kills survived in {:.1} s (storms of {storm_ms:?} ms): {} acknowledged, {} stored and delivered \
         ({} stored without an acknowledgement), none lost, none stored or delivered twice",
        started.elapsed().as_secs_f64(),
        acked.len(),
        delivered.len(),
        delivered.len() - acked.len()
    );
}

/// `listen` acknowledges what it printed, so a second `listen` does not repeat it (README,
/// "Delivery"), even when it leaves while the server is still writing a long catch-up: one
/// that fits in the socket buffers, so no write of the server's ever blocks. The session
/// handles input between catch-up pages and reads the Ack still in the socket when a write
/// fails, and the client waits for the server's Close, which comes after the cursor is saved.
#[test]
fn a_listen_that_stops_during_a_long_catch_up_is_not_repeated_by_the_next() {
    let server = Server::start_with_config(Some(NO_LIMITS));
    let alice = server.user("alice");
    let bob = server.user("bob");
    let filler = "x".repeat(200);
    let input: String = (0..3000).map(|n| format!("m{n} {filler}\n")).collect();
    alice.command(&["send", "--lines", "bob"]).stdin(input).run().ok();
    let listen = || -> Vec<String> {
        let run = bob.cmd(&["--json", "listen", "--count", "5", "--timeout", "20"]).ok();
        messages(&run.json())
            .iter()
            .map(|m| m["text"].as_str().unwrap().split(' ').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listen(), ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(
        listen(),
        ["m5", "m6", "m7", "m8", "m9"],
        "the second listen repeated the first"
    );
}
