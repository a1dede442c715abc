//! Slash commands: what the input line means when it starts with `/`.
//!
//! Parsing is pure and checks everything it can locally (names, presence values, missing
//! arguments), so a typo gets an immediate, specific error instead of a round trip. `//text`
//! sends `/text` as a message, as in irssi.

use im_client::Moderation;
use im_proto::msg::Presence;
use im_proto::name::NameError;
use im_proto::{RoomName, Target, UserName};

/// One line of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text for the current conversation.
    Text(String),
    Command(Command),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactOp {
    Add,
    Accept,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Join(RoomName),
    /// Leave a room (the current one without an argument); closes a direct conversation.
    Part(Option<RoomName>),
    /// Open a conversation, and send `text` to it if given.
    Msg {
        to: Target,
        text: Option<String>,
    },
    Me(String),
    /// Ask for the topic, or set it (`/topic -` sets the empty text, which clears it).
    Topic(Option<String>),
    Names,
    Status {
        presence: Presence,
        text: Option<String>,
    },
    Contact(ContactOp, UserName),
    Block(UserName),
    Unblock(UserName),
    Moderate(Moderation, UserName),
    History,
    Fingerprint,
    Devices,
    Help,
    Quit,
}

/// A command, its arguments and what it does: for `/help` and Tab completion.
pub struct CommandHelp {
    pub name: &'static str,
    pub args: &'static str,
    pub help: &'static str,
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "join",
        args: "#room",
        help: "join a room (it is created if it does not exist)",
    },
    CommandHelp {
        name: "part",
        args: "[#room]",
        help: "leave a room; in a direct conversation, close it",
    },
    CommandHelp {
        name: "msg",
        args: "USER [TEXT]",
        help: "open a direct conversation, sending TEXT if given",
    },
    CommandHelp {
        name: "me",
        args: "TEXT",
        help: "send an action: * you TEXT",
    },
    CommandHelp {
        name: "topic",
        args: "[TEXT]",
        help: "show the room's topic, or set it ('/topic -' clears it)",
    },
    CommandHelp {
        name: "names",
        args: "",
        help: "list the room's members",
    },
    CommandHelp {
        name: "status",
        args: "online|away|busy|offline [TEXT]",
        help: "set your presence and status text",
    },
    CommandHelp {
        name: "contact",
        args: "add|accept|remove USER",
        help: "ask, accept, or remove a contact",
    },
    CommandHelp {
        name: "block",
        args: "USER",
        help: "drop everything from USER",
    },
    CommandHelp {
        name: "unblock",
        args: "USER",
        help: "stop blocking USER",
    },
    CommandHelp {
        name: "op",
        args: "USER",
        help: "make USER an operator of this room",
    },
    CommandHelp {
        name: "deop",
        args: "USER",
        help: "take operator status from USER",
    },
    CommandHelp {
        name: "kick",
        args: "USER",
        help: "remove USER from this room",
    },
    CommandHelp {
        name: "ban",
        args: "USER",
        help: "remove USER and keep them out",
    },
    CommandHelp {
        name: "unban",
        args: "USER",
        help: "let USER join again",
    },
    CommandHelp {
        name: "history",
        args: "",
        help: "load older messages (scrolling past the top does too)",
    },
    CommandHelp {
        name: "fingerprint",
        args: "",
        help: "show the server's host key and your user key fingerprints",
    },
    CommandHelp {
        name: "devices",
        args: "",
        help: "list your devices",
    },
    CommandHelp {
        name: "help",
        args: "",
        help: "this list, and the keys",
    },
    CommandHelp {
        name: "quit",
        args: "",
        help: "leave im-tui",
    },
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command /{0} (see /help)")]
    Unknown(String),
    #[error("usage: /{name} {args}", args = usage(name))]
    Usage { name: &'static str },
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("unknown presence {0:?}: online, away, busy or offline")]
    Presence(String),
}

