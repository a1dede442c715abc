//! Property tests of the message catalogue: every message round-trips, every encoding is the
//! only one, and no input makes a decoder panic.

use std::collections::HashSet;

use im_proto::limits::{
    MAX_CLIENT_ID, MAX_DEVICE_NAME, MAX_ID, MAX_PAGE, MAX_PASSWORD, MAX_PUBLIC_KEY_DER, MAX_REASON, MAX_SIGNATURE,
    MAX_STATUS_TEXT, MAX_TEXT, MAX_TOPIC, TICKET_ID_LEN,
};
use im_proto::msg::*;
use im_proto::wire::WireError;
use im_proto::{RoomName, Target, UserName};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

// ---- strategies for the field types ----

fn user() -> impl Strategy<Value = UserName> {
    "[a-z0-9][a-z0-9_.-]{0,31}".prop_map(|s| UserName::parse(&s).unwrap())
}

fn room() -> impl Strategy<Value = RoomName> {
    "#[a-z0-9][a-z0-9_.-]{0,63}".prop_map(|s| RoomName::parse(&s).unwrap())
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![user().prop_map(Target::User), room().prop_map(Target::Room)]
}

fn clip(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

/// Any UTF-8 (control characters included) up to `max` bytes, with the exact limit now and then
/// so the boundary itself is exercised.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "(?s).{0,40}".prop_map(move |s| clip(s, max)),
        1 => Just("x".repeat(max)),
        1 => Just(format!("{}é", "x".repeat(max - 2))),
    ]
}

fn opt_text(max: usize) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text(max))
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => Just(vec![0xa5; max]),
    ]
}

fn client_id() -> impl Strategy<Value = String> {
    prop_oneof!["[!-~]{1,16}", Just("~".repeat(MAX_CLIENT_ID)),]
}

fn password() -> impl Strategy<Value = Password> {
    text(MAX_PASSWORD).prop_map(Password::new)
}

fn req() -> impl Strategy<Value = RequestId> {
    any::<u32>().prop_map(RequestId)
}

fn server_id() -> impl Strategy<Value = u64> {
    prop_oneof![0..=MAX_ID, Just(0), Just(MAX_ID)]
}

fn message_id() -> impl Strategy<Value = MessageId> {
    server_id().prop_map(MessageId)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    server_id().prop_map(Timestamp)
}

fn device_id() -> impl Strategy<Value = DeviceId> {
    prop_oneof![1..=MAX_ID, Just(1), Just(MAX_ID)].prop_map(|id| DeviceId::new(id).unwrap())
}

fn presence() -> impl Strategy<Value = Presence> {
    select(Presence::ALL)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        select(ErrorCode::ALL),
        any::<u16>().prop_filter_map("assigned", |c| ErrorCode::from_code(c)
            .is_none()
            .then_some(ErrorCode::Unknown(c))),
    ]
}

fn list<T: std::fmt::Debug>(item: impl Strategy<Value = T>) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(item, 0..4)
}

fn chat_message() -> impl Strategy<Value = ChatMessage> {
    (
        message_id(),
        timestamp(),
        user(),
        target(),
        client_id(),
        any::<bool>(),
        text(MAX_TEXT),
    )
        .prop_map(|(id, ts, from, to, client_id, action, text)| ChatMessage {
            id,
            ts,
            from,
            to,
            client_id,
            action,
            text,
        })
}

fn presence_info() -> impl Strategy<Value = PresenceInfo> {
    (user(), presence(), opt_text(MAX_STATUS_TEXT)).prop_map(|(user, presence, text)| PresenceInfo {
        user,
        presence,
        text,
    })
}

