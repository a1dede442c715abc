//! The record layer through established sessions: rekeying, ordering, limits, tampering.

mod common;

use bytes::BytesMut;
use common::*;
use im_proto::frame::{FrameDecoder, FrameError, FrameType, HEADER_LEN, write_frame};
use im_proto::handshake::{ClientHandshake, ServerHandshake};
use im_proto::limits::MAX_RECORD_PLAINTEXT;
use im_proto::record::{RecordError, RekeyPolicy};
use im_proto::session::{Incoming, SessionError};

fn small_policy() -> RekeyPolicy {
    RekeyPolicy {
        after_blocks: 64,
        after_records: 5,
        ceiling_blocks: 1024,
    }
}

#[test]
fn many_records_across_several_rekeys() {
    let mut p = handshake(None, false, small_policy());
    let mut wire = Vec::new();
    let msgs: Vec<Vec<u8>> = (0..200u32).map(|i| vec![i as u8; (i as usize * 37) % 300]).collect();
    for m in &msgs {
        p.client.session.seal(m, &mut wire).unwrap();
    }
    // Feed it in awkward chunks.
    let mut got = Vec::new();
    let mut buf = BytesMut::new();
    for chunk in wire.chunks(13) {
        buf.extend_from_slice(chunk);
        while let Some(i) = p.server.session.read(&mut buf).unwrap() {
            got.push(data(&i).to_vec());
        }
    }
    assert_eq!(got, msgs);
    let (send_epoch, _) = p.client.session.epochs();
    let (_, recv_epoch) = p.server.session.epochs();
    assert!(send_epoch >= 39, "200 records at 5 per key: {send_epoch} rekeys");
    assert_eq!(send_epoch, recv_epoch);
    // And the other direction, with large records that trip the block threshold.
    let mut wire = Vec::new();
    for _ in 0..10 {
        p.server.session.seal(&[1u8; 1000], &mut wire).unwrap();
    }
    assert_eq!(read_all(&mut p.client.session, &wire).unwrap().len(), 10);
    assert!(p.client.session.epochs().1 >= 9);
}

#[test]
fn released_key_schedules_are_rebuilt_transparently() {
    let mut p = handshake(None, false, RekeyPolicy::default());
    let mut wire = Vec::new();
    p.client.session.seal(b"one", &mut wire).unwrap();
    p.client.session.release();
    p.client.session.seal(b"two", &mut wire).unwrap();
    let first = read_all(&mut p.server.session, &wire[..wire.len() / 2]).unwrap();
    p.server.session.release();
    let second = read_all(&mut p.server.session, &wire[wire.len() / 2..]).unwrap();
    assert_eq!(data(&first[0]), b"one");
    assert_eq!(data(&second[0]), b"two");
}

/// Three sealed records, as separate byte strings, plus a fresh receiver for them.
fn three_records() -> (Vec<Vec<u8>>, im_proto::session::Session) {
    let mut p = handshake(None, false, RekeyPolicy::default());
    let recs = ["a", "b", "c"]
        .iter()
        .map(|m| {
            let mut w = Vec::new();
            p.client.session.seal(m.as_bytes(), &mut w).unwrap();
            w
        })
        .collect();
    (recs, p.server.session)
}

fn seq_err(e: String) -> bool {
    e.contains("replayed, reordered or dropped")
}

#[test]
fn replayed_reordered_and_dropped_records_are_refused() {
    let (r, s) = three_records();
    assert!(
        seq_err(read_all(&mut s.clone(), &[&r[0][..], &r[0]].concat()).unwrap_err()),
        "replay"
    );
    assert!(
        seq_err(read_all(&mut s.clone(), &[&r[1][..], &r[0]].concat()).unwrap_err()),
        "reorder"
    );
    assert!(
        seq_err(read_all(&mut s.clone(), &[&r[0][..], &r[2]].concat()).unwrap_err()),
        "drop"
    );
    assert_eq!(read_all(&mut s.clone(), &r.concat()).unwrap().len(), 3);
}

