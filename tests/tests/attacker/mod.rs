//! A protocol client that misbehaves on purpose, from a chosen loopback address: attackers
//! connect from 127.0.0.9 and up, so that the server counts them apart from the honest
//! client on 127.0.0.1 (all of 127.0.0.0/8 is local on Linux). `std::net::TcpStream` cannot
//! bind before it connects; tokio's `TcpSocket` can.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use im_proto::UserName;
use im_proto::frame::FrameDecoder;
use im_proto::handshake::{ClientHandshake, HandshakeError};
use im_proto::msg::{ClientMsg, CloseReason, DeviceId, RequestId, ServerMsg};
use im_proto::session::{Incoming, Session};

/// Opens a TCP connection to `addr` from the loopback address `from` (any of 127.0.0.0/8
/// is local on Linux), so that the server counts it apart from the honest client's.
pub fn connect_from(from: [u8; 4], addr: &str) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
}

pub fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Whether the server closed the connection (end of stream, or a reset) rather than the
/// read timing out.
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A protocol client that connects from a chosen loopback address.
pub struct Attacker {
    pub stream: TcpStream,
    pub session: Session,
    buf: BytesMut,
}

impl Attacker {
    /// A full handshake (accepting any host key); the server's Reject as an error.
    pub fn connect(from: [u8; 4], addr: &str) -> Result<Attacker, HandshakeError> {
        let mut stream = connect_from(from, addr);
        let (mut hs, hello) = ClientHandshake::new(&mut rand::rng(), None);
        stream.write_all(&hello).unwrap();
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        loop {
            let frame = loop {
                if let Some(f) = decoder.decode(&mut buf).unwrap() {
                    break f;
                }
                assert!(fill(&mut stream, &mut buf), "the server closed during the handshake");
            };
            if let Some(est) = hs.handle(frame)? {
                stream.write_all(&est.finished).unwrap();
                return Ok(Attacker {
                    stream,
                    session: est.session,
                    buf,
                });
            }
        }
    }

    pub fn send(&mut self, msg: &ClientMsg) {
        let mut plain = Vec::new();
        msg.encode(&mut plain);
        self.send_plain(&plain);
    }

    pub fn send_plain(&mut self, plain: &[u8]) {
        let mut out = Vec::new();
        self.session.seal(plain, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// The next message, or the server's Close reason; `None` when the stream ended.
    pub fn next(&mut self) -> Option<Result<ServerMsg, CloseReason>> {
        loop {
            match self.session.read(&mut self.buf).expect("valid records from the server") {
                Some(Incoming::Data(p)) => return Some(Ok(ServerMsg::decode(&p).expect("a valid message"))),
                Some(Incoming::Close(p)) => return Some(Err(CloseReason::decode(&p).expect("a valid close reason"))),
                None => {
                    if !fill(&mut self.stream, &mut self.buf) {
                        return None;
                    }
                }
            }
        }
    }

    pub fn login(&mut self, req: u32, user: &str, password: &str) -> ServerMsg {
        self.send(&ClientMsg::LoginPassword {
            req: RequestId(req),
            user: UserName::parse(user).unwrap(),
            password: password.to_owned().into(),
            device_id: DeviceId::random(),
            device_name: "attacker".into(),
        });
        self.reply(req)
    }

    /// The reply to request `req`, skipping pushes.
    pub fn reply(&mut self, req: u32) -> ServerMsg {
        loop {
            match self.next() {
                Some(Ok(m)) if m.request_id() == Some(RequestId(req)) => return m,
                Some(Ok(_)) => continue,
                other => panic!("expected the reply to request {req}, got {other:?}"),
            }
        }
    }
}