// ---- strategies for the messages ----

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    use ClientMsg as C;
    let room_user = || (req(), room(), user());
    let req_user = || (req(), user());
    prop_oneof![
        any::<u64>().prop_map(|nonce| C::Ping { nonce }),
        any::<u64>().prop_map(|nonce| C::Pong { nonce }),
        (req(), user(), password(), device_id(), text(MAX_DEVICE_NAME)).prop_map(
            |(req, user, password, device_id, device_name)| C::Register {
                req,
                user,
                password,
                device_id,
                device_name
            }
        ),
        (req(), user(), password(), device_id(), text(MAX_DEVICE_NAME)).prop_map(
            |(req, user, password, device_id, device_name)| C::LoginPassword {
                req,
                user,
                password,
                device_id,
                device_name
            }
        ),
        (
            req(),
            user(),
            device_id(),
            text(MAX_DEVICE_NAME),
            bytes(MAX_PUBLIC_KEY_DER),
            bytes(MAX_SIGNATURE)
        )
            .prop_map(
                |(req, user, device_id, device_name, public_key_der, signature)| C::LoginKey {
                    req,
                    user,
                    device_id,
                    device_name,
                    public_key_der,
                    signature
                }
            ),
        req().prop_map(|req| C::LoginTicket { req }),
        req().prop_map(|req| C::RequestTicket { req }),
        req().prop_map(|req| C::Logout { req }),
        (req(), password(), password()).prop_map(|(req, old_password, new_password)| {
            C::ChangePassword {
                req,
                old_password,
                new_password,
            }
        }),
        (req(), bytes(MAX_PUBLIC_KEY_DER)).prop_map(|(req, public_key_der)| C::AddUserKey { req, public_key_der }),
        (req(), bytes(MAX_PUBLIC_KEY_DER)).prop_map(|(req, public_key_der)| C::RemoveUserKey { req, public_key_der }),
        req().prop_map(|req| C::ListDevices { req }),
        (req(), device_id()).prop_map(|(req, device_id)| C::RevokeDevice { req, device_id }),
        (req(), target(), client_id(), any::<bool>(), text(MAX_TEXT)).prop_map(|(req, to, client_id, action, text)| {
            C::Send {
                req,
                to,
                client_id,
                action,
                text,
            }
        }),
        message_id().prop_map(|up_to| C::Ack { up_to }),
        target().prop_map(|to| C::Typing { to }),
        (
            req(),
            target(),
            proptest::option::of(message_id()),
            proptest::option::of(message_id()),
            1..=MAX_PAGE as u16
        )
            .prop_map(|(req, with, before, after, limit)| C::History {
                req,
                with,
                before,
                after,
                limit
            }),
        (req(), room()).prop_map(|(req, room)| C::Join { req, room }),
        (req(), room()).prop_map(|(req, room)| C::Leave { req, room }),
        req().prop_map(|req| C::ListRooms { req }),
        (req(), room()).prop_map(|(req, room)| C::Members { req, room }),
        (req(), room(), opt_text(MAX_TOPIC)).prop_map(|(req, room, topic)| C::Topic { req, room, topic }),
        room_user().prop_map(|(req, room, user)| C::Kick { req, room, user }),
        room_user().prop_map(|(req, room, user)| C::Ban { req, room, user }),
        room_user().prop_map(|(req, room, user)| C::Unban { req, room, user }),
        room_user().prop_map(|(req, room, user)| C::Op { req, room, user }),
        room_user().prop_map(|(req, room, user)| C::Deop { req, room, user }),
        req_user().prop_map(|(req, user)| C::ContactRequest { req, user }),
        req_user().prop_map(|(req, user)| C::ContactAccept { req, user }),
        req_user().prop_map(|(req, user)| C::ContactRemove { req, user }),
        req().prop_map(|req| C::ListContacts { req }),
        (req(), presence(), opt_text(MAX_STATUS_TEXT))
            .prop_map(|(req, presence, text)| { C::SetPresence { req, presence, text } }),
        (req(), list(user())).prop_map(|(req, users)| C::GetPresence { req, users }),
        req_user().prop_map(|(req, user)| C::Block { req, user }),
        req_user().prop_map(|(req, user)| C::Unblock { req, user }),
        req().prop_map(|req| C::ListBlocked { req }),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    use ServerMsg as S;
    let device =
        (device_id(), text(MAX_DEVICE_NAME), timestamp(), any::<bool>()).prop_map(|(id, name, last_seen, current)| {
            DeviceInfo {
                id,
                name,
                last_seen,
                current,
            }
        });
    let room_info =
        (room(), any::<u32>(), opt_text(MAX_TOPIC), any::<bool>()).prop_map(|(room, members, topic, joined)| {
            RoomInfo {
                room,
                members,
                topic,
                joined,
            }
        });
    let member =
        (user(), select(Role::ALL), any::<bool>()).prop_map(|(user, role, online)| Member { user, role, online });
    let contact = (user(), select(ContactState::ALL), presence(), opt_text(MAX_STATUS_TEXT)).prop_map(
        |(user, state, presence, text)| Contact {
            user,
            state,
            presence,
            text,
        },
    );
    prop_oneof![
        any::<u64>().prop_map(|nonce| S::Ping { nonce }),
        any::<u64>().prop_map(|nonce| S::Pong { nonce }),
        req().prop_map(|req| S::Ok { req }),
        (
            proptest::option::of(req()),
            error_code(),
            text(MAX_REASON),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(req, code, text, retry_after_ms)| S::Error {
                req,
                code,
                text,
                retry_after_ms
            }),
        (req(), user(), device_id(), timestamp()).prop_map(|(req, user, device_id, server_time)| S::LoggedIn {
            req,
            user,
            device_id,
            server_time
        }),
        (
            any::<[u8; TICKET_ID_LEN]>(),
            any::<[u8; TICKET_SECRET_LEN]>(),
            timestamp()
        )
            .prop_map(|(ticket_id, secret, expires_at)| S::Ticket {
                ticket_id,
                secret: TicketSecret::new(secret),
                expires_at
            }),
        (req(), list(device)).prop_map(|(req, devices)| S::Devices { req, devices }),
        (req(), message_id(), timestamp(), client_id())
            .prop_map(|(req, id, ts, client_id)| { S::Sent { req, id, ts, client_id } }),
        chat_message().prop_map(S::Message),
        (message_id(), user(), device_id()).prop_map(|(id, user, device_id)| S::Receipt { id, user, device_id }),
        (user(), target()).prop_map(|(from, to)| S::TypingNotice { from, to }),
        (req(), list(chat_message()), any::<bool>())
            .prop_map(|(req, messages, more)| { S::HistoryPage { req, messages, more } }),
        (req(), list(room_info)).prop_map(|(req, rooms)| S::Rooms { req, rooms }),
        (req(), room(), list(member)).prop_map(|(req, room, members)| S::MemberList { req, room, members }),
        (req(), room(), opt_text(MAX_TOPIC)).prop_map(|(req, room, topic)| S::TopicIs { req, room, topic }),
        (
            room(),
            select(RoomEventKind::ALL),
            user(),
            proptest::option::of(user()),
            opt_text(MAX_TOPIC),
            timestamp()
        )
            .prop_map(|(room, kind, user, by, topic, ts)| S::RoomEvent {
                room,
                kind,
                user,
                by,
                topic,
                ts
            }),
        (req(), list(contact)).prop_map(|(req, contacts)| S::Contacts { req, contacts }),
        (user(), proptest::option::of(select(ContactState::ALL)))
            .prop_map(|(user, state)| S::ContactUpdate { user, state }),
        (req(), list(presence_info())).prop_map(|(req, entries)| S::PresenceList { req, entries }),
        presence_info().prop_map(S::PresenceUpdate),
        (req(), list(user())).prop_map(|(req, users)| S::Blocked { req, users }),
    ]
}

