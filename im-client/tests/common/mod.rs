//! A minimal fake server built from im-proto's server state machine, on loopback TCP, for
//! the client's tests. The real server is tested end to end elsewhere (the `tests` crate);
//! this fake knows just enough to answer logins, `Send`, `Ack`, `Ping`, `History` and
//! `Logout`, and to push what a test tells it to.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use bytes::BytesMut;
use im_client::ServerAddr;
use im_proto::frame::{Frame, FrameDecoder};
use im_proto::handshake::{Reject, ServerHandshake, ServerInputs};
use im_proto::hostkey::{RsaSigner, verify_rsa_pss};
use im_proto::keys::user_auth_message;
use im_proto::msg::{
    ChatMessage, ClientMsg, CloseReason, DeviceId, ErrorCode, MessageId, Secret, ServerMsg, Timestamp,
};
use im_proto::session::{Incoming, Session};
use im_proto::{Target, UserName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const PASSWORD: &str = "hunter22";

pub fn host_key() -> &'static RsaSigner {
    static KEY: OnceLock<RsaSigner> = OnceLock::new();
    KEY.get_or_init(|| RsaSigner::from_pkcs8_pem(include_str!("../../../im-proto/tests/data/host_key.pem")).unwrap())
}

pub fn other_host_key() -> &'static RsaSigner {
    static KEY: OnceLock<RsaSigner> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaSigner::from_pkcs8_pem(include_str!("../../../im-proto/tests/data/other_host_key.pem")).unwrap()
    })
}

pub fn user_key() -> Arc<RsaSigner> {
    static KEY: OnceLock<Arc<RsaSigner>> = OnceLock::new();
    KEY.get_or_init(|| {
        Arc::new(RsaSigner::from_pkcs8_pem(include_str!("../../../im-proto/tests/data/user_key.pem")).unwrap())
    })
    .clone()
}

pub fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// What the fake server saw and what it should do.
#[derive(Default)]
pub struct State {
    pub connections: usize,
    /// "password:alice", "ticket:alice", "key:alice", "register:alice".
    pub logins: Vec<String>,
    pub tickets: HashMap<[u8; 16], ([u8; 32], UserName, DeviceId)>,
    pub sends: Vec<(String, String)>,
    pub acks: Vec<u64>,
    pub pongs: Vec<u64>,
    pub next_id: u64,
    /// Pushed after every login.
    pub pushes: Vec<ServerMsg>,
    /// Sent after the pushes of the first connection only.
    pub close_first: Option<CloseReason>,
    pub reject: Option<Reject>,
    pub user_key_der: Option<Vec<u8>>,
    pub client_closed_normally: usize,
}

pub struct FakeServer {
    pub addr: ServerAddr,
    pub state: Arc<Mutex<State>>,
}

impl FakeServer {
    pub async fn start(key: &'static RsaSigner) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = ServerAddr::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        let state = Arc::new(Mutex::new(State {
            next_id: 100,
            ..Default::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, st, key).await;
                });
            }
        });
        FakeServer { addr, state }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

