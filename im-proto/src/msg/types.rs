//! The small types messages are made of: ids, timestamps, secrets, the one-byte enums, and
//! the structs that appear in lists.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::limits::{MAX_DEVICE_NAME, MAX_ID, MAX_PASSWORD, MAX_STATUS_TEXT, MAX_TEXT, MAX_TOPIC};
use crate::name::{RoomName, Target, UserName};
use crate::wire::{Reader, WireError, Writer};

use super::field::{ClientIdText, Field, Text};

/// Chosen by the client for each request and echoed by the reply, so several requests can be
/// in flight and their replies still be told apart. The server never interprets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u32);

/// Assigned by the server when it stores a message: unique and increasing across the whole
/// server, so one number orders history and serves as a delivery cursor. At most 2^53 - 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// Milliseconds since the Unix epoch, UTC. At most 2^53 - 1 (the year 285,000 or so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Times before the epoch become 0 and times past the limit become the limit: a clock
    /// that far off is not worth a failure.
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Timestamp(u64::try_from(ms).unwrap_or(MAX_ID).min(MAX_ID))
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

/// Names one login of a user (a laptop, a phone, a script). Chosen at random by the client the
/// first time it logs in and kept, so the server can keep a delivery cursor and tickets per
/// device without a round trip to allocate one. Never 0, at most 2^53 - 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(u64);

impl DeviceId {
    pub fn new(id: u64) -> Option<Self> {
        (1..=MAX_ID).contains(&id).then_some(DeviceId(id))
    }

