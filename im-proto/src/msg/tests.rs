use super::field::{Field, Item};
use super::*;
use crate::limits::{MAX_ID, MAX_REASON};
use crate::name::{NameError, RoomName, Target, UserName};
use crate::wire::{WireError, Writer};

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn room(s: &str) -> RoomName {
    RoomName::parse(s).unwrap()
}

/// Hex with any whitespace in it, so that vectors can be written field by field.
fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

fn enc_client(m: &ClientMsg) -> String {
    let mut out = Vec::new();
    m.encode(&mut out);
    hex::encode(out)
}

fn enc_server(m: &ServerMsg) -> String {
    let mut out = Vec::new();
    m.encode(&mut out);
    hex::encode(out)
}

fn client_err(hex: &str) -> MsgError {
    ClientMsg::decode(&unhex(hex)).unwrap_err()
}

fn server_err(hex: &str) -> MsgError {
    ServerMsg::decode(&unhex(hex)).unwrap_err()
}

/// The test vectors of docs/messages.md, by name. Each must decode to its message and
/// re-encode to the same bytes.
fn client_vectors() -> Vec<(&'static str, ClientMsg, &'static str)> {
    vec![
        (
            "ping",
            ClientMsg::Ping {
                nonce: 0x0102_0304_0506_0708,
            },
            "00010102030405060708",
        ),
        (
            "login_password",
            ClientMsg::LoginPassword {
                req: RequestId(1),
                user: user("alice"),
                password: "hunter22".into(),
                device_id: DeviceId::new(42).unwrap(),
                device_name: "laptop".into(),
            },
            "0011000000010005616c696365000868756e7465723232000000000000002a00066c6170746f70",
        ),
        (
            "send",
            ClientMsg::Send {
                req: RequestId(7),
                to: Target::Room(room("#rust")),
                client_id: "c1".into(),
                action: false,
                text: "hi".into(),
            },
            "002000000007000523727573740002633100000268 69",
        ),
        (
            "history",
            ClientMsg::History {
                req: RequestId(9),
                with: Target::User(user("bob")),
                before: Some(MessageId(1000)),
                after: None,
                limit: 50,
            },
            "0023000000090003626f620100000000000003e8000032",
        ),
    ]
}

fn server_vectors() -> Vec<(&'static str, ServerMsg, &'static str)> {
    vec![
        (
            "message",
            ServerMsg::Message(ChatMessage {
                id: MessageId(1001),
                ts: Timestamp(1_700_000_000_000),
                from: user("alice"),
                to: Target::Room(room("#rust")),
                client_id: "c1".into(),
                action: true,
                text: "waves".into(),
            }),
            "4021 00000000000003e9 0000018bcfe56800 0005 616c696365 0005 2372757374 0002 6331 01
             0005 7761766573",
        ),
        (
            "error",
            ServerMsg::Error {
                req: Some(RequestId(7)),
                code: ErrorCode::RateLimited,
                text: "slow down".into(),
                retry_after_ms: Some(1500),
            },
            "4004010000000701900009736c6f7720646f776e01000005dc",
        ),
        (
            "member_list",
            ServerMsg::MemberList {
                req: RequestId(3),
                room: room("#rust"),
                members: vec![
                    Member {
                        user: user("alice"),
                        role: Role::Owner,
                        online: true,
                    },
                    Member {
                        user: user("bob"),
                        role: Role::Member,
                        online: false,
                    },
                ],
            },
            "4031000000030005237275737400020005616c6963650201 0003626f620000",
        ),
    ]
}

#[test]
fn vectors_encode_exactly() {
    for (name, msg, hex) in client_vectors() {
        assert_eq!(enc_client(&msg), hex::encode(unhex(hex)), "{name}");
        assert_eq!(ClientMsg::decode(&unhex(hex)).unwrap(), msg, "{name}");
    }
    for (name, msg, hex) in server_vectors() {
        assert_eq!(enc_server(&msg), hex::encode(unhex(hex)), "{name}");
        assert_eq!(ServerMsg::decode(&unhex(hex)).unwrap(), msg, "{name}");
    }
    let close = CloseReason::new(ErrorCode::IdleTimeout, "idle");
    let mut out = Vec::new();
    close.encode(&mut out);
    assert_eq!(out, unhex("0192 0004 69646c65"));
    assert_eq!(CloseReason::decode(&out).unwrap(), close);
}

/// `cargo test -p im-proto print_vectors -- --ignored --nocapture` prints the vectors for the
/// spec.
#[test]
#[ignore]
fn print_vectors() {
    for (name, msg, _) in client_vectors() {
        println!("{name}: {msg:?}\n  {}", enc_client(&msg));
    }
    for (name, msg, _) in server_vectors() {
        println!("{name}: {msg:?}\n  {}", enc_server(&msg));
    }
}

