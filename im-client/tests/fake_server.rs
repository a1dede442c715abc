//! The client's connection, login, host-key and ticket logic against the fake server in
//! `common` (im-proto's server state machine on loopback TCP).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use im_client::{
    Backoff, ConnectOptions, Credentials, Disconnect, Error, Event, Home, HostKeyPolicy, LoginKind, ServerAddr,
    UnknownHost, connect,
};
use im_proto::handshake::Reject;
use im_proto::msg::{CloseReason, DeviceId, ErrorCode, MessageId, Password, ServerMsg, Timestamp};
use im_proto::{Target, UserName};
use tokio::net::TcpListener;

fn options(server: &FakeServer, home: &Home, unknown: UnknownHost) -> ConnectOptions {
    ConnectOptions {
        server: server.addr.clone(),
        user: UserName::parse("alice").unwrap(),
        home: home.clone(),
        device_name: "test".into(),
        credentials: Credentials {
            use_ticket: true,
            key: None,
            password: Some(Arc::new(|| Ok(Password::from(PASSWORD)))),
            register: false,
        },
        host_keys: HostKeyPolicy {
            known_hosts: home.known_hosts(),
            unknown,
            expected: None,
        },
        reconnect: None,
    }
}

fn no_password() -> Option<im_client::PasswordSource> {
    Some(Arc::new(|| panic!("the password must not be needed")))
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn next_event(events: &mut im_client::Events) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event in time")
        .expect("events open")
}

#[tokio::test]
async fn password_login_pins_the_host_stores_a_ticket_and_the_next_login_resumes() {
    let server = FakeServer::start(host_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let alice = UserName::parse("alice").unwrap();

    let (client, _events) = connect(options(&server, &home, UnknownHost::AcceptNew)).await.unwrap();
    let s = client.session();
    assert_eq!((s.login, s.user.as_str()), (LoginKind::Password, "alice"));
    assert_eq!(s.host_fingerprint.as_deref(), Some(host_key().fingerprint().as_str()));
    let pins = std::fs::read_to_string(home.known_hosts_path()).unwrap();
    assert_eq!(pins, format!("{} {}\n", server.addr.key(), host_key().fingerprint()));
    // The ticket pushed right after the login is stored before connect returns.
    let ticket = home
        .load_ticket(&server.addr, &alice)
        .unwrap()
        .expect("a stored ticket");
    #[cfg(unix)]
    assert_eq!(mode(&home.ticket_path(&server.addr, &alice)), 0o600);
    assert!(server.state().tickets.contains_key(&ticket.id));

    let sent = client
        .send(&Target::parse("bob").unwrap(), "hello", "cid-1", false)
        .await
        .unwrap();
    assert_eq!((sent.id, sent.client_id.as_str()), (MessageId(101), "cid-1"));
    let err = client
        .send(&Target::parse("nobody").unwrap(), "x", "cid-2", false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Server {
                code: ErrorCode::NoSuchUser,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), 6);
    let err = client
        .send(&Target::parse("bob").unwrap(), &"x".repeat(8193), "cid-3", false)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 6, "{err}");
    let page = client
        .history(&Target::parse("bob").unwrap(), None, None, 50)
        .await
        .unwrap();
    assert_eq!((page.messages.len(), page.more), (1, true));
    client.close().await;

    // Second run: the ticket logs in, without a password and without a host-key check.
    let mut opts = options(&server, &home, UnknownHost::Refuse);
    opts.credentials.password = no_password();
    let (client, _events) = connect(opts).await.unwrap();
    let s = client.session();
    assert_eq!(s.login, LoginKind::Ticket);
    assert_eq!(
        s.host_fingerprint.as_deref(),
        Some(host_key().fingerprint().as_str()),
        "the pinned fingerprint"
    );
    client.close().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let st = server.state();
    assert_eq!(st.logins, ["password:alice", "ticket:alice"]);
    assert_eq!(st.sends, [("bob".to_owned(), "hello".to_owned())]);
    assert_eq!(st.client_closed_normally, 2);
}

#[tokio::test]
async fn an_unknown_host_is_refused_before_any_secret_is_sent() {
    let server = FakeServer::start(host_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let err = connect(options(&server, &home, UnknownHost::Refuse))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::HostKeyUnknown { fingerprint, .. } if *fingerprint == host_key().fingerprint()),
        "{err}"
    );
    assert_eq!(err.exit_code(), 5);
    assert!(server.state().logins.is_empty());
    assert!(!home.known_hosts_path().exists());

    // The expected fingerprint, given up front, pins it.
    let mut opts = options(&server, &home, UnknownHost::Refuse);
    opts.host_keys.expected = Some(host_key().fingerprint());
    let (client, _events) = connect(opts).await.unwrap();
    client.close().await;
    assert!(home.known_hosts().lookup(&server.addr).unwrap().is_some());
}

