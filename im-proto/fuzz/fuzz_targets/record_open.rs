//! The record layer of an established session.
//!
//! - The input as bytes from the client, read by the server's session: no panic, whatever
//!   arrives, and whatever opens is exactly what the client would have sealed. (The keys are
//!   fixed, so the fuzzer can and does replay genuine records it saw sealed in earlier runs.)
//!
//! Then, as bit 0 of the first byte says (each key schedule costs thousands of Blowfish
//! blocks, so one run does one or the other):
//! - clear: the input sealed by the client as one Data record opens to exactly the input; the
//!   same record with bits flipped (where the input says) never opens;
//! - set: the rest of the input cut into at most [`MAX_RECORDS`] records (sizes from the first
//!   byte), sealed under a rekey policy low enough that the keys ratchet every few records,
//!   then a Close: all open, in order, on the same key epoch, and nothing opens after the Close.
#![no_main]

use bytes::BytesMut;
use im_proto::limits::MAX_RECORD_PLAINTEXT;
use im_proto::session::{Incoming, Session, SessionError};
use im_proto_fuzz::{established, established_small_policy, tamper};
use libfuzzer_sys::fuzz_target;

/// Most records the input is cut into: enough for several rekeys under the small policy.
const MAX_RECORDS: usize = 12;

/// Reads until the session wants more bytes or fails; returns what opened and whether it failed.
fn read_all(session: &mut Session, bytes: &[u8]) -> (Vec<Incoming>, bool) {
    let mut buf = BytesMut::from(bytes);
    let mut opened = Vec::new();
    loop {
        match session.read(&mut buf) {
            Ok(Some(incoming)) => opened.push(incoming),
            Ok(None) => return (opened, false),
            Err(_) => return (opened, true),
        }
    }
}

fn arbitrary_bytes(data: &[u8]) {
    let (opened, _) = read_all(&mut established().server.clone(), data);
    let mut client = established().client.clone();
    let mut genuine = Vec::new();
    for incoming in &opened {
        match incoming {
            Incoming::Data(plaintext) => client.seal(plaintext, &mut genuine),
            Incoming::Close(reason) => client.seal_close(reason, &mut genuine),
        }
        .expect("what opened reseals");
    }
    assert!(
        data.starts_with(&genuine),
        "opened records the client never sealed: {opened:?}"
    );
}

fn one_record(data: &[u8]) {
    if data.len() > MAX_RECORD_PLAINTEXT {
        return;
    }
    let pair = established().clone();
    let (mut client, mut server) = (pair.client, pair.server);
    let mut wire = Vec::new();
    client
        .seal(data, &mut wire)
        .expect("a plaintext within the limit seals");
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(server.read(&mut buf), Ok(Some(Incoming::Data(BytesMut::from(data)))));
    assert!(buf.is_empty() && !server.is_mid_frame());

    // Tampered with, it must not open (it may wait for more bytes, when a length grew).
    let mut bad = wire.clone();
    tamper(&mut bad, &data[..data.len().min(12)]);
    if bad != wire {
        let (opened, _) = read_all(&mut established().server.clone(), &bad);
        assert!(opened.is_empty(), "a tampered record opened: {opened:?}");
    }
}

fn many_records(size: u8, data: &[u8]) {
    let pair = established_small_policy().clone();
    let (mut client, mut server) = (pair.client, pair.server);
    let size = usize::from(size).max(data.len().div_ceil(MAX_RECORDS)).max(1);
    let records: Vec<&[u8]> = data.chunks(size).collect();
    let mut wire = Vec::new();
    for record in &records {
        client.seal(record, &mut wire).expect("seals");
    }
    client.seal_close(b"bye", &mut wire).expect("Close seals");
    let (opened, failed) = read_all(&mut server, &wire);
    assert!(!failed, "genuine records failed to open");
    let mut expected: Vec<Incoming> = records.iter().map(|r| Incoming::Data(BytesMut::from(*r))).collect();
    expected.push(Incoming::Close(BytesMut::from(&b"bye"[..])));
    assert_eq!(opened, expected);
    assert!(server.peer_closed());
    assert_eq!(client.epochs().0, server.epochs().1, "both sides on the same key epoch");
    assert_eq!(client.seal(b"late", &mut Vec::new()), Err(SessionError::Closed));
    assert!(
        server.read(&mut BytesMut::from(&b"x"[..])).is_err(),
        "bytes after the peer's Close"
    );
}

fuzz_target!(|data: &[u8]| {
    arbitrary_bytes(data);
    match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => many_records(mode >> 1, rest),
        _ => one_record(data),
    }
});