fn usage(name: &str) -> &'static str {
    COMMANDS.iter().find(|c| c.name == name).map_or("", |c| c.args)
}

/// Splits off the first word.
fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// The remaining text, `None` when blank.
fn text(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Exactly one user name argument.
fn one_user(name: &'static str, args: &str) -> Result<UserName, CommandError> {
    match word(args) {
        ("", _) => Err(CommandError::Usage { name }),
        (u, "") => Ok(UserName::parse(u)?),
        _ => Err(CommandError::Usage { name }),
    }
}

/// Parses a line of input. Blank lines are `Text("")`; the caller ignores them.
pub fn parse(line: &str) -> Result<Input, CommandError> {
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Input::Text(line.to_owned()));
    };
    if rest.starts_with('/') {
        return Ok(Input::Text(rest.to_owned()));
    }
    let (name, args) = word(rest);
    let cmd = match name.to_ascii_lowercase().as_str() {
        "join" | "j" => match word(args) {
            ("", _) => return Err(CommandError::Usage { name: "join" }),
            (room, _) => Command::Join(RoomName::parse(&with_hash(room))?),
        },
        "part" | "leave" | "close" => match word(args) {
            ("", _) => Command::Part(None),
            (room, _) => Command::Part(Some(RoomName::parse(&with_hash(room))?)),
        },
        "msg" | "query" => match word(args) {
            ("", _) => return Err(CommandError::Usage { name: "msg" }),
            (to, text_) => Command::Msg {
                to: Target::parse(to)?,
                text: text(text_),
            },
        },
        "me" => Command::Me(text(args).ok_or(CommandError::Usage { name: "me" })?),
        "topic" => Command::Topic(match args.trim() {
            "" => None,
            "-" => Some(String::new()),
            t => Some(t.to_owned()),
        }),
        "names" | "who" => Command::Names,
        "away" => Command::Status {
            presence: Presence::Away,
            text: text(args),
        },
        "status" => match word(args) {
            ("", _) => return Err(CommandError::Usage { name: "status" }),
            (p, t) => Command::Status {
                presence: Presence::from_name(&p.to_ascii_lowercase())
                    .ok_or_else(|| CommandError::Presence(p.to_owned()))?,
                text: text(t),
            },
        },
        "contact" => {
            let (op, user) = word(args);
            let op = match op.to_ascii_lowercase().as_str() {
                "add" => ContactOp::Add,
                "accept" => ContactOp::Accept,
                "remove" | "del" => ContactOp::Remove,
                _ => return Err(CommandError::Usage { name: "contact" }),
            };
            let user = one_user("contact", user).map_err(|e| match e {
                CommandError::Name(n) => CommandError::Name(n),
                _ => CommandError::Usage { name: "contact" },
            })?;
            Command::Contact(op, user)
        }
        "block" => Command::Block(one_user("block", args)?),
        "unblock" => Command::Unblock(one_user("unblock", args)?),
        "op" => Command::Moderate(Moderation::Op, one_user("op", args)?),
        "deop" => Command::Moderate(Moderation::Deop, one_user("deop", args)?),
        "kick" => Command::Moderate(Moderation::Kick, one_user("kick", args)?),
        "ban" => Command::Moderate(Moderation::Ban, one_user("ban", args)?),
        "unban" => Command::Moderate(Moderation::Unban, one_user("unban", args)?),
        "history" => Command::History,
        "fingerprint" => Command::Fingerprint,
        "devices" => Command::Devices,
        "help" => Command::Help,
        "quit" | "exit" => Command::Quit,
        _ => return Err(CommandError::Unknown(name.chars().take(32).collect())),
    };
    Ok(Input::Command(cmd))
}

