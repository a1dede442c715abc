//! Properties of framing and records over arbitrary input.

mod common;

use std::sync::OnceLock;

use bytes::BytesMut;
use common::*;
use im_proto::frame::{FrameDecoder, FrameType, HEADER_LEN, Header, write_frame};
use im_proto::handshake::{ClientHandshake, ClientHello, Reject, ServerAuth, ServerHandshake, ServerHello};
use im_proto::limits::{MAX_FRAME_PAYLOAD, MAX_HANDSHAKE_PAYLOAD};
use im_proto::record::RekeyPolicy;
use im_proto::session::Session;
use proptest::prelude::*;

fn frame_strategy() -> impl Strategy<Value = (FrameType, u16, u32, Vec<u8>)> {
    let ty = prop_oneof![
        Just(FrameType::ClientHello),
        Just(FrameType::ServerAuth),
        Just(FrameType::Reject),
        Just(FrameType::Data),
        Just(FrameType::Close)
    ];
    (
        ty,
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 32..600),
    )
        .prop_map(|(t, e, s, p)| (t, if t.is_record() { e } else { 0 }, s, p))
}

/// One established server session, forked per case (no handshake per case).
fn server_session() -> Session {
    static S: OnceLock<Session> = OnceLock::new();
    S.get_or_init(|| handshake(Some(ticket()), true, RekeyPolicy::default()).server.session)
        .clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// However a byte stream is cut into reads, the same frames come out.
    #[test]
    fn any_chunking_decodes_the_same_frames(
        frames in prop::collection::vec(frame_strategy(), 1..8),
        cuts in prop::collection::vec(1usize..97, 1..64),
    ) {
        let mut wire = Vec::new();
        for (t, e, s, p) in &frames {
            write_frame(&mut wire, *t, *e, *s, p);
        }
        let mut d = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push((f.header.frame_type, f.header.epoch, f.header.seq, f.payload.to_vec()));
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(!d.is_mid_frame());
    }

    /// Arbitrary bytes never panic the decoders, and the frame decoder never asks for more
    /// buffer than one maximal frame.
    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut d = FrameDecoder::new();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        prop_assert!(buf.capacity() <= bytes.len().max(HEADER_LEN + MAX_FRAME_PAYLOAD));

        let mut s = server_session();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = s.read(&mut buf) {}

        let _ = ClientHello::decode(&bytes);
        let _ = ServerHello::decode(&bytes);
        let _ = ServerAuth::decode(&bytes);
        let _ = Reject::decode(&bytes);
        if bytes.len() >= HEADER_LEN {
            let _ = Header::decode(bytes[..HEADER_LEN].try_into().unwrap());
        }
    }

    /// Arbitrary frames into both handshake state machines: errors, never panics.
    #[test]
    fn arbitrary_handshake_frames_never_panic(payload in prop::collection::vec(any::<u8>(), 0..700), ty in 0u8..0x14, seq in 0u32..3) {
        let Some(t) = FrameType::from_u8(ty) else { return Ok(()) };
        if payload.len() > MAX_HANDSHAKE_PAYLOAD || (t.is_record() && payload.len() < 32) { return Ok(()) }
        let mut raw = Vec::new();
        write_frame(&mut raw, t, 0, seq, &payload);
        let frame = frames(&raw).remove(0);
        let _ = ServerHandshake::read_client_hello(frame.clone());
        let (r, e) = client_inputs(1);
        let (mut client, _) = ClientHandshake::with_inputs(r, e, Some(ticket()), RekeyPolicy::default());
        let _ = client.handle(frame);
    }

    /// Records of any content and size round-trip.
    #[test]
    fn records_round_trip(msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 1..10)) {
        let mut p = handshake(Some(ticket()), true, RekeyPolicy { after_blocks: 300, after_records: 3, ceiling_blocks: 1000 });
        let mut wire = Vec::new();
        for m in &msgs {
            p.client.session.seal(m, &mut wire).unwrap();
        }
        let got: Vec<Vec<u8>> = read_all(&mut p.server.session, &wire).unwrap().iter().map(|i| data(i).to_vec()).collect();
        prop_assert_eq!(got, msgs);
    }
}