#[test]
fn unknown_and_wrong_direction_kinds() {
    assert_eq!(client_err("0000"), MsgError::UnknownKind(0));
    assert_eq!(client_err("4001 0000000000000000"), MsgError::UnknownKind(0x4001));
    assert_eq!(server_err("0001 0000000000000000"), MsgError::UnknownKind(0x0001));
    assert_eq!(client_err("8000"), MsgError::UnknownKind(0x8000));
    assert_eq!(server_err("ffff"), MsgError::UnknownKind(0xffff));
    assert!(matches!(
        client_err("00"),
        MsgError::Wire(WireError::Truncated { field: "kind", .. })
    ));
    assert_eq!(client_err("0000").code(), ErrorCode::Protocol);
}

#[test]
fn reserved_kinds() {
    assert_eq!(client_err("3f00 00000005 ab"), MsgError::Reserved(0x3f00));
    assert_eq!(server_err("7f00"), MsgError::Reserved(0x7f00));
    assert_eq!(server_err("3f00"), MsgError::UnknownKind(0x3f00));
    assert_eq!(client_err("7f00"), MsgError::UnknownKind(0x7f00));
    assert_eq!(client_err("3f00").code(), ErrorCode::Unsupported);
    let sealed = hex::decode("3f0000000005ab").unwrap();
    assert_eq!(ClientMsg::peek_request_id(&sealed), Some(RequestId(5)));
    assert_eq!(ClientMsg::peek_request_id(&hex::decode("000100").unwrap()), None);
    assert_eq!(ClientMsg::peek_request_id(&hex::decode("0013000000").unwrap()), None);
}

#[test]
fn kind_tables_are_consistent() {
    for (kinds, lo, hi, reserved) in [
        (ClientMsg::KINDS, 0x0001, 0x3fff, ClientMsg::RESERVED.0),
        (ServerMsg::KINDS, 0x4001, 0x7fff, ServerMsg::RESERVED.0),
    ] {
        let mut seen = std::collections::HashSet::new();
        for &(kind, name) in kinds {
            assert!((lo..=hi).contains(&kind), "{name} {kind:#06x}");
            assert!(seen.insert(kind), "{name} {kind:#06x} twice");
            assert_ne!(kind, reserved);
        }
        assert!((lo..=hi).contains(&reserved));
    }
}

#[test]
fn invalid_enum_bytes() {
    // SetPresence { req 1, presence 5 }
    assert_eq!(
        client_err("0050 00000001 05 00"),
        MsgError::Wire(WireError::Invalid {
            field: "presence",
            value: 5
        })
    );
    assert!(client_err("0050 00000001 00 00").to_string().contains("presence"));
    // ContactUpdate { bob, Some(4) }
    assert_eq!(
        server_err("4041 0003626f62 01 04"),
        MsgError::Wire(WireError::Invalid {
            field: "state",
            value: 4
        })
    );
    // MemberList with a member of role 3.
    assert_eq!(
        server_err("4031 00000003 00052372757374 0001 0003626f62 03 00"),
        MsgError::Wire(WireError::Invalid {
            field: "member.role",
            value: 3
        })
    );
    // Send with action = 2.
    assert_eq!(
        client_err("0020 00000007 0003626f62 00026331 02 0000"),
        MsgError::Wire(WireError::Invalid {
            field: "action",
            value: 2
        })
    );
    // Topic with option marker 2.
    assert_eq!(
        client_err("0034 00000001 00052372757374 02"),
        MsgError::Wire(WireError::Invalid {
            field: "topic",
            value: 2
        })
    );
}

#[test]
fn names_must_be_canonical() {
    // Join "#Rust"
    assert_eq!(
        client_err("0030 00000001 00052352757374"),
        MsgError::Wire(WireError::Name(NameError::Room("#Rust".into())))
    );
    // Kick "#rust" "Alice"
    assert_eq!(
        client_err("0035 00000001 00052372757374 0005416c696365"),
        MsgError::Wire(WireError::Name(NameError::User("Alice".into())))
    );
    // Typing to "Bob" and to "#Bob", and a user name where a room belongs.
    assert_eq!(
        client_err("0022 0003426f62"),
        MsgError::Wire(WireError::Name(NameError::User("Bob".into())))
    );
    assert_eq!(
        client_err("0022 000423426f62"),
        MsgError::Wire(WireError::Name(NameError::Room("#Bob".into())))
    );
    assert!(matches!(
        client_err("0030 00000001 0003626f62"),
        MsgError::Wire(WireError::Name(NameError::Room(_)))
    ));
    // The canonical forms decode.
    assert!(ClientMsg::decode(&hex::decode("00220003626f62").unwrap()).is_ok());
}

