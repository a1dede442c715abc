//! The message catalogue and the Close reason: the input as a record's plaintext.
//!
//! Decoding is total, and every encoding is canonical (msg/mod.rs): whatever decodes
//! re-encodes to exactly the input, and decodes again to an equal value. A client message's
//! request id is the one `peek_request_id` finds without decoding.
#![no_main]

use im_proto::msg::{ClientMsg, CloseReason, ServerMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ClientMsg::decode(data) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(out, data, "{} re-encodes differently", msg.name());
        assert_eq!(ClientMsg::decode(&out).as_ref(), Ok(&msg));
        assert_eq!(ClientMsg::peek_request_id(data), msg.request_id(), "{}", msg.name());
        assert!(ClientMsg::KINDS.contains(&(msg.kind(), msg.name())));
    }

    if let Ok(msg) = ServerMsg::decode(data) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(out, data, "{} re-encodes differently", msg.name());
        assert_eq!(ServerMsg::decode(&out).as_ref(), Ok(&msg));
        let _ = msg.request_id();
        assert!(ServerMsg::KINDS.contains(&(msg.kind(), msg.name())));
    }

    if let Ok(reason) = CloseReason::decode(data) {
        let mut out = Vec::new();
        reason.encode(&mut out);
        assert_eq!(out, data, "Close reason re-encodes differently");
        assert_eq!(CloseReason::decode(&out).as_ref(), Ok(&reason));
        let _ = reason.to_string();
    }
});
