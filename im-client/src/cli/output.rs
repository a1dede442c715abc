//! What the command prints: one JSON object per line with `--json` (flat, stable: the README
//! lists the fields), or lines for people. The formatting functions are pure (and tested);
//! [`Output`] writes their lines to stdout.
//!
//! Text from the network is never written to a terminal raw: [`clean`] replaces control
//! characters (escape sequences could repaint the screen or fake a line) and indents
//! continuation lines.

use std::io::Write;

use im_client::{Disconnect, Event, Sent, SessionInfo};
use im_proto::Target;
use im_proto::hostkey::RsaSigner;
use im_proto::msg::{ChatMessage, Contact, DeviceInfo, Member, PresenceInfo, RoomEventKind, RoomInfo};

use super::error::CliError;
use super::json::JsonLine;
use super::time::{human, rfc3339};

/// Where a message went: `("to", user)` for a direct message, `("room", room)` otherwise.
fn dest(to: &Target) -> (&'static str, &str) {
    match to {
        Target::User(u) => ("to", u.as_str()),
        Target::Room(r) => ("room", r.as_str()),
    }
}

/// Makes network text safe for a terminal: control and bidi-override characters become
/// U+FFFD, tabs a space, and every line after the first is indented, so a message can
/// neither move the cursor nor pass for a line of its own.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            '\t' => out.push(' '),
            '\r' => {}
            c if c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c) => {
                out.push('\u{fffd}')
            }
            c => out.push(c),
        }
    }
    out
}

pub fn message_json(m: &ChatMessage) -> String {
    let (k, v) = dest(&m.to);
    JsonLine::new("message")
        .u64("id", m.id.0)
        .str("ts", &rfc3339(m.ts))
        .str("from", m.from.as_str())
        .str(k, v)
        .str("text", &m.text)
        .bool("action", m.action)
        .str("client_id", &m.client_id)
        .finish()
}

pub fn message_human(m: &ChatMessage) -> String {
    let ts = human(m.ts);
    if m.action {
        format!("[{ts}] {} → {}: * {} {}", m.from, m.to, m.from, clean(&m.text))
    } else {
        format!("[{ts}] {} → {}: {}", m.from, m.to, clean(&m.text))
    }
}

pub fn sent_json(s: &Sent) -> String {
    JsonLine::new("sent")
        .u64("id", s.id.0)
        .str("ts", &rfc3339(s.ts))
        .str("client_id", &s.client_id)
        .finish()
}

pub fn sent_human(s: &Sent) -> String {
    format!("sent (id {}, {})", s.id.0, human(s.ts))
}

pub fn disconnect_json(reason: &Disconnect) -> String {
    JsonLine::new("disconnect")
        .str("reason", reason.code_name())
        .str("text", reason.text())
        .finish()
}

/// An event as a JSON line; `None` for events the command does not print (tickets).
pub fn event_json(e: &Event) -> Option<String> {
    Some(match e {
        Event::Message(m) => message_json(m),
        Event::Receipt { id, user, device_id } => JsonLine::new("receipt")
            .u64("id", id.0)
            .str("user", user.as_str())
            .u64("device", device_id.get())
            .finish(),
        Event::Typing { from, to } => {
            let (k, v) = dest(to);
            JsonLine::new("typing").str("from", from.as_str()).str(k, v).finish()
        }
        Event::Room {
            room,
            kind,
            user,
            by,
            topic,
            ts,
        } => JsonLine::new("room_event")
            .str("room", room.as_str())
            .str("event", kind.name())
            .str("user", user.as_str())
            .opt_str("by", by.as_ref().map(|b| b.as_str()))
            .opt_str("topic", topic.as_deref())
            .str("ts", &rfc3339(*ts))
            .finish(),
        Event::Presence(p) => presence_json(p),
        Event::Contact { user, state } => JsonLine::new("contact_update")
            .str("user", user.as_str())
            .opt_str("state", state.map(|s| s.name()))
            .finish(),
        Event::ServerError {
            code,
            text,
            retry_after_ms,
        } => JsonLine::new("server_error")
            .str("code", code.name())
            .str("text", text)
            .opt_u64("retry_after_ms", retry_after_ms.map(u64::from))
            .finish(),
        Event::Disconnected { reason, .. } => disconnect_json(reason),
        Event::Reconnected(info) => JsonLine::new("reconnected")
            .str("user", info.user.as_str())
            .str("server", &info.server.key())
            .finish(),
        Event::Ticket { .. } => return None,
    })
}

