//! Whole server sessions over in-memory pipes: the real session code, stores in a temporary
//! directory, and a protocol client built from im-proto. No sockets.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use im_proto::frame::FrameDecoder;
use im_proto::handshake::{ClientHandshake, ResumeTicket};
use im_proto::msg::{ClientMsg, CloseReason, DeviceId, ErrorCode, MessageId, RequestId, ServerMsg};
use im_proto::session::{Incoming, Session};
use im_proto::{Target, UserName};
use im_server::config::Config;
use im_server::datadir::DataDir;
use im_server::state::Shared;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

struct Fixture {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
}

fn fixture(config: Config) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open_or_create(&dir.path().join("data")).unwrap();
    // A fixed host key: generating RSA keys in tests is slow.
    im_server::datadir::write_private(
        &data.host_key_path(),
        include_bytes!("../../im-proto/tests/data/host_key.pem"),
    )
    .unwrap();
    let (shared, _dispatch) = im_server::Server::open(&data, config).unwrap().start();
    Fixture { _dir: dir, shared }
}

struct Client {
    io: DuplexStream,
    session: Session,
    buf: BytesMut,
    ticket: Option<ResumeTicket>,
    resumed: bool,
}

impl Fixture {
    async fn connect_with(&self, ticket: Option<ResumeTicket>) -> Client {
        let (mut io, server_end) = tokio::io::duplex(1 << 16);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let guard = self.shared.limits.unauthenticated(ip).unwrap();
        tokio::spawn(im_server::session::serve(server_end, ip, self.shared.clone(), guard));
        let (mut hs, hello) = ClientHandshake::new(&mut rand::rng(), ticket.clone());
        io.write_all(&hello).await.unwrap();
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let est = loop {
            let frame = loop {
                if let Some(f) = dec.decode(&mut buf).unwrap() {
                    break f;
                }
                assert!(
                    io.read_buf(&mut buf).await.unwrap() > 0,
                    "server closed during handshake"
                );
            };
            if let Some(est) = hs.handle(frame).unwrap() {
                break est;
            }
        };
        io.write_all(&est.finished).await.unwrap();
        Client {
            io,
            session: est.session,
            buf,
            ticket,
            resumed: est.resumed,
        }
    }

    async fn connect(&self) -> Client {
        self.connect_with(None).await
    }

    async fn register(&self, name: &str) -> Client {
        let mut c = self.connect().await;
        c.send(&ClientMsg::Register {
            req: RequestId(1),
            user: user(name),
            password: "correct horse".to_owned().into(),
            device_id: DeviceId::random(),
            device_name: "test".into(),
        })
        .await;
        assert!(matches!(c.recv().await, Ok(ServerMsg::LoggedIn { .. })));
        c.take_ticket().await;
        c
    }
}

fn user(n: &str) -> UserName {
    UserName::parse(n).unwrap()
}

impl Client {
    async fn send(&mut self, m: &ClientMsg) {
        let mut plain = Vec::new();
        m.encode(&mut plain);
        self.send_raw(&plain).await;
    }

