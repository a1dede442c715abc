//! The im-client driver fed whatever a hostile server sends after a genuine login: replies,
//! pushes, errors, tickets, raw bytes. The input format and what counts as a failure are in
//! the crate's documentation (`src/lib.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| im_client_fuzz::run(data));
