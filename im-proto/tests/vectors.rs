//! The test vectors in PROTOCOL.md are produced here and checked against the spec text, so
//! the spec and the code cannot drift apart. After a deliberate change to the protocol, run
//! `IM_UPDATE_VECTORS=1 cargo test -p im-proto --test vectors` and review the diff of
//! PROTOCOL.md.
//!
//! Internal values (transcript hashes, secrets) are recomputed here from their definitions
//! in the spec, independently of the state machines, and the state machines' frames must
//! agree with them: that is what makes the vectors useful to another implementation.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;

use common::*;
use im_proto::crypto::sha256;
use im_proto::frame::FrameType;
use im_proto::handshake::{ClientHandshake, ResumeTicket, ServerHandshake};
use im_proto::keys::{HandshakeSecrets, TrafficSecret};
use im_proto::msg::{ClientMsg, ServerMsg};
use im_proto::record::{RekeyPolicy, Sealer};
use x25519_dalek::{PublicKey, StaticSecret};

/// `name = hex`, wrapped at 64 hex digits, continuation lines indented.
fn field(out: &mut String, name: &str, bytes: &[u8]) {
    let hex = hex::encode(bytes);
    let mut lines = hex.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap());
    writeln!(out, "{name:<24}= {}", lines.next().unwrap_or("")).unwrap();
    for l in lines {
        writeln!(out, "{:26}{l}", "").unwrap();
    }
}

fn text(out: &mut String, name: &str, value: &str) {
    writeln!(out, "{name:<24}= {value}").unwrap();
}

struct Exchange {
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    client: im_proto::handshake::ClientEstablished,
}

fn exchange(ticket: Option<ResumeTicket>) -> Exchange {
    let policy = RekeyPolicy::default();
    let (r, e) = client_inputs(1);
    let (mut client, ch) = ClientHandshake::with_inputs(r, e, ticket.clone(), policy);
    let hello = ServerHandshake::read_client_hello(frames(&ch).remove(0)).unwrap();
    let (expect, s2c) = match &ticket {
        Some(t) => hello.resume(server_inputs(1, policy), &t.secret),
        None => hello.full(server_inputs(1, policy), host_key(), &mut rng()),
    };
    let mut est = None;
    for f in frames(&s2c) {
        est = client.handle(f).unwrap();
    }
    let client = est.unwrap();
    expect.read_finished(frames(&client.finished).remove(0)).unwrap();
    let mut c2s = ch;
    c2s.extend_from_slice(&client.finished);
    Exchange { c2s, s2c, client }
}

fn handshake_vector(ticket: Option<ResumeTicket>) -> String {
    let mut o = String::new();
    let (client_random, client_eph) = client_inputs(1);
    let server = server_inputs(1, RekeyPolicy::default());
    let mut x = exchange(ticket.clone());
    writeln!(o, "# inputs").unwrap();
    field(&mut o, "client_random", &client_random);
    field(&mut o, "client_x25519_secret", &client_eph);
    field(&mut o, "server_random", &server.random);
    field(&mut o, "server_x25519_secret", &*server.ephemeral);
    if let Some(t) = &ticket {
        field(&mut o, "ticket_id", &t.id);
        field(&mut o, "ticket_secret", &*t.secret);
    } else {
        field(&mut o, "host_key_spki", host_key().public_der());
        text(&mut o, "host_key_fingerprint", &host_key().fingerprint());
    }

    let c_frames = frames(&x.c2s);
    let s_frames = frames(&x.s2c);
    writeln!(o, "# frames, client to server").unwrap();
    field(&mut o, "client_hello", &c_frames[0].to_bytes());
    writeln!(o, "# frames, server to client").unwrap();
    field(&mut o, "server_hello", &s_frames[0].to_bytes());
    let mut transcript = [c_frames[0].to_bytes(), s_frames[0].to_bytes()].concat();
    if ticket.is_none() {
        field(&mut o, "server_auth", &s_frames[1].to_bytes());
        transcript.extend_from_slice(&s_frames[1].to_bytes());
    }
    let fin = s_frames.last().unwrap();
    assert_eq!(fin.header.frame_type, FrameType::Finished);
    field(&mut o, "server_finished", &fin.to_bytes());
    writeln!(o, "# frame, client to server").unwrap();
    field(&mut o, "client_finished", &c_frames[1].to_bytes());

    // Recompute the schedule from the spec's definitions.
    let th = sha256(&[&transcript]);
    let shared =
        StaticSecret::from(client_eph).diffie_hellman(&PublicKey::from(&StaticSecret::from(*server.ephemeral)));
    let secrets = HandshakeSecrets::derive(&th, shared.as_bytes(), ticket.as_ref().map(|t| &*t.secret));
    assert_eq!(*secrets.exporter, *x.client.exporter, "state machine and spec disagree");
    writeln!(o, "# key schedule").unwrap();
    field(&mut o, "transcript_hash", &th);
    field(&mut o, "x25519_shared", shared.as_bytes());
    field(&mut o, "c2s_traffic_secret", secrets.c2s.as_bytes());
    field(&mut o, "s2c_traffic_secret", secrets.s2c.as_bytes());
    field(&mut o, "c_finished_key", &*secrets.c_finished);
    field(&mut o, "s_finished_key", &*secrets.s_finished);
    field(&mut o, "exporter", &*secrets.exporter);
    let k = secrets.c2s.keys();
    field(&mut o, "c2s_epoch0_key", &*k.enc);
    field(&mut o, "c2s_epoch0_mac_key", &*k.mac);
    field(&mut o, "c2s_epoch0_iv", &k.iv);
    // The first Data record the client sends.
    let mut rec = Vec::new();
    x.client.session.seal(b"hello", &mut rec).unwrap();
    writeln!(o, "# first client Data record, plaintext \"hello\" (68656c6c6f)").unwrap();
    field(&mut o, "client_data_record", &rec);
    o
}

