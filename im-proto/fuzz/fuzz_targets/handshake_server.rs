//! The server side of the handshake.
//!
//! - The input as the client's byte stream: its first frame goes to
//!   `ServerHandshake::read_client_hello`; if that accepts it, the server resumes with a fixed
//!   ticket secret (no RSA) and sends a well-formed flight, and the next frame goes to
//!   `read_finished`, which cannot succeed without the keys.
//! - The fixed client's genuine Finished record, with bits flipped where the input says, is
//!   accepted exactly when nothing was flipped.
#![no_main]

use bytes::BytesMut;
use im_proto::frame::{FrameDecoder, FrameType};
use im_proto::handshake::ServerHandshake;
use im_proto::record::RekeyPolicy;
use im_proto_fuzz::{frames, pending_finished, server_inputs, tamper, ticket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(data);
    if let Ok(Some(hello)) = decoder.decode(&mut buf)
        && let Ok(received) = ServerHandshake::read_client_hello(hello)
    {
        let _ = received.ticket_id();
        let (expect_finished, flight) = received.resume(server_inputs(RekeyPolicy::default()), &ticket().secret);
        let sent: Vec<FrameType> = frames(&flight).iter().map(|f| f.header.frame_type).collect();
        assert_eq!(sent, [FrameType::ServerHello, FrameType::Finished]);
        if let Ok(Some(finished)) = decoder.decode(&mut buf) {
            assert!(expect_finished.read_finished(finished).is_err(), "a forged client Finished was accepted");
        }
    }

    let pending = pending_finished();
    let mut finished = pending.client_finished.clone();
    tamper(&mut finished, data);
    let genuine = finished == pending.client_finished;
    let accepted = match frames(&finished).into_iter().next() {
        Some(frame) => pending.server.clone().read_finished(frame).is_ok(),
        None => false,
    };
    assert_eq!(accepted, genuine, "tampered Finished accepted, or the genuine one refused");
});
