//! The `im-client` command: arguments (clap derive) and dispatch.
//!
//! # Layout
//! - `mod.rs` (this file): the argument types, with the help texts, and [`run`].
//! - `context`: resolving the home, server, user and credentials from options, environment
//!   and config; the terminal prompts; connecting.
//! - `account`: register, whoami, logout, passwd, keygen, key, devices, fingerprint.
//! - `messages`: send, listen, history.
//! - `rooms`: rooms, join, leave, members, topic, op, deop, kick, ban, unban.
//! - `social`: contacts, status, presence, block, unblock, blocked.
//! - `output`: JSON lines and human lines; `json`: the JSON writer; `time`: timestamps.
//! - `error`: the command's error type and its exit codes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod account;
mod context;
pub mod error;
mod json;
mod messages;
pub mod output;
mod rooms;
mod social;
mod time;

pub use context::Context;
use error::CliError;

const ABOUT: &str =
    "Command-line client of the im messenger: send and receive messages, manage your account, rooms and contacts.";

const AFTER_HELP: &str = "\
Examples:
  im-client --server chat.example.org --user alice register
  im-client send bob 'lunch at noon?'
  echo 'deploy finished' | im-client send '#ops'
  tail -f build.log | im-client send --lines '#ci'
  im-client listen --json
  im-client listen --count 1 --timeout 30
  im-client history bob --limit 20

Room names start with '#', which a shell reads as a comment: quote them ('#rust').

The first login (or register) remembers the server and user in the home's config, so later
commands need neither. Passwords are never taken from the command line: set IM_PASSWORD, use
--password-file, or type it at the prompt.

Environment: IM_HOME, IM_SERVER, IM_USER, IM_PASSWORD, IM_LOG (log filter, e.g. debug).

Exit codes:
  0  success (also `listen` ending at --timeout without --count)
  1  `listen` reached --timeout before --count messages
  2  usage error
  3  cannot connect, or the connection was lost
  4  authentication failed
  5  host key unknown (no terminal to ask) or changed
  6  refused: no such user or room, not allowed, too large
  7  rate-limited (the retry-after advice is on stderr)
  8  local error: home not writable, password or key file unreadable";

