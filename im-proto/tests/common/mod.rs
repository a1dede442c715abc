//! Shared fixtures: fixed host keys (RSA key generation is slow; tests never generate one),
//! and an in-memory client/server pair in the style of quinn's `Pair`.
#![allow(dead_code)]

use std::sync::OnceLock;

use bytes::BytesMut;
use im_proto::frame::{Frame, FrameDecoder};
use im_proto::handshake::{
    ClientEstablished, ClientHandshake, ResumeTicket, ServerEstablished, ServerHandshake, ServerInputs,
};
use im_proto::hostkey::RsaSigner;
use im_proto::record::RekeyPolicy;
use im_proto::session::{Incoming, Session, SessionError};
use rand::SeedableRng;
use rand::rngs::StdRng;
use zeroize::Zeroizing;

pub fn host_key() -> &'static RsaSigner {
    static KEY: OnceLock<RsaSigner> = OnceLock::new();
    KEY.get_or_init(|| RsaSigner::from_pkcs8_pem(include_str!("../data/host_key.pem")).unwrap())
}

pub fn other_host_key() -> &'static RsaSigner {
    static KEY: OnceLock<RsaSigner> = OnceLock::new();
    KEY.get_or_init(|| RsaSigner::from_pkcs8_pem(include_str!("../data/other_host_key.pem")).unwrap())
}

pub fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// Splits bytes into frames; panics on a framing error (the inputs here are well-formed).
pub fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::new();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut buf).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty());
    out
}

pub struct Pair {
    pub client: ClientEstablished,
    pub server: ServerEstablished,
    /// Every byte each side sent during the handshake, in order.
    pub c2s: Vec<u8>,
    pub s2c: Vec<u8>,
}

pub fn client_inputs(n: u8) -> ([u8; 32], [u8; 32]) {
    ([n; 32], [n.wrapping_add(100); 32])
}

pub fn server_inputs(n: u8, policy: RekeyPolicy) -> ServerInputs {
    ServerInputs {
        random: [n.wrapping_add(50); 32],
        ephemeral: Zeroizing::new([n.wrapping_add(150); 32]),
        policy,
    }
}

/// Runs a whole handshake in memory. With `psk` the server resumes the client's ticket.
pub fn handshake(ticket: Option<ResumeTicket>, server_knows_ticket: bool, policy: RekeyPolicy) -> Pair {
    let (random, eph) = client_inputs(1);
    let (mut client, ch) = ClientHandshake::with_inputs(random, eph, ticket.clone(), policy);
    let mut ch_frames = frames(&ch);
    let received = ServerHandshake::read_client_hello(ch_frames.remove(0)).unwrap();
    let inputs = server_inputs(1, policy);
    let (expect_finished, s2c) = match (received.ticket_id(), &ticket) {
        (Some(id), Some(t)) if server_knows_ticket => {
            assert_eq!(id, t.id);
            received.resume(inputs, &t.secret)
        }
        _ => received.full(inputs, host_key(), &mut rng()),
    };
    let mut established = None;
    for f in frames(&s2c) {
        established = client.handle(f).unwrap();
    }
    let client = established.expect("client finished");
    let server = expect_finished
        .read_finished(frames(&client.finished).remove(0))
        .unwrap();
    let mut c2s = ch;
    c2s.extend_from_slice(&client.finished);
    Pair {
        client,
        server,
        c2s,
        s2c,
    }
}

pub fn ticket() -> ResumeTicket {
    ResumeTicket {
        id: [9; 16],
        secret: Zeroizing::new([42; 32]),
    }
}

/// Feeds a whole byte stream to a session; a stream that ends mid-frame is an error, as a
/// driver treats a cut connection.
pub fn read_all(session: &mut Session, bytes: &[u8]) -> Result<Vec<Incoming>, String> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        match session.read(&mut buf) {
            Ok(Some(i)) => out.push(i),
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    if session.is_mid_frame() || !buf.is_empty() {
        return Err("stream ended mid-frame".into());
    }
    Ok(out)
}

pub fn data(i: &Incoming) -> &[u8] {
    match i {
        Incoming::Data(d) => d,
        Incoming::Close(_) => panic!("expected data, got close"),
    }
}

pub fn session_err(e: Result<Option<Incoming>, SessionError>) -> SessionError {
    e.expect_err("expected an error")
}
