//! One whole server session per input, over an in-memory pipe: the handshake, records and
//! request handling of the real server, on real stores. The input format and what counts as a
//! failure are in the crate's documentation (`src/lib.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| im_server_fuzz::run(data));