#[derive(Debug, Parser)]
#[command(name = "im-client", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, before or after the command name.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Folder holding config, known_hosts, keys, device id and tickets [default: the platform's folders]
    #[arg(long, global = true, value_name = "DIR", env = "IM_HOME")]
    pub home: Option<PathBuf>,
    /// Server to use; the port defaults to 7447 [default: from the config]
    #[arg(long, short = 's', global = true, value_name = "HOST:PORT", env = "IM_SERVER")]
    pub server: Option<String>,
    /// User name [default: from the config]
    #[arg(long, short = 'u', global = true, value_name = "NAME", env = "IM_USER")]
    pub user: Option<String>,
    /// Read the password from the first line of FILE (or set IM_PASSWORD)
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Log in with this RSA private key (PKCS#8 PEM) [default: the home's key, if any]
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Trust and pin the host key of a server seen for the first time, without asking
    #[arg(long, global = true)]
    pub accept_new: bool,
    /// Expect the server's host key to have this fingerprint (and pin it)
    #[arg(long, global = true, value_name = "SHA256:…")]
    pub trust_fingerprint: Option<String>,
    /// Print one JSON object per line (errors too, on stderr)
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account on the server and log this device in
    #[command(
        after_help = "Examples:\n  im-client --server chat.example.org:7447 --user alice register\n  IM_PASSWORD=… im-client -s chat.example.org -u bot register --accept-new"
    )]
    Register,
    /// Show who and where you are logged in
    Whoami,
    /// Log this device out: revoke its tickets on the server, delete the local one
    Logout,
    /// Change your password
    #[command(
        after_help = "The current password comes from IM_PASSWORD, --password-file or a prompt; the new one\nfrom IM_NEW_PASSWORD, --new-password-file or a prompt (asked twice)."
    )]
    Passwd {
        /// Read the new password from the first line of FILE
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Create an RSA user key for logging in without a password
    #[command(
        after_help = "Examples:\n  im-client keygen                 # writes the home's user_key.pem\n  im-client key add                # attaches it to your account\n  im-client keygen --out bot.pem && im-client --key bot.pem key add"
    )]
    Keygen {
        /// Key size in bits
        #[arg(long, default_value_t = 3072, value_parser = clap::value_parser!(u16).range(2048..=8192))]
        bits: u16,
        /// Where to write the private key [default: user_key.pem in the home]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Attach or remove a user key (the one of --key, or the home's)
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// List your devices, or revoke one
    #[command(after_help = "Examples:\n  im-client devices\n  im-client devices revoke 4503599627370497")]
    Devices {
        #[command(subcommand)]
        action: Option<DevicesAction>,
    },
    /// Show the server's host-key fingerprint (the pinned one, or fetched if not pinned)
    Fingerprint,
    /// Send a message to a user or a '#room'
    #[command(after_help = "\
Examples:
  im-client send bob 'see you at 6'
  im-client send --me '#rust' waves
  echo 'backup done' | im-client send ops-team
  printf 'a\\nb\\n' | im-client send --lines '#ci'      # two messages
  im-client send --client-id build-1842 '#ci' 'build 1842 passed'   # safe to retry

Exits 0 only once the server has stored every message; rerunning with the same --client-id
never delivers a message twice.")]
    Send(SendArgs),
    /// Print messages: first those this device missed, then live ones
    #[command(after_help = "\
Examples:
  im-client listen
  im-client listen --json | jq -r 'select(.type==\"message\") | .text'
  im-client listen --count 1 --timeout 60    # wait for one message, exit 1 if none came

Each printed message is acknowledged, so it is not printed again by the next listen.
Receipts, typing notices, room events and presence changes are printed as they come;
only messages count toward --count.")]
    Listen(ListenArgs),
    /// Show the messages exchanged with a user or in a '#room'
    #[command(
        after_help = "Examples:\n  im-client history bob\n  im-client history '#rust' --limit 100 --before 12345"
    )]
    History(HistoryArgs),
    /// List rooms (those you joined, and others you can join)
    Rooms,
    /// Join a room, creating it if it does not exist
    #[command(after_help = "Example:\n  im-client join '#rust'     (quote the '#': a shell reads it as a comment)")]
    Join { room: String },
    /// Leave a room
    Leave { room: String },
    /// List the members of a room
    Members { room: String },
    /// Show a room's topic, or set it (operators; '' clears it)
    #[command(
        after_help = "Examples:\n  im-client topic '#rust'\n  im-client topic '#rust' 'Rust 2024 edition talk on Friday'\n  im-client topic '#rust' ''"
    )]
    Topic {
        room: String,
        /// The new topic
        text: Vec<String>,
    },
    /// Make a member an operator (operators only)
    Op(RoomUser),
    /// Take a member's operator rights (operators only)
    Deop(RoomUser),
    /// Remove a member from a room (operators only)
    Kick(RoomUser),
    /// Remove a member and keep them out (operators only)
    Ban(RoomUser),
    /// Let a banned user join again (operators only)
    Unban(RoomUser),
    /// List your contacts, or add, accept or remove one
    #[command(
        after_help = "Examples:\n  im-client contacts\n  im-client contacts add bob\n  im-client contacts accept carol"
    )]
    Contacts {
        #[command(subcommand)]
        action: Option<ContactsAction>,
    },
    /// Set your presence, shown to your contacts
    #[command(after_help = "Examples:\n  im-client status away --text 'back at 2'\n  im-client status online")]
    Status {
        status: StatusArg,
        /// A status text
        #[arg(long)]
        text: Option<String>,
    },
    /// Show the presence of users (default: your contacts)
    Presence { names: Vec<String> },
    /// Drop everything from a user, without telling them
    Block { name: String },
    /// Stop blocking a user
    Unblock { name: String },
    /// List the users you block
    Blocked,
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Attach the public key to your account
    Add,
    /// Remove it from your account
    Remove,
}

