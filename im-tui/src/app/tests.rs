//! The update logic without a terminal: actions in, state and effects out.

use std::time::Duration;

use im_client::{Disconnect, Event, HistoryPage, LoginKind, Sent};
use im_proto::msg::{DeviceId, MessageId};

use super::*;
use crate::worker::Failure;

/// 2026-11-26T14:05:09Z.
const T0: u64 = 1_795_701_909_000;

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn target(s: &str) -> Target {
    Target::parse(s).unwrap()
}

fn session() -> SessionInfo {
    SessionInfo {
        server: ServerAddr::parse("chat.example.org").unwrap(),
        user: user("alice"),
        device_id: DeviceId::new(7).unwrap(),
        server_time: Timestamp(T0),
        login: LoginKind::Password,
        host_fingerprint: Some("SHA256:abc".into()),
    }
}

fn options() -> StartOptions {
    StartOptions {
        server: Some("chat.example.org".into()),
        user: Some("alice".into()),
        first_run: false,
        zone: Zone::Utc,
        now: Timestamp(T0),
        client_id_prefix: "t".into(),
    }
}

/// An app logged in as alice, 100x30, that has been told about `rooms` (joined).
fn logged_in(rooms: &[&str]) -> App {
    let (mut app, fx) = App::new(options());
    assert!(
        matches!(&fx[..], [Effect::Connect(LoginPlan { register: false, .. })]),
        "{fx:?}"
    );
    app.update(Action::Resize { width: 100, height: 30 });
    let fx = app.update(Action::Net(NetEvent::LoggedIn(session())));
    assert!(fx.contains(&Effect::Request(Request::Rooms)) && fx.contains(&Effect::Request(Request::Contacts)));
    let rooms = rooms
        .iter()
        .map(|r| im_proto::msg::RoomInfo {
            room: RoomName::parse(r).unwrap(),
            members: 2,
            topic: None,
            joined: true,
        })
        .collect();
    app.update(Action::Net(NetEvent::Reply(Reply::Rooms(Ok(rooms)))));
    app
}

fn msg(id: u64, from: &str, to: &str, text: &str) -> ChatMessage {
    ChatMessage {
        id: MessageId(id),
        ts: Timestamp(T0 + id * 1000),
        from: user(from),
        to: target(to),
        client_id: format!("c{id}"),
        action: false,
        text: text.into(),
    }
}

fn push(app: &mut App, m: ChatMessage) -> Vec<Effect> {
    app.update(Action::Net(NetEvent::Event(Event::Message(m))))
}

fn conv<'a>(app: &'a App, name: &str) -> &'a Conversation {
    let id = ConvId::With(target(name));
    app.convs
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no conversation {name}"))
}

fn names(app: &App) -> Vec<&str> {
    app.convs.iter().map(|c| c.id.name()).collect()
}

fn typed(app: &mut App, text: &str) -> Vec<Effect> {
    let mut fx = Vec::new();
    for c in text.chars() {
        fx.extend(app.update(Action::Edit(EditOp::Insert(c))));
    }
    fx
}

fn submit(app: &mut App, text: &str) -> Vec<Effect> {
    app.input.set(text);
    app.update(Action::Submit)
}

fn requests(fx: &[Effect]) -> Vec<&Request> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn unread_counts_messages_from_others_in_conversations_not_shown() {
    let mut app = logged_in(&["#rust", "#ops"]);
    assert_eq!(names(&app), ["status", "#rust", "#ops"]);
    app.update(Action::Select(1));
    push(&mut app, msg(1, "bob", "#rust", "in the shown one"));
    push(&mut app, msg(2, "bob", "#ops", "one"));
    push(&mut app, msg(3, "carol", "#ops", "two"));
    push(&mut app, msg(4, "alice", "#ops", "mine, from my phone"));
    push(&mut app, msg(5, "bob", "alice", "a direct message"));
    assert_eq!(conv(&app, "#rust").unread, 0);
    assert_eq!(conv(&app, "#ops").unread, 2);
    assert_eq!(conv(&app, "bob").unread, 1, "a direct message opens its conversation");
    assert_eq!(names(&app), ["status", "#rust", "#ops", "bob"]);
    // My message to bob from another device goes to the conversation with bob.
    push(&mut app, msg(6, "alice", "bob", "sent elsewhere"));
    assert_eq!(conv(&app, "bob").entries.len(), 2);
    assert_eq!(conv(&app, "bob").unread, 1);
    app.update(Action::Select(2));
    assert_eq!((conv(&app, "#ops").unread, conv(&app, "#ops").mentions), (0, 0));
}