/// An event for people; `None` for events the command does not print.
pub fn event_human(e: &Event) -> Option<String> {
    Some(match e {
        Event::Message(m) => message_human(m),
        Event::Receipt { id, user, device_id } => format!("(message {} delivered to {user}, device {device_id})", id.0),
        Event::Typing {
            from,
            to: Target::Room(room),
        } => format!("({from} is typing in {room}…)"),
        Event::Typing { from, .. } => format!("({from} is typing…)"),
        Event::Room {
            room,
            kind,
            user,
            by,
            topic,
            ts,
        } => {
            let by = by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default();
            let what = match kind {
                RoomEventKind::Join => format!("{user} joined"),
                RoomEventKind::Leave => format!("{user} left"),
                RoomEventKind::Topic => match topic {
                    Some(t) => format!("{user} set the topic: {}", clean(t)),
                    None => format!("{user} cleared the topic"),
                },
                RoomEventKind::Kick => format!("{user} was kicked{by}"),
                RoomEventKind::Ban => format!("{user} was banned{by}"),
                RoomEventKind::Unban => format!("{user} was unbanned{by}"),
                RoomEventKind::Op => format!("{user} was made an operator{by}"),
                RoomEventKind::Deop => format!("{user} is no longer an operator{by}"),
            };
            format!("[{}] {room}: {what}", human(*ts))
        }
        Event::Presence(p) => presence_human(p),
        Event::Contact { user, state } => match state {
            Some(s) => format!("(contact {user}: {s})"),
            None => format!("(contact {user}: removed)"),
        },
        Event::ServerError { code, text, .. } => format!("(server: {code}: {})", clean(text)),
        Event::Disconnected { reason, reconnecting } => {
            let again = if *reconnecting { "; reconnecting" } else { "" };
            format!("(disconnected: {}{again})", clean(&reason.to_string()))
        }
        Event::Reconnected(info) => format!("(reconnected to {})", info.server),
        Event::Ticket { .. } => return None,
    })
}

pub fn presence_json(p: &PresenceInfo) -> String {
    JsonLine::new("presence")
        .str("user", p.user.as_str())
        .str("status", p.presence.name())
        .opt_str("text", p.text.as_deref())
        .finish()
}

pub fn presence_human(p: &PresenceInfo) -> String {
    match &p.text {
        Some(t) => format!("{} is {}: {}", p.user, p.presence, clean(t)),
        None => format!("{} is {}", p.user, p.presence),
    }
}

pub fn whoami_json(s: &SessionInfo) -> String {
    JsonLine::new("whoami")
        .str("user", s.user.as_str())
        .str("server", &s.server.key())
        .u64("device", s.device_id.get())
        .opt_str("fingerprint", s.host_fingerprint.as_deref())
        .finish()
}

pub fn whoami_human(s: &SessionInfo) -> String {
    let fp = s.host_fingerprint.as_deref().unwrap_or("unknown");
    format!("{} on {} (device {}); server key {fp}", s.user, s.server, s.device_id)
}

pub fn device_json(d: &DeviceInfo) -> String {
    JsonLine::new("device")
        .u64("id", d.id.get())
        .str("name", &d.name)
        .str("last_seen", &rfc3339(d.last_seen))
        .bool("current", d.current)
        .finish()
}

