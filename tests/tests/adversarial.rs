//! Hostile input and abuse against the real server binary, with an honest client working
//! beside each attack:
//! - a proxy between a real `im-client` and the server flips a bit in, drops, duplicates,
//!   reorders or truncates one record, in each direction: the receiver detects it, the
//!   server stays up, and after reconnecting nothing acknowledged is missing or doubled;
//! - attackers on other loopback addresses (127.0.0.9 and up; the honest client is on
//!   127.0.0.1) hold connections open without a handshake (slowloris), flood handshakes,
//!   guess passwords, send oversized and malformed frames, and flood messages: each limit
//!   holds and each abuser gets a clear refusal or is disconnected.
//!
//! A client that never reads is disconnected on queue overflow:
//! `accounts.rs::a_slow_reader_is_disconnected_while_others_keep_receiving`.

mod attacker;
mod harness;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attacker::{Attacker, closed_by_server, connect_from};
use bytes::BytesMut;
use harness::*;
use im_proto::frame::{FrameDecoder, FrameType, HEADER_LEN};
use im_proto::handshake::{ClientHandshake, HandshakeError};
use im_proto::msg::{ClientMsg, ErrorCode, RequestId, ServerMsg};
use im_proto::{Target, limits};
use serde_json::Value;

/// Limits no honest traffic in these tests comes near, for tests about something else.
const NO_LIMITS: &str = "[limits]\nmessages_per_user_per_sec = 100000\nmessage_burst_per_user = 100000\n";

fn messages(values: &[Value]) -> Vec<&Value> {
    values.iter().filter(|v| v["type"] == "message").collect()
}

// ---------------------------------------------------------------------------------------
// A tampering proxy.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Flip one bit of the record's ciphertext.
    Flip,
    Drop,
    Duplicate,
    /// Swap the record with the next one.
    Reorder,
    /// Forward half of the record, then cut both connections.
    Truncate,
}

/// What the proxy does to one connection: `attack` on the Data record number `record`
/// (counting from 0) that goes in `direction`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    direction: Direction,
    attack: Attack,
    record: usize,
}

/// A TCP proxy in front of the server. Each accepted connection takes the next plan queued
/// with [`Proxy::plan`]; with none queued, it forwards faithfully.
struct Proxy {
    addr: String,
    plans: Arc<Mutex<VecDeque<Plan>>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let plans: Arc<Mutex<VecDeque<Plan>>> = Arc::default();
        let queue = plans.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let plan = queue.lock().unwrap().pop_front();
                let to_server = plan.filter(|p| p.direction == Direction::ToServer);
                let to_client = plan.filter(|p| p.direction == Direction::ToClient);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, s2, to_server));
                std::thread::spawn(move || pump(server, client, to_client));
            }
        });
        Proxy { addr, plans }
    }

    fn plan(&self, plan: Plan) {
        self.plans.lock().unwrap().push_back(plan);
    }
}

/// Forwards `src` to `dst` frame by frame, applying `plan` to one Data record.
fn pump(mut src: TcpStream, mut dst: TcpStream, plan: Option<Plan>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut data_records = 0;
    let mut held: Option<Vec<u8>> = None;
    let mut raw = false;
    'read: loop {
        let n = match src.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if raw {
                // Not frames (a Reject, or garbage): not this proxy's business.
                if dst.write_all(&buf).is_err() {
                    break 'read;
                }
                buf.clear();
                break;
            }
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    raw = true;
                    continue;
                }
            };
            let mut bytes = frame.to_bytes();
            let is_data = frame.header.frame_type == FrameType::Data;
            let attack = plan.filter(|p| is_data && p.record == data_records).map(|p| p.attack);
            data_records += usize::from(is_data);
            let out: Vec<u8> = match attack {
                None => match held.take() {
                    // The record after a held one goes first: the two are swapped.
                    Some(h) => [bytes, h].concat(),
                    None => bytes,
                },
                Some(Attack::Flip) => {
                    bytes[HEADER_LEN + 1] ^= 0x01;
                    bytes
                }
                Some(Attack::Drop) => continue,
                Some(Attack::Duplicate) => [bytes.clone(), bytes].concat(),
                Some(Attack::Reorder) => {
                    held = Some(bytes);
                    continue;
                }
                Some(Attack::Truncate) => {
                    let _ = dst.write_all(&bytes[..bytes.len() / 2]);
                    let _ = dst.shutdown(Shutdown::Both);
                    let _ = src.shutdown(Shutdown::Both);
                    return;
                }
            };
            if dst.write_all(&out).is_err() {
                break 'read;
            }
        }
    }
    let _ = dst.shutdown(Shutdown::Write);
}

