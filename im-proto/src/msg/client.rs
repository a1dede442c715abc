//! Messages from client to server: kinds 0x0001 to 0x3FFF.
//!
//! Every request carries a [`RequestId`] as its first field and gets exactly one reply that
//! echoes it: a specific reply, `Ok`, or `Error`. `Ping`, `Pong`, `Ack` and `Typing` are not
//! requests and get no reply (`Ping` gets a `Pong`).

use crate::limits::{
    MAX_DEVICE_NAME, MAX_LIST, MAX_PUBLIC_KEY_DER, MAX_SIGNATURE, MAX_STATUS_TEXT, MAX_TEXT, MAX_TOPIC,
};
use crate::name::{RoomName, Target, UserName};
use crate::wire::Reader;

use super::field::{Bytes, ClientIdText, List, PageSize, Text};
use super::{DeviceId, MessageId, Password, Presence, RequestId};

catalogue! {
    /// A message from client to server.
    pub enum ClientMsg {
        /// Either side may probe the other at any time, even before login; the peer answers
        /// with a `Pong` carrying the same nonce.
        0x0001 Ping { nonce: u64 },
        0x0002 Pong { nonce: u64 },

        /// Creates the account and logs this device in. Reply: `LoggedIn`.
        0x0010 Register {
            req: RequestId,
            user: UserName,
            password: Password,
            device_id: DeviceId,
            device_name: String [Text(MAX_DEVICE_NAME)],
        },
        /// Reply: `LoggedIn`.
        0x0011 LoginPassword {
            req: RequestId,
            user: UserName,
            password: Password,
            device_id: DeviceId,
            device_name: String [Text(MAX_DEVICE_NAME)],
        },
        /// Login by RSA user key: `signature` is over this connection's handshake exporter (the
        /// handshake module defines the signed bytes), so it cannot be replayed on another
        /// connection. Reply: `LoggedIn`.
        0x0012 LoginKey {
            req: RequestId,
            user: UserName,
            device_id: DeviceId,
            device_name: String [Text(MAX_DEVICE_NAME)],
            /// SubjectPublicKeyInfo DER.
            public_key_der: Vec<u8> [Bytes(MAX_PUBLIC_KEY_DER)],
            signature: Vec<u8> [Bytes(MAX_SIGNATURE)],
        },
        /// Login after a resumption handshake: the ticket that handshake presented names the
        /// user and device, so there is nothing else to send. Reply: `LoggedIn`.
        0x0013 LoginTicket { req: RequestId },
        /// Asks for a fresh resumption ticket. Reply: a `Ticket` push, then `Ok`.
        0x0014 RequestTicket { req: RequestId },
        /// Revokes this device's tickets. Reply: `Ok`, then the server closes (`normal`).
        0x0015 Logout { req: RequestId },
        /// Reply: `Ok`.
        0x0016 ChangePassword {
            req: RequestId,
            old_password: Password,
            new_password: Password,
        },
        /// Adds an RSA public key (SPKI DER) the user may log in with. Reply: `Ok`.
        0x0017 AddUserKey {
            req: RequestId,
            public_key_der: Vec<u8> [Bytes(MAX_PUBLIC_KEY_DER)],
        },
        /// Reply: `Ok`.
        0x0018 RemoveUserKey {
            req: RequestId,
            public_key_der: Vec<u8> [Bytes(MAX_PUBLIC_KEY_DER)],
        },
        /// Reply: `Devices`.
        0x0019 ListDevices { req: RequestId },
        /// Forgets a device: its tickets are revoked and its sessions closed (`revoked`).
        /// Reply: `Ok`.
        0x001A RevokeDevice { req: RequestId, device_id: DeviceId },

        /// Reply: `Sent`, once the message is stored. Resending a `client_id` the server has
        /// already stored for this user returns the original `Sent` and delivers nothing new,
        /// so a client can retry after a lost connection without duplicating the message.
        0x0020 Send {
            req: RequestId,
            to: Target,
            client_id: String [ClientIdText],
            /// An action (`/me waves`).
            action: bool,
            text: String [Text(MAX_TEXT)],
        },
        /// This device has everything up to and including `up_to`: moves its delivery cursor,
        /// so those messages are not delivered again at its next login. No reply.
        0x0021 Ack { up_to: MessageId },
        /// "I am typing to `to`", repeated while typing; never stored. No reply.
        0x0022 Typing { to: Target },
        /// A page of stored messages with a user or in a room. Reply: `HistoryPage`.
        0x0023 History {
            req: RequestId,
            with: Target,
            /// Only messages with a smaller id.
            before: Option<MessageId>,
            /// Only messages with a larger id; when given, the page starts from the oldest.
            after: Option<MessageId>,
            /// 1 to `MAX_PAGE`.
            limit: u16 [PageSize],
        },

        /// Joins a room, creating it (with the joiner as owner) if it does not exist.
        /// Reply: `Ok`.
        0x0030 Join { req: RequestId, room: RoomName },
        /// Reply: `Ok`.
        0x0031 Leave { req: RequestId, room: RoomName },
        /// Reply: `Rooms`.
        0x0032 ListRooms { req: RequestId },
        /// Reply: `MemberList`.
        0x0033 Members { req: RequestId, room: RoomName },
        /// With a topic, sets it (an empty topic clears it); without, asks for it.
        /// Reply: `TopicIs`.
        0x0034 Topic {
            req: RequestId,
            room: RoomName,
            topic: Option<String> [Text(MAX_TOPIC)],
        },
        /// The moderation requests: operators only. Reply: `Ok`.
        0x0035 Kick { req: RequestId, room: RoomName, user: UserName },
        0x0036 Ban { req: RequestId, room: RoomName, user: UserName },
        0x0037 Unban { req: RequestId, room: RoomName, user: UserName },
        0x0038 Op { req: RequestId, room: RoomName, user: UserName },
        0x0039 Deop { req: RequestId, room: RoomName, user: UserName },

        /// Asks `user` to become a contact (accepts at once if they already asked).
        /// Reply: `Ok`.
        0x0040 ContactRequest { req: RequestId, user: UserName },
        /// Reply: `Ok`.
        0x0041 ContactAccept { req: RequestId, user: UserName },
        /// Removes a contact, or withdraws or declines a request. Reply: `Ok`.
        0x0042 ContactRemove { req: RequestId, user: UserName },
        /// Reply: `Contacts`.
        0x0043 ListContacts { req: RequestId },

        /// Reply: `Ok`; contacts get a `PresenceUpdate`.
        0x0050 SetPresence {
            req: RequestId,
            presence: Presence,
            text: Option<String> [Text(MAX_STATUS_TEXT)],
        },
        /// Reply: `PresenceList`.
        0x0051 GetPresence {
            req: RequestId,
            users: Vec<UserName> [List(MAX_LIST)],
        },

        /// Drops everything from `user`: messages, typing, contact requests. Reply: `Ok`.
        0x0060 Block { req: RequestId, user: UserName },
        /// Reply: `Ok`.
        0x0061 Unblock { req: RequestId, user: UserName },
        /// Reply: `Blocked`.
        0x0062 ListBlocked { req: RequestId },
    }
    reserved 0x3F00 SealedSend;
}

impl ClientMsg {
    /// The request id of a message that did not decode, read from the four bytes after the
    /// kind: so a server can answer a reserved `SealedSend` with `Error { req, unsupported }`.
    /// Every request, and `SealedSend`, has its `req` right there.
    pub fn peek_request_id(bytes: &[u8]) -> Option<RequestId> {
        let mut r = Reader::new(bytes);
        let kind = r.u16("kind").ok()?;
        let carries_req = kind == Self::RESERVED.0
            || Self::KINDS
                .iter()
                .any(|&(k, name)| k == kind && !NOT_REQUESTS.contains(&name));
        if carries_req {
            r.u32("req").ok().map(RequestId)
        } else {
            None
        }
    }
}

/// The client messages without a request id; the test of `peek_request_id` against
/// `request_id` keeps this list honest.
const NOT_REQUESTS: &[&str] = &["Ping", "Pong", "Ack", "Typing"];