pub fn device_human(d: &DeviceInfo) -> String {
    let this = if d.current { "  (this device)" } else { "" };
    format!(
        "{:>16}  {}  last seen {}{this}",
        d.id.get(),
        clean(&d.name),
        human(d.last_seen)
    )
}

pub fn room_json(r: &RoomInfo) -> String {
    JsonLine::new("room")
        .str("room", r.room.as_str())
        .u64("members", r.members.into())
        .opt_str("topic", r.topic.as_deref())
        .bool("joined", r.joined)
        .finish()
}

pub fn room_human(r: &RoomInfo) -> String {
    let joined = if r.joined { "joined" } else { "      " };
    let topic = r
        .topic
        .as_deref()
        .map(|t| format!("  {}", clean(t)))
        .unwrap_or_default();
    let plural = if r.members == 1 { "" } else { "s" };
    format!("{}  {joined}  {} member{plural}{topic}", r.room, r.members)
}

pub fn member_json(room: &str, m: &Member) -> String {
    JsonLine::new("member")
        .str("room", room)
        .str("user", m.user.as_str())
        .str("role", m.role.name())
        .bool("online", m.online)
        .finish()
}

pub fn member_human(m: &Member) -> String {
    let online = if m.online { "online" } else { "offline" };
    format!("{}  {}  {online}", m.user, m.role)
}

pub fn contact_json(c: &Contact) -> String {
    JsonLine::new("contact")
        .str("user", c.user.as_str())
        .str("state", c.state.name())
        .str("status", c.presence.name())
        .opt_str("text", c.text.as_deref())
        .finish()
}

pub fn contact_human(c: &Contact) -> String {
    let text = c.text.as_deref().map(|t| format!(": {}", clean(t))).unwrap_or_default();
    format!("{}  {}  {}{text}", c.user, c.state, c.presence)
}

pub fn topic_json(room: &str, topic: Option<&str>) -> String {
    JsonLine::new("topic")
        .str("room", room)
        .opt_str("topic", topic)
        .finish()
}

pub fn ok_json(command: &str) -> String {
    JsonLine::new("ok").str("command", command).finish()
}

pub fn key_json(path: Option<&str>, key: &RsaSigner) -> String {
    JsonLine::new("key")
        .opt_str("path", path)
        .str("fingerprint", &key.fingerprint())
        .finish()
}

/// The error object on stderr in JSON mode.
pub fn error_json(e: &CliError) -> String {
    JsonLine::new("error")
        .u64("exit", e.exit_code().into())
        .str("code", e.code_name())
        .str("message", &e.to_string())
        .opt_u64("retry_after_ms", e.retry_after_ms().map(u64::from))
        .finish()
}

