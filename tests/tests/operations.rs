//! Running the server for real: backup and restore, status, metrics, host-key rotation.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use harness::*;

/// Every message of bob's conversation with alice, by id, paging back through history.
fn history(bob: &Client) -> BTreeMap<u64, String> {
    let mut all = BTreeMap::new();
    let mut before: Option<u64> = None;
    loop {
        let mut args = vec!["--json", "history", "alice", "--limit", "500"];
        let b = before.map(|b| b.to_string());
        if let Some(b) = &b {
            args.extend(["--before", b]);
        }
        let lines = bob.cmd(&args).ok().json();
        let mut more = false;
        for l in &lines {
            match l["type"].as_str() {
                Some("message") => {
                    let id = l["id"].as_u64().unwrap();
                    all.insert(id, l["text"].as_str().unwrap().to_owned());
                    before = Some(before.map_or(id, |b| b.min(id)));
                }
                Some("history_end") => more = l["more"].as_bool().unwrap(),
                _ => {}
            }
        }
        if !more {
            return all;
        }
    }
}

#[test]
fn a_backup_taken_during_a_send_storm_restores_every_acknowledged_message() {
    let _heavy = heavy();
    let server = Server::start_with_config(Some(
        "[limits]\nmessages_per_user_per_sec = 1000000\nmessage_burst_per_user = 1000000\n",
    ));
    let alice = server.user("alice");
    let bob = server.user("bob");

    // Three devices of alice send 3000 messages each; every `sent` line they print is a
    // message the server acknowledged, stamped with when the test saw it.
    let acked: Arc<Mutex<Vec<(Instant, u64, String)>>> = Arc::default();
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for d in 0..3 {
        let device = alice.device(&format!("storm{d}"));
        device.cmd(&["whoami"]).ok(); // log in once, so the senders resume
        let mut cmd = device.command(&["--json", "send", "--lines", "bob"]).cmd;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input: String = (0..3000).map(|i| format!("storm {d} line {i}\n")).collect();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let acked = acked.clone();
        readers.push(std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let id = v["id"].as_u64().unwrap();
                let cid = v["client_id"].as_str().unwrap().to_owned();
                acked.lock().unwrap().push((Instant::now(), id, cid));
            }
        }));
        senders.push(Proc { child });
    }
    wait_for("the storm to get going", || acked.lock().unwrap().len() >= 300);

    let began = Instant::now();
    let dest = server.dir.path().join("backup");
    let run = server.admin(&["backup", dest.to_str().unwrap()]).ok();
    assert!(run.stdout().contains("from the running server"), "{}", run.stdout());
    for s in &mut senders {
        let _ = s.child.wait();
    }
    for r in readers {
        r.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before: BTreeSet<u64> = acked
        .iter()
        .filter(|(t, ..)| *t < began)
        .map(|(_, id, _)| *id)
        .collect();
    let after = acked.len() - before.len();
    assert!(before.len() >= 300);
    assert_eq!(acked.len(), 9000, "every send was acknowledged");
    eprintln!("{} acknowledged before the backup began, {after} after", before.len());

    // Restore into a fresh directory and serve it.
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let mut restore = std::process::Command::new(bin("im-server"));
    restore.arg("--data-dir").arg(&data).arg("restore").arg(&dest);
    let out = restore.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("2 users"), "{said}");
    let restored = Server::start_in(fresh);
    let bob_again = restored.client("bob");
    let messages = history(&bob_again);
    let missing: Vec<_> = before.iter().filter(|id| !messages.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages missing: {missing:?}",
        missing.len()
    );
    // Ids carry on above everything restored: no id is handed out twice.
    let last = *messages.keys().next_back().unwrap();
    let mut later = alice.device("later");
    later.server = restored.addr.clone();
    let reply = later.cmd(&["--json", "send", "bob", "after the restore"]).ok().json();
    assert!(reply[0]["id"].as_u64().unwrap() > last);
    // And the live server's own history was not disturbed by the backup.
    assert!(history(&bob).len() >= 9000);
}