    async fn send_raw(&mut self, plain: &[u8]) {
        let mut out = Vec::new();
        self.session.seal(plain, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    /// The next message, or the server's Close reason.
    async fn recv(&mut self) -> Result<ServerMsg, CloseReason> {
        loop {
            match self.session.read(&mut self.buf).unwrap() {
                Some(Incoming::Data(p)) => return Ok(ServerMsg::decode(&p).unwrap()),
                Some(Incoming::Close(p)) => return Err(CloseReason::decode(&p).unwrap()),
                None => assert!(
                    self.io.read_buf(&mut self.buf).await.unwrap() > 0,
                    "server closed without Close"
                ),
            }
        }
    }

    async fn take_ticket(&mut self) {
        match self.recv().await {
            Ok(ServerMsg::Ticket { ticket_id, secret, .. }) => {
                self.ticket = Some(ResumeTicket {
                    id: ticket_id,
                    secret: secret.into_zeroizing(),
                });
            }
            other => panic!("expected a ticket, got {other:?}"),
        }
    }

    async fn dm(&mut self, req: u32, to: &str, text: &str) -> u64 {
        self.send(&ClientMsg::Send {
            req: RequestId(req),
            to: Target::User(user(to)),
            client_id: format!("c{req}"),
            action: false,
            text: text.into(),
        })
        .await;
        loop {
            match self.recv().await.unwrap() {
                ServerMsg::Sent { id, .. } => return id.0,
                ServerMsg::Receipt { .. } | ServerMsg::Message(_) => continue,
                other => panic!("expected Sent, got {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_resume_with_the_ticket() {
    let f = fixture(Config::default());
    let alice = f.register("alice").await;
    let ticket = alice.ticket.clone();
    drop(alice);
    let mut again = f.connect_with(ticket).await;
    assert!(again.resumed, "the ticket should resume without a signature");
    again.send(&ClientMsg::LoginTicket { req: RequestId(2) }).await;
    assert!(matches!(again.recv().await, Ok(ServerMsg::LoggedIn { user, .. }) if user.as_str() == "alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_message_to_an_offline_user_is_caught_up_once() {
    let f = fixture(Config::default());
    let mut alice = f.register("alice").await;
    let bob = f.register("bob").await;
    let bob_ticket = bob.ticket.clone();
    drop(bob);
    let id = alice.dm(5, "bob", "hi bob").await;

    let mut bob = f.connect_with(bob_ticket.clone()).await;
    bob.send(&ClientMsg::LoginTicket { req: RequestId(1) }).await;
    assert!(matches!(bob.recv().await, Ok(ServerMsg::LoggedIn { .. })));
    match bob.recv().await.unwrap() {
        ServerMsg::Message(m) => {
            assert_eq!((m.id.0, m.from.as_str(), m.text.as_str()), (id, "alice", "hi bob"));
        }
        other => panic!("expected the missed message, got {other:?}"),
    }
    bob.send(&ClientMsg::Ack { up_to: MessageId(id) }).await;
    // The sender learns of the delivery.
    loop {
        if let ServerMsg::Receipt { id: r, user, .. } = alice.recv().await.unwrap() {
            assert_eq!((r.0, user.as_str()), (id, "bob"));
            break;
        }
    }
    bob.send(&ClientMsg::Ping { nonce: 9 }).await;
    assert!(matches!(bob.recv().await, Ok(ServerMsg::Pong { nonce: 9 })));
    drop(bob);
    // The cursor moved: a new connection of that device gets nothing before its Pong.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut bob = f.connect_with(bob_ticket).await;
    bob.send(&ClientMsg::LoginTicket { req: RequestId(1) }).await;
    assert!(matches!(bob.recv().await, Ok(ServerMsg::LoggedIn { .. })));
    bob.send(&ClientMsg::Ping { nonce: 10 }).await;
    assert!(matches!(bob.recv().await, Ok(ServerMsg::Pong { nonce: 10 })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_look_the_same() {
    let f = fixture(Config::default());
    f.register("alice").await;
    let mut answers = Vec::new();
    for name in ["alice", "nobody"] {
        let mut c = f.connect().await;
        c.send(&ClientMsg::LoginPassword {
            req: RequestId(1),
            user: user(name),
            password: "wrong password".to_owned().into(),
            device_id: DeviceId::random(),
            device_name: "t".into(),
        })
        .await;
        answers.push(c.recv().await.unwrap());
    }
    assert_eq!(answers[0], answers[1]);
    assert!(matches!(
        &answers[0],
        ServerMsg::Error {
            code: ErrorCode::AuthFailed,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_login_are_refused_and_reserved_kinds_answered() {
    let f = fixture(Config::default());
    let mut c = f.connect().await;
    c.send(&ClientMsg::ListDevices { req: RequestId(3) }).await;
    assert!(matches!(
        c.recv().await,
        Ok(ServerMsg::Error {
            req: Some(RequestId(3)),
            code: ErrorCode::Unauthenticated,
            ..
        })
    ));
    let mut a = f.register("alice").await;
    // A sealed message (reserved kind 0x3F00) with request id 7: unsupported, and the
    // connection stays usable.
    a.send_raw(&[0x3F, 0x00, 0, 0, 0, 7, 1, 2, 3]).await;
    assert!(matches!(
        a.recv().await,
        Ok(ServerMsg::Error {
            req: Some(RequestId(7)),
            code: ErrorCode::Unsupported,
            ..
        })
    ));
    a.send(&ClientMsg::Ping { nonce: 1 }).await;
    assert!(matches!(a.recv().await, Ok(ServerMsg::Pong { nonce: 1 })));
    // An unknown kind ends the session with a protocol Close.
    a.send_raw(&[0x3E, 0x00]).await;
    let close = a.recv().await.unwrap_err();
    assert_eq!(close.code, ErrorCode::Protocol);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_is_stored_once_and_shutdown_sends_close() {
    let f = fixture(Config::default());
    let mut a = f.register("alice").await;
    f.register("bob").await;
    let first = a.dm(1, "bob", "once").await;
    let second = a.dm(1, "bob", "once").await; // same client id "c1"
    assert_eq!(first, second);
    assert_eq!(f.shared.log.stats().appended, 1);
    f.shared.shut_down();
    let close = a.recv().await.unwrap_err();
    assert_eq!(close.code, ErrorCode::ShuttingDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_stored_and_answered_in_request_order() {
    let mut config = Config::default();
    config.limits.messages_per_user_per_sec = 100_000;
    let f = fixture(config);
    let mut a = f.register("alice").await;
    f.register("bob").await;
    // More than a session answers per write, and than it keeps unanswered before it stops
    // reading: the answers come in several writes, from many group commits.
    let n = 600u32;
    let mut out = Vec::new();
    for req in 1..=n {
        let mut plain = Vec::new();
        ClientMsg::Send {
            req: RequestId(req),
            to: Target::User(user("bob")),
            client_id: format!("p{req}"),
            action: false,
            text: format!("m{req}"),
        }
        .encode(&mut plain);
        a.session.seal(&plain, &mut out).unwrap();
    }
    let (mut rd, mut wr) = tokio::io::split(a.io);
    let writer = tokio::spawn(async move {
        wr.write_all(&out).await.unwrap();
        wr
    });
    let mut last_id = 0;
    for want in 1..=n {
        let msg = loop {
            match a.session.read(&mut a.buf).unwrap() {
                Some(Incoming::Data(p)) => break ServerMsg::decode(&p).unwrap(),
                Some(Incoming::Close(p)) => panic!("closed: {:?}", CloseReason::decode(&p)),
                None => assert!(rd.read_buf(&mut a.buf).await.unwrap() > 0, "server closed"),
            }
        };
        let ServerMsg::Sent { req, id, .. } = msg else {
            panic!("expected Sent for {want}, got {msg:?}")
        };
        assert_eq!(req, RequestId(want));
        assert_eq!(id.0, last_id + 1, "stored in request order: request {want}");
        last_id = id.0;
    }
    writer.await.unwrap();
    assert_eq!(f.shared.log.stats().appended, u64::from(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_messages_and_keeps_new_ones() {
    let f = fixture(Config::default());
    let mut a = f.register("alice").await;
    f.register("bob").await;
    a.dm(1, "bob", "old one").await;
    a.dm(2, "bob", "old two").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = im_server::state::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    a.dm(3, "bob", "new").await;
    assert_eq!(im_server::server::retention(&f.shared, cutoff).await, 2);
    a.send(&ClientMsg::History {
        req: RequestId(9),
        with: Target::User(user("bob")),
        before: None,
        after: None,
        limit: 50,
    })
    .await;
    loop {
        if let ServerMsg::HistoryPage { messages, .. } = a.recv().await.unwrap() {
            assert_eq!(messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["new"]);
            break;
        }
    }
}

/// A room larger than several turns of the dispatcher's fan-out (it pushes 64 members at a
/// time and yields in between, resuming after the last name it visited): every member gets
/// every message exactly once and in order, whichever turn or turn boundary it falls on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_over_several_turns_reaches_every_member_once_in_order() {
    const MEMBERS: usize = 150;
    const MESSAGES: u32 = 4;
    let mut config = Config::default();
    config.limits.handshakes_per_ip_per_sec = 100_000;
    config.limits.handshake_burst_per_ip = 100_000;
    config.limits.logins_per_ip_per_min = 100_000;
    config.limits.unauthenticated_per_ip = 100_000;
    let f = fixture(config);
    let room = Target::parse("#big").unwrap();
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut c = f.register(&format!("m{i:03}")).await;
        c.send(&ClientMsg::Join {
            req: RequestId(2),
            room: im_proto::RoomName::parse("#big").unwrap(),
        })
        .await;
        loop {
            match c.recv().await.unwrap() {
                ServerMsg::Ok { req: RequestId(2) } => break,
                ServerMsg::RoomEvent { .. } => continue,
                other => panic!("join: {other:?}"),
            }
        }
        members.push(c);
    }
    let mut sender = members.remove(MEMBERS / 2);
    let mut sent = Vec::new();
    for k in 0..MESSAGES {
        sender
            .send(&ClientMsg::Send {
                req: RequestId(10 + k),
                to: room.clone(),
                client_id: format!("big-{k}"),
                action: false,
                text: format!("message {k}"),
            })
            .await;
        loop {
            match sender.recv().await.unwrap() {
                ServerMsg::Sent { id, .. } => break sent.push(id.0),
                ServerMsg::RoomEvent { .. } => continue,
                other => panic!("send: {other:?}"),
            }
        }
    }
    for (i, c) in members.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match c.recv().await.unwrap() {
                ServerMsg::Message(m) => got.push(m.id.0),
                ServerMsg::RoomEvent { .. } => continue,
                other => panic!("member {i}: {other:?}"),
            }
        }
        assert_eq!(got, sent, "member {i}");
    }
}