/// The acknowledged messages of a `--json send` run: id to text.
fn acked(run: &Run, texts: &[String]) -> HashMap<u64, String> {
    run.json()
        .iter()
        .filter(|v| v["type"] == "sent")
        .enumerate()
        .map(|(i, v)| (v["id"].as_u64().unwrap(), texts[i].clone()))
        .collect()
}

fn lines(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i}")).collect()
}

/// What the detecting side says about each attack: any of these. A cut connection may show
/// as a reset instead, when the cut end's kernel answers a write with RST before the reader
/// sees the end of the stream.
fn detection(attack: Attack) -> &'static [&'static str] {
    match attack {
        Attack::Flip => &["authentication failed"],
        Attack::Drop | Attack::Duplicate | Attack::Reorder => &["sequence number"],
        Attack::Truncate => &["middle of a frame", "reset by peer", "Broken pipe", "without a Close"],
    }
}

#[test]
fn tampered_records_are_detected_and_no_acknowledged_message_is_lost() {
    let server = Server::start_with_config(Some(NO_LIMITS));
    let proxy = Proxy::start(&server.addr);
    let bob = server.user("bob");
    let carol = server.user("carol");
    let alice = Client {
        server: proxy.addr.clone(),
        ..server.client("alice")
    };
    alice.cmd(&["register"]).ok();
    let mut all_acked: HashMap<u64, String> = HashMap::new();
    let mut report = Vec::new();
    for direction in [Direction::ToServer, Direction::ToClient] {
        for attack in [
            Attack::Flip,
            Attack::Drop,
            Attack::Duplicate,
            Attack::Reorder,
            Attack::Truncate,
        ] {
            let tag = format!("{direction:?}-{attack:?}");
            // Acknowledged before the attack, on a faithful connection.
            let before = lines(&format!("{tag}-before"), 5);
            let run = alice
                .command(&["--json", "send", "--lines", "bob"])
                .stdin(before.join("\n"))
                .run()
                .ok();
            all_acked.extend(acked(&run, &before));

            // Data record 3: after the login (record 0) and two sends or their replies.
            proxy.plan(Plan {
                direction,
                attack,
                record: 3,
            });
            let log_before = server.log().len();
            let during = lines(&format!("{tag}-during"), 40);
            let run = alice
                .command(&["--json", "send", "--lines", "bob"])
                .stdin(during.join("\n"))
                .run()
                .code_is(3);
            let error = run.json_error();
            let got = acked(&run, &during);
            report.push(format!(
                "{tag}: client {} {:?}, {} acknowledged",
                error["code"],
                error["message"],
                got.len()
            ));
            all_acked.extend(got);
            let expected = detection(attack);
            let says = |text: &str| expected.iter().any(|e| text.contains(e));
            match direction {
                // The server detects it, says so in its log and (but for a cut connection,
                // which it cannot answer) in its Close.
                Direction::ToServer => {
                    wait_for(&format!("the server to log {expected:?} ({tag})"), || {
                        server.log()[log_before..]
                            .lines()
                            .any(|l| l.contains("session ended") && says(l))
                    });
                    if attack != Attack::Truncate {
                        assert_eq!(error["code"], "protocol", "{tag}: {error}");
                        assert!(says(error["message"].as_str().unwrap()), "{tag}: {error}");
                    }
                }
                // The client detects it and says what it was.
                Direction::ToClient => {
                    assert!(
                        says(error["message"].as_str().unwrap()),
                        "{tag}: the client's error does not say any of {expected:?}: {error}"
                    );
                }
            }
            // The server is up for everyone else.
            carol.cmd(&["whoami"]).ok();
            // Reconnected, every acknowledged message is there, once.
            let history = alice.cmd(&["--json", "history", "bob", "--limit", "500"]).ok().json();
            let stored: Vec<(u64, String)> = messages(&history)
                .iter()
                .map(|m| (m["id"].as_u64().unwrap(), m["text"].as_str().unwrap().to_owned()))
                .collect();
            for (id, text) in &all_acked {
                let n = stored.iter().filter(|(i, t)| i == id && t == text).count();
                assert_eq!(n, 1, "{tag}: acknowledged message {id} {text:?} stored {n} times");
            }
            // The tampered record itself (the third send) was not accepted, except when it was
            // only duplicated (its first copy is genuine).
            let tampered = &during[2];
            let n = stored.iter().filter(|(_, t)| t == tampered).count();
            match (direction, attack) {
                (Direction::ToServer, Attack::Duplicate) | (Direction::ToClient, _) => assert!(n <= 1, "{tag}"),
                (Direction::ToServer, _) => assert_eq!(n, 0, "{tag}: the tampered record was accepted"),
            }
            let mut texts: Vec<&String> = stored.iter().map(|(_, t)| t).collect();
            texts.sort();
            texts.dedup();
            assert_eq!(texts.len(), stored.len(), "{tag}: a message was stored twice");
        }
    }
    // Bob gets them too.
    let got = bob.cmd(&["--json", "listen", "--timeout", "2"]).ok().json();
    let delivered: Vec<u64> = messages(&got).iter().map(|m| m["id"].as_u64().unwrap()).collect();
    for id in all_acked.keys() {
        assert_eq!(
            delivered.iter().filter(|d| *d == id).count(),
            1,
            "message {id} not delivered once"
        );
    }
    println!(
        "{}\n{} acknowledged, {} delivered",
        report.join("\n"),
        all_acked.len(),
        delivered.len()
    );
}

