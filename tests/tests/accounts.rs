//! Accounts, authentication, exit codes and connection lifecycle, end to end.

mod harness;

use std::time::Duration;

use harness::raw::Raw;
use harness::*;
use im_proto::Target;
use im_proto::msg::{ClientMsg, ErrorCode, MessageId, RequestId, ServerMsg};

#[test]
fn every_exit_code_for_real() {
    let mut server = Server::start_with_config(Some(
        "[limits]\nmessages_per_user_per_sec = 1\nmessage_burst_per_user = 1\n",
    ));
    let alice = server.user("alice");
    let bob = server.user("bob");

    // 0: success.
    alice.cmd(&["whoami"]).code_is(0);
    // 1: listen timed out before --count.
    alice.cmd(&["listen", "--count", "1", "--timeout", "1"]).code_is(1);
    // 2: usage error.
    alice.cmd(&["send"]).code_is(2);
    alice.cmd(&["no-such-command"]).code_is(2);
    // 4: authentication failed (a fresh home, so no ticket; wrong password).
    let wrong = Client {
        password: "not the password".into(),
        ..alice.device("wrong")
    };
    let run = wrong.cmd(&["--json", "whoami"]).code_is(4);
    assert_eq!(run.json_error()["code"], "auth_failed");
    // 6: refused by the server (no such user) and by the client (too large).
    let run = alice.cmd(&["--json", "send", "nobody", "hi"]).code_is(6);
    assert_eq!(run.json_error()["code"], "no_such_user");
    alice.cmd(&["send", "bob", &"x".repeat(9000)]).code_is(6);
    // 7: rate-limited (one message a second), with the retry-after on stderr. Bob has sent
    // nothing yet, so his first message passes and his second does not.
    bob.cmd(&["send", "alice", "one"]).ok();
    let run = bob.cmd(&["--json", "send", "alice", "two"]).code_is(7);
    assert!(run.json_error()["retry_after_ms"].as_u64().unwrap() > 0);
    // 8: local error (unreadable password file; home that cannot be created).
    alice
        .device("pwfile")
        .command(&["--password-file", "/nonexistent/pw", "whoami"])
        .env_remove("IM_PASSWORD")
        .run()
        .code_is(8);
    let file = server.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let mut c = alice.clone();
    c.home = file.join("home");
    c.cmd(&["whoami"]).code_is(8);
    // 5: host key unknown without a terminal, and changed.
    let stranger = alice.device("stranger");
    let mut cmd = stranger.command(&["whoami"]);
    cmd.cmd = std::process::Command::new(bin("im-client"));
    cmd.cmd
        .arg("--home")
        .arg(&stranger.home)
        .args(["--server", &server.addr, "--user", "alice", "whoami"])
        .env("IM_PASSWORD", &alice.password);
    let run = cmd.run().code_is(5);
    assert!(
        run.stderr().contains("SHA256:"),
        "the fingerprint is shown: {}",
        run.stderr()
    );
    // A different server (new host key) on the same address: refused even with --accept-new.
    let addr = server.addr.clone();
    server.kill9();
    let other = tempfile::tempdir().unwrap();
    let mut impostor = std::process::Command::new(bin("im-server"))
        .arg("--data-dir")
        .arg(other.path())
        .args(["--listen", &addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(impostor.stdout.take().unwrap()), &mut line).unwrap();
    let _guard = Proc { child: impostor };
    let run = alice.cmd(&["whoami"]).code_is(5);
    assert!(
        run.stderr().matches("SHA256:").count() >= 2,
        "both fingerprints: {}",
        run.stderr()
    );
    // 3: cannot connect.
    drop(_guard);
    alice.cmd(&["whoami"]).code_is(3);
}

#[test]
fn user_key_login_with_no_password_anywhere() {
    let server = Server::start();
    let alice = server.user("alice");
    alice.cmd(&["keygen", "--bits", "2048"]).ok();
    alice.cmd(&["key", "add"]).ok();
    let key = alice.home.join("user_key.pem");
    let bot = alice.device("bot");
    let run = bot
        .command(&["--json", "--key", key.to_str().unwrap(), "whoami"])
        .env_remove("IM_PASSWORD")
        .run()
        .ok();
    assert_eq!(run.json()[0]["user"], "alice");
    // The same key for another user is refused.
    let bob = server.user("bob");
    bob.device("thief")
        .command(&["--key", key.to_str().unwrap(), "whoami"])
        .env_remove("IM_PASSWORD")
        .run()
        .code_is(4);
}

#[test]
fn passwd_revokes_the_other_devices_tickets() {
    let server = Server::start();
    let alice = server.user("alice");
    let phone = alice.device("phone");
    phone.cmd(&["whoami"]).ok(); // logs in, stores a ticket
    // Without a password the phone still gets in: by its ticket.
    phone.command(&["whoami"]).env_remove("IM_PASSWORD").run().ok();
    alice
        .command(&["passwd"])
        .env("IM_NEW_PASSWORD", "a brand new password")
        .run()
        .ok();
    // The phone's ticket is revoked: with no password it cannot log in any more.
    phone.command(&["whoami"]).env_remove("IM_PASSWORD").run().code_is(4);
    // The old password fails; the new one works.
    phone.cmd(&["whoami"]).code_is(4);
    phone
        .command(&["whoami"])
        .env("IM_PASSWORD", "a brand new password")
        .run()
        .ok();
    // The device that changed it keeps its ticket.
    alice.command(&["whoami"]).env_remove("IM_PASSWORD").run().ok();
}

#[test]
fn a_slow_reader_is_disconnected_while_others_keep_receiving() {
    // The queue is longer than the client's send window (so an honest reader keeps up with a
    // burst) and far shorter than the 3000 messages of 4 KiB (so a reader that stops reading
    // overflows it once its socket buffers are full).
    let server = Server::start_with_config(Some(
        "[limits]\noutbound_queue = 256\nmessages_per_user_per_sec = 100000\nmessage_burst_per_user = 100000\n",
    ));
    let alice = server.user("alice");
    let bob = server.user("bob");
    // A second device of bob that keeps reading.
    let reader = bob.device("reader");
    reader.cmd(&["whoami"]).ok();
    let mut listening = reader
        .command(&["--json", "listen", "--count", "3000", "--timeout", "60"])
        .spawn();
    // A connection of bob that never reads.
    let slow = Raw::login(&server.addr, "bob", &bob.password);
    // Drain the listener's output while sending: a full stdout pipe would stall it.
    let counter = std::thread::spawn(move || {
        let mut got = 0;
        while let Some(v) = listening.next_json() {
            if v["type"] == "message" {
                got += 1;
            }
        }
        (got, listening.wait())
    });
    let text = "x".repeat(4000);
    let input: String = (0..3000).map(|i| format!("{i} {text}\n")).collect();
    alice.command(&["send", "--lines", "bob"]).stdin(input).run().ok();
    let (got, out) = counter.join().unwrap();
    assert_eq!(
        got,
        3000,
        "the reading device got {got} of 3000; listen: {:?} {}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !server.log().contains("queue_overflow") {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow connection was not disconnected; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(slow);
}

#[test]
fn graceful_shutdown_sends_close_and_exits_0() {
    let mut server = Server::start();
    let alice = server.user("alice");
    let mut raw = Raw::login(&server.addr, "alice", &alice.password);
    raw.send(&ClientMsg::Typing {
        to: Target::parse("alice").unwrap(),
    });
    let status = {
        let s = &mut server;
        std::thread::scope(|scope| {
            let h = scope.spawn(|| s.terminate());
            let reason = raw.closed().expect("an authenticated Close");
            assert_eq!(reason.code, ErrorCode::ShuttingDown);
            h.join().unwrap()
        })
    };
    assert!(status.success(), "exit status {status:?}");
    let _ = RequestId(0);
}

#[test]
fn one_ack_for_a_long_catch_up_does_not_overflow_the_senders_queue() {
    // Bob catches up 300 messages from alice and acknowledges them with one Ack: alice, online
    // with a queue of 16, must receive all 300 receipts and stay connected. Each receipt queued
    // as its own push would overflow her queue in that instant however fast she reads.
    receipts_reach_a_sender_with_a_short_queue(|reader, ids| {
        reader.send(&ClientMsg::Ack {
            up_to: *ids.last().unwrap(),
        })
    });
}

#[test]
fn a_burst_of_acks_does_not_overflow_the_senders_queue() {
    // The same with one Ack per message, all read by the server at once (a client that acks
    // each message as it shows it, catching up): one push per Ack would overflow alice's
    // queue as surely as one per receipt. The CI run of commit 05c8078 saw it happen live.
    receipts_reach_a_sender_with_a_short_queue(|reader, ids| {
        let acks: Vec<ClientMsg> = ids.iter().map(|&up_to| ClientMsg::Ack { up_to }).collect();
        reader.send_all(&acks);
    });
}

/// Bob catches up 300 messages from alice and acknowledges them with `ack`; alice, online
/// with a queue of 16, must receive all 300 receipts and stay connected.
fn receipts_reach_a_sender_with_a_short_queue(ack: impl FnOnce(&mut Raw, &[MessageId])) {
    let server = Server::start_with_config(Some(
        "[limits]\noutbound_queue = 16\nmessages_per_user_per_sec = 100000\nmessage_burst_per_user = 100000\n",
    ));
    let alice = server.user("alice");
    let bob = server.user("bob");
    let input: String = (0..300).map(|i| format!("message {i}\n")).collect();
    alice.command(&["send", "--lines", "bob"]).stdin(input).run().ok();
    let mut online = Raw::login(&server.addr, "alice", &alice.password);
    let mut reader = Raw::login(&server.addr, "bob", &bob.password);
    let mut ids = Vec::new();
    while ids.len() < 300 {
        match reader.recv() {
            Some(ServerMsg::Message(m)) => ids.push(m.id),
            Some(_) => {} // the ticket, presence
            None => panic!("bob's connection ended after {} messages", ids.len()),
        }
    }
    ack(&mut reader, &ids);
    let mut receipts = 0;
    while receipts < 300 {
        match online.next() {
            Some(Ok(ServerMsg::Receipt { user, .. })) if user.as_str() == "bob" => receipts += 1,
            Some(Ok(_)) => {}
            Some(Err(close)) => panic!("alice was disconnected after {receipts} receipts: {close:?}"),
            None => panic!("alice's connection ended after {receipts} receipts"),
        }
    }
    assert!(!server.log().contains("queue_overflow"), "{}", server.log());
}