#[test]
fn backup_and_restore_refuse_to_overwrite_and_restore_refuses_a_running_server() {
    let mut server = Server::start();
    let alice = server.user("alice");
    server.user("bob");
    alice.cmd(&["send", "bob", "before the backup"]).ok();

    let status = server.admin(&["status"]).ok().stdout();
    for want in [
        "running: yes",
        "users: 2",
        "messages: 1",
        "connections: ",
        "uptime: ",
        "metrics: off",
    ] {
        assert!(status.contains(want), "{want:?} in:\n{status}");
    }

    let dest = server.dir.path().join("b1");
    let dest_s = dest.to_str().unwrap();
    server.admin(&["backup", dest_s]).ok();
    let again = server.admin(&["backup", dest_s]);
    assert_ne!(again.code(), 0);
    assert!(again.stderr().contains("--force"), "{}", again.stderr());
    server.admin(&["backup", "--force", dest_s]).ok();
    let not_ours = server.dir.path().join("home-alice");
    let run = server.admin(&["backup", "--force", not_ours.to_str().unwrap()]);
    assert_ne!(run.code(), 0, "a directory that is not a backup is never replaced");

    let run = server.admin(&["restore", dest_s]);
    assert_ne!(run.code(), 0);
    assert!(run.stderr().contains("running"), "{}", run.stderr());

    alice.cmd(&["send", "bob", "after the backup"]).ok();
    assert_eq!(server.terminate().code(), Some(0));
    let status = server.admin(&["status"]).ok().stdout();
    for want in ["running: no", "users: 2", "messages: 2"] {
        assert!(status.contains(want), "{want:?} in:\n{status}");
    }
    // A stopped server is backed up from its files.
    let offline = server.dir.path().join("b2");
    let run = server.admin(&["backup", offline.to_str().unwrap()]).ok();
    assert!(run.stdout().contains("stopped"), "{}", run.stdout());

    let run = server.admin(&["restore", dest_s]);
    assert_ne!(run.code(), 0);
    assert!(
        run.stderr().contains("accounts.db"),
        "names what it would replace: {}",
        run.stderr()
    );
    let run = server.admin(&["restore", "--force", dest_s]).ok();
    assert!(run.stdout().contains("replaced-"), "{}", run.stdout());
    server.restart();
    let texts: Vec<String> = server
        .client("bob")
        .cmd(&["--json", "history", "alice"])
        .ok()
        .json()
        .iter()
        .filter_map(|l| l["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        texts,
        ["before the backup"],
        "the state of the backup, nothing after it"
    );
}

/// `GET /metrics` over plain TCP.
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
    out
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .map_or(0.0, |(_, v)| v.parse().unwrap())
}

#[test]
fn the_metrics_endpoint_answers_and_its_counters_follow_the_traffic() {
    // A free port: the server may print nothing but its `listening on` line.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at = format!("127.0.0.1:{port}");
    let server = Server::start_with_config(Some(&format!(
        "metrics_listen = \"{at}\"\n[limits]\nmessages_per_user_per_sec = 1\nmessage_burst_per_user = 1\n"
    )));
    let quiet = scrape(&at);
    assert_eq!(sample(&quiet, "im_messages_stored_total", &[]), 0.0);
    assert!(quiet.contains("im_build_info{version="), "{quiet}");

    let alice = server.user("alice");
    let bob = server.user("bob");
    // Pipelined sends: the second comes well within a second of the first, so it is refused.
    alice
        .command(&["send", "--lines", "bob"])
        .stdin("one\ntwo\n")
        .run()
        .code_is(7);
    let wrong = Client {
        password: "not the password".into(),
        ..bob.device("wrong")
    };
    wrong.cmd(&["whoami"]).code_is(4);
    let mut listen = bob.command(&["--json", "listen", "--timeout", "30"]).spawn();
    assert_eq!(listen.next_json().unwrap()["text"], "one");
    wait_for("bob's listen to count as connected", || {
        sample(&scrape(&at), "im_connections", &["state=\"authenticated\""]) == 1.0
    });

    let m = scrape(&at);
    let v = |name: &str, labels: &[&str]| sample(&m, name, labels);
    assert_eq!(v("im_messages_stored_total", &[]), 1.0, "{m}");
    assert!(v("im_messages_delivered_total", &[]) >= 1.0, "{m}");
    assert_eq!(
        v("im_logins_total", &["method=\"register\"", "result=\"ok\""]),
        2.0,
        "{m}"
    );
    assert_eq!(
        v("im_logins_total", &["method=\"password\"", "result=\"failed\""]),
        1.0,
        "{m}"
    );
    assert!(
        v("im_logins_total", &["method=\"ticket\"", "result=\"ok\""]) >= 2.0,
        "{m}"
    );
    assert!(
        v("im_handshakes_total", &["kind=\"full\"", "result=\"ok\""]) >= 3.0,
        "{m}"
    );
    assert!(
        v("im_handshakes_total", &["kind=\"resumed\"", "result=\"ok\""]) >= 2.0,
        "{m}"
    );
    assert_eq!(
        v("im_rate_limited_total", &["limit=\"messages_per_user_per_sec\""]),
        1.0,
        "{m}"
    );
    assert!(v("im_store_commit_seconds_count", &[]) >= 1.0, "{m}");
    assert!(v("im_store_commit_seconds_bucket", &["le=\"+Inf\""]) >= 1.0, "{m}");
    assert_eq!(v("im_queue_overflow_disconnects_total", &[]), 0.0);
    assert!(v("im_start_time_seconds", &[]) > 1.6e9, "{m}");
    assert_eq!(v("im_connections", &["state=\"handshaking\""]), 0.0, "{m}");

    let status = server.admin(&["status"]).ok().stdout();
    assert!(status.contains(&format!("metrics: http://{at}/metrics")), "{status}");
    assert!(status.contains("connections: 1"), "{status}");
    drop(listen);

    let mut s = std::net::TcpStream::connect(&at).unwrap();
    s.write_all(b"GET /secret HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 404"), "{out}");
    assert!(!server.log().contains("ERROR"), "{}", server.log());
}