    /// A fresh id from the thread-local CSPRNG. 53 random bits make a collision between a
    /// user's devices vanishingly unlikely; the server refuses one anyway.
    pub fn random() -> Self {
        DeviceId(rand::random_range(1..=MAX_ID))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A password or a key secret: zeroed when dropped, and shown as `<redacted>` by `Debug`, so
/// that logging a whole message (`{msg:?}`) cannot leak it. Compares in constant time.
#[derive(Clone)]
pub struct Secret<T: Zeroize>(Zeroizing<T>);

/// A password as typed (UTF-8, at most `MAX_PASSWORD` bytes).
pub type Password = Secret<String>;

/// Length of a resumption ticket's secret.
pub const TICKET_SECRET_LEN: usize = 32;

/// The secret half of a resumption ticket, mixed into the resumption handshake.
pub type TicketSecret = Secret<[u8; TICKET_SECRET_LEN]>;

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret itself. Named so that every use stands out in review.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Hands the secret on (to the handshake's `ResumeTicket`, say) without a stray copy.
    pub fn into_zeroizing(self) -> Zeroizing<T> {
        self.0
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Password {
    fn from(value: &str) -> Self {
        Secret::new(value.to_owned())
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: Zeroize + AsRef<[u8]>> PartialEq for Secret<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_ref().ct_eq(other.0.as_ref()).into()
    }
}

impl<T: Zeroize + AsRef<[u8]>> Eq for Secret<T> {}

impl Field for Password {
    fn put(&self, w: &mut Writer<'_>) {
        debug_assert!(self.expose().len() <= MAX_PASSWORD);
        w.str(self.expose());
    }

    /// The copy made here is zeroed on drop; the record buffer it came from is the session's
    /// to wipe.
    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        Ok(Secret::new(r.str(field, MAX_PASSWORD)?.to_owned()))
    }
}

impl Field for TicketSecret {
    fn put(&self, w: &mut Writer<'_>) {
        w.bytes(self.expose());
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        let mut secret = Secret::new([0u8; TICKET_SECRET_LEN]);
        secret.0.copy_from_slice(r.bytes(field, TICKET_SECRET_LEN)?);
        Ok(secret)
    }
}

impl Field for RequestId {
    fn put(&self, w: &mut Writer<'_>) {
        w.u32(self.0);
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        r.u32(field).map(RequestId)
    }
}

impl Field for MessageId {
    fn put(&self, w: &mut Writer<'_>) {
        debug_assert!(self.0 <= MAX_ID);
        w.u64(self.0);
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        r.id(field).map(MessageId)
    }
}

impl Field for Timestamp {
    fn put(&self, w: &mut Writer<'_>) {
        debug_assert!(self.0 <= MAX_ID);
        w.u64(self.0);
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        r.id(field).map(Timestamp)
    }
}

impl Field for DeviceId {
    fn put(&self, w: &mut Writer<'_>) {
        w.u64(self.0);
    }

    fn get(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
        let v = r.id(field)?;
        DeviceId::new(v).ok_or(WireError::Invalid { field, value: v })
    }
}

wire_enum! {
    /// What a user shows their contacts. `Offline` can also be chosen, to appear offline.
    pub enum Presence {
        Online = 1 "online",
        Away = 2 "away",
        Busy = 3 "busy",
        Offline = 4 "offline",
    }
}

wire_enum! {
    /// A member's standing in a room. Operators moderate; the owner (the room's creator) is
    /// an operator who cannot be kicked, banned or de-opped.
    pub enum Role {
        Member = 0 "member",
        Operator = 1 "operator",
        Owner = 2 "owner",
    }
}

wire_enum! {
    /// What happened in a room, in a [`RoomEvent`](super::ServerMsg::RoomEvent).
    pub enum RoomEventKind {
        Join = 1 "join",
        Leave = 2 "leave",
        Topic = 3 "topic",
        Kick = 4 "kick",
        Ban = 5 "ban",
        Unban = 6 "unban",
        Op = 7 "op",
        Deop = 8 "deop",
    }
}

wire_enum! {
    /// Where a contact relationship stands, seen from the user it is sent to.
    pub enum ContactState {
        /// They asked us; we have not accepted yet.
        Incoming = 1 "incoming",
        /// We asked them; they have not accepted yet.
        Outgoing = 2 "outgoing",
        /// Both agreed: each sees the other's presence.
        Accepted = 3 "accepted",
    }
}

wire_struct! {
    /// A stored message, as pushed live and as returned in history pages.
    pub struct ChatMessage("message", min_len 8 + 8 + 3 + 3 + 3 + 1 + 2) {
        pub id: MessageId,
        pub ts: Timestamp,
        pub from: UserName,
        /// The recipient user for a direct message, the room for a room message.
        pub to: Target,
        /// The sender's deduplication key, so the sender's other devices can match the
        /// message to a draft or a retry.
        pub client_id: String [ClientIdText],
        /// An action (`/me waves`): `text` is shown after the sender's name.
        pub action: bool,
        pub text: String [Text(MAX_TEXT)],
    }
}

wire_struct! {
    /// One of the user's devices.
    pub struct DeviceInfo("device", min_len 8 + 2 + 8 + 1) {
        pub id: DeviceId,
        pub name: String [Text(MAX_DEVICE_NAME)],
        pub last_seen: Timestamp,
        /// The device this connection is logged in as.
        pub current: bool,
    }
}

wire_struct! {
    pub struct RoomInfo("room", min_len 4 + 4 + 1 + 1) {
        pub room: RoomName,
        pub members: u32,
        pub topic: Option<String> [Text(MAX_TOPIC)],
        /// Whether the requesting user is a member, so one list serves both "my rooms" and
        /// "rooms to join".
        pub joined: bool,
    }
}

wire_struct! {
    pub struct Member("member", min_len 3 + 1 + 1) {
        pub user: UserName,
        pub role: Role,
        pub online: bool,
    }
}

wire_struct! {
    pub struct Contact("contact", min_len 3 + 1 + 1 + 1) {
        pub user: UserName,
        pub state: ContactState,
        /// Real only for accepted contacts; `Offline` otherwise.
        pub presence: Presence,
        pub text: Option<String> [Text(MAX_STATUS_TEXT)],
    }
}

wire_struct! {
    pub struct PresenceInfo("presence", min_len 3 + 1 + 1) {
        pub user: UserName,
        pub presence: Presence,
        pub text: Option<String> [Text(MAX_STATUS_TEXT)],
    }
}

/// Whether `s` is a valid `client_id`: 1 to `MAX_CLIENT_ID` bytes of printable ASCII
/// (0x21 to 0x7E). Clients check their ids with it before sending.
pub fn is_valid_client_id(s: &str) -> bool {
    ClientIdText::is_valid(s)
}
