//! One conversation (a room, a direct conversation, or the status window): what it shows, in
//! order and without duplicates, and what it owes the user (unread counts, mentions).
//!
//! Messages come from three places that overlap: pushes (live, and the catch-up after a
//! login), history pages, and our own `Sent` replies. Every message has a server id, and a
//! conversation keeps each id once, so the overlaps never show twice; entries are kept
//! sorted by (timestamp, id), so a late history page lands where it belongs.

use std::collections::HashSet;

use im_proto::msg::{ChatMessage, Member, MessageId, RoomEventKind, Timestamp};
use im_proto::{Target, UserName};

/// Tab completion offers the speakers of this many recent entries.
pub const RECENT_SPEAKERS_SCAN: usize = 500;

/// Which conversation: the status window, or the one with a user or in a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConvId {
    Status,
    With(Target),
}

impl ConvId {
    pub fn target(&self) -> Option<&Target> {
        match self {
            ConvId::Status => None,
            ConvId::With(t) => Some(t),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ConvId::Status => "status",
            ConvId::With(t) => t.as_str(),
        }
    }

    pub fn is_direct(&self) -> bool {
        matches!(self, ConvId::With(Target::User(_)))
    }
}

/// A line of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Message {
        msg: ChatMessage,
        /// It names us (and is not ours): drawn highlighted.
        mention: bool,
    },
    Room {
        ts: Timestamp,
        kind: RoomEventKind,
        user: UserName,
        by: Option<UserName>,
        topic: Option<String>,
    },
    /// Local output: command results, connection news, errors.
    Info { ts: Timestamp, text: String, error: bool },
}

impl Entry {
    pub fn ts(&self) -> Timestamp {
        match self {
            Entry::Message { msg, .. } => msg.ts,
            Entry::Room { ts, .. } | Entry::Info { ts, .. } => *ts,
        }
    }

    /// The sort key: time, then id; within a millisecond room events come before messages
    /// and local lines after them.
    fn key(&self) -> (u64, u64) {
        match self {
            Entry::Message { msg, .. } => (msg.ts.0, msg.id.0),
            Entry::Room { ts, .. } => (ts.0, 0),
            Entry::Info { ts, .. } => (ts.0, u64::MAX),
        }
    }
}

/// Where an outgoing message stands before the server has stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutState {
    /// Sent; waiting for `Sent`.
    Sending,
    /// Not sent because the connection is down; resent (same client id, so never twice) once
    /// it is back.
    Queued,
    /// Refused, or the connection gave up: it will not be sent.
    Failed(String),
}

/// A message typed here that the server has not confirmed yet. Shown after the stored
/// messages, and replaced by the stored message when `Sent` comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub client_id: String,
    pub text: String,
    pub action: bool,
    pub ts: Timestamp,
    pub state: OutState,
}

/// How far the history has been fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryState {
    /// The first page was asked for (on first opening the conversation).
    pub opened: bool,
    /// A page is on its way.
    pub loading: bool,
    /// The server has older messages than the oldest shown.
    pub more_before: bool,
}

#[derive(Debug, Clone)]
pub struct Conversation {
    pub id: ConvId,
    pub entries: Vec<Entry>,
    seen: HashSet<MessageId>,
    pub outbox: Vec<Outgoing>,
    /// Messages from others that arrived while the conversation was not shown.
    pub unread: u32,
    /// Of those, the ones that mention us.
    pub mentions: u32,
    pub topic: Option<String>,
    /// The room's members, as last listed (for `/names` and Tab completion).
    pub members: Vec<Member>,
    /// For rooms: whether we are a member.
    pub joined: bool,
    pub history: HistoryState,
    /// Rows scrolled up from the bottom (0: following new messages).
    pub scroll: usize,
    /// Messages that arrived below the view while scrolled up.
    pub unseen_below: u32,
}

impl Conversation {
    pub fn new(id: ConvId) -> Self {
        Conversation {
            id,
            entries: Vec::new(),
            seen: HashSet::new(),
            outbox: Vec::new(),
            unread: 0,
            mentions: 0,
            topic: None,
            members: Vec::new(),
            joined: false,
            history: HistoryState::default(),
            scroll: 0,
            unseen_below: 0,
        }
    }

