//! The record layer of an established session.
//!
//! - Arbitrary bytes read by the server's session: no panic, whatever arrives.
//! - The input sealed by the client as one Data record opens to exactly the input.
//! - The input cut into records (sizes from its first byte) under a rekey policy low enough
//!   that the keys ratchet every few records: all open, in order, with both sides agreeing on
//!   the epoch.
//! - A sealed record with bits flipped (where the input says) never opens.
#![no_main]

use bytes::BytesMut;
use im_proto::limits::MAX_RECORD_PLAINTEXT;
use im_proto::session::{Incoming, Session, SessionError};
use im_proto_fuzz::{established, established_small_policy, tamper};
use libfuzzer_sys::fuzz_target;

/// Reads until the session wants more bytes or fails; returns what opened and the error.
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

fuzz_target!(|data: &[u8]| {
    // Nothing here can carry a valid tag, so nothing may open.
    let mut server = established().server.clone();
    let (opened, _) = read_all(&mut server, data);
    assert!(opened.is_empty(), "a record opened without the key: {opened:?}");

    if data.len() > MAX_RECORD_PLAINTEXT {
        return;
    }

    // One record carrying the whole input.
    let pair = established().clone();
    let (mut client, mut server) = (pair.client, pair.server);
    let mut wire = Vec::new();
    client.seal(data, &mut wire).expect("a plaintext within the limit seals");
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(server.read(&mut buf), Ok(Some(Incoming::Data(BytesMut::from(data)))));
    assert!(buf.is_empty() && !server.is_mid_frame());

    // The same record, tampered with: it must not open (it may wait for more bytes, when a
    // length grew).
    let mut bad = wire.clone();
    tamper(&mut bad, &data[..data.len().min(12)]);
    if bad != wire {
        let mut server = established().server.clone();
        let (opened, _) = read_all(&mut server, &bad);
        assert!(opened.is_empty(), "a tampered record opened: {opened:?}");
    }

    // Many records across several rekeys, then a Close.
    let Some((&size, rest)) = data.split_first() else { return };
    let pair = established_small_policy().clone();
    let (mut client, mut server) = (pair.client, pair.server);
    let records: Vec<&[u8]> = rest.chunks(usize::from(size).max(1)).collect();
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
    // Nothing is accepted after the Close, not even a genuine record.
    assert_eq!(client.seal(b"late", &mut Vec::new()), Err(SessionError::Closed));
    assert!(server.read(&mut BytesMut::from(&b"x"[..])).is_err(), "bytes after the peer's Close");
});
