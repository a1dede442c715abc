//! The im wire protocol, sans-I/O: state machines that take bytes and give bytes and events,
//! with no sockets, clocks or threads, so the server, the clients, the tests and the fuzzers
//! all drive the very same code. PROTOCOL.md (at the workspace root) is the normative spec.
//!
//! # Layout
//! - [`limits`]: every size and count limit, and the default port, in one place.
//! - [`name`]: user and room names and their rules.
//! - [`wire`]: primitive field encoding (integers, strings, lists); the total reader.
//! - [`frame`]: the 16-byte frame header and the incremental frame decoder.
//! - [`crypto`]: thin wrappers over the primitive crates (HMAC, HKDF, Blowfish-CTR,
//!   fingerprints), so the rest of the crate names operations, not crate APIs.
//! - [`keys`]: the key schedule: traffic secrets, per-direction keys, the ratchet, the exporter.
//! - [`record`]: sealing and opening encrypted records for one direction.
//! - [`hostkey`]: RSA host and user keys: PEM, fingerprints, PSS signatures.
//! - [`handshake`]: the client and server handshake state machines (full and resumption).
//! - [`session`]: an established connection: both record directions plus Close handling.
//! - [`msg`]: the message catalogue carried inside records, and the error codes.
//! - [`codec`] (feature `codec`): `tokio_util::codec` glue for clients.

pub mod crypto;
pub mod frame;
pub mod handshake;
pub mod hostkey;
pub mod keys;
pub mod limits;
pub mod msg;
pub mod name;
pub mod record;
pub mod session;
pub mod wire;

#[cfg(feature = "codec")]
pub mod codec;

pub use name::{RoomName, Target, UserName};
