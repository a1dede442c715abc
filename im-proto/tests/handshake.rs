//! A client and a server state machine driven against each other in memory: every success
//! path, and every way the handshake must fail.

mod common;

use common::*;
use im_proto::frame::{FrameType, write_frame};
use im_proto::handshake::{ClientHandshake, ClientHello, HandshakeError, Reject, ServerHandshake, ServerHello};
use im_proto::record::RekeyPolicy;
use im_proto::session::Incoming;

fn policy() -> RekeyPolicy {
    RekeyPolicy::default()
}

#[test]
fn full_handshake_then_messages_both_ways() {
    let mut p = handshake(None, false, policy());
    assert!(!p.client.resumed && !p.server.resumed);
    assert_eq!(p.client.host_key.as_deref(), Some(host_key().public_der()));
    assert_eq!(*p.client.exporter, *p.server.exporter);

    let mut wire = Vec::new();
    p.client.session.seal(b"hello server", &mut wire).unwrap();
    p.client.session.seal(b"", &mut wire).unwrap();
    let got = read_all(&mut p.server.session, &wire).unwrap();
    assert_eq!(data(&got[0]), b"hello server");
    assert_eq!(data(&got[1]), b"");

    let mut wire = Vec::new();
    p.server.session.seal(&[7u8; 16 * 1024], &mut wire).unwrap();
    let got = read_all(&mut p.client.session, &wire).unwrap();
    assert_eq!(data(&got[0]), &[7u8; 16 * 1024][..]);
}

#[test]
fn resumption_needs_no_host_key_and_agrees_keys() {
    let mut p = handshake(Some(ticket()), true, policy());
    assert!(p.client.resumed && p.server.resumed);
    assert_eq!(p.client.host_key, None);
    assert_eq!(*p.client.exporter, *p.server.exporter);
    let mut wire = Vec::new();
    p.client.session.seal(b"resumed", &mut wire).unwrap();
    assert_eq!(data(&read_all(&mut p.server.session, &wire).unwrap()[0]), b"resumed");
    // No ServerAuth frame: ServerHello and the Finished record only.
    assert_eq!(frames(&p.s2c).len(), 2);
}

#[test]
fn unknown_ticket_falls_back_to_a_full_handshake() {
    let p = handshake(Some(ticket()), false, policy());
    assert!(!p.client.resumed && !p.server.resumed);
    assert!(p.client.host_key.is_some());
}

#[test]
fn resumption_with_the_wrong_secret_fails_finished() {
    let (r, e) = client_inputs(1);
    let (mut client, ch) = ClientHandshake::with_inputs(r, e, Some(ticket()), policy());
    let received = ServerHandshake::read_client_hello(frames(&ch).remove(0)).unwrap();
    let (_, s2c) = received.resume(server_inputs(1, policy()), &[43; 32]);
    let mut fs = frames(&s2c).into_iter();
    assert!(client.handle(fs.next().unwrap()).unwrap().is_none());
    assert!(matches!(
        client.handle(fs.next().unwrap()),
        Err(HandshakeError::Record(_) | HandshakeError::BadFinished)
    ));
}

#[test]
fn a_different_host_key_is_visible_to_the_pin_check() {
    let (r, e) = client_inputs(1);
    let (mut client, ch) = ClientHandshake::with_inputs(r, e, None, policy());
    let received = ServerHandshake::read_client_hello(frames(&ch).remove(0)).unwrap();
    let (_, s2c) = received.full(server_inputs(1, policy()), other_host_key(), &mut rng());
    let mut est = None;
    for f in frames(&s2c) {
        est = client.handle(f).unwrap();
    }
    let est = est.unwrap();
    let fp = im_proto::crypto::fingerprint(est.host_key.as_deref().unwrap());
    assert_eq!(fp, other_host_key().fingerprint());
    assert_ne!(fp, host_key().fingerprint());
}

/// Runs the client against server frames after `mutate` changed one of them.
fn client_against(mutate: impl FnOnce(&mut Vec<im_proto::frame::Frame>)) -> Result<(), HandshakeError> {
    let (r, e) = client_inputs(1);
    let (mut client, ch) = ClientHandshake::with_inputs(r, e, None, policy());
    let received = ServerHandshake::read_client_hello(frames(&ch).remove(0)).unwrap();
    let (_, s2c) = received.full(server_inputs(1, policy()), host_key(), &mut rng());
    let mut fs = frames(&s2c);
    mutate(&mut fs);
    for f in fs {
        if client.handle(f)?.is_some() {
            return Ok(());
        }
    }
    Ok(())
}