#[test]
fn field_rules() {
    let send = |client_id: &str| {
        let mut b = hex::decode("0020000000070003626f62").unwrap();
        Writer::new(&mut b).str(client_id).u8(0).str("");
        ClientMsg::decode(&b)
    };
    assert!(send("abc-123_!~").is_ok());
    assert_eq!(
        send(""),
        Err(MsgError::Wire(WireError::Invalid {
            field: "client_id",
            value: 0
        }))
    );
    assert_eq!(
        send("a b"),
        Err(MsgError::Wire(WireError::Invalid {
            field: "client_id",
            value: 0x20
        }))
    );
    assert_eq!(
        send("é"),
        Err(MsgError::Wire(WireError::Invalid {
            field: "client_id",
            value: 0xc3
        }))
    );
    assert!(matches!(
        send(&"a".repeat(65)),
        Err(MsgError::Wire(WireError::TooLong { .. }))
    ));
    assert!(is_valid_client_id("c1") && !is_valid_client_id("") && !is_valid_client_id("a\u{7f}"));

    let history = |limit: u16| {
        let mut b = hex::decode("0023000000090003626f620000").unwrap();
        Writer::new(&mut b).u16(limit);
        ClientMsg::decode(&b)
    };
    assert!(history(1).is_ok() && history(500).is_ok());
    assert_eq!(
        history(0),
        Err(MsgError::Wire(WireError::Invalid {
            field: "limit",
            value: 0
        }))
    );
    assert_eq!(
        history(501),
        Err(MsgError::Wire(WireError::Invalid {
            field: "limit",
            value: 501
        }))
    );

    let revoke = |id: u64| {
        let mut b = hex::decode("001a00000001").unwrap();
        Writer::new(&mut b).u64(id);
        ClientMsg::decode(&b)
    };
    assert!(revoke(1).is_ok() && revoke(MAX_ID).is_ok());
    assert_eq!(
        revoke(0),
        Err(MsgError::Wire(WireError::Invalid {
            field: "device_id",
            value: 0
        }))
    );
    assert!(revoke(MAX_ID + 1).is_err());
    assert!(DeviceId::new(0).is_none() && DeviceId::new(MAX_ID + 1).is_none());
    let d = DeviceId::random().get();
    assert!((1..=MAX_ID).contains(&d));

    let ack = |id: u64| {
        let mut b = hex::decode("0021").unwrap();
        Writer::new(&mut b).u64(id);
        ClientMsg::decode(&b)
    };
    assert!(ack(MAX_ID).is_ok());
    assert_eq!(
        ack(MAX_ID + 1),
        Err(MsgError::Wire(WireError::Invalid {
            field: "up_to",
            value: MAX_ID + 1
        }))
    );
}

#[test]
fn trailing_bytes_are_refused() {
    assert_eq!(
        client_err("00010102030405060708 00"),
        MsgError::Wire(WireError::Trailing(1))
    );
    let mut close = Vec::new();
    CloseReason::new(ErrorCode::Normal, "").encode(&mut close);
    close.push(0);
    assert_eq!(CloseReason::decode(&close), Err(WireError::Trailing(1)));
}

#[test]
fn secrets_are_redacted() {
    let login = ClientMsg::LoginPassword {
        req: RequestId(1),
        user: user("alice"),
        password: "hunter22".into(),
        device_id: DeviceId::new(1).unwrap(),
        device_name: "laptop".into(),
    };
    let debug = format!("{login:?}");
    assert!(
        !debug.contains("hunter22") && debug.contains("<redacted>") && debug.contains("laptop"),
        "{debug}"
    );
    let ticket = ServerMsg::Ticket {
        ticket_id: [7; 16],
        secret: TicketSecret::new([0xab; TICKET_SECRET_LEN]),
        expires_at: Timestamp(1),
    };
    assert!(!format!("{ticket:?}").contains("171"));
    assert_eq!(Password::from("a"), Password::from("a"));
    assert_ne!(Password::from("a"), Password::from("ab"));
}

