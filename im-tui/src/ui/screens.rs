//! Screen tests: parts of the screen drawn into ratatui's `TestBackend` from a state built
//! with actions, compared with the `.snap` files beside this module (`cargo insta review`,
//! or `INSTA_UPDATE=always cargo test -p im-tui` and a look at the diff).

use im_client::{Event, LoginKind, SessionInfo};
use im_proto::msg::{ChatMessage, Contact, ContactState, DeviceId, MessageId, Presence, RoomInfo, Timestamp};
use im_proto::{RoomName, Target, UserName};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;

use crate::action::Action;
use crate::app::{App, StartOptions};
use crate::time::Zone;
use crate::worker::{NetEvent, Reply};

/// 2026-11-26T14:05:09Z.
const T0: u64 = 1_795_701_909_000;

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn app(width: u16, height: u16, rooms: &[&str]) -> App {
    let (mut app, _) = App::new(StartOptions {
        server: Some("chat.example.org".into()),
        user: Some("alice".into()),
        first_run: false,
        zone: Zone::Utc,
        now: Timestamp(T0),
        client_id_prefix: "t".into(),
    });
    app.update(Action::Resize { width, height });
    app.update(Action::Net(NetEvent::LoggedIn(SessionInfo {
        server: im_client::ServerAddr::parse("chat.example.org").unwrap(),
        user: user("alice"),
        device_id: DeviceId::new(7).unwrap(),
        server_time: Timestamp(T0),
        login: LoginKind::Password,
        host_fingerprint: None,
    })));
    let rooms = rooms
        .iter()
        .map(|r| RoomInfo {
            room: RoomName::parse(r).unwrap(),
            members: 3,
            topic: None,
            joined: true,
        })
        .collect();
    app.update(Action::Net(NetEvent::Reply(Reply::Rooms(Ok(rooms)))));
    app
}

fn message(id: u64, from: &str, to: &str, text: &str) -> ChatMessage {
    ChatMessage {
        id: MessageId(id),
        ts: Timestamp(T0 + id * 60_000),
        from: user(from),
        to: Target::parse(to).unwrap(),
        client_id: format!("c{id}"),
        action: false,
        text: text.into(),
    }
}

fn push(app: &mut App, id: u64, from: &str, to: &str, text: &str) {
    app.update(Action::Net(NetEvent::Event(Event::Message(message(
        id, from, to, text,
    )))));
}

fn draw(width: u16, height: u16, f: impl FnOnce(&mut ratatui::Frame, Rect)) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
    t.draw(|frame| {
        let area = frame.area();
        f(frame, area)
    })
    .unwrap();
    t
}

#[test]
fn sidebar_with_unread_counts_mention_marker_contacts_and_requests() {
    let mut app = app(100, 30, &["#rust", "#ops", "#random"]);
    push(&mut app, 1, "bob", "#rust", "morning");
    push(&mut app, 2, "carol", "#rust", "alice: can you look at the build?");
    push(&mut app, 3, "carol", "#rust", "it is red again");
    push(&mut app, 4, "bob", "#random", "cat pictures");
    push(&mut app, 5, "dave", "alice", "psst");
    push(&mut app, 6, "averyveryverylongusername", "alice", "hello there");
    app.update(Action::Select(2));
    let contact = |u: &str, state, presence| Contact {
        user: user(u),
        state,
        presence,
        text: None,
    };
    app.update(Action::Net(NetEvent::Reply(Reply::Contacts(Ok(vec![
        contact("bob", ContactState::Accepted, Presence::Online),
        contact("carol", ContactState::Accepted, Presence::Away),
        contact("dave", ContactState::Accepted, Presence::Offline),
        contact("erin", ContactState::Incoming, Presence::Offline),
        contact("frank", ContactState::Outgoing, Presence::Offline),
    ])))));
    let t = draw(20, 17, |f, area| super::sidebar::draw(&app, f, area));
    insta::assert_snapshot!("sidebar", t.backend());
}

#[test]
fn wide_and_combining_characters_wrap_by_display_width() {
    let mut app = app(60, 12, &["#i18n"]);
    app.update(Action::Select(1));
    push(
        &mut app,
        1,
        "bob",
        "#i18n",
        "日本語のテキストは単語の間にスペースがありません",
    );
    push(
        &mut app,
        2,
        "carol",
        "#i18n",
        "crabs 🦀🦀🦀 and a family 👨‍👩‍👧 and café, naïve, Zoë",
    );
    push(
        &mut app,
        3,
        "bob",
        "#i18n",
        "an escape \u{1b}[2J and a bidi \u{202e}override here",
    );
    let aligned = draw(60, 10, |f, area| super::messages::draw(&app, f, area));
    insta::assert_snapshot!("messages_wide_aligned", aligned.backend());
    // The same conversation on a narrow pane: the inline layout.
    app.update(Action::Resize { width: 40, height: 12 });
    let compact = draw(40, 12, |f, area| super::messages::draw(&app, f, area));
    insta::assert_snapshot!("messages_wide_compact", compact.backend());
}