fn record_vector() -> String {
    let mut o = String::new();
    let secret = TrafficSecret::from_bytes([0x11; 32]);
    let policy = RekeyPolicy {
        after_blocks: 1 << 20,
        after_records: 2,
        ceiling_blocks: 1 << 24,
    };
    let mut sealer = Sealer::new(secret.clone(), 5, policy);
    writeln!(
        o,
        "# a sender whose key ratchets after 2 records (the protocol's threshold is 2^20)"
    )
    .unwrap();
    field(&mut o, "traffic_secret_epoch0", secret.as_bytes());
    let k0 = secret.keys();
    field(&mut o, "epoch0_key", &*k0.enc);
    field(&mut o, "epoch0_mac_key", &*k0.mac);
    field(&mut o, "epoch0_iv", &k0.iv);
    for (i, pt) in [
        &b"first record"[..],
        b"second, 9 blocks long: spans the counter",
        b"after the rekey",
    ]
    .iter()
    .enumerate()
    {
        if i == 2 {
            let s1 = secret.ratchet();
            let k1 = s1.keys();
            field(&mut o, "traffic_secret_epoch1", s1.as_bytes());
            field(&mut o, "epoch1_key", &*k1.enc);
            field(&mut o, "epoch1_mac_key", &*k1.mac);
            field(&mut o, "epoch1_iv", &k1.iv);
        }
        let mut rec = Vec::new();
        sealer.seal(FrameType::Data, pt, &mut rec).unwrap();
        text(
            &mut o,
            &format!("plaintext_{i}"),
            &format!("{:?}", std::str::from_utf8(pt).unwrap()),
        );
        field(&mut o, &format!("record_{i}"), &rec);
    }
    o
}

fn message_vector() -> String {
    use im_proto::msg::{ChatMessage, ErrorCode, MessageId, RequestId, Timestamp};
    use im_proto::{Target, UserName};
    let mut o = String::new();
    let send = ClientMsg::Send {
        req: RequestId(7),
        to: Target::parse("bob").unwrap(),
        client_id: "c-1".into(),
        action: false,
        text: "hi bob".into(),
    };
    let pushed = ServerMsg::Message(ChatMessage {
        id: MessageId(1001),
        ts: Timestamp(1_767_225_600_000),
        from: UserName::parse("alice").unwrap(),
        to: Target::parse("#rust").unwrap(),
        action: true,
        text: "waves".into(),
        client_id: "c-2".into(),
    });
    let err = ServerMsg::Error {
        req: Some(RequestId(7)),
        code: ErrorCode::RateLimited,
        text: "slow down".into(),
        retry_after_ms: Some(1500),
    };
    for (name, desc, msg) in [
        (
            "send",
            "ClientMsg::Send { req 7, to bob, client_id \"c-1\", action false, text \"hi bob\" }",
            either(Ok(send)),
        ),
        (
            "message",
            "ServerMsg::Message { id 1001, ts 2026-01-01T00:00:00Z, from alice, to #rust, action true, text \"waves\", client_id \"c-2\" }",
            either(Err(pushed)),
        ),
        (
            "error",
            "ServerMsg::Error { req 7, rate_limited, \"slow down\", retry_after_ms 1500 }",
            either(Err(err)),
        ),
    ] {
        writeln!(o, "# {desc}").unwrap();
        field(&mut o, name, &msg);
    }
    o
}

fn either(m: Result<ClientMsg, ServerMsg>) -> Vec<u8> {
    let mut out = Vec::new();
    match m {
        Ok(c) => {
            c.encode(&mut out);
            assert_eq!(ClientMsg::decode(&out).unwrap(), c);
        }
        Err(s) => {
            s.encode(&mut out);
            assert_eq!(ServerMsg::decode(&out).unwrap(), s);
        }
    }
    out
}

fn protocol_md() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../PROTOCOL.md")
}