#[test]
fn host_key_swapped_under_a_valid_signature_is_refused() {
    // A man in the middle presents his own key beside the real server's signature.
    let err = client_against(|fs| {
        let mut auth = im_proto::handshake::ServerAuth::decode(&fs[1].payload).unwrap();
        auth.host_key = other_host_key().public_der().to_vec();
        let mut payload = Vec::new();
        auth.encode(&mut payload);
        let mut raw = Vec::new();
        write_frame(&mut raw, FrameType::ServerAuth, 0, 1, &payload);
        fs[1] = frames(&raw).remove(0);
    });
    assert_eq!(err, Err(HandshakeError::BadSignature));
}

#[test]
fn bad_signature_is_refused() {
    let err = client_against(|fs| {
        // The signature's last byte: the one before the (absent) endorsement's presence byte.
        let n = fs[1].payload.len();
        fs[1].payload[n - 2] ^= 1;
    });
    assert_eq!(err, Err(HandshakeError::BadSignature));
}

#[test]
fn server_choosing_an_unoffered_suite_is_refused() {
    let err = client_against(|fs| {
        let mut sh = ServerHello::decode(&fs[0].payload).unwrap();
        sh.suite = 0x9999;
        let mut payload = Vec::new();
        sh.encode(&mut payload);
        let mut raw = Vec::new();
        write_frame(&mut raw, FrameType::ServerHello, 0, 0, &payload);
        fs[0] = frames(&raw).remove(0);
    });
    assert_eq!(
        err,
        Err(HandshakeError::NotOffered {
            version: 1,
            suite: 0x9999
        })
    );
}

#[test]
fn downgrading_the_client_offer_breaks_the_signature() {
    // An attacker rewrites the ClientHello's offer; the server signs what it saw, and the
    // client, hashing what it sent, refuses. So negotiation cannot be steered.
    let (r, e) = client_inputs(1);
    let (mut client, ch) = ClientHandshake::with_inputs(r, e, None, policy());
    let mut hello = ClientHello::decode(&frames(&ch)[0].payload).unwrap();
    hello.suites.push(0x0002);
    hello.versions.push(0);
    let mut payload = Vec::new();
    hello.encode(&mut payload);
    let mut raw = Vec::new();
    write_frame(&mut raw, FrameType::ClientHello, 0, 0, &payload);
    let received = ServerHandshake::read_client_hello(frames(&raw).remove(0)).unwrap();
    let (_, s2c) = received.full(server_inputs(1, policy()), host_key(), &mut rng());
    let mut fs = frames(&s2c).into_iter();
    client.handle(fs.next().unwrap()).unwrap();
    assert_eq!(
        client.handle(fs.next().unwrap()).err(),
        Some(HandshakeError::BadSignature)
    );
}

#[test]
fn no_common_version_or_suite() {
    let hello = |versions: Vec<u8>, suites: Vec<u16>| {
        let h = ClientHello {
            versions,
            suites,
            random: [0; 32],
            share: [9; 32],
            ticket: None,
        };
        let mut payload = Vec::new();
        h.encode(&mut payload);
        let mut raw = Vec::new();
        write_frame(&mut raw, FrameType::ClientHello, 0, 0, &payload);
        ServerHandshake::read_client_hello(frames(&raw).remove(0)).err()
    };
    assert_eq!(hello(vec![2], vec![1]), Some(HandshakeError::NoCommonVersion(vec![2])));
    assert_eq!(hello(vec![1], vec![7]), Some(HandshakeError::NoCommonSuite(vec![7])));
}

#[test]
fn reject_frame_reaches_the_client_as_an_error() {
    let (r, e) = client_inputs(1);
    let (mut client, _) = ClientHandshake::with_inputs(r, e, None, policy());
    let raw = Reject {
        code: 14,
        retry_after_ms: 1500,
        text: "too many handshakes".into(),
    }
    .to_frame();
    let err = client.handle(frames(&raw).remove(0)).unwrap_err();
    assert_eq!(
        err,
        HandshakeError::Rejected {
            code: 14,
            retry_after_ms: Some(1500),
            text: "too many handshakes".into()
        }
    );
}

#[test]
fn handshake_frames_out_of_order_or_mis_sequenced() {
    // ServerAuth before ServerHello.
    assert!(matches!(
        client_against(|fs| fs.swap(0, 1)),
        Err(HandshakeError::UnexpectedFrame { .. })
    ));
    // A ServerHello with sequence number 1 (as if a frame before it had been dropped).
    let err = client_against(|fs| {
        let payload = fs[0].payload.to_vec();
        let mut raw = Vec::new();
        write_frame(&mut raw, FrameType::ServerHello, 0, 1, &payload);
        fs[0] = frames(&raw).remove(0);
    });
    assert_eq!(err, Err(HandshakeError::Sequence { expected: 0, got: 1 }));
}

