//! The message catalogue: what travels inside Data records once the handshake is done.
//!
//! A record's plaintext is exactly one message: a `u16` kind, then the message's fields in
//! order, then nothing. Client kinds are 0x0001 to 0x3FFF and server kinds 0x4001 to 0x7FFF,
//! so each direction has its own enum ([`ClientMsg`], [`ServerMsg`]) and a message sent the
//! wrong way is simply an unknown kind. docs/messages.md is the normative layout.
//!
//! Every message has exactly one encoding: names must arrive in canonical (lower case) form,
//! bools and option markers must be 0 or 1, and trailing bytes are an error. So re-encoding a
//! decoded message gives back the same bytes.
//!
//! # Layout
//! - `client` and `server`: the two catalogues, one table each.
//! - `types`: ids, timestamps, secrets, the one-byte enums and the list items.
//! - `error_code`: [`ErrorCode`] (one table of number, name, meaning) and [`CloseReason`].
//! - `field`: how each field type is written and read.
//! - `macros`: the table-to-code macros.

#[macro_use]
mod macros;

mod client;
mod error_code;
mod field;
mod server;
mod types;

#[cfg(test)]
mod tests;

pub use client::ClientMsg;
pub use error_code::{CloseReason, ErrorCode};
pub use server::ServerMsg;
pub use types::{
    ChatMessage, Contact, ContactState, DeviceId, DeviceInfo, Member, MessageId, Password, Presence, PresenceInfo,
    RequestId, Role, RoomEventKind, RoomInfo, Secret, TICKET_SECRET_LEN, TicketSecret, Timestamp, is_valid_client_id,
};

use crate::wire::WireError;

/// A record's plaintext is not a message this build understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// Not a kind of this direction. A protocol error: the connection ends.
    #[error("unknown message kind {0:#06x}")]
    UnknownKind(u16),
    /// A kind set aside for sealed (end-to-end encrypted) messages, not implemented yet. The
    /// peer is ahead of us, not broken: a server answers `Error { unsupported }` (see
    /// [`ClientMsg::peek_request_id`]) and carries on; a client ignores the message.
    #[error("message kind {0:#06x} is reserved for sealed messages, not supported yet")]
    Reserved(u16),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl MsgError {
    /// The code to answer with: `unsupported` for a reserved kind (keep the connection),
    /// `protocol` for anything else (close it).
    pub fn code(&self) -> ErrorCode {
        match self {
            MsgError::Reserved(_) => ErrorCode::Unsupported,
            MsgError::UnknownKind(_) | MsgError::Wire(_) => ErrorCode::Protocol,
        }
    }
}