// ---------------------------------------------------------------------------------------
// Attackers on other loopback addresses.

fn is_rate_limited(m: &ServerMsg, what: &str) -> bool {
    matches!(m, ServerMsg::Error { code: ErrorCode::RateLimited, text, retry_after_ms: Some(ms), .. }
        if *ms > 0 && text.contains(what))
}

/// The honest client's traffic during an attack: a message sent and received.
fn honest_exchange(alice: &Client, bob: &Client, text: &str) {
    alice.cmd(&["send", "bob", text]).ok();
    let got = bob
        .cmd(&["--json", "listen", "--count", "1", "--timeout", "20"])
        .ok()
        .json();
    assert_eq!(messages(&got)[0]["text"], text);
}

#[test]
fn slowloris_connections_are_cut_at_the_login_timeout_and_refused_beyond_the_limit() {
    let server = Server::start_with_config(Some("[limits]\nlogin_timeout_secs = 2\nunauthenticated_per_ip = 4\n"));
    let (alice, bob) = (server.user("alice"), server.user("bob"));
    const SLOW: [u8; 4] = [127, 0, 0, 9];
    let (_, hello) = ClientHandshake::new(&mut rand::rng(), None);
    let opened = Instant::now();
    // Four connections that never finish the handshake: two send nothing, two half a hello.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut s = connect_from(SLOW, &server.addr);
            if i % 2 == 1 {
                s.write_all(&hello[..10]).unwrap();
            }
            s
        })
        .collect();
    // Let the server count them (each is counted by its own task) before the fifth.
    std::thread::sleep(Duration::from_millis(300));
    // The fifth from that address is refused at once, with a reason.
    match Attacker::connect(SLOW, &server.addr) {
        Err(HandshakeError::Rejected {
            code,
            retry_after_ms,
            text,
        }) => {
            assert_eq!(ErrorCode::from_wire(code), ErrorCode::RateLimited);
            assert!(
                retry_after_ms.unwrap_or(0) > 0 && text.contains("too many connections"),
                "{text}"
            );
        }
        Err(e) => panic!("expected a rate_limited Reject, got {e}"),
        Ok(_) => panic!("a fifth unauthenticated connection from one address was accepted"),
    }
    // One that completes the handshake but never logs in (from another address) is closed
    // with login_timeout.
    let mut no_login = Attacker::connect([127, 0, 0, 10], &server.addr).unwrap();
    // Meanwhile the honest client is unaffected.
    honest_exchange(&alice, &bob, "during the slowloris");
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(closed_by_server(s), "idle connection {i} was not closed");
    }
    let cut_after = opened.elapsed();
    match no_login.next() {
        Some(Err(reason)) => assert_eq!(reason.code, ErrorCode::LoginTimeout, "{reason}"),
        other => panic!("expected a login_timeout Close, got {other:?}"),
    }
    // Their places are free again.
    assert!(Attacker::connect(SLOW, &server.addr).is_ok());
    honest_exchange(&alice, &bob, "after the slowloris");
    println!("slowloris: 4 idle connections cut after {cut_after:?} (login_timeout 2 s); the fifth refused at once");
}