#[test]
fn status_bar_with_typing_presence_topic_and_activity() {
    let mut app = app(100, 30, &["#rust", "#ops"]);
    app.update(Action::Select(1));
    app.update(Action::Net(NetEvent::Event(Event::Room {
        room: RoomName::parse("#rust").unwrap(),
        kind: im_proto::msg::RoomEventKind::Topic,
        user: user("bob"),
        by: None,
        topic: Some("Rust talk: be kind".into()),
        ts: Timestamp(T0),
    })));
    app.update(Action::Net(NetEvent::Reply(Reply::PresenceSet {
        presence: Presence::Away,
        text: Some("lunch".into()),
        result: Ok(()),
    })));
    push(&mut app, 1, "carol", "#ops", "alice: ping");
    app.update(Action::Net(NetEvent::Event(Event::Typing {
        from: user("bob"),
        to: Target::parse("#rust").unwrap(),
    })));
    let t = draw(100, 1, |f, area| super::status::draw(&app, f, area));
    insta::assert_snapshot!("status_typing", t.backend());
    app.update(Action::Net(NetEvent::Event(Event::Typing {
        from: user("carol"),
        to: Target::parse("#rust").unwrap(),
    })));
    let t = draw(60, 1, |f, area| super::status::draw(&app, f, area));
    insta::assert_snapshot!("status_typing_narrow", t.backend());
}

#[test]
fn whole_screen_at_100x30_and_at_40x10() {
    let mut app = app(100, 30, &["#rust", "#ops"]);
    app.update(Action::Select(1));
    let page = im_client::HistoryPage {
        messages: vec![
            message(1, "bob", "#rust", "hello room"),
            message(
                2,
                "carol",
                "#rust",
                "hi bob, a longer line that has to wrap onto a second row in the pane at this width",
            ),
        ],
        more: false,
    };
    app.update(Action::Net(NetEvent::Reply(Reply::History {
        with: Target::parse("#rust").unwrap(),
        kind: crate::worker::HistoryKind::Open,
        result: Ok(page),
    })));
    push(&mut app, 3, "alice", "#rust", "/me is not a command here");
    push(&mut app, 4, "dave", "#ops", "deploy done");
    app.update(Action::Net(NetEvent::Event(Event::Typing {
        from: user("bob"),
        to: Target::parse("#rust").unwrap(),
    })));
    app.input.set("typing a reply");
    let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
    t.draw(|f| super::draw(&app, f)).unwrap();
    insta::assert_snapshot!("screen_100x30", t.backend());
    app.update(Action::Resize { width: 40, height: 10 });
    let mut t = Terminal::new(TestBackend::new(40, 10)).unwrap();
    t.draw(|f| super::draw(&app, f)).unwrap();
    insta::assert_snapshot!("screen_40x10", t.backend());
}

#[test]
fn an_unknown_host_key_is_shown_with_its_fingerprint() {
    let mut app = app(80, 20, &[]);
    app.update(Action::Net(NetEvent::AskHostKey {
        server: "chat.example.org:7447".into(),
        fingerprint: "SHA256:hv6kM9uG46gppM1IcLXugU5pAcdLZPVtB4Hmgj/Cf3o".into(),
    }));
    let mut t = Terminal::new(TestBackend::new(80, 20)).unwrap();
    t.draw(|f| super::draw(&app, f)).unwrap();
    insta::assert_snapshot!("host_key_prompt", t.backend());
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut app = app(100, 30, &["#rust"]);
    push(&mut app, 1, "bob", "#rust", "日本語 🦀 e\u{301}");
    app.update(Action::Net(NetEvent::AskHostKey {
        server: "h:1".into(),
        fingerprint: "SHA256:x".into(),
    }));
    for (w, h) in [(1, 1), (2, 3), (10, 2), (40, 10), (39, 9), (200, 5)] {
        app.update(Action::Resize { width: w, height: h });
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| super::draw(&app, f)).unwrap();
    }
}

#[test]
fn the_tail_of_a_conversation_is_the_end_of_all_its_rows() {
    let mut app = app(100, 30, &["#rust"]);
    for i in 1..40 {
        push(
            &mut app,
            i * 300,
            "bob",
            "#rust",
            &format!("message {i} with some words to wrap at a narrow width"),
        );
    }
    let conv = &app.convs[1];
    let all = super::messages::rows(conv, 30, Zone::Utc, None);
    for needed in [0, 1, 5, 17, all.len() - 1, all.len(), all.len() + 10] {
        let (tail, complete) = super::messages::tail(conv, 30, Zone::Utc, None, needed);
        assert!(tail.len() >= needed.min(all.len()), "{needed}");
        assert_eq!(tail[..], all[all.len() - tail.len()..], "{needed}");
        assert_eq!(complete, tail.len() == all.len(), "{needed}");
    }
}