#[test]
fn error_code_table() {
    let mut codes = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for &c in ErrorCode::ALL {
        assert!(codes.insert(c.code()) && names.insert(c.name()), "{c:?} duplicated");
        assert!(c.name().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{c:?}");
        assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        assert_eq!(ErrorCode::from_wire(c.code()), c);
        assert_eq!(ErrorCode::from_name(c.name()), Some(c));
    }
    assert_eq!(ErrorCode::RateLimited.name(), "rate_limited");
    assert_eq!(ErrorCode::from_wire(999), ErrorCode::Unknown(999));
    assert_eq!(ErrorCode::from_code(999), None);
    // An unknown code decodes, keeps its number and re-encodes the same.
    let bytes = unhex("4004 00 03e7 0002 6869 00");
    let msg = ServerMsg::decode(&bytes).unwrap();
    assert!(matches!(
        msg,
        ServerMsg::Error {
            code: ErrorCode::Unknown(999),
            ..
        }
    ));
    let mut again = Vec::new();
    msg.encode(&mut again);
    assert_eq!(again, bytes);
}

#[test]
fn long_texts_are_clipped_on_char_boundaries() {
    let long = "é".repeat(MAX_REASON);
    let close = CloseReason::new(ErrorCode::Internal, long.clone());
    assert_eq!(close.text.len(), MAX_REASON);
    let ServerMsg::Error { text, .. } = ServerMsg::error(None, ErrorCode::Internal, format!("x{long}")) else {
        unreachable!()
    };
    assert_eq!(text.len(), MAX_REASON - 1);
}

#[test]
fn request_ids() {
    let (_, send, _) = &client_vectors()[2];
    assert_eq!(send.request_id(), Some(RequestId(7)));
    assert_eq!(ClientMsg::Ping { nonce: 1 }.request_id(), None);
    assert_eq!(ServerMsg::error(None, ErrorCode::Internal, "").request_id(), None);
    assert_eq!(
        ServerMsg::error(Some(RequestId(4)), ErrorCode::Internal, "").request_id(),
        Some(RequestId(4))
    );
    assert_eq!(ServerMsg::Ok { req: RequestId(2) }.name(), "Ok");
    assert_eq!(ServerMsg::Ok { req: RequestId(2) }.kind(), 0x4003);
}

fn encoded_len<T: Field>(v: &T) -> usize {
    let mut out = Vec::new();
    v.put(&mut Writer::new(&mut out));
    out.len()
}

/// The minimum lengths bound list counts on decode: too large and valid lists are refused,
/// too small and a count could reserve more than the input backs.
#[test]
fn list_item_min_lens_are_exact() {
    let a = user("a");
    let ts = Timestamp(0);
    let minimal_message = ChatMessage {
        id: MessageId(0),
        ts,
        from: a.clone(),
        to: Target::User(a.clone()),
        client_id: "c".into(),
        action: false,
        text: String::new(),
    };
    assert_eq!(encoded_len(&minimal_message), ChatMessage::MIN_LEN);
    let device = DeviceInfo {
        id: DeviceId::new(1).unwrap(),
        name: String::new(),
        last_seen: ts,
        current: false,
    };
    assert_eq!(encoded_len(&device), DeviceInfo::MIN_LEN);
    let room_info = RoomInfo {
        room: room("#a"),
        members: 0,
        topic: None,
        joined: false,
    };
    assert_eq!(encoded_len(&room_info), RoomInfo::MIN_LEN);
    let member = Member {
        user: a.clone(),
        role: Role::Member,
        online: false,
    };
    assert_eq!(encoded_len(&member), Member::MIN_LEN);
    let contact = Contact {
        user: a.clone(),
        state: ContactState::Incoming,
        presence: Presence::Offline,
        text: None,
    };
    assert_eq!(encoded_len(&contact), Contact::MIN_LEN);
    let presence = PresenceInfo {
        user: a.clone(),
        presence: Presence::Online,
        text: None,
    };
    assert_eq!(encoded_len(&presence), PresenceInfo::MIN_LEN);
    assert_eq!(encoded_len(&a), UserName::MIN_LEN);
}

#[test]
fn wire_enums_round_trip_their_bytes_and_names() {
    for &p in Presence::ALL {
        assert_eq!(Presence::from_u8(p.to_u8()), Some(p));
        assert_eq!(Presence::from_name(p.name()), Some(p));
    }
    assert_eq!(Presence::Busy.to_u8(), 3);
    assert_eq!(Role::Owner.to_u8(), 2);
    assert_eq!(RoomEventKind::Deop.to_u8(), 8);
    assert_eq!(ContactState::Accepted.to_string(), "accepted");
    assert_eq!(Role::from_u8(3), None);
}

#[test]
fn timestamps_convert() {
    let t = Timestamp(1_700_000_000_123);
    assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
    assert_eq!(
        Timestamp::from_system_time(std::time::UNIX_EPOCH - std::time::Duration::from_secs(1)),
        Timestamp(0)
    );
}