// ---- helpers ----

fn encode_client(m: &ClientMsg) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

fn encode_server(m: &ServerMsg) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

/// Whatever decodes re-encodes to the very same bytes: one message, one encoding.
fn check_canonical(bytes: &[u8]) {
    if let Ok(m) = ClientMsg::decode(bytes) {
        assert_eq!(encode_client(&m), bytes, "{m:?}");
    }
    if let Ok(m) = ServerMsg::decode(bytes) {
        assert_eq!(encode_server(&m), bytes, "{m:?}");
    }
}

/// Every prefix fails, and one byte more is `Trailing(1)`.
fn check_prefixes_and_trailing<T: std::fmt::Debug>(bytes: &[u8], decode: fn(&[u8]) -> Result<T, MsgError>) {
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes decoded");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(decode(&longer).unwrap_err(), MsgError::Wire(WireError::Trailing(1)));
}

/// Every kind of both directions, the reserved ones, and a few that are neither.
fn all_kinds() -> Vec<u16> {
    let mut kinds: Vec<u16> = ClientMsg::KINDS.iter().chain(ServerMsg::KINDS).map(|k| k.0).collect();
    kinds.extend([ClientMsg::RESERVED.0, ServerMsg::RESERVED.0, 0, 0x4000, 0x8000, 0xffff]);
    kinds
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_messages_round_trip(m in client_msg()) {
        let bytes = encode_client(&m);
        prop_assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), m.kind());
        prop_assert!(ClientMsg::KINDS.contains(&(m.kind(), m.name())));
        prop_assert_eq!(ClientMsg::decode(&bytes).unwrap(), m.clone());
        prop_assert_eq!(ClientMsg::peek_request_id(&bytes), m.request_id());
        // Client kinds mean nothing to a server-message decoder.
        prop_assert_eq!(ServerMsg::decode(&bytes).unwrap_err(), MsgError::UnknownKind(m.kind()));
        check_prefixes_and_trailing(&bytes, ClientMsg::decode);
    }

    #[test]
    fn server_messages_round_trip(m in server_msg()) {
        let bytes = encode_server(&m);
        prop_assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), m.kind());
        prop_assert!(ServerMsg::KINDS.contains(&(m.kind(), m.name())));
        prop_assert_eq!(ServerMsg::decode(&bytes).unwrap(), m.clone());
        prop_assert_eq!(ClientMsg::decode(&bytes).unwrap_err(), MsgError::UnknownKind(m.kind()));
        check_prefixes_and_trailing(&bytes, ServerMsg::decode);
    }

    #[test]
    fn close_reasons_round_trip(code in error_code(), text in text(MAX_REASON)) {
        let reason = CloseReason::new(code, text);
        let mut bytes = Vec::new();
        reason.encode(&mut bytes);
        prop_assert_eq!(CloseReason::decode(&bytes).unwrap(), reason);
        for len in 0..bytes.len() {
            prop_assert!(CloseReason::decode(&bytes[..len]).is_err());
        }
        bytes.push(0);
        prop_assert_eq!(CloseReason::decode(&bytes).unwrap_err(), WireError::Trailing(1));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_canonical(&bytes);
        let _ = CloseReason::decode(&bytes);
    }

    /// Random bodies behind real kinds reach far deeper into the decoders than random kinds.
    #[test]
    fn arbitrary_bodies_never_panic(
        kind in select(all_kinds()),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = kind.to_be_bytes().to_vec();
        bytes.extend(body);
        check_canonical(&bytes);
    }

    /// Small corruptions of valid messages: still no panic, and anything that decodes is
    /// canonical.
    #[test]
    fn mutated_messages_never_panic(
        m in client_msg(),
        s in server_msg(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        for mut bytes in [encode_client(&m), encode_server(&s)] {
            for (at, v) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *v;
            }
            check_canonical(&bytes);
        }
    }
}