#[test]
fn truncated_frame_is_detected() {
    let (r, s) = three_records();
    for cut in 1..r[0].len() {
        let err = read_all(&mut s.clone(), &r[0][..cut]).unwrap_err();
        assert!(err.contains("mid-frame"), "cut at {cut}: {err}");
    }
}

#[test]
fn length_above_the_limit_and_unknown_frame_type() {
    let (_, mut s) = three_records();
    let mut header = im_proto::frame::Header::new(FrameType::Data, 0, 1, 40).encode();
    header[12..16].copy_from_slice(&(1u32 << 20).to_be_bytes());
    let mut buf = BytesMut::from(&header[..]);
    assert!(matches!(
        s.read(&mut buf),
        Err(SessionError::Frame(FrameError::BadLength { .. }))
    ));
    let mut raw = im_proto::frame::Header::new(FrameType::Data, 0, 1, 40).encode();
    raw[3] = 0x7e;
    let mut buf = BytesMut::from(&raw[..]);
    assert_eq!(FrameDecoder::new().decode(&mut buf), Err(FrameError::UnknownType(0x7e)));
    // A handshake frame after the handshake.
    let mut w = Vec::new();
    write_frame(&mut w, FrameType::ClientHello, 0, 1, b"");
    let mut buf = BytesMut::from(&w[..]);
    assert_eq!(
        s.read(&mut buf),
        Err(SessionError::UnexpectedFrame(FrameType::ClientHello))
    );
}

#[test]
fn oversized_plaintext_cannot_be_sealed() {
    let mut p = handshake(None, false, RekeyPolicy::default());
    let err = p
        .client
        .session
        .seal(&vec![0; MAX_RECORD_PLAINTEXT + 1], &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::Record(RecordError::TooLarge(MAX_RECORD_PLAINTEXT + 1))
    );
    p.client
        .session
        .seal(&vec![0; MAX_RECORD_PLAINTEXT], &mut Vec::new())
        .unwrap();
}

#[test]
fn a_key_used_past_the_receivers_ceiling_is_refused() {
    // The sender never rekeys; the receiver allows 100 blocks per key.
    let sender = RekeyPolicy {
        after_blocks: u64::MAX,
        after_records: u64::MAX,
        ceiling_blocks: u64::MAX,
    };
    let receiver = RekeyPolicy {
        after_blocks: u64::MAX,
        after_records: u64::MAX,
        ceiling_blocks: 100,
    };
    let (r, e) = client_inputs(1);
    let (mut client, ch) = ClientHandshake::with_inputs(r, e, None, sender);
    let hello = ServerHandshake::read_client_hello(frames(&ch).remove(0)).unwrap();
    let (expect, s2c) = hello.full(server_inputs(1, receiver), host_key(), &mut rng());
    let mut est = None;
    for f in frames(&s2c) {
        est = client.handle(f).unwrap();
    }
    let mut est = est.unwrap();
    let mut server = expect.read_finished(frames(&est.finished).remove(0)).unwrap();
    let mut wire = Vec::new();
    for _ in 0..13 {
        est.session.seal(&[0; 64], &mut wire).unwrap(); // 8 blocks each: 104 blocks
    }
    let err = read_all(&mut server.session, &wire).unwrap_err();
    assert!(err.contains("without rekeying"), "{err}");
}

#[test]
fn wrong_epoch_is_refused() {
    let (r, s) = three_records();
    let mut rec = r[0].clone();
    rec[7] = 2; // epoch 2 while the receiver is at 0
    let err = read_all(&mut s.clone(), &rec).unwrap_err();
    assert!(err.contains("epoch"), "{err}");
}