    /// Inserts an entry in order; returns whether it was the last one.
    fn insert(&mut self, entry: Entry) -> bool {
        let key = entry.key();
        let at = self.entries.partition_point(|e| e.key() <= key);
        let last = at == self.entries.len();
        self.entries.insert(at, entry);
        last
    }

    /// Adds a stored message unless its id is already here. Returns whether it was new.
    pub fn add_message(&mut self, msg: ChatMessage, mention: bool) -> bool {
        if !self.seen.insert(msg.id) {
            return false;
        }
        self.insert(Entry::Message { msg, mention });
        true
    }

    pub fn add_room_event(
        &mut self,
        ts: Timestamp,
        kind: RoomEventKind,
        user: UserName,
        by: Option<UserName>,
        topic: Option<String>,
    ) {
        self.insert(Entry::Room {
            ts,
            kind,
            user,
            by,
            topic,
        });
    }

    /// Adds a local line. It goes at the end, whatever the clocks say: it answers
    /// something just done here.
    pub fn add_info(&mut self, ts: Timestamp, text: impl Into<String>, error: bool) {
        let ts = self.entries.last().map_or(ts, |e| ts.max(e.ts()));
        self.insert(Entry::Info {
            ts,
            text: text.into(),
            error,
        });
    }

    pub fn has_message(&self, id: MessageId) -> bool {
        self.seen.contains(&id)
    }

    pub fn oldest_id(&self) -> Option<MessageId> {
        self.entries.iter().find_map(|e| match e {
            Entry::Message { msg, .. } => Some(msg.id),
            _ => None,
        })
    }

    pub fn newest_id(&self) -> Option<MessageId> {
        self.entries.iter().rev().find_map(|e| match e {
            Entry::Message { msg, .. } => Some(msg.id),
            _ => None,
        })
    }

    pub fn outgoing_mut(&mut self, client_id: &str) -> Option<&mut Outgoing> {
        self.outbox.iter_mut().find(|o| o.client_id == client_id)
    }

    /// Users worth completing here: members, then recent speakers, newest first.
    pub fn nicks(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |n: &str| {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_owned());
            }
        };
        for e in self.entries.iter().rev().take(RECENT_SPEAKERS_SCAN) {
            if let Entry::Message { msg, .. } = e {
                push(msg.from.as_str());
            }
        }
        for m in &self.members {
            push(m.user.as_str());
        }
        if let ConvId::With(Target::User(u)) = &self.id {
            push(u.as_str());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64, ts: u64, text: &str) -> ChatMessage {
        ChatMessage {
            id: MessageId(id),
            ts: Timestamp(ts),
            from: UserName::parse("bob").unwrap(),
            to: Target::parse("#rust").unwrap(),
            client_id: format!("c{id}"),
            action: false,
            text: text.into(),
        }
    }

    fn texts(c: &Conversation) -> Vec<String> {
        c.entries
            .iter()
            .map(|e| match e {
                Entry::Message { msg, .. } => msg.text.clone(),
                Entry::Room { kind, .. } => kind.name().to_owned(),
                Entry::Info { text, .. } => text.clone(),
            })
            .collect()
    }

    #[test]
    fn messages_are_kept_once_and_in_order() {
        let mut c = Conversation::new(ConvId::With(Target::parse("#rust").unwrap()));
        assert!(c.add_message(msg(5, 500, "five"), false));
        assert!(c.add_message(msg(7, 700, "seven"), false));
        assert!(!c.add_message(msg(5, 500, "five again"), false));
        // An older history page lands before, a gap filler in between.
        assert!(c.add_message(msg(2, 200, "two"), false));
        assert!(c.add_message(msg(6, 600, "six"), false));
        c.add_room_event(
            Timestamp(600),
            RoomEventKind::Join,
            UserName::parse("carol").unwrap(),
            None,
            None,
        );
        // A local line goes at the end even if the clocks disagree.
        c.add_info(Timestamp(650), "note", false);
        assert_eq!(texts(&c), ["two", "five", "join", "six", "seven", "note"]);
        assert_eq!((c.oldest_id(), c.newest_id()), (Some(MessageId(2)), Some(MessageId(7))));
        assert!(c.has_message(MessageId(6)) && !c.has_message(MessageId(3)));
        assert_eq!(c.nicks(), ["bob"]);
    }
}