/// `im-client` as a person runs it: no --accept-new, no terminal to ask on.
fn plain(c: &Client, server: &Server, args: &[&str]) -> Run {
    let mut cmd = c.command(args);
    cmd.cmd = std::process::Command::new(bin("im-client"));
    cmd.cmd
        .arg("--home")
        .arg(&c.home)
        .args(["--server", &server.addr, "--user", &c.user])
        .args(args)
        .env("IM_PASSWORD", &c.password)
        .env_remove("IM_HOME");
    cmd.run()
}

fn pinned(c: &Client) -> String {
    std::fs::read_to_string(c.home.join("known_hosts")).unwrap_or_default()
}

#[test]
fn clients_follow_a_rotated_host_key_but_only_from_the_key_they_pinned() {
    let mut server = Server::start();
    let alice = server.user("alice");
    let carol = server.user("carol");
    // Without tickets the next connection is a full handshake, which shows the host key.
    alice.cmd(&["logout"]).ok();
    carol.cmd(&["logout"]).ok();
    let first = server.admin(&["fingerprint"]).ok().stdout().trim().to_owned();
    assert!(pinned(&alice).contains(&first));

    server.terminate();
    let run = server.admin(&["rotate-host-key", "--grace-days", "7"]).ok();
    let second = server.admin(&["fingerprint"]).ok().stdout().trim().to_owned();
    assert_ne!(first, second);
    assert!(
        run.stdout().contains(&second) && run.stdout().contains(&first),
        "{}",
        run.stdout()
    );
    server.restart();
    assert!(server.log().contains("host key rotated"), "{}", server.log());

    // Alice pinned the first key, which endorsed the second: she follows without a question.
    let run = plain(&alice, &server, &["--json", "whoami"]).code_is(0);
    assert_eq!(run.json()[0]["fingerprint"], second.as_str());
    assert!(pinned(&alice).contains(&second) && !pinned(&alice).contains(&first));
    assert_eq!(pinned(&alice).lines().count(), 1);
    plain(&alice, &server, &["logout"]).ok();

    // A second rotation waits for the first one's grace period, unless forced.
    server.terminate();
    let run = server.admin(&["rotate-host-key"]);
    assert_ne!(run.code(), 0);
    assert!(run.stderr().contains("--force"), "{}", run.stderr());
    server.admin(&["rotate-host-key", "--force"]).ok();
    let third = server.admin(&["fingerprint"]).ok().stdout().trim().to_owned();
    server.restart();

    // Carol still trusts only the first key; the third is endorsed by the second, which she
    // never pinned: a changed key, refused even with --accept-new.
    let run = carol.cmd(&["--json", "whoami"]).code_is(5);
    assert_eq!(run.json_error()["code"], "host_key_changed");
    assert!(pinned(&carol).contains(&first));
    // Alice, who followed to the second key, follows to the third.
    plain(&alice, &server, &["whoami"]).ok();
    assert!(pinned(&alice).contains(&third));
}
