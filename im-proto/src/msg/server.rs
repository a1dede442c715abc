//! Messages from server to client: kinds 0x4001 to 0x7FFF.
//!
//! Replies echo the request's [`RequestId`] as their first field. Pushes (events) carry none and
//! may arrive at any time after login, between a request and its reply included.

use crate::limits::{MAX_LIST, MAX_PAGE, MAX_REASON, MAX_TOPIC, TICKET_ID_LEN};
use crate::name::{RoomName, Target, UserName};

use super::error_code::clip;
use super::field::{ClientIdText, List, Text};
use super::{
    ChatMessage, Contact, ContactState, DeviceId, DeviceInfo, ErrorCode, Member, MessageId, PresenceInfo, RequestId,
    RoomEventKind, RoomInfo, TicketSecret, Timestamp,
};

catalogue! {
    /// A message from server to client.
    pub enum ServerMsg {
        /// See `ClientMsg::Ping`: either side may ping.
        0x4001 Ping { nonce: u64 },
        0x4002 Pong { nonce: u64 },
        /// Success, for requests that have nothing else to say.
        0x4003 Ok { req: RequestId },
        /// A failed request (`req` given) or a complaint not tied to one.
        0x4004 Error {
            req: Option<RequestId>,
            code: ErrorCode,
            text: String [Text(MAX_REASON)],
            /// When to try again, for `rate_limited` and `shutting_down`.
            retry_after_ms: Option<u32>,
        },

        /// Reply to a successful `Register` or login.
        0x4010 LoggedIn {
            req: RequestId,
            /// The canonical name, as the server stores it.
            user: UserName,
            device_id: DeviceId,
            /// Lets the client show times relative to the server's clock.
            server_time: Timestamp,
        },
        /// A resumption ticket for this user and device, pushed after a login and in answer to
        /// `RequestTicket`. A client keeps only the newest.
        0x4011 Ticket {
            ticket_id: [u8; TICKET_ID_LEN],
            secret: TicketSecret,
            expires_at: Timestamp,
        },
        /// Reply to `ListDevices`.
        0x4012 Devices {
            req: RequestId,
            devices: Vec<DeviceInfo> [List(MAX_LIST)],
        },

        /// Reply to `Send`: the message is stored and will survive a server crash.
        0x4020 Sent {
            req: RequestId,
            id: MessageId,
            ts: Timestamp,
            client_id: String [ClientIdText],
        },
        /// A new message, to the recipients' devices and to the sender's other devices.
        0x4021 Message(message: ChatMessage),
        /// `user`'s device `device_id` has acknowledged direct message `id`: a delivery receipt
        /// for the sender.
        0x4022 Receipt {
            id: MessageId,
            user: UserName,
            device_id: DeviceId,
        },
        /// `from` is typing to `to` (this user, or a room).
        0x4023 TypingNotice { from: UserName, to: Target },
        /// Reply to `History`: messages in ascending id order.
        0x4024 HistoryPage {
            req: RequestId,
            messages: Vec<ChatMessage> [List(MAX_PAGE)],
            /// More messages match beyond this page.
            more: bool,
        },

        /// Reply to `ListRooms`.
        0x4030 Rooms {
            req: RequestId,
            rooms: Vec<RoomInfo> [List(MAX_LIST)],
        },
        /// Reply to `Members`.
        0x4031 MemberList {
            req: RequestId,
            room: RoomName,
            members: Vec<Member> [List(MAX_LIST)],
        },
        /// Reply to `Topic`: the topic now (`None`: no topic).
        0x4032 TopicIs {
            req: RequestId,
            room: RoomName,
            topic: Option<String> [Text(MAX_TOPIC)],
        },
        /// Something happened in a room this user is in.
        0x4033 RoomEvent {
            room: RoomName,
            kind: RoomEventKind,
            /// Who joined, left, was kicked, banned, opped; who changed the topic.
            user: UserName,
            /// The operator who did it, for kick, ban, unban, op, deop.
            by: Option<UserName>,
            /// The new topic, for a topic event (`None`: cleared).
            topic: Option<String> [Text(MAX_TOPIC)],
            ts: Timestamp,
        },

        /// Reply to `ListContacts`.
        0x4040 Contacts {
            req: RequestId,
            contacts: Vec<Contact> [List(MAX_LIST)],
        },
        /// A contact relationship changed; `None`: it is gone.
        0x4041 ContactUpdate { user: UserName, state: Option<ContactState> },

        /// Reply to `GetPresence`.
        0x4050 PresenceList {
            req: RequestId,
            entries: Vec<PresenceInfo> [List(MAX_LIST)],
        },
        /// A contact's presence changed.
        0x4051 PresenceUpdate(presence: PresenceInfo),

        /// Reply to `ListBlocked`.
        0x4060 Blocked {
            req: RequestId,
            users: Vec<UserName> [List(MAX_LIST)],
        },
    }
    reserved 0x7F00 SealedMessage;
}

impl ServerMsg {
    /// An `Error` with no retry hint, its text cut to `MAX_REASON` bytes so it always encodes.
    pub fn error(req: Option<RequestId>, code: ErrorCode, text: impl Into<String>) -> Self {
        ServerMsg::Error {
            req,
            code,
            text: clip(text.into(), MAX_REASON),
            retry_after_ms: None,
        }
    }
}