/// Flips every bit of a recorded post-handshake stream, one at a time, against a fork of
/// the receiving session: each flip must be detected (an error, never a silently different
/// or silently shortened stream).
#[test]
fn every_single_bit_flip_of_a_session_is_detected() {
    let p = handshake(None, false, small_policy());
    let (c, s) = (p.client.session, p.server.session);
    for (mut sender, receiver) in [(c.clone(), s.clone()), (s, c)] {
        let mut wire = Vec::new();
        for m in [&b"first"[..], b"", &[3u8; 100], b"rekeyed by now"] {
            sender.seal(m, &mut wire).unwrap();
        }
        for _ in 0..4 {
            sender.seal(b"x", &mut wire).unwrap();
        }
        sender.seal_close(b"done", &mut wire).unwrap();
        let good = read_all(&mut receiver.clone(), &wire).unwrap();
        assert!(matches!(good.last(), Some(Incoming::Close(_))));
        for bit in 0..wire.len() * 8 {
            let mut bad = wire.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let got = read_all(&mut receiver.clone(), &bad);
            assert!(
                got.is_err(),
                "flip of bit {bit} (byte {}) went undetected: {got:?}",
                bit / 8
            );
        }
    }
}

/// The same for the handshake: every bit of every frame each side sends, against the other
/// side's state machine (the server re-signs per flip of the ClientHello; the client side
/// replays the recorded server frames, which are valid for its fixed inputs).
#[test]
fn every_single_bit_flip_of_a_handshake_is_detected() {
    let policy = RekeyPolicy::default();
    let pair = handshake(None, false, policy);
    // Server-to-client frames: ServerHello, ServerAuth, Finished.
    let s2c = pair.s2c.clone();
    for bit in 0..s2c.len() * 8 {
        let mut bad = s2c.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let (r, e) = client_inputs(1);
        let (mut client, _) = ClientHandshake::with_inputs(r, e, None, policy);
        assert!(!client_accepts(&mut client, &bad), "s2c bit {bit} undetected");
    }
    // Client-to-server: the ClientHello (the flip must be caught by one side or the other)
    // and the client's Finished (caught by the server).
    let ch_len = pair.c2s.len() - pair.client.finished.len();
    let ch = pair.c2s[..ch_len].to_vec();
    for bit in (HEADER_LEN * 8)..ch.len() * 8 {
        let mut bad = ch.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(!full_exchange_succeeds(&bad), "ClientHello bit {bit} undetected");
    }
    for bit in 0..HEADER_LEN * 8 {
        let mut bad = ch.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(!full_exchange_succeeds(&bad), "ClientHello header bit {bit} undetected");
    }
    let (r, e) = client_inputs(1);
    let (_, ch2) = ClientHandshake::with_inputs(r, e, None, policy);
    let hello = ServerHandshake::read_client_hello(frames(&ch2).remove(0)).unwrap();
    let (expect, _) = hello.full(server_inputs(1, policy), host_key(), &mut rng());
    let fin = pair.client.finished.clone();
    for bit in 0..fin.len() * 8 {
        let mut bad = fin.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let ok = decode_one(&bad)
            .map(|f| expect.clone().read_finished(f).is_ok())
            .unwrap_or(false);
        assert!(!ok, "client Finished bit {bit} undetected");
    }
}

fn decode_one(bytes: &[u8]) -> Option<im_proto::frame::Frame> {
    let mut buf = BytesMut::from(bytes);
    let f = FrameDecoder::new().decode(&mut buf).ok()??;
    buf.is_empty().then_some(f)
}

/// Whether a client with the fixed inputs completes the handshake on `s2c`.
fn client_accepts(client: &mut ClientHandshake, s2c: &[u8]) -> bool {
    let mut buf = BytesMut::from(s2c);
    let mut d = FrameDecoder::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(f)) => match client.handle(f) {
                Ok(Some(_)) => return buf.is_empty(),
                Ok(None) => {}
                Err(_) => return false,
            },
            _ => return false,
        }
    }
}

/// Runs a server on a (possibly tampered) ClientHello and the genuine client on the result.
fn full_exchange_succeeds(ch: &[u8]) -> bool {
    let policy = RekeyPolicy::default();
    let Some(frame) = decode_one(ch) else { return false };
    let Ok(hello) = ServerHandshake::read_client_hello(frame) else {
        return false;
    };
    let (_, s2c) = hello.full(server_inputs(1, policy), host_key(), &mut rng());
    let (r, e) = client_inputs(1);
    let (mut client, _) = ClientHandshake::with_inputs(r, e, None, policy);
    client_accepts(&mut client, &s2c)
}
