//! Every limit of the protocol, in one place.
//!
//! PROTOCOL.md §Limits lists the same numbers; a test checks that they agree. The server may be
//! configured *stricter* than these (rates, queue depths), never looser: these are what a peer
//! must be prepared to receive.

/// TCP port a server listens on when none is given.
pub const DEFAULT_PORT: u16 = 7447;

/// Largest frame payload (bytes after the 16-byte header), ciphertext plus MAC tag included.
/// Bounds the read buffer a peer must hold for one frame.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;

/// Largest plaintext one record carries: the frame payload less the MAC tag.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_FRAME_PAYLOAD - crate::record::TAG_LEN;

/// Largest plaintext handshake frame (ClientHello, ServerHello, ServerAuth, Reject).
/// An RSA-8192 host key and signature fit with room to spare.
pub const MAX_HANDSHAKE_PAYLOAD: usize = 8 * 1024;

/// Largest message text in bytes of UTF-8 (direct or room message).
pub const MAX_TEXT: usize = 8 * 1024;

/// Largest room topic and presence status text, in bytes of UTF-8.
pub const MAX_TOPIC: usize = 512;
pub const MAX_STATUS_TEXT: usize = 256;

/// Human-readable strings in errors and close reasons.
pub const MAX_REASON: usize = 512;

/// Passwords: at least this many characters, at most this many bytes.
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

/// A client-chosen message id (deduplication key) and a device name.
pub const MAX_CLIENT_ID: usize = 64;
pub const MAX_DEVICE_NAME: usize = 64;

/// DER of an RSA public key (SubjectPublicKeyInfo) and an RSA signature; RSA-8192 fits.
pub const MAX_PUBLIC_KEY_DER: usize = 2048;
pub const MAX_SIGNATURE: usize = 1024;

/// Resumption ticket identifier, in bytes.
pub const TICKET_ID_LEN: usize = 16;

/// Most messages in one history page, and most entries in any other list reply.
pub const MAX_PAGE: usize = 500;
pub const MAX_LIST: usize = 10_000;

/// Ids and timestamps the server hands out stay below 2^53 so that JSON and JavaScript
/// numbers carry them exactly.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// User names: `[a-z0-9][a-z0-9_.-]{0,31}` after ASCII case folding.
pub const MAX_USER_NAME: usize = 32;
/// Room names: `#` followed by `[a-z0-9][a-z0-9_.-]{0,63}` after ASCII case folding.
pub const MAX_ROOM_NAME: usize = 64;

/// The sender ratchets a direction's key after this many 8-byte cipher blocks (8 MiB) ...
pub const REKEY_AFTER_BLOCKS: u64 = 1 << 20;
/// ... or after this many records, whichever comes first.
pub const REKEY_AFTER_RECORDS: u64 = 1 << 20;
/// A receiver rejects any key that has been used for more than this many blocks (128 MiB):
/// a peer that never rekeys is cut off well before Blowfish's 64-bit birthday bound.
pub const KEY_BLOCK_CEILING: u64 = 1 << 24;