/// A full-size record of noise behind every kind. Each list count is checked against the
/// bytes left, so this does no more work than reading the input once.
#[test]
fn full_records_of_noise_decode_quickly() {
    let mut runner = TestRunner::deterministic();
    let noise = proptest::collection::vec(any::<u8>(), 64 * 1024)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    for kind in all_kinds() {
        let mut bytes = kind.to_be_bytes().to_vec();
        bytes.extend_from_slice(&noise);
        check_canonical(&bytes);
        // A list of the largest count, with just enough bytes for its smallest items.
        let mut list = kind.to_be_bytes().to_vec();
        list.extend_from_slice(&[0, 0, 0, 1, 0xff, 0xff]);
        list.extend(std::iter::repeat_n(0u8, 64 * 1024));
        check_canonical(&list);
    }
}

/// The strategies cover every kind, so adding a message without a strategy fails here.
#[test]
fn strategies_cover_every_kind() {
    let mut runner = TestRunner::deterministic();
    let (client, server) = (client_msg(), server_msg());
    let mut seen = HashSet::new();
    for _ in 0..5000 {
        seen.insert(client.new_tree(&mut runner).unwrap().current().kind());
        seen.insert(server.new_tree(&mut runner).unwrap().current().kind());
    }
    for &(kind, name) in ClientMsg::KINDS.iter().chain(ServerMsg::KINDS) {
        assert!(seen.contains(&kind), "no strategy generates {name}");
    }
}