#[test]
fn a_handshake_flood_is_refused_beyond_the_per_address_rate() {
    let server = Server::start_with_config(Some(
        "[limits]\nhandshakes_per_ip_per_sec = 2\nhandshake_burst_per_ip = 5\n",
    ));
    let (alice, bob) = (server.user("alice"), server.user("bob"));
    const FLOOD: [u8; 4] = [127, 0, 0, 11];
    let started = Instant::now();
    let (mut accepted, mut refused, mut retry_after) = (0, 0, Vec::new());
    for _ in 0..25 {
        match Attacker::connect(FLOOD, &server.addr) {
            Ok(_) => accepted += 1,
            Err(HandshakeError::Rejected {
                code,
                retry_after_ms,
                text,
            }) => {
                assert_eq!(ErrorCode::from_wire(code), ErrorCode::RateLimited, "{text}");
                assert!(text.contains("too many handshakes"), "{text}");
                retry_after.push(retry_after_ms.expect("a retry-after"));
                refused += 1;
            }
            Err(e) => panic!("unexpected handshake failure: {e}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The burst, plus what the rate refilled meanwhile (and one for rounding).
    let allowed = 5 + (2.0 * elapsed).ceil() as usize + 1;
    assert!(
        accepted <= allowed,
        "{accepted} handshakes accepted in {elapsed:.2} s; at most {allowed} allowed"
    );
    assert!(refused >= 25 - allowed && refused > 0);
    assert!(retry_after.iter().all(|&ms| ms > 0 && ms <= 1000), "{retry_after:?}");
    // The honest client's address has its own allowance.
    honest_exchange(&alice, &bob, "during the flood");
    // After the advised wait, the flooding address may handshake again.
    std::thread::sleep(Duration::from_millis(u64::from(*retry_after.last().unwrap()) + 50));
    assert!(Attacker::connect(FLOOD, &server.addr).is_ok());
    println!(
        "handshake flood: {accepted} accepted, {refused} refused in {elapsed:.2} s; retry_after {retry_after:?} ms"
    );
}

#[test]
fn password_guessing_is_throttled_per_account_and_per_address() {
    let server = Server::start_with_config(Some(
        "[limits]\nlogins_per_ip_per_min = 8\nlogins_per_account_per_min = 4\n",
    ));
    let victim = server.user("victim");
    let alice = server.user("alice");
    // One account, from one address: four guesses get auth_failed, then rate_limited.
    let mut guesser = Attacker::connect([127, 0, 0, 12], &server.addr).unwrap();
    let answers: Vec<ServerMsg> = (1..=6)
        .map(|i| guesser.login(i, "victim", &format!("guess {i}")))
        .collect();
    for a in &answers[..4] {
        assert!(
            matches!(
                a,
                ServerMsg::Error {
                    code: ErrorCode::AuthFailed,
                    ..
                }
            ),
            "{a:?}"
        );
    }
    for a in &answers[4..] {
        assert!(is_rate_limited(a, "for this account"), "{a:?}");
    }
    // The correct password is now refused too, even from another address: the account's
    // limit counts every address. The victim's device with a ticket is not affected.
    let rate_limited = victim.device("new").cmd(&["--json", "whoami"]).code_is(7);
    let error = rate_limited.json_error();
    assert_eq!(error["code"], "rate_limited");
    let wait = error["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 60_000, "{error}");
    victim.command(&["whoami"]).env_remove("IM_PASSWORD").run().ok();

    // Many accounts, from one address: refused once the address has used its eight.
    let mut sprayer = Attacker::connect([127, 0, 0, 13], &server.addr).unwrap();
    let answers: Vec<ServerMsg> = (1..=10)
        .map(|i| sprayer.login(i, &format!("user{i}"), "password1"))
        .collect();
    for a in &answers[..8] {
        assert!(
            matches!(
                a,
                ServerMsg::Error {
                    code: ErrorCode::AuthFailed,
                    ..
                }
            ),
            "{a:?}"
        );
    }
    for a in &answers[8..] {
        assert!(is_rate_limited(a, "from your address"), "{a:?}");
    }
    // The honest address logs in with a password as usual.
    alice.device("laptop").cmd(&["whoami"]).ok();
    println!(
        "brute force: victim's fresh device sees rate_limited (retry_after {wait} ms) while the guesser is throttled; \
         its ticket device is unaffected"
    );
}

#[test]
fn oversized_and_malformed_frames_end_the_connection_and_the_server_stays_up() {
    let server = Server::start();
    let (alice, bob) = (server.user("alice"), server.user("bob"));
    const BAD: [u8; 4] = [127, 0, 0, 14];
    // A frame header as anyone could write it: magic, version 1, type, no flags, epoch 0.
    let header = |frame_type: FrameType, seq: u32, len: usize| -> Vec<u8> {
        let mut h = vec![0x49, 0x4D, 1, frame_type as u8, 0, 0, 0, 0];
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&(len as u32).to_be_bytes());
        h
    };

    // Before the handshake: not our protocol, an oversized hello (refused on its header,
    // before any payload is sent), a frame of the wrong direction, and a megabyte of noise.
    let noise: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let attempts: Vec<(&str, Vec<u8>)> = vec![
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "oversized hello",
            header(FrameType::ClientHello, 0, limits::MAX_HANDSHAKE_PAYLOAD + 1),
        ),
        (
            "ServerHello from a client",
            [header(FrameType::ServerHello, 0, 4), vec![0; 4]].concat(),
        ),
        ("noise", noise),
    ];
    for (what, bytes) in &attempts {
        let mut s = connect_from(BAD, &server.addr);
        let _ = s.write_all(bytes);
        assert!(closed_by_server(&mut s), "{what}: the connection was not ended");
    }

    // After the handshake: each gets an authenticated Close with code protocol.
    let bad_records: Vec<(&str, Vec<u8>)> = vec![
        (
            "oversized record",
            header(FrameType::Data, 2, limits::MAX_FRAME_PAYLOAD + 1),
        ),
        ("bad magic", [0u8; 48].to_vec()),
        (
            "ClientHello after the handshake",
            [header(FrameType::ClientHello, 2, 4), vec![0; 4]].concat(),
        ),
    ];
    for (what, bytes) in bad_records {
        let mut a = Attacker::connect(BAD, &server.addr).unwrap();
        a.stream.write_all(&bytes).unwrap();
        match a.next() {
            Some(Err(reason)) => assert_eq!(reason.code, ErrorCode::Protocol, "{what}: {reason}"),
            other => panic!("{what}: expected a protocol Close, got {other:?}"),
        }
        assert!(closed_by_server(&mut a.stream), "{what}: not disconnected");
    }
    // A valid record holding an undecodable message, after login.
    let mut a = Attacker::connect(BAD, &server.addr).unwrap();
    assert!(matches!(
        a.login(1, "alice", &alice.password),
        ServerMsg::LoggedIn { .. }
    ));
    a.send_plain(&[0x00, 0x20, 0xFF]);
    match a.next() {
        Some(Err(reason)) => assert_eq!(reason.code, ErrorCode::Protocol, "{reason}"),
        Some(Ok(ServerMsg::Ticket { .. })) => match a.next() {
            Some(Err(reason)) => assert_eq!(reason.code, ErrorCode::Protocol, "{reason}"),
            other => panic!("expected a protocol Close, got {other:?}"),
        },
        other => panic!("expected a protocol Close, got {other:?}"),
    }
    honest_exchange(&alice, &bob, "after the malformed frames");
}

#[test]
fn a_message_flood_from_one_user_is_rate_limited_and_others_are_not() {
    let server = Server::start_with_config(Some(
        "[limits]\nmessages_per_user_per_sec = 5\nmessage_burst_per_user = 10\n",
    ));
    let (alice, bob) = (server.user("alice"), server.user("bob"));
    let mallory = server.user("mallory");
    let mut flooder = Attacker::connect([127, 0, 0, 15], &server.addr).unwrap();
    assert!(matches!(
        flooder.login(1, "mallory", &mallory.password),
        ServerMsg::LoggedIn { .. }
    ));
    let started = Instant::now();
    const FLOOD: u32 = 60;
    for i in 0..FLOOD {
        flooder.send(&ClientMsg::Send {
            req: RequestId(100 + i),
            to: Target::parse("bob").unwrap(),
            client_id: format!("flood-{i}"),
            action: false,
            text: format!("flood {i}"),
        });
    }
    // Refusals come back at once, acknowledgements after the group commit: not in order.
    let (mut sent, mut limited) = (0, 0);
    while sent + limited < FLOOD {
        match flooder.next() {
            Some(Ok(ServerMsg::Sent { .. })) => sent += 1,
            Some(Ok(r)) if is_rate_limited(&r, "messages") => limited += 1,
            Some(Ok(ServerMsg::Ticket { .. })) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 10 + (5.0 * elapsed).ceil() as u32 + 1;
    assert!(
        sent >= 10 && sent <= allowed,
        "{sent} sent in {elapsed:.2} s; at most {allowed} allowed"
    );
    // The flooder keeps its connection.
    flooder.send(&ClientMsg::Ping { nonce: 7 });
    loop {
        match flooder.next() {
            Some(Ok(ServerMsg::Pong { nonce: 7 })) => break,
            Some(Ok(_)) => continue,
            other => panic!("expected the Pong, got {other:?}"),
        }
    }
    // Another user is not limited by mallory's flood, and only what was acknowledged was
    // stored and delivered.
    alice.cmd(&["send", "bob", "during the flood"]).ok();
    let want = (sent + 1).to_string();
    let got = bob
        .cmd(&["--json", "listen", "--count", &want, "--timeout", "20"])
        .ok()
        .json();
    let from = |user: &str| messages(&got).iter().filter(|m| m["from"] == user).count() as u32;
    assert_eq!((from("mallory"), from("alice")), (sent, 1));
    let history = bob.cmd(&["--json", "history", "mallory", "--limit", "500"]).ok().json();
    assert_eq!(messages(&history).len() as u32, sent);
    println!("message flood: {sent} of {FLOOD} stored, {limited} rate_limited with retry_after, in {elapsed:.2} s");
}