#[derive(Debug, Subcommand)]
pub enum DevicesAction {
    /// Revoke a device: it is logged out everywhere and must log in again
    Revoke { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum ContactsAction {
    /// Ask a user to become a contact
    Add { name: String },
    /// Accept a user's request
    Accept { name: String },
    /// Remove a contact, or withdraw or decline a request
    Remove { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Online,
    Away,
    Busy,
    Offline,
}

#[derive(Debug, Args)]
pub struct RoomUser {
    pub room: String,
    #[arg(id = "member", value_name = "USER")] // not `user`: clap would overwrite the global --user with it
    pub user: String,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// A user name, or a room ('#room')
    #[arg(value_name = "TO")]
    pub to: String,
    /// The message; read from stdin when absent
    #[arg(value_name = "TEXT")]
    pub text: Vec<String>,
    /// Send each line of stdin as its own message (empty lines are skipped)
    #[arg(long, conflicts_with = "text")]
    pub lines: bool,
    /// Deduplication id, for safe retries across runs (with --lines: ID-1, ID-2, …) [default: random]
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Send as an action ("/me waves")
    #[arg(long)]
    pub me: bool,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Exit 0 after this many messages
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds: exit 0, or 1 if --count messages had not arrived
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// A user name, or a room ('#room')
    pub peer: String,
    /// How many messages (1 to 500)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub limit: u16,
    /// Only messages older than this message id
    #[arg(long, value_name = "ID")]
    pub before: Option<u64>,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1e9).contains(&v) => Ok(v),
        _ => Err("expected a number of seconds".into()),
    }
}

/// Runs the command; returns its exit code (errors carry theirs).
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    let ctx = Context::new(cli.global)?;
    match cli.command {
        Command::Register => account::register(&ctx).await,
        Command::Whoami => account::whoami(&ctx).await,
        Command::Logout => account::logout(&ctx).await,
        Command::Passwd { new_password_file } => account::passwd(&ctx, new_password_file).await,
        Command::Keygen { bits, out } => account::keygen(&ctx, bits, out).await,
        Command::Key { action } => account::key(&ctx, action).await,
        Command::Devices { action } => account::devices(&ctx, action).await,
        Command::Fingerprint => account::fingerprint(&ctx).await,
        Command::Send(args) => messages::send(&ctx, args).await,
        Command::Listen(args) => messages::listen(&ctx, args).await,
        Command::History(args) => messages::history(&ctx, args).await,
        Command::Rooms => rooms::rooms(&ctx).await,
        Command::Join { room } => rooms::join(&ctx, &room).await,
        Command::Leave { room } => rooms::leave(&ctx, &room).await,
        Command::Members { room } => rooms::members(&ctx, &room).await,
        Command::Topic { room, text } => rooms::topic(&ctx, &room, text).await,
        Command::Op(a) => rooms::moderate(&ctx, im_client::Moderation::Op, a).await,
        Command::Deop(a) => rooms::moderate(&ctx, im_client::Moderation::Deop, a).await,
        Command::Kick(a) => rooms::moderate(&ctx, im_client::Moderation::Kick, a).await,
        Command::Ban(a) => rooms::moderate(&ctx, im_client::Moderation::Ban, a).await,
        Command::Unban(a) => rooms::moderate(&ctx, im_client::Moderation::Unban, a).await,
        Command::Contacts { action } => social::contacts(&ctx, action).await,
        Command::Status { status, text } => social::status(&ctx, status, text).await,
        Command::Presence { names } => social::presence(&ctx, names).await,
        Command::Block { name } => social::block(&ctx, &name, true).await,
        Command::Unblock { name } => social::block(&ctx, &name, false).await,
        Command::Blocked => social::blocked(&ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("im-client").chain(args.iter().copied()))
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        for args in [
            &["--json", "--server", "h:1", "--user", "alice", "whoami"][..],
            &["whoami", "--json", "--server", "h:1", "--user", "alice"],
            &["--json", "whoami", "-s", "h:1", "-u", "alice"],
        ] {
            let cli = parse(args).unwrap();
            assert!(cli.global.json, "{args:?}");
            assert_eq!(cli.global.server.as_deref(), Some("h:1"));
            assert_eq!(cli.global.user.as_deref(), Some("alice"));
            assert!(matches!(cli.command, Command::Whoami));
        }
        let cli = parse(&["send", "bob", "hi", "--accept-new", "--trust-fingerprint", "SHA256:x"]).unwrap();
        assert!(cli.global.accept_new);
        assert_eq!(cli.global.trust_fingerprint.as_deref(), Some("SHA256:x"));
        let cli = parse(&["devices", "revoke", "7", "--json"]).unwrap();
        assert!(cli.global.json);
        assert!(matches!(
            cli.command,
            Command::Devices {
                action: Some(DevicesAction::Revoke { id: 7 })
            }
        ));
    }

    #[test]
    fn send_text_comes_from_arguments_or_stdin() {
        let Command::Send(a) = parse(&["send", "bob", "hello", "there"]).unwrap().command else {
            panic!()
        };
        assert_eq!(
            (a.to.as_str(), a.text, a.lines),
            ("bob", vec!["hello".to_owned(), "there".to_owned()], false)
        );
        let Command::Send(a) = parse(&["send", "#rust"]).unwrap().command else {
            panic!()
        };
        assert!(a.text.is_empty(), "no text: read stdin");
        let Command::Send(a) = parse(&["send", "--lines", "--me", "--client-id", "x1", "#rust"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(a.lines && a.me && a.text.is_empty());
        assert_eq!(a.client_id.as_deref(), Some("x1"));
        // Text that looks like a flag, after `--`.
        let Command::Send(a) = parse(&["send", "bob", "--", "--not-a-flag"]).unwrap().command else {
            panic!()
        };
        assert_eq!(a.text, ["--not-a-flag"]);
        // --lines takes its text from stdin only.
        assert_eq!(parse(&["send", "--lines", "bob", "hi"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &["frobnicate"][..],
            &["send"],
            &["history", "bob", "--limit", "0"],
            &["listen", "--timeout", "soon"],
            &["keygen", "--bits", "1024"],
            &["status", "sleepy"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn listen_and_history_options() {
        let Command::Listen(a) = parse(&["listen", "--count", "2", "--timeout", "0.5"]).unwrap().command else {
            panic!()
        };
        assert_eq!((a.count, a.timeout), (Some(2), Some(0.5)));
        let Command::History(a) = parse(&["history", "#rust", "--before", "99"]).unwrap().command else {
            panic!()
        };
        assert_eq!((a.peer.as_str(), a.limit, a.before), ("#rust", 50, Some(99)));
    }

    #[test]
    fn help_teaches() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        Cli::command().debug_assert();
        let help = cmd.render_long_help().to_string();
        assert!(
            help.contains("Examples:") && help.contains("'#rust'") && help.contains("Exit codes:"),
            "{help}"
        );
        for sub in ["send", "listen", "history", "join", "register"] {
            let help = cmd.find_subcommand_mut(sub).unwrap().render_long_help().to_string();
            assert!(help.contains("Example"), "{sub}: {help}");
        }
    }
}