/// `/join rust` means `#rust`.
fn with_hash(room: &str) -> String {
    if room.starts_with('#') {
        room.to_owned()
    } else {
        format!("#{room}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        match parse(line) {
            Ok(Input::Command(c)) => c,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    fn user(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    #[test]
    fn plain_text_and_escaped_slashes() {
        assert_eq!(parse("hello /there").unwrap(), Input::Text("hello /there".into()));
        assert_eq!(parse("//etc/passwd").unwrap(), Input::Text("/etc/passwd".into()));
        assert_eq!(parse("").unwrap(), Input::Text(String::new()));
    }

    #[test]
    fn commands_with_arguments() {
        assert_eq!(cmd("/join #Rust"), Command::Join(RoomName::parse("#rust").unwrap()));
        assert_eq!(cmd("/join rust"), Command::Join(RoomName::parse("#rust").unwrap()));
        assert_eq!(cmd("/part"), Command::Part(None));
        assert_eq!(
            cmd("/msg Bob  hi there "),
            Command::Msg {
                to: Target::User(user("bob")),
                text: Some("hi there".into())
            }
        );
        assert_eq!(
            cmd("/msg bob"),
            Command::Msg {
                to: Target::User(user("bob")),
                text: None
            }
        );
        assert_eq!(cmd("/me waves"), Command::Me("waves".into()));
        assert_eq!(cmd("/topic"), Command::Topic(None));
        assert_eq!(cmd("/topic Rust talk"), Command::Topic(Some("Rust talk".into())));
        assert_eq!(cmd("/topic -"), Command::Topic(Some(String::new())));
        assert_eq!(
            cmd("/status away lunch, back at 2"),
            Command::Status {
                presence: Presence::Away,
                text: Some("lunch, back at 2".into())
            }
        );
        assert_eq!(
            cmd("/STATUS Online"),
            Command::Status {
                presence: Presence::Online,
                text: None
            }
        );
        assert_eq!(
            cmd("/contact accept carol"),
            Command::Contact(ContactOp::Accept, user("carol"))
        );
        assert_eq!(
            cmd("/kick mallory"),
            Command::Moderate(Moderation::Kick, user("mallory"))
        );
        assert_eq!(cmd("/ban mallory"), Command::Moderate(Moderation::Ban, user("mallory")));
        assert_eq!(cmd("/deop bob"), Command::Moderate(Moderation::Deop, user("bob")));
        for (line, c) in [
            ("/names", Command::Names),
            ("/history", Command::History),
            ("/fingerprint", Command::Fingerprint),
            ("/devices", Command::Devices),
            ("/help", Command::Help),
            ("/quit", Command::Quit),
        ] {
            assert_eq!(cmd(line), c);
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(err("/frobnicate x"), "unknown command /frobnicate (see /help)");
        assert_eq!(err("/join"), "usage: /join #room");
        assert!(
            err("/join #bad!").starts_with("room names are"),
            "{}",
            err("/join #bad!")
        );
        assert_eq!(err("/msg"), "usage: /msg USER [TEXT]");
        assert!(err("/msg b@d hi").starts_with("user names are"));
        assert_eq!(err("/me"), "usage: /me TEXT");
        assert_eq!(err("/status"), "usage: /status online|away|busy|offline [TEXT]");
        assert_eq!(
            err("/status sleepy"),
            "unknown presence \"sleepy\": online, away, busy or offline"
        );
        assert_eq!(err("/contact poke bob"), "usage: /contact add|accept|remove USER");
        assert_eq!(err("/contact add"), "usage: /contact add|accept|remove USER");
        assert_eq!(err("/kick"), "usage: /kick USER");
        assert_eq!(err("/kick a b"), "usage: /kick USER");
        assert_eq!(err("/block -x"), err("/block -x"));
        assert!(err("/block -x").starts_with("user names are"));
    }

    #[test]
    fn every_command_has_help_and_parses() {
        for c in COMMANDS {
            let line = format!("/{}", c.name);
            // Either it parses bare, or it asks for its arguments with its own usage line.
            if let Err(e) = parse(&line) {
                assert!(e.to_string().starts_with(&format!("usage: /{} ", c.name)), "{e}");
            }
        }
    }
}