pub async fn read_frame(stream: &mut TcpStream, dec: &mut FrameDecoder, buf: &mut BytesMut) -> Option<Frame> {
    loop {
        if let Some(f) = dec.decode(buf).ok()? {
            return Some(f);
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

pub async fn read_record(stream: &mut TcpStream, session: &mut Session, buf: &mut BytesMut) -> Option<Incoming> {
    loop {
        if let Some(i) = session.read(buf).ok()? {
            return Some(i);
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

pub async fn write_msgs(stream: &mut TcpStream, session: &mut Session, msgs: &[ServerMsg]) {
    let mut out = Vec::new();
    for m in msgs {
        let mut plain = Vec::new();
        m.encode(&mut plain);
        session.seal(&plain, &mut out).unwrap();
    }
    stream.write_all(&out).await.unwrap();
}

pub async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, key: &'static RsaSigner) -> Option<()> {
    let (mut dec, mut buf) = (FrameDecoder::new(), BytesMut::new());
    let hello = read_frame(&mut stream, &mut dec, &mut buf).await?;
    let (first, reject) = {
        let mut s = state.lock().unwrap();
        s.connections += 1;
        (s.connections == 1, s.reject.clone())
    };
    if let Some(rej) = reject {
        stream.write_all(&rej.to_frame()).await.ok()?;
        return Some(());
    }
    let received = ServerHandshake::read_client_hello(hello).ok()?;
    let known = received
        .ticket_id()
        .and_then(|id| state.lock().unwrap().tickets.get(&id).cloned());
    let (expect, out) = {
        let mut rng = rand::rng();
        let inputs = ServerInputs::random(&mut rng);
        match &known {
            Some((secret, _, _)) => received.resume(inputs, secret),
            None => received.full(inputs, key, &mut rng),
        }
    };
    stream.write_all(&out).await.ok()?;
    let fin = read_frame(&mut stream, &mut dec, &mut buf).await?;
    let est = expect.read_finished(fin).ok()?;
    let mut session = est.session;
    let exporter = est.exporter;
    loop {
        let plain = match read_record(&mut stream, &mut session, &mut buf).await? {
            Incoming::Close(bytes) => {
                if CloseReason::decode(&bytes).ok()?.code == ErrorCode::Normal {
                    state.lock().unwrap().client_closed_normally += 1;
                }
                return Some(());
            }
            Incoming::Data(bytes) => bytes,
        };
        let msg = ClientMsg::decode(&plain).ok()?;
        let mut replies = Vec::new();
        let mut login = None;
        match msg {
            ClientMsg::Ping { nonce } => replies.push(ServerMsg::Pong { nonce }),
            ClientMsg::Pong { nonce } => state.lock().unwrap().pongs.push(nonce),
            ClientMsg::LoginPassword {
                req,
                user,
                password,
                device_id,
                ..
            } => {
                if password.expose() == PASSWORD {
                    login = Some((req, user, device_id, "password", true));
                } else {
                    replies.push(ServerMsg::error(
                        Some(req),
                        ErrorCode::AuthFailed,
                        "wrong user or password",
                    ));
                }
            }
            ClientMsg::Register {
                req, user, device_id, ..
            } => login = Some((req, user, device_id, "register", true)),
            ClientMsg::LoginKey {
                req,
                user,
                device_id,
                public_key_der,
                signature,
                ..
            } => {
                let ok = state.lock().unwrap().user_key_der.as_ref() == Some(&public_key_der)
                    && verify_rsa_pss(
                        &public_key_der,
                        &user_auth_message(&exporter, user.as_str()),
                        &signature,
                    )
                    .is_ok();
                if ok {
                    login = Some((req, user, device_id, "key", true));
                } else {
                    replies.push(ServerMsg::error(Some(req), ErrorCode::AuthFailed, "no"));
                }
            }
            ClientMsg::LoginTicket { req } => match &known {
                Some((_, user, device_id)) if est.resumed => {
                    login = Some((req, user.clone(), *device_id, "ticket", false))
                }
                _ => replies.push(ServerMsg::error(Some(req), ErrorCode::TicketInvalid, "no")),
            },
            ClientMsg::Send {
                req,
                to,
                client_id,
                text,
                ..
            } => {
                if to.as_str() == "nobody" {
                    replies.push(ServerMsg::error(Some(req), ErrorCode::NoSuchUser, "no such user"));
                } else {
                    let mut s = state.lock().unwrap();
                    s.next_id += 1;
                    s.sends.push((to.as_str().to_owned(), text));
                    replies.push(ServerMsg::Sent {
                        req,
                        id: MessageId(s.next_id),
                        ts: now(),
                        client_id,
                    });
                }
            }
            ClientMsg::Ack { up_to } => state.lock().unwrap().acks.push(up_to.0),
            ClientMsg::History { req, with, .. } => {
                let m = chat(7, "bob", with.as_str(), "old");
                replies.push(ServerMsg::HistoryPage {
                    req,
                    messages: vec![m],
                    more: true,
                });
            }
            ClientMsg::Logout { req } => {
                write_msgs(&mut stream, &mut session, &[ServerMsg::Ok { req }]).await;
                let mut out = Vec::new();
                let mut reason = Vec::new();
                CloseReason::new(ErrorCode::Normal, "logged out").encode(&mut reason);
                session.seal_close(&reason, &mut out).ok()?;
                stream.write_all(&out).await.ok()?;
                return Some(());
            }
            other => replies.push(ServerMsg::error(
                other.request_id(),
                ErrorCode::Unsupported,
                "fake server",
            )),
        }
        let logged_in = login.is_some();
        if let Some((req, user, device_id, how, ticket)) = login {
            let mut s = state.lock().unwrap();
            s.logins.push(format!("{how}:{user}"));
            replies.push(ServerMsg::LoggedIn {
                req,
                user: user.clone(),
                device_id,
                server_time: now(),
            });
            if ticket {
                let (id, secret): ([u8; 16], [u8; 32]) = (rand::random(), rand::random());
                s.tickets.insert(id, (secret, user, device_id));
                replies.push(ServerMsg::Ticket {
                    ticket_id: id,
                    secret: Secret::new(secret),
                    expires_at: Timestamp(now().0 + 86_400_000),
                });
            }
            replies.extend(s.pushes.iter().cloned());
        }
        let close = if logged_in && first {
            state.lock().unwrap().close_first.clone()
        } else {
            None
        };
        write_msgs(&mut stream, &mut session, &replies).await;
        if let Some(reason) = close {
            let mut out = Vec::new();
            let mut bytes = Vec::new();
            reason.encode(&mut bytes);
            session.seal_close(&bytes, &mut out).ok()?;
            stream.write_all(&out).await.ok()?;
            return Some(());
        }
    }
}

pub fn chat(id: u64, from: &str, to: &str, text: &str) -> ChatMessage {
    ChatMessage {
        id: MessageId(id),
        ts: Timestamp(1_700_000_000_000 + id),
        from: UserName::parse(from).unwrap(),
        to: Target::parse(to).unwrap(),
        client_id: format!("c{id}"),
        action: false,
        text: text.into(),
    }
}