#[test]
fn mentions_are_counted_highlighted_and_ring_the_bell_once() {
    let mut app = logged_in(&["#rust", "#ops"]);
    let fx = push(&mut app, msg(1, "bob", "#ops", "alice: ping"));
    assert_eq!(fx.iter().filter(|e| **e == Effect::Bell).count(), 1);
    let fx = push(&mut app, msg(2, "bob", "#ops", "malice is not a mention"));
    assert!(!fx.contains(&Effect::Bell));
    let fx = push(&mut app, msg(3, "alice", "#ops", "I am alice"));
    assert!(!fx.contains(&Effect::Bell), "my own messages never mention me");
    let fx = push(&mut app, msg(1, "bob", "#ops", "alice: ping"));
    assert!(!fx.contains(&Effect::Bell), "a duplicate does not ring again");
    let c = conv(&app, "#ops");
    assert_eq!((c.unread, c.mentions), (2, 1));
    let flags: Vec<bool> = c
        .entries
        .iter()
        .map(|e| matches!(e, crate::conversation::Entry::Message { mention: true, .. }))
        .collect();
    assert_eq!(flags, [true, false, false]);
    // A history page is not news: highlighted, but no bell and no unread.
    let page = HistoryPage {
        messages: vec![msg(0, "bob", "#rust", "old news, alice")],
        more: false,
    };
    let fx = app.update(Action::Net(NetEvent::Reply(Reply::History {
        with: target("#rust"),
        kind: HistoryKind::Open,
        result: Ok(page),
    })));
    assert!(!fx.contains(&Effect::Bell));
    assert_eq!(conv(&app, "#rust").unread, 0);
}