#[test]
fn clean_close_and_nothing_after_it() {
    let mut p = handshake(None, false, policy());
    let mut wire = Vec::new();
    p.client.session.seal(b"last words", &mut wire).unwrap();
    p.client.session.seal_close(b"bye", &mut wire).unwrap();
    assert!(p.client.session.seal(b"more", &mut Vec::new()).is_err());
    let got = read_all(&mut p.server.session, &wire).unwrap();
    assert_eq!(got.len(), 2);
    assert!(matches!(&got[1], Incoming::Close(r) if &r[..] == b"bye"));
    assert!(p.server.session.peer_closed());
    // A record after the Close (forged by continuing the client's sealer on a fork).
    let mut fork = handshake(None, false, policy());
    let mut wire = Vec::new();
    fork.client.session.seal_close(b"bye", &mut wire).unwrap();
    let mut more = Vec::new();
    handshake(None, false, policy())
        .client
        .session
        .seal(b"x", &mut more)
        .unwrap();
    wire.extend_from_slice(&more);
    let err = read_all(&mut fork.server.session, &wire).unwrap_err();
    assert!(err.contains("after the peer's Close"), "{err}");
}

/// The rotation scenario: `host_key()` retires, `other_host_key()` takes over.
fn rotation(not_after_ms: u64) -> im_proto::handshake::Endorsement {
    im_proto::handshake::Endorsement::sign(host_key(), other_host_key().public_der(), not_after_ms, &mut rng())
}

#[test]
fn an_endorsement_round_trips_and_verifies_only_for_its_key_and_period() {
    use im_proto::handshake::{Endorsement, ServerAuth};
    let e = rotation(1_700_000_000_000);
    assert_eq!(e.old_key, host_key().public_der());
    e.verify(other_host_key().public_der()).unwrap();
    // Another new key, another grace period, another signer: refused.
    assert!(e.verify(host_key().public_der()).is_err());
    let longer = Endorsement {
        not_after_ms: e.not_after_ms + 1,
        ..e.clone()
    };
    assert!(longer.verify(other_host_key().public_der()).is_err());
    let forged = Endorsement {
        old_key: other_host_key().public_der().to_vec(),
        ..e.clone()
    };
    assert!(forged.verify(other_host_key().public_der()).is_err());

    let mut bytes = Vec::new();
    e.encode(&mut bytes);
    assert_eq!(Endorsement::decode(&bytes).unwrap(), e);
    for cut in 0..bytes.len() {
        assert!(Endorsement::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer_bytes = bytes.clone();
    longer_bytes.push(0);
    assert!(Endorsement::decode(&longer_bytes).is_err());

    // Inside ServerAuth: a presence byte, then the same fields; absent is one zero byte.
    for endorsement in [None, Some(e)] {
        let auth = ServerAuth {
            host_key: other_host_key().public_der().to_vec(),
            signature: vec![1; 384],
            endorsement,
        };
        let mut wire = Vec::new();
        auth.encode(&mut wire);
        assert_eq!(ServerAuth::decode(&wire).unwrap(), auth);
        for cut in 0..wire.len() {
            assert!(ServerAuth::decode(&wire[..cut]).is_err(), "cut at {cut}");
        }
    }
    let mut bad_presence = Vec::new();
    ServerAuth {
        host_key: vec![1],
        signature: vec![2],
        endorsement: None,
    }
    .encode(&mut bad_presence);
    *bad_presence.last_mut().unwrap() = 2;
    assert!(ServerAuth::decode(&bad_presence).is_err());
}

#[test]
fn the_endorsement_reaches_the_client_under_the_transcript() {
    let e = rotation(u64::MAX);
    let run = |endorsement: Option<&im_proto::handshake::Endorsement>, tamper: bool| {
        let (r, eph) = client_inputs(1);
        let (mut client, ch) = ClientHandshake::with_inputs(r, eph, None, policy());
        let received = ServerHandshake::read_client_hello(frames(&ch).remove(0)).unwrap();
        let (_, s2c) = received.full_endorsed(server_inputs(1, policy()), other_host_key(), endorsement, &mut rng());
        let mut fs = frames(&s2c);
        if tamper {
            // Stripping or editing the endorsement in flight breaks the Finished MAC.
            let n = fs[1].payload.len();
            fs[1].payload[n - 1] ^= 1;
        }
        let mut est = Ok(None);
        for f in fs {
            est = client.handle(f);
            if est.is_err() {
                break;
            }
        }
        est
    };
    let est = run(Some(&e), false).unwrap().unwrap();
    assert_eq!(est.endorsement.as_ref(), Some(&e));
    assert!(run(None, false).unwrap().unwrap().endorsement.is_none());
    assert!(run(Some(&e), true).is_err());
}