#[tokio::test]
async fn a_changed_host_key_is_refused_even_with_accept_new() {
    let server = FakeServer::start(other_host_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    home.known_hosts().add(&server.addr, &host_key().fingerprint()).unwrap();
    let err = connect(options(&server, &home, UnknownHost::AcceptNew))
        .await
        .err()
        .unwrap();
    match &err {
        Error::HostKeyChanged {
            pinned,
            presented,
            line,
            file,
            ..
        } => {
            assert_eq!(
                (pinned, presented, *line),
                (&host_key().fingerprint(), &other_host_key().fingerprint(), 1)
            );
            assert_eq!(file, &home.known_hosts_path());
        }
        other => panic!("{other}"),
    }
    assert_eq!(err.exit_code(), 5);
    assert!(server.state().logins.is_empty());
}

#[tokio::test]
async fn a_ticket_the_server_forgot_is_deleted_and_the_password_used_on_the_same_connection() {
    let server = FakeServer::start(host_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let alice = UserName::parse("alice").unwrap();
    home.known_hosts().add(&server.addr, &host_key().fingerprint()).unwrap();
    let stale = im_client::StoredTicket {
        id: [1; 16],
        secret: zeroize::Zeroizing::new([2; 32]),
        expires_at: Timestamp(now().0 + 60_000),
    };
    home.save_ticket(&server.addr, &alice, &stale).unwrap();
    let (client, _events) = connect(options(&server, &home, UnknownHost::Refuse)).await.unwrap();
    assert_eq!(client.session().login, LoginKind::Password);
    client.close().await;
    let st = server.state();
    assert_eq!(st.connections, 1);
    assert_eq!(st.logins, ["password:alice"]);
    let fresh = home.load_ticket(&server.addr, &alice).unwrap().unwrap();
    assert_ne!(fresh.id, stale.id);
}

#[tokio::test]
async fn an_expired_ticket_is_not_offered() {
    let server = FakeServer::start(host_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let alice = UserName::parse("alice").unwrap();
    let (client, _events) = connect(options(&server, &home, UnknownHost::AcceptNew)).await.unwrap();
    client.close().await;
    let mut t = home.load_ticket(&server.addr, &alice).unwrap().unwrap();
    t.expires_at = Timestamp(1);
    home.save_ticket(&server.addr, &alice, &t).unwrap();
    let (client, _events) = connect(options(&server, &home, UnknownHost::Refuse)).await.unwrap();
    assert_eq!(client.session().login, LoginKind::Password);
    client.close().await;
}

#[tokio::test]
async fn user_key_login_signs_the_exporter_and_falls_back_to_the_password() {
    let server = FakeServer::start(host_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let mut opts = options(&server, &home, UnknownHost::AcceptNew);
    opts.credentials.use_ticket = false;
    opts.credentials.key = Some(user_key());
    // The key is not attached to the account yet: the password is used instead.
    let (client, _events) = connect(opts.clone()).await.unwrap();
    assert_eq!(client.session().login, LoginKind::Password);
    client.close().await;
    server.state().user_key_der = Some(user_key().public_der().to_vec());
    opts.credentials.password = no_password();
    let (client, _events) = connect(opts.clone()).await.unwrap();
    assert_eq!(client.session().login, LoginKind::Key);
    client.close().await;
    // Without a password to fall back to, a refused key is an authentication failure.
    server.state().user_key_der = None;
    opts.credentials.password = None;
    let err = connect(opts).await.err().unwrap();
    assert!(
        matches!(
            err,
            Error::Server {
                code: ErrorCode::AuthFailed,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), 4);
}

#[tokio::test]
async fn wrong_password_and_missing_credentials_exit_4() {
    let server = FakeServer::start(host_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let mut opts = options(&server, &home, UnknownHost::AcceptNew);
    opts.credentials.password = Some(Arc::new(|| Ok(Password::from("wrong-password"))));
    let err = connect(opts.clone()).await.err().unwrap();
    assert_eq!((err.exit_code(), err.code_name()), (4, "auth_failed"));
    opts.credentials.password = None;
    let err = connect(opts).await.err().unwrap();
    assert_eq!((err.exit_code(), err.code_name()), (4, "no_credentials"));
}

#[tokio::test]
async fn pushed_messages_are_deduplicated_pings_answered_and_acks_sent() {
    let server = FakeServer::start(host_key()).await;
    server.state().pushes = vec![
        ServerMsg::Message(chat(1, "bob", "alice", "one")),
        ServerMsg::Ping { nonce: 42 },
        ServerMsg::Message(chat(2, "bob", "alice", "two")),
        ServerMsg::Message(chat(1, "bob", "alice", "one")),
        ServerMsg::Receipt {
            id: MessageId(9),
            user: UserName::parse("bob").unwrap(),
            device_id: DeviceId::new(5).unwrap(),
        },
        ServerMsg::Message(chat(3, "carol", "#rust", "three")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let (client, mut events) = connect(options(&server, &home, UnknownHost::AcceptNew)).await.unwrap();
    let mut ids = Vec::new();
    let mut receipts = 0;
    while ids.len() < 3 {
        match next_event(&mut events).await {
            Event::Message(m) => {
                ids.push(m.id.0);
                client.ack(m.id).unwrap();
            }
            Event::Receipt { id, .. } => {
                assert_eq!(id, MessageId(9));
                receipts += 1;
            }
            Event::Ticket { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ids, receipts), (vec![1, 2, 3], 1));
    client.ack(MessageId(2)).unwrap(); // behind the cursor: not sent
    client.close().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let st = server.state();
    assert_eq!(st.acks, [1, 2, 3]);
    assert_eq!(st.pongs, [42]);
}

#[tokio::test]
async fn a_server_close_ends_the_events_with_its_reason() {
    let server = FakeServer::start(host_key()).await;
    server.state().close_first = Some(CloseReason::new(ErrorCode::ShuttingDown, "restart"));
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let (client, mut events) = connect(options(&server, &home, UnknownHost::AcceptNew)).await.unwrap();
    loop {
        match next_event(&mut events).await {
            Event::Disconnected { reason, reconnecting } => {
                assert_eq!(
                    reason,
                    Disconnect::Closed(CloseReason::new(ErrorCode::ShuttingDown, "restart"))
                );
                assert!(!reconnecting);
                break;
            }
            Event::Ticket { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(events.recv().await.is_none());
    let err = client
        .send(&Target::parse("bob").unwrap(), "x", "c", false)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
}

#[tokio::test]
async fn reconnects_by_ticket_and_does_not_repeat_delivered_messages() {
    let server = FakeServer::start(host_key()).await;
    {
        let mut s = server.state();
        s.close_first = Some(CloseReason::new(ErrorCode::ShuttingDown, "restart"));
        s.pushes = vec![ServerMsg::Message(chat(1, "bob", "alice", "one"))];
    }
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let mut opts = options(&server, &home, UnknownHost::AcceptNew);
    opts.reconnect = Some(Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        max_attempts: Some(5),
    });
    let (client, mut events) = connect(opts).await.unwrap();
    let mut seen = Vec::new();
    loop {
        match next_event(&mut events).await {
            Event::Message(m) => seen.push(m.id.0),
            Event::Disconnected { reconnecting, .. } => assert!(reconnecting),
            Event::Reconnected(info) => {
                assert_eq!(info.login, LoginKind::Ticket);
                break;
            }
            Event::Ticket { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // The re-pushed message 1 is dropped; the connection works.
    let sent = client
        .send(&Target::parse("bob").unwrap(), "after", "c-after", false)
        .await
        .unwrap();
    assert!(sent.id.0 > 100);
    assert_eq!(seen, [1]);
    client.close().await;
    assert_eq!(server.state().logins, ["password:alice", "ticket:alice"]);
}

#[tokio::test]
async fn a_reject_frame_is_reported_with_its_retry_advice() {
    let server = FakeServer::start(host_key()).await;
    server.state().reject = Some(Reject {
        code: ErrorCode::RateLimited.code(),
        retry_after_ms: 1500,
        text: "slow down".into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let err = connect(options(&server, &Home::at(dir.path()), UnknownHost::AcceptNew))
        .await
        .err()
        .unwrap();
    assert_eq!(
        (err.exit_code(), err.code_name(), err.retry_after_ms()),
        (7, "rate_limited", Some(1500))
    );
}

#[tokio::test]
async fn logout_revokes_and_deletes_the_local_ticket() {
    let server = FakeServer::start(host_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let alice = UserName::parse("alice").unwrap();
    let (client, mut events) = connect(options(&server, &home, UnknownHost::AcceptNew)).await.unwrap();
    assert!(home.load_ticket(&server.addr, &alice).unwrap().is_some());
    client.logout().await.unwrap();
    assert!(home.load_ticket(&server.addr, &alice).unwrap().is_none());
    loop {
        if let Event::Disconnected { reason, .. } = next_event(&mut events).await {
            assert_eq!(reason.code_name(), "normal");
            break;
        }
    }
}

#[tokio::test]
async fn fetch_host_key_and_cannot_connect() {
    let server = FakeServer::start(host_key()).await;
    let der = im_client::fetch_host_key(&server.addr).await.unwrap();
    assert_eq!(der, host_key().public_der());
    // A port nobody listens on.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ServerAddr::parse(&l.local_addr().unwrap().to_string()).unwrap();
    drop(l);
    let err = im_client::fetch_host_key(&addr).await.unwrap_err();
    assert_eq!((err.exit_code(), err.code_name()), (3, "connect"));
}