#[test]
fn messages_are_deduplicated_by_id_across_pushes_history_and_sent() {
    let mut app = logged_in(&["#rust"]);
    let fx = push(&mut app, msg(10, "bob", "#rust", "ten"));
    assert_eq!(requests(&fx), [&Request::Ack(MessageId(10))]);
    let fx = push(&mut app, msg(10, "bob", "#rust", "ten"));
    assert_eq!(
        requests(&fx),
        [&Request::Ack(MessageId(10))],
        "a repeat is acknowledged again, not shown again"
    );
    // Opening the room fetches a page that overlaps what was pushed.
    let fx = app.update(Action::Select(1));
    assert_eq!(
        requests(&fx),
        [&Request::History {
            with: target("#rust"),
            kind: HistoryKind::Open,
            before: None,
            after: None
        }]
    );
    let page = HistoryPage {
        messages: vec![
            msg(8, "carol", "#rust", "eight"),
            msg(9, "bob", "#rust", "nine"),
            msg(10, "bob", "#rust", "ten"),
        ],
        more: true,
    };
    app.update(Action::Net(NetEvent::Reply(Reply::History {
        with: target("#rust"),
        kind: HistoryKind::Open,
        result: Ok(page),
    })));
    // Our own message: pending, then stored with the id the server gave it.
    typed(&mut app, "eleven");
    let fx = app.update(Action::Submit);
    let [Request::Send { client_id, .. }] = &requests(&fx)[..] else {
        panic!("{fx:?}")
    };
    assert_eq!(client_id, "t-1");
    assert_eq!(conv(&app, "#rust").outbox.len(), 1);
    let sent = Sent {
        id: MessageId(11),
        ts: Timestamp(T0 + 11_000),
        client_id: "t-1".into(),
    };
    app.update(Action::Net(NetEvent::Reply(Reply::Sent {
        to: target("#rust"),
        client_id: "t-1".into(),
        result: Ok(sent),
    })));
    // ... and the same message in a later catch-up page is not shown twice.
    let mut mine = msg(11, "alice", "#rust", "eleven");
    mine.client_id = "t-1".into();
    app.update(Action::Net(NetEvent::Reply(Reply::History {
        with: target("#rust"),
        kind: HistoryKind::CatchUp,
        result: Ok(HistoryPage {
            messages: vec![msg(10, "bob", "#rust", "ten"), mine],
            more: false,
        }),
    })));
    let c = conv(&app, "#rust");
    let ids: Vec<u64> = c
        .entries
        .iter()
        .filter_map(|e| match e {
            crate::conversation::Entry::Message { msg, .. } => Some(msg.id.0),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [8, 9, 10, 11]);
    assert!(c.outbox.is_empty());
    assert!(c.history.more_before);
}

#[test]
fn switching_conversations_and_alt_a_order() {
    let mut app = logged_in(&["#a", "#b", "#c", "#d"]);
    assert_eq!(app.current, 0);
    app.update(Action::NextConversation);
    assert_eq!(app.current, 1);
    app.update(Action::PrevConversation);
    app.update(Action::PrevConversation);
    assert_eq!(app.current, 4, "Ctrl+P wraps around");
    app.update(Action::Select(2));
    assert_eq!(app.current, 2);
    app.update(Action::Select(8));
    assert_eq!(app.current, 2, "no ninth conversation: nothing happens");

    push(&mut app, msg(1, "bob", "#a", "plain"));
    push(&mut app, msg(2, "bob", "#d", "plain"));
    push(&mut app, msg(3, "bob", "alice", "direct"));
    push(&mut app, msg(4, "bob", "#c", "hey alice"));
    assert_eq!(names(&app), ["status", "#a", "#b", "#c", "#d", "bob"]);
    // Mentions first, then direct messages, then the rest in sidebar order after the
    // current conversation: from #b, #c (a mention), then bob (direct), then from bob
    // onwards (wrapping around) #a before #d.
    let mut order = Vec::new();
    loop {
        let before = app.current;
        app.update(Action::NextActive);
        if app.current == before {
            break;
        }
        order.push(app.convs[app.current].id.name().to_owned());
    }
    assert_eq!(order, ["#c", "bob", "#a", "#d"]);
    app.update(Action::NextActive);
    assert_eq!(app.notice.as_ref().map(|n| n.text.as_str()), Some("no unread messages"));
}

#[test]
fn input_history_and_editing_through_actions() {
    let mut app = logged_in(&["#rust"]);
    app.update(Action::Select(1));
    for line in ["first", "second"] {
        typed(&mut app, line);
        app.update(Action::Submit);
    }
    assert!(app.input.is_empty());
    typed(&mut app, "draft words");
    app.update(Action::Edit(EditOp::DeleteWordBack));
    assert_eq!(app.input.text(), "draft ");
    app.update(Action::HistoryPrev);
    assert_eq!(app.input.text(), "second");
    app.update(Action::HistoryPrev);
    assert_eq!(app.input.text(), "first");
    app.update(Action::HistoryNext);
    app.update(Action::HistoryNext);
    assert_eq!(app.input.text(), "draft ");
    app.update(Action::Edit(EditOp::Home));
    app.update(Action::Edit(EditOp::Delete));
    app.update(Action::Edit(EditOp::End));
    app.update(Action::Edit(EditOp::Backspace));
    assert_eq!(app.input.text(), "raft");
    app.update(Action::Edit(EditOp::DeleteToStart));
    assert!(app.input.is_empty());
}

#[test]
fn tab_completes_nicks_rooms_and_commands_from_the_state() {
    let mut app = logged_in(&["#rust", "#ruby"]);
    app.update(Action::Select(1));
    push(&mut app, msg(1, "bob", "#rust", "hi"));
    push(&mut app, msg(2, "bea", "#rust", "hello"));
    typed(&mut app, "b");
    app.update(Action::Complete);
    assert_eq!(app.input.text(), "bea: ", "the latest speaker first");
    app.update(Action::Complete);
    assert_eq!(app.input.text(), "bob: ");
    app.input.set("/jo");
    app.update(Action::Complete);
    typed(&mut app, "#rub");
    app.update(Action::Complete);
    assert_eq!(app.input.text(), "/join #ruby ");
}

#[test]
fn command_errors_keep_the_line_and_say_why() {
    let mut app = logged_in(&["#rust"]);
    let fx = submit(&mut app, "/frobnicate now");
    assert!(fx.is_empty());
    let n = app.notice.clone().unwrap();
    assert!(n.error && n.text == "unknown command /frobnicate (see /help)", "{n:?}");
    assert_eq!(app.input.text(), "/frobnicate now", "kept, to be fixed");
    submit(&mut app, "/status sleepy");
    assert!(app.notice.as_ref().unwrap().text.starts_with("unknown presence"));
    submit(&mut app, "/topic new topic");
    assert_eq!(app.notice.as_ref().unwrap().text, "/topic works in a room");
    submit(&mut app, "hello");
    assert!(
        app.notice
            .as_ref()
            .unwrap()
            .text
            .starts_with("this is the status window")
    );
    assert_eq!(app.input.text(), "hello");
    // A request the server does not support yet shows its error in the status line.
    app.update(Action::Net(NetEvent::Reply(Reply::Contacts(Err(Failure {
        text: "unsupported: ListContacts is not supported by this server yet".into(),
        connection: false,
    })))));
    let n = app.notice.clone().unwrap();
    assert!(n.error && n.text.contains("unsupported"), "{n:?}");
    // Notices fade.
    app.update(Action::Tick(Timestamp(T0 + NOTICE_MS)));
    assert!(app.notice.is_none());
}

#[test]
fn commands_become_requests() {
    let mut app = logged_in(&["#rust"]);
    app.update(Action::Select(1));
    let r = |app: &mut App, line: &str| -> Vec<Request> { requests(&submit(app, line)).into_iter().cloned().collect() };
    let rust = RoomName::parse("#rust").unwrap();
    assert_eq!(
        r(&mut app, "/join #new"),
        [Request::Join(RoomName::parse("#new").unwrap())]
    );
    assert!(r(&mut app, "/join #rust").is_empty(), "already in it: just switches");
    assert_eq!(r(&mut app, "/names"), [Request::Names(rust.clone())]);
    assert_eq!(
        r(&mut app, "/topic"),
        [Request::Topic {
            room: rust.clone(),
            set: None,
            why: TopicWhy::Asked
        }]
    );
    assert_eq!(
        r(&mut app, "/kick bob"),
        [Request::Moderate(Moderation::Kick, rust.clone(), user("bob"))]
    );
    assert_eq!(
        r(&mut app, "/status busy coding"),
        [Request::SetPresence {
            presence: Presence::Busy,
            text: Some("coding".into())
        }]
    );
    assert_eq!(r(&mut app, "/part"), [Request::Leave(rust.clone())]);
    let fx = submit(&mut app, "/me waves");
    assert!(
        matches!(requests(&fx)[..], [Request::Send { action: true, .. }]),
        "{fx:?}"
    );
    // /msg opens (and focuses) a direct conversation, and sends.
    let fx = submit(&mut app, "/msg carol hi there");
    assert_eq!(app.convs[app.current].id, ConvId::With(target("carol")));
    assert!(
        requests(&fx)
            .iter()
            .any(|r| matches!(r, Request::Send { text, .. } if text == "hi there"))
    );
    // /part in a direct conversation closes it locally.
    assert!(r(&mut app, "/part").is_empty());
    assert!(!names(&app).contains(&"carol"));
    assert_eq!(submit(&mut app, "/quit"), [Effect::Quit]);
    assert!(app.quitting);
}

#[test]
fn typing_notices_show_for_six_seconds_and_are_sent_at_most_every_three() {
    let mut app = logged_in(&["#rust"]);
    app.update(Action::Select(1));
    app.update(Action::Net(NetEvent::Event(Event::Typing {
        from: user("bob"),
        to: target("#rust"),
    })));
    app.update(Action::Net(NetEvent::Event(Event::Typing {
        from: user("carol"),
        to: target("alice"),
    })));
    assert_eq!(app.typing_here(), [&user("bob")]);
    app.update(Action::Tick(Timestamp(T0 + TYPING_SHOWN_MS - 1)));
    assert_eq!(app.typing_here().len(), 1);
    app.update(Action::Tick(Timestamp(T0 + TYPING_SHOWN_MS)));
    assert!(app.typing_here().is_empty());
    // A message from the typist ends the notice at once.
    app.update(Action::Net(NetEvent::Event(Event::Typing {
        from: user("bob"),
        to: target("#rust"),
    })));
    push(&mut app, msg(1, "bob", "#rust", "done typing"));
    assert!(app.typing_here().is_empty());

    let fx = typed(&mut app, "hel");
    assert_eq!(requests(&fx), [&Request::Typing(target("#rust"))]);
    app.update(Action::Tick(Timestamp(app.now.0 + TYPING_EVERY_MS)));
    let fx = typed(&mut app, "lo");
    assert_eq!(requests(&fx), [&Request::Typing(target("#rust"))]);
    app.input.set("");
    assert!(
        requests(&typed(&mut app, "/names")).is_empty(),
        "commands are not typing"
    );
}

#[test]
fn offline_messages_wait_and_go_after_reconnecting_or_are_marked_not_sent() {
    let mut app = logged_in(&["#rust"]);
    app.update(Action::Select(1));
    let lost = Event::Disconnected {
        reason: Disconnect::Lost("eof".into()),
        reconnecting: true,
    };
    app.update(Action::Net(NetEvent::Event(lost)));
    assert!(matches!(app.conn, Conn::Reconnecting(_)));
    let fx = submit(&mut app, "typed while away");
    assert!(requests(&fx).is_empty());
    assert_eq!(conv(&app, "#rust").outbox[0].state, OutState::Queued);
    // A request that needs the connection is refused with a notice, not queued.
    assert!(requests(&submit(&mut app, "/names")).is_empty());
    assert!(app.notice.as_ref().unwrap().error);
    let fx = app.update(Action::Net(NetEvent::Event(Event::Reconnected(session()))));
    assert_eq!(app.conn, Conn::Online);
    let sends: Vec<_> = requests(&fx)
        .into_iter()
        .filter(|r| matches!(r, Request::Send { .. }))
        .collect();
    assert_eq!(
        sends,
        [&Request::Send {
            to: target("#rust"),
            text: "typed while away".into(),
            client_id: "t-1".into(),
            action: false
        }]
    );
    assert!(
        requests(&fx).iter().any(|r| matches!(
            r,
            Request::History {
                kind: HistoryKind::Open,
                ..
            }
        )),
        "the room's history is fetched: {fx:?}"
    );
    // The send fails because the connection drops again: queued again, same client id.
    app.update(Action::Net(NetEvent::Reply(Reply::Sent {
        to: target("#rust"),
        client_id: "t-1".into(),
        result: Err(Failure {
            text: "connection lost: eof".into(),
            connection: true,
        }),
    })));
    assert_eq!(conv(&app, "#rust").outbox[0].state, OutState::Queued);
    // The connection gives up: what waited is marked as not sent.
    let gone = Event::Disconnected {
        reason: Disconnect::Lost("refused".into()),
        reconnecting: false,
    };
    app.update(Action::Net(NetEvent::Event(gone)));
    assert!(matches!(app.conn, Conn::Offline(_)));
    assert!(matches!(conv(&app, "#rust").outbox[0].state, OutState::Failed(_)));
}

#[test]
fn a_refused_message_is_marked_not_sent() {
    let mut app = logged_in(&["#rust"]);
    app.update(Action::Select(1));
    submit(&mut app, "hello");
    app.update(Action::Net(NetEvent::Reply(Reply::Sent {
        to: target("#rust"),
        client_id: "t-1".into(),
        result: Err(Failure {
            text: "forbidden: you are not in #rust".into(),
            connection: false,
        }),
    })));
    assert_eq!(
        conv(&app, "#rust").outbox[0].state,
        OutState::Failed("forbidden: you are not in #rust".into())
    );
}

#[test]
fn catch_up_after_reconnecting_asks_for_what_came_after_the_newest() {
    let mut app = logged_in(&["#rust"]);
    app.update(Action::Select(1));
    app.update(Action::Net(NetEvent::Reply(Reply::History {
        with: target("#rust"),
        kind: HistoryKind::Open,
        result: Ok(HistoryPage {
            messages: vec![msg(5, "bob", "#rust", "five")],
            more: false,
        }),
    })));
    let lost = Event::Disconnected {
        reason: Disconnect::Lost("eof".into()),
        reconnecting: true,
    };
    app.update(Action::Net(NetEvent::Event(lost)));
    let fx = app.update(Action::Net(NetEvent::Event(Event::Reconnected(session()))));
    assert!(requests(&fx).contains(&&Request::History {
        with: target("#rust"),
        kind: HistoryKind::CatchUp,
        before: None,
        after: Some(MessageId(5)),
    }));
    // A full page asks for the next one; missed messages count as unread elsewhere.
    app.update(Action::Select(0));
    let fx = app.update(Action::Net(NetEvent::Reply(Reply::History {
        with: target("#rust"),
        kind: HistoryKind::CatchUp,
        result: Ok(HistoryPage {
            messages: vec![msg(6, "bob", "#rust", "six")],
            more: true,
        }),
    })));
    assert!(requests(&fx).contains(&&Request::History {
        with: target("#rust"),
        kind: HistoryKind::CatchUp,
        before: None,
        after: Some(MessageId(6)),
    }));
    assert_eq!(conv(&app, "#rust").unread, 1);
}

#[test]
fn scrolling_past_the_top_loads_older_messages() {
    let mut app = logged_in(&["#rust"]);
    app.update(Action::Select(1));
    let page = HistoryPage {
        messages: (100..160).map(|i| msg(i, "bob", "#rust", &format!("m{i}"))).collect(),
        more: true,
    };
    app.update(Action::Net(NetEvent::Reply(Reply::History {
        with: target("#rust"),
        kind: HistoryKind::Open,
        result: Ok(page),
    })));
    // 61 rows (a day line and 60 messages) in a pane 28 rows high: a page is 27 rows.
    let fx = app.update(Action::PageUp);
    assert!(requests(&fx).is_empty());
    assert_eq!(conv(&app, "#rust").scroll, 27);
    let fx = app.update(Action::PageUp);
    assert_eq!(conv(&app, "#rust").scroll, 33, "stops at the top");
    assert_eq!(
        requests(&fx),
        [&Request::History {
            with: target("#rust"),
            kind: HistoryKind::Older,
            before: Some(MessageId(100)),
            after: None
        }]
    );
    assert!(
        requests(&app.update(Action::ScrollUp(3))).is_empty(),
        "one page at a time"
    );
    app.update(Action::PageDown);
    app.update(Action::ScrollDown(1000));
    assert_eq!(conv(&app, "#rust").scroll, 0);
    // While scrolled up, new messages do not move the view.
    app.update(Action::ScrollUp(5));
    push(&mut app, msg(200, "bob", "#rust", "new"));
    let c = conv(&app, "#rust");
    assert_eq!((c.scroll, c.unseen_below), (6, 1));
}

#[test]
fn first_run_asks_where_and_who_and_offers_to_register() {
    let (mut app, fx) = App::new(StartOptions {
        server: None,
        user: None,
        first_run: true,
        ..options()
    });
    assert!(fx.is_empty());
    assert_eq!(app.conn, Conn::Setup);
    assert_eq!(app.prompt.as_ref().unwrap().kind, PromptKind::Server);
    typed(&mut app, "bad host:x");
    app.update(Action::Submit);
    assert!(app.prompt.as_ref().unwrap().error.is_some());
    app.update(Action::Edit(EditOp::DeleteToStart));
    typed(&mut app, "chat.example.org");
    app.update(Action::Submit);
    assert_eq!(app.prompt.as_ref().unwrap().kind, PromptKind::User);
    typed(&mut app, "Alice");
    app.update(Action::Submit);
    assert_eq!(app.prompt.as_ref().unwrap().kind, PromptKind::Account);
    let fx = app.update(Action::Edit(EditOp::Insert('r')));
    let [Effect::Connect(plan)] = &fx[..] else {
        panic!("{fx:?}")
    };
    assert_eq!(
        (plan.user.as_str(), plan.server.key().as_str(), plan.register),
        ("alice", "chat.example.org:7447", true)
    );
    // The new password is asked twice and checked locally.
    let ask = NetEvent::NeedPassword {
        server: "chat.example.org:7447".into(),
        user: user("alice"),
        register: true,
        again: false,
    };
    app.update(Action::Net(ask));
    typed(&mut app, "short");
    assert!(app.update(Action::Submit).is_empty());
    assert!(
        app.prompt
            .as_ref()
            .unwrap()
            .error
            .as_ref()
            .unwrap()
            .contains("too short")
    );
    typed(&mut app, "correct horse");
    assert!(app.update(Action::Submit).is_empty());
    typed(&mut app, "correct h0rse");
    assert!(app.update(Action::Submit).is_empty());
    assert!(
        app.prompt
            .as_ref()
            .unwrap()
            .error
            .as_ref()
            .unwrap()
            .contains("do not match")
    );
    typed(&mut app, "correct horse");
    app.update(Action::Submit);
    typed(&mut app, "correct horse");
    let fx = app.update(Action::Submit);
    assert_eq!(
        fx,
        [Effect::Answer(Answer::Password(Some(Password::from("correct horse"))))]
    );
    app.update(Action::Net(NetEvent::LoggedIn(session())));
    assert!(app.prompt.is_none());
}

#[test]
fn host_keys_are_asked_about_and_a_fatal_error_is_shown_until_quit() {
    let mut app = logged_in(&[]);
    app.update(Action::Net(NetEvent::AskHostKey {
        server: "h:1".into(),
        fingerprint: "SHA256:x".into(),
    }));
    assert!(app.update(Action::Edit(EditOp::Insert('x'))).is_empty());
    assert_eq!(
        app.update(Action::Edit(EditOp::Insert('y'))),
        [Effect::Answer(Answer::TrustHost(true))]
    );
    app.update(Action::Net(NetEvent::AskHostKey {
        server: "h:1".into(),
        fingerprint: "SHA256:x".into(),
    }));
    assert_eq!(app.update(Action::Cancel), [Effect::Answer(Answer::TrustHost(false))]);
    app.update(Action::Net(NetEvent::Fatal {
        text: "THE HOST KEY HAS CHANGED\npinned: a\npresented: b".into(),
        exit_code: 5,
    }));
    assert!(matches!(app.conn, Conn::Offline(_)));
    assert_eq!(app.exit_code, 5);
    assert!(app.update(Action::Edit(EditOp::Insert('z'))).is_empty());
    assert_eq!(app.update(Action::Submit), [Effect::Quit]);
}

#[test]
fn a_refused_password_is_asked_again() {
    let (mut app, _) = App::new(options());
    app.update(Action::Net(NetEvent::ConnectFailed {
        error: "auth_failed".into(),
        retry_in: None,
    }));
    assert!(matches!(app.conn, Conn::Retrying { .. }));
    let ask = NetEvent::NeedPassword {
        server: "s:1".into(),
        user: user("alice"),
        register: false,
        again: true,
    };
    app.update(Action::Net(ask));
    assert!(
        app.prompt
            .as_ref()
            .unwrap()
            .error
            .as_ref()
            .unwrap()
            .contains("try again")
    );
    typed(&mut app, "pw");
    assert_eq!(
        app.update(Action::Submit),
        [Effect::Answer(Answer::Password(Some(Password::from("pw"))))]
    );
    let retry = NetEvent::ConnectFailed {
        error: "cannot connect".into(),
        retry_in: Some(Duration::from_secs(2)),
    };
    app.update(Action::Net(retry));
    let last = app.convs[0].entries.last().unwrap();
    assert!(
        matches!(last, crate::conversation::Entry::Info { text, error: true, .. } if text.ends_with("retrying in 2 s"))
    );
}

#[test]
fn room_events_update_membership_topic_and_contacts_update_presence() {
    let mut app = logged_in(&["#rust"]);
    let ev = |kind, u: &str, topic: Option<&str>| {
        Action::Net(NetEvent::Event(Event::Room {
            room: RoomName::parse("#rust").unwrap(),
            kind,
            user: user(u),
            by: Some(user("bob")),
            topic: topic.map(str::to_owned),
            ts: Timestamp(T0),
        }))
    };
    app.update(ev(RoomEventKind::Topic, "bob", Some("Rust talk")));
    assert_eq!(conv(&app, "#rust").topic.as_deref(), Some("Rust talk"));
    app.update(ev(RoomEventKind::Kick, "alice", None));
    assert!(!conv(&app, "#rust").joined);
    assert!(app.notice.as_ref().unwrap().text.contains("removed from #rust by bob"));
    app.update(Action::Net(NetEvent::Event(Event::Contact {
        user: user("carol"),
        state: Some(ContactState::Incoming),
    })));
    assert!(app.notice.as_ref().unwrap().text.contains("/contact accept carol"));
    app.update(Action::Net(NetEvent::Event(Event::Presence(PresenceInfo {
        user: user("carol"),
        presence: Presence::Away,
        text: Some("lunch".into()),
    }))));
    assert_eq!(app.contacts[&user("carol")].presence, Presence::Away);
    app.update(Action::Net(NetEvent::Event(Event::Contact {
        user: user("carol"),
        state: None,
    })));
    assert!(app.contacts.is_empty());
}

#[test]
fn a_contact_change_of_ours_refreshes_the_list() {
    let mut app = logged_in(&[]);
    let fx = submit(&mut app, "/contact accept bob");
    assert_eq!(
        requests(&fx),
        [&Request::Contact(crate::commands::ContactOp::Accept, user("bob"))]
    );
    let fx = app.update(Action::Net(NetEvent::Reply(Reply::Done {
        what: "accepting bob as a contact".into(),
        result: Ok(()),
        contacts_changed: true,
    })));
    assert_eq!(requests(&fx), [&Request::Contacts]);
    assert_eq!(app.notice.as_ref().unwrap().text, "accepting bob as a contact: done");
}