#[test]
fn protocol_md_vectors_match_the_code() {
    let vectors = [
        ("full-handshake", handshake_vector(None)),
        ("resumption-handshake", handshake_vector(Some(ticket()))),
        ("records-and-rekey", record_vector()),
        ("messages", message_vector()),
    ];
    let path = protocol_md();
    let mut spec = std::fs::read_to_string(&path).expect("PROTOCOL.md at the workspace root");
    let update = std::env::var_os("IM_UPDATE_VECTORS").is_some();
    let mut stale = Vec::new();
    for (name, body) in &vectors {
        let open = format!("<!-- vector:{name} -->\n```text\n");
        let close = "```\n<!-- /vector -->";
        let start = spec
            .find(&open)
            .unwrap_or_else(|| panic!("PROTOCOL.md has no block {open:?}"))
            + open.len();
        let end = start
            + spec[start..]
                .find(close)
                .unwrap_or_else(|| panic!("vector {name} is not closed"));
        if &spec[start..end] != body {
            stale.push(*name);
            spec.replace_range(start..end, body);
        }
    }
    if update {
        std::fs::write(&path, spec).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "PROTOCOL.md vectors {stale:?} differ from the code; if the change is deliberate, run IM_UPDATE_VECTORS=1 cargo test -p im-proto --test vectors"
        );
    }
}

#[test]
fn protocol_md_limits_match_the_code() {
    use im_proto::limits::*;
    let spec = std::fs::read_to_string(protocol_md()).unwrap();
    for (name, value) in [
        ("MAX_FRAME_PAYLOAD", MAX_FRAME_PAYLOAD as u64),
        ("MAX_RECORD_PLAINTEXT", MAX_RECORD_PLAINTEXT as u64),
        ("MAX_HANDSHAKE_PAYLOAD", MAX_HANDSHAKE_PAYLOAD as u64),
        ("MAX_TEXT", MAX_TEXT as u64),
        ("MAX_TOPIC", MAX_TOPIC as u64),
        ("MAX_STATUS_TEXT", MAX_STATUS_TEXT as u64),
        ("MAX_REASON", MAX_REASON as u64),
        ("MAX_PASSWORD", MAX_PASSWORD as u64),
        ("MIN_PASSWORD_CHARS", MIN_PASSWORD_CHARS as u64),
        ("MAX_CLIENT_ID", MAX_CLIENT_ID as u64),
        ("MAX_DEVICE_NAME", MAX_DEVICE_NAME as u64),
        ("MAX_PUBLIC_KEY_DER", MAX_PUBLIC_KEY_DER as u64),
        ("MAX_SIGNATURE", MAX_SIGNATURE as u64),
        ("MAX_PAGE", MAX_PAGE as u64),
        ("MAX_LIST", MAX_LIST as u64),
        ("MAX_USER_NAME", MAX_USER_NAME as u64),
        ("MAX_ROOM_NAME", MAX_ROOM_NAME as u64),
        ("REKEY_AFTER_BLOCKS", REKEY_AFTER_BLOCKS),
        ("REKEY_AFTER_RECORDS", REKEY_AFTER_RECORDS),
        ("KEY_BLOCK_CEILING", KEY_BLOCK_CEILING),
        ("DEFAULT_PORT", u64::from(DEFAULT_PORT)),
    ] {
        let row = format!("| `{name}` | {value} |");
        assert!(spec.contains(&row), "PROTOCOL.md §Limits lacks the row {row:?}");
    }
}

/// §8.11's field-by-field vectors: each one's field bytes concatenate to its one-line hex,
/// which decodes with the named direction's decoder and re-encodes to the same bytes.
#[test]
fn protocol_md_message_vectors_decode_and_reencode() {
    use im_proto::msg::CloseReason;
    let spec = std::fs::read_to_string(protocol_md()).unwrap();
    let start = spec.find("### 8.11 Test vectors").expect("§8.11");
    let section = &spec[start..start + spec[start..].find("\n## ").unwrap()];
    let mut checked = 0;
    let mut lines = section.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(title) = line.strip_prefix("**") else { continue };
        if !["Client", "Server", "Close"].iter().any(|p| title.starts_with(p)) {
            continue;
        }
        let mut fields = String::new();
        let mut in_block = false;
        let hex_line = loop {
            let l = lines.next().unwrap_or_else(|| panic!("vector {title} has no hex line"));
            if l.starts_with("```") {
                in_block = !in_block;
            } else if in_block {
                // Field bytes come first, then two or more spaces, then the description.
                let bytes = l.split("  ").next().unwrap_or("");
                fields.extend(bytes.chars().filter(|c| !c.is_whitespace()));
            } else if let Some(h) = l.strip_prefix('`').and_then(|l| l.strip_suffix('`')) {
                break h.to_owned();
            }
        };
        assert_eq!(fields, hex_line, "{title}: field bytes and hex line differ");
        let bytes = hex::decode(&hex_line).unwrap();
        let mut again = Vec::new();
        if title.starts_with("Client") {
            ClientMsg::decode(&bytes)
                .unwrap_or_else(|e| panic!("{title}: {e}"))
                .encode(&mut again);
        } else if title.starts_with("Server") {
            ServerMsg::decode(&bytes)
                .unwrap_or_else(|e| panic!("{title}: {e}"))
                .encode(&mut again);
        } else if title.starts_with("Close") {
            CloseReason::decode(&bytes)
                .unwrap_or_else(|e| panic!("{title}: {e}"))
                .encode(&mut again);
        } else {
            continue;
        }
        assert_eq!(again, bytes, "{title}: re-encoding differs");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} vectors found in §8.11");
}