/// Writes lines to stdout, as JSON or for people.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Writes one line and flushes it, so a consumer sees it (and an acknowledgement after
    /// it is only sent once it is out). A closed stdout becomes [`CliError::BrokenPipe`].
    pub fn line(&self, line: &str) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(CliError::output)
    }

    /// Prints the JSON form or the human form.
    pub fn emit(&self, json: impl FnOnce() -> String, human: impl FnOnce() -> String) -> Result<(), CliError> {
        self.line(&if self.json { json() } else { human() })
    }

    pub fn ok(&self, command: &str, human: impl FnOnce() -> String) -> Result<(), CliError> {
        self.emit(|| ok_json(command), human)
    }

    pub fn event(&self, e: &Event) -> Result<(), CliError> {
        let line = if self.json { event_json(e) } else { event_human(e) };
        match line {
            Some(l) => self.line(&l),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_client::ServerAddr;
    use im_proto::msg::{CloseReason, ContactState, DeviceId, ErrorCode, MessageId, Presence, Role, Timestamp};
    use im_proto::{RoomName, UserName};

    fn user(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    fn msg(to: &str, action: bool) -> ChatMessage {
        ChatMessage {
            id: MessageId(1001),
            ts: Timestamp(1_795_687_201_000),
            from: user("alice"),
            to: Target::parse(to).unwrap(),
            client_id: "c-1".into(),
            action,
            text: "hi \"bob\"".into(),
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            message_json(&msg("bob", false)),
            r##"{"type":"message","id":1001,"ts":"2026-11-26T10:00:01.000Z","from":"alice","to":"bob","text":"hi \"bob\"","action":false,"client_id":"c-1"}"##
        );
        assert_eq!(
            message_json(&msg("#rust", true)),
            r##"{"type":"message","id":1001,"ts":"2026-11-26T10:00:01.000Z","from":"alice","room":"#rust","text":"hi \"bob\"","action":true,"client_id":"c-1"}"##
        );
        assert_eq!(
            message_human(&msg("bob", false)),
            "[2026-11-26 10:00:01] alice → bob: hi \"bob\""
        );
        assert_eq!(
            message_human(&msg("#rust", true)),
            "[2026-11-26 10:00:01] alice → #rust: * alice hi \"bob\""
        );
    }

    #[test]
    fn sent_and_disconnect() {
        let s = Sent {
            id: MessageId(7),
            ts: Timestamp(0),
            client_id: "abc".into(),
        };
        assert_eq!(
            sent_json(&s),
            r##"{"type":"sent","id":7,"ts":"1970-01-01T00:00:00.000Z","client_id":"abc"}"##
        );
        let d = Disconnect::Closed(CloseReason::new(ErrorCode::ShuttingDown, "restart"));
        assert_eq!(
            disconnect_json(&d),
            r##"{"type":"disconnect","reason":"shutting_down","text":"restart"}"##
        );
        let d = Disconnect::Lost("reset".into());
        assert_eq!(
            disconnect_json(&d),
            r##"{"type":"disconnect","reason":"connection_lost","text":"reset"}"##
        );
    }

    #[test]
    fn events() {
        let j = |e: Event| event_json(&e).unwrap();
        assert_eq!(
            j(Event::Receipt {
                id: MessageId(5),
                user: user("bob"),
                device_id: DeviceId::new(77).unwrap()
            }),
            r##"{"type":"receipt","id":5,"user":"bob","device":77}"##
        );
        assert_eq!(
            j(Event::Typing {
                from: user("bob"),
                to: Target::parse("alice").unwrap()
            }),
            r##"{"type":"typing","from":"bob","to":"alice"}"##
        );
        assert_eq!(
            j(Event::Typing {
                from: user("bob"),
                to: Target::parse("#rust").unwrap()
            }),
            r##"{"type":"typing","from":"bob","room":"#rust"}"##
        );
        let room = RoomName::parse("#rust").unwrap();
        assert_eq!(
            j(Event::Room {
                room: room.clone(),
                kind: RoomEventKind::Kick,
                user: user("bob"),
                by: Some(user("alice")),
                topic: None,
                ts: Timestamp(0)
            }),
            r##"{"type":"room_event","room":"#rust","event":"kick","user":"bob","by":"alice","topic":null,"ts":"1970-01-01T00:00:00.000Z"}"##
        );
        assert_eq!(
            j(Event::Room {
                room,
                kind: RoomEventKind::Topic,
                user: user("bob"),
                by: None,
                topic: Some("news".into()),
                ts: Timestamp(0)
            }),
            r##"{"type":"room_event","room":"#rust","event":"topic","user":"bob","by":null,"topic":"news","ts":"1970-01-01T00:00:00.000Z"}"##
        );
        assert_eq!(
            j(Event::Presence(PresenceInfo {
                user: user("bob"),
                presence: Presence::Away,
                text: Some("lunch".into())
            })),
            r##"{"type":"presence","user":"bob","status":"away","text":"lunch"}"##
        );
        assert_eq!(
            j(Event::Contact {
                user: user("bob"),
                state: Some(ContactState::Incoming)
            }),
            r##"{"type":"contact_update","user":"bob","state":"incoming"}"##
        );
        assert_eq!(
            j(Event::Contact {
                user: user("bob"),
                state: None
            }),
            r##"{"type":"contact_update","user":"bob","state":null}"##
        );
        assert_eq!(
            j(Event::ServerError {
                code: ErrorCode::RateLimited,
                text: "slow".into(),
                retry_after_ms: Some(10)
            }),
            r##"{"type":"server_error","code":"rate_limited","text":"slow","retry_after_ms":10}"##
        );
        assert_eq!(
            j(Event::Disconnected {
                reason: Disconnect::Lost("eof".into()),
                reconnecting: false
            }),
            r##"{"type":"disconnect","reason":"connection_lost","text":"eof"}"##
        );
        assert!(
            event_json(&Event::Ticket {
                expires_at: Timestamp(0)
            })
            .is_none()
        );
        assert_eq!(
            event_human(&Event::Typing {
                from: user("bob"),
                to: Target::parse("#rust").unwrap()
            })
            .unwrap(),
            "(bob is typing in #rust…)"
        );
    }

    #[test]
    fn listings() {
        let s = SessionInfo {
            server: ServerAddr::parse("chat.example.org").unwrap(),
            user: user("alice"),
            device_id: DeviceId::new(42).unwrap(),
            server_time: Timestamp(0),
            login: im_client::LoginKind::Ticket,
            host_fingerprint: Some("SHA256:abc".into()),
        };
        assert_eq!(
            whoami_json(&s),
            r##"{"type":"whoami","user":"alice","server":"chat.example.org:7447","device":42,"fingerprint":"SHA256:abc"}"##
        );
        let d = DeviceInfo {
            id: DeviceId::new(42).unwrap(),
            name: "laptop".into(),
            last_seen: Timestamp(1000),
            current: true,
        };
        assert_eq!(
            device_json(&d),
            r##"{"type":"device","id":42,"name":"laptop","last_seen":"1970-01-01T00:00:01.000Z","current":true}"##
        );
        let r = RoomInfo {
            room: RoomName::parse("#rust").unwrap(),
            members: 3,
            topic: None,
            joined: true,
        };
        assert_eq!(
            room_json(&r),
            r##"{"type":"room","room":"#rust","members":3,"topic":null,"joined":true}"##
        );
        let m = Member {
            user: user("bob"),
            role: Role::Operator,
            online: false,
        };
        assert_eq!(
            member_json("#rust", &m),
            r##"{"type":"member","room":"#rust","user":"bob","role":"operator","online":false}"##
        );
        let c = Contact {
            user: user("bob"),
            state: ContactState::Accepted,
            presence: Presence::Busy,
            text: None,
        };
        assert_eq!(
            contact_json(&c),
            r##"{"type":"contact","user":"bob","state":"accepted","status":"busy","text":null}"##
        );
        assert_eq!(
            topic_json("#rust", Some("t")),
            r##"{"type":"topic","room":"#rust","topic":"t"}"##
        );
        assert_eq!(ok_json("join"), r##"{"type":"ok","command":"join"}"##);
    }

    #[test]
    fn errors() {
        let e = CliError::Client(im_client::Error::Server {
            code: ErrorCode::RateLimited,
            text: "slow down".into(),
            retry_after_ms: Some(1500),
        });
        assert_eq!(
            error_json(&e),
            r##"{"type":"error","exit":7,"code":"rate_limited","message":"rate_limited: slow down (retry after 1500 ms)","retry_after_ms":1500}"##
        );
        let e = CliError::Client(im_client::Error::Usage("no server".into()));
        assert_eq!(
            error_json(&e),
            r##"{"type":"error","exit":2,"code":"usage","message":"no server","retry_after_ms":null}"##
        );
    }

    #[test]
    fn terminal_text_is_neutralised() {
        assert_eq!(clean("a\u{1b}[2Jb"), "a\u{fffd}[2Jb");
        assert_eq!(clean("one\ntwo\r"), "one\n    two");
        assert_eq!(clean("x\u{202e}y\u{9b}"), "x\u{fffd}y\u{fffd}");
    }
}
