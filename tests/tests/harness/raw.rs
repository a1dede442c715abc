//! A raw protocol client over a blocking socket, for tests that must misbehave in ways the
//! real client never would (never reading), or look at exactly what the server sends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use im_proto::UserName;
use im_proto::frame::FrameDecoder;
use im_proto::handshake::ClientHandshake;
use im_proto::msg::{ClientMsg, CloseReason, DeviceId, RequestId, ServerMsg};
use im_proto::session::{Incoming, Session};

pub struct Raw {
    pub stream: TcpStream,
    pub session: Session,
    buf: BytesMut,
}

impl Raw {
    /// Connects, handshakes (accepting any host key) and logs in with a password.
    pub fn login(addr: &str, user: &str, password: &str) -> Raw {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (mut hs, hello) = ClientHandshake::new(&mut rand::rng(), None);
        stream.write_all(&hello).unwrap();
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let est = loop {
            let frame = loop {
                if let Some(f) = dec.decode(&mut buf).unwrap() {
                    break f;
                }
                fill(&mut stream, &mut buf);
            };
            if let Some(est) = hs.handle(frame).unwrap() {
                break est;
            }
        };
        stream.write_all(&est.finished).unwrap();
        let mut raw = Raw {
            stream,
            session: est.session,
            buf,
        };
        raw.send(&ClientMsg::LoginPassword {
            req: RequestId(1),
            user: UserName::parse(user).unwrap(),
            password: password.to_owned().into(),
            device_id: DeviceId::random(),
            device_name: "raw test client".into(),
        });
        match raw.recv() {
            Some(ServerMsg::LoggedIn { .. }) => raw,
            other => panic!("login failed: {other:?}"),
        }
    }

    pub fn send(&mut self, msg: &ClientMsg) {
        let mut plain = Vec::new();
        msg.encode(&mut plain);
        let mut out = Vec::new();
        self.session.seal(&plain, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// Sends `msgs` in one write, so that the server reads them together.
    pub fn send_all(&mut self, msgs: &[ClientMsg]) {
        let mut out = Vec::new();
        for msg in msgs {
            let mut plain = Vec::new();
            msg.encode(&mut plain);
            self.session.seal(&plain, &mut out).unwrap();
        }
        self.stream.write_all(&out).unwrap();
    }

    /// The next server message; `None` after a Close (see [`Raw::closed`]) or EOF.
    pub fn recv(&mut self) -> Option<ServerMsg> {
        self.next()?.ok()
    }

    /// The next message, or the Close reason.
    pub fn next(&mut self) -> Option<Result<ServerMsg, CloseReason>> {
        loop {
            match self.session.read(&mut self.buf).expect("valid records") {
                Some(Incoming::Data(p)) => return Some(Ok(ServerMsg::decode(&p).expect("valid message"))),
                Some(Incoming::Close(p)) => return Some(Err(CloseReason::decode(&p).expect("valid close reason"))),
                None => {
                    if !fill(&mut self.stream, &mut self.buf) {
                        return None;
                    }
                }
            }
        }
    }

    /// Reads until the server's Close and returns its reason.
    pub fn closed(&mut self) -> Option<CloseReason> {
        loop {
            match self.next()? {
                Ok(_) => continue,
                Err(reason) => return Some(reason),
            }
        }
    }
}

fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
