//! The server side of the handshake.
//!
//! - The input as the client's byte stream: its first frame goes to
//!   `ServerHandshake::read_client_hello`; if that accepts it, the server resumes with a fixed
//!   ticket secret (no RSA) and sends a well-formed flight, and the next frame goes to
//!   `read_finished`, which succeeds only for a replay of the fixed client's genuine exchange
//!   (the inputs are fixed, so the fuzzer may learn it), never for a forgery.
//! - The fixed client's genuine Finished record, with bits flipped where the input says, is
//!   accepted exactly when nothing was flipped.
#![no_main]

use bytes::BytesMut;
use im_proto::frame::{FrameDecoder, FrameType};
use im_proto::handshake::ServerHandshake;
use im_proto::record::RekeyPolicy;
use im_proto_fuzz::{client, frames, pending_finished, server_inputs, tamper, ticket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(data);
    if let Ok(Some(hello)) = decoder.decode(&mut buf)
        && let Ok(received) = ServerHandshake::read_client_hello(hello.clone())
    {
        let _ = received.ticket_id();
        let (expect_finished, flight) = received.resume(server_inputs(RekeyPolicy::default()), &ticket().secret);
        let sent: Vec<FrameType> = frames(&flight).iter().map(|f| f.header.frame_type).collect();
        assert_eq!(sent, [FrameType::ServerHello, FrameType::Finished]);
        if let Ok(Some(finished)) = decoder.decode(&mut buf) {
            let finished_bytes = finished.to_bytes();
            if expect_finished.read_finished(finished).is_ok() {
                assert_eq!(
                    hello.to_bytes(),
                    client(true).1,
                    "accepted a Finished for a forged ClientHello"
                );
                assert_eq!(
                    finished_bytes,
                    pending_finished().client_finished,
                    "accepted a forged Finished"
                );
            }
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
    assert_eq!(
        accepted, genuine,
        "tampered Finished accepted, or the genuine one refused"
    );
});
