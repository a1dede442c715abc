//! The client side of the handshake: the fixed client, with or without a ticket (bit 0 of the
//! first byte), fed server frames until it fails or finishes.
//!
//! - Bit 1 clear: the rest of the input is the server's byte stream.
//! - Bit 1 set: the genuine server flight (full or resumed, as the ticket says), cut after as
//!   many bytes as the next two say, then the rest of the input. This reaches the states
//!   behind a valid ServerHello and ServerAuth, which no mutation could forge (the ServerAuth
//!   signature). The whole genuine flight must establish the session, and any frame after it
//!   must be refused.
#![no_main]

use im_proto::handshake::HandshakeError;
use im_proto_fuzz::{host_key, run_client, server_flight};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let with_ticket = mode & 1 == 1;
    if mode & 2 == 0 {
        // Nothing can forge the server's Finished record: only a replay of the genuine flight
        // (the inputs are fixed) establishes the session.
        let run = run_client(with_ticket, rest);
        if run.established.is_some() {
            assert!(
                rest.starts_with(server_flight(with_ticket)),
                "established by a forged flight: {run:?}"
            );
        }
        return;
    }

    let Some((cut, extra)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let flight = server_flight(with_ticket);
    let cut = usize::from(u16::from_be_bytes(*cut)) % (flight.len() + 1);
    let mut stream = flight[..cut].to_vec();
    stream.extend_from_slice(extra);
    let run = run_client(with_ticket, &stream);
    if cut < flight.len() {
        return;
    }
    let Some(established) = &run.established else {
        panic!("the genuine flight was refused: {run:?}")
    };
    assert_eq!(established.resumed, with_ticket);
    assert_eq!(
        established.host_key.as_deref(),
        (!with_ticket).then(|| host_key().public_der())
    );
    if run.frames_after > 0 {
        assert!(
            matches!(run.refused, Some(HandshakeError::UnexpectedFrame { .. })),
            "a frame after the handshake was not refused: {run:?}"
        );
    }
    if extra.is_empty() {
        assert!(run.refused.is_none() && run.framing.is_none(), "{run:?}");
    }
});
