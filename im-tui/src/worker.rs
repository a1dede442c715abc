//! The network worker: the one task that talks to the server, so that the UI never waits on
//! the network (iamb's `worker.rs`). The UI sends it [`Request`]s; it sends back
//! [`NetEvent`]s, which the event loop turns into actions.
//!
//! ```text
//!  App::update ──Effect::Request──▶ worker ──▶ im_client::Client (requests run as tasks)
//!        ▲                            │  ◀── im_client::Events (pushes, reconnections)
//!        └──────Action::Net(NetEvent)─┘
//! ```
//!
//! Logging in may need a person: a password, or trust in an unknown host key. The library
//! asks through callbacks that run on a blocking thread; here they send the question to the
//! UI as a [`NetEvent`] and block until the UI's [`Answer`] comes back on a plain channel.
//! Only one question is ever open at a time, because the library asks in sequence.
//!
//! Messages are sent in order by one "outbox" task that waits for each `Sent` before sending
//! the next: requests as tasks could reach the server in any order, and a chat must not
//! reorder what someone typed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use im_client::{
    Backoff, Client, ConnectOptions, Credentials, Error, Event, Events, HistoryPage, Home, HostKeyPolicy, Moderation,
    PasswordSource, Sent, ServerAddr, SessionInfo, UnknownHost,
};
use im_proto::hostkey::RsaSigner;
use im_proto::msg::{Contact, DeviceInfo, ErrorCode, Member, MessageId, Password, Presence, RoomInfo};
use im_proto::{RoomName, Target, UserName};
use tokio::sync::mpsc;

use crate::commands::ContactOp;

/// The first wait before retrying a login that failed for a transient reason ...
pub const LOGIN_RETRY_INITIAL: Duration = Duration::from_millis(500);
/// ... doubling up to this.
pub const LOGIN_RETRY_MAX: Duration = Duration::from_secs(30);
/// A history page: enough to fill a tall terminal, small enough to come at once.
pub const HISTORY_PAGE: u16 = 100;
/// How often a rate-limited message is retried (after the server's advised wait) before it
/// is reported as not sent.
pub const SEND_RATE_LIMIT_RETRIES: u32 = 3;

/// Who to log in as, and whether to create the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPlan {
    pub server: ServerAddr,
    pub user: UserName,
    pub register: bool,
}

/// What the worker needs besides the plan; all of it read before the UI starts.
#[derive(Clone)]
pub struct WorkerConfig {
    pub home: Home,
    pub accept_new: bool,
    pub trust_fingerprint: Option<String>,
    /// From `IM_PASSWORD` or `--password-file`; else the UI asks.
    pub password: Option<Password>,
    /// The home's user key, if there is one.
    pub key: Option<Arc<RsaSigner>>,
    pub device_name: String,
}

/// Why a page of history is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    /// The newest page, on opening a conversation.
    Open,
    /// The page before the oldest shown (`/history`, scrolling past the top).
    Older,
    /// What came after the newest shown, after a reconnection.
    CatchUp,
}

/// Why the topic is asked for or set, which decides what the answer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicWhy {
    /// `/topic`: show it, or say there is none.
    Asked,
    /// `/topic TEXT`: the room event shows the change.
    Set,
    /// Just joined: show it if there is one.
    Joined,
}

/// What the UI asks of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Send {
        to: Target,
        text: String,
        client_id: String,
        action: bool,
    },
    History {
        with: Target,
        kind: HistoryKind,
        before: Option<MessageId>,
        after: Option<MessageId>,
    },
    Ack(MessageId),
    Typing(Target),
    Join(RoomName),
    Leave(RoomName),
    Topic {
        room: RoomName,
        set: Option<String>,
        why: TopicWhy,
    },
    Names(RoomName),
    Rooms,
    Contacts,
    SetPresence {
        presence: Presence,
        text: Option<String>,
    },
    Contact(ContactOp, UserName),
    Block(UserName),
    Unblock(UserName),
    Moderate(Moderation, RoomName, UserName),
    Devices,
    Fingerprint,
    /// Close the connection cleanly (acks written, Close sent) and stop.
    Quit,
}

/// The UI's answer to a question the login asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `None`: the person declined to give one.
    Password(Option<Password>),
    TrustHost(bool),
}

/// A failed request, as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub text: String,
    /// The connection failed, not the request: the same request may work once reconnected.
    pub connection: bool,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let connection = matches!(
            e,
            Error::ConnectionLost(_)
                | Error::ClientClosed
                | Error::Timeout(_)
                | Error::Closed(_)
                | Error::Connect { .. }
        );
        Failure {
            text: e.to_string(),
            connection,
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Sent {
        to: Target,
        client_id: String,
        result: Result<Sent, Failure>,
    },
    History {
        with: Target,
        kind: HistoryKind,
        result: Result<HistoryPage, Failure>,
    },
    Joined {
        room: RoomName,
        result: Result<(), Failure>,
    },
    Left {
        room: RoomName,
        result: Result<(), Failure>,
    },
    Topic {
        room: RoomName,
        why: TopicWhy,
        result: Result<Option<String>, Failure>,
    },
    Names {
        room: RoomName,
        result: Result<Vec<Member>, Failure>,
    },
    Rooms(Result<Vec<RoomInfo>, Failure>),
    Contacts(Result<Vec<Contact>, Failure>),
    PresenceSet {
        presence: Presence,
        text: Option<String>,
        result: Result<(), Failure>,
    },
    /// A request with nothing to report but success: `what` says which, for the status line.
    Done {
        what: String,
        result: Result<(), Failure>,
        /// It changed the contact list (the server tells the other side, not us).
        contacts_changed: bool,
    },
    Devices(Result<Vec<DeviceInfo>, Failure>),
    Fingerprint {
        server: String,
        /// The key the server presented (or, after a resumption, the pinned one).
        host: Option<String>,
        /// The pin in known_hosts and its line.
        pinned: Result<Option<(String, usize)>, Failure>,
        /// This home's user key.
        user_key: Option<String>,
    },
}

/// What the worker tells the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A login attempt starts.
    Connecting,
    /// It failed; `retry_in`: when the next one starts by itself.
    ConnectFailed {
        error: String,
        retry_in: Option<Duration>,
    },
    /// The login needs a password: answer with [`Answer::Password`].
    NeedPassword {
        server: String,
        user: UserName,
        register: bool,
        again: bool,
    },
    /// The server's key is not pinned: answer with [`Answer::TrustHost`].
    AskHostKey {
        server: String,
        fingerprint: String,
    },
    /// The login cannot succeed (a changed host key, a refused registration): the worker
    /// waits for `Quit`. `exit_code`: the `im-client` exit code of the error, which
    /// `im-tui` exits with too.
    Fatal {
        text: String,
        exit_code: u8,
    },
    LoggedIn(SessionInfo),
    /// Pushed by the server or the connection (messages, typing, presence, disconnections).
    Event(Event),
    Reply(Reply),
}

/// Starts the worker on the current tokio runtime.
pub fn spawn(
    cfg: WorkerConfig,
    plan: LoginPlan,
    requests: mpsc::UnboundedReceiver<Request>,
    answers: std_mpsc::Receiver<Answer>,
    events: mpsc::UnboundedSender<NetEvent>,
) -> tokio::task::JoinHandle<()> {
    let password = Arc::new(Mutex::new(cfg.password.clone()));
    let worker = Worker {
        cfg,
        plan,
        requests,
        asker: Asker {
            events: events.clone(),
            answers: Arc::new(Mutex::new(answers)),
        },
        events,
        password,
        again: Arc::new(AtomicBool::new(false)),
    };
    tokio::spawn(worker.run())
}

/// Puts a question to the UI and waits (on a blocking thread) for the answer.
#[derive(Clone)]
struct Asker {
    events: mpsc::UnboundedSender<NetEvent>,
    answers: Arc<Mutex<std_mpsc::Receiver<Answer>>>,
}

impl Asker {
    fn ask(&self, question: NetEvent) -> Option<Answer> {
        self.events.send(question).ok()?;
        let answers = self.answers.lock().ok()?;
        answers.recv().ok()
    }
}

struct Worker {
    cfg: WorkerConfig,
    plan: LoginPlan,
    requests: mpsc::UnboundedReceiver<Request>,
    asker: Asker,
    events: mpsc::UnboundedSender<NetEvent>,
    /// The password once known (given, or typed once), so a reconnection whose ticket is
    /// refused does not ask again; cleared when the server refuses it.
    password: Arc<Mutex<Option<Password>>>,
    /// The password was refused once: the prompt says so.
    again: Arc<AtomicBool>,
}

fn is_auth_failure(e: &Error) -> bool {
    e.server_code() == Some(ErrorCode::AuthFailed)
}

impl Worker {
    fn emit(&self, e: NetEvent) {
        // The UI is gone only when the program is ending.
        let _ = self.events.send(e);
    }

    fn password_source(&self) -> PasswordSource {
        let (cache, asker, again) = (self.password.clone(), self.asker.clone(), self.again.clone());
        let (server, user, register) = (self.plan.server.key(), self.plan.user.clone(), self.plan.register);
        Arc::new(move || {
            if let Some(p) = cache.lock().ok().and_then(|c| c.clone()) {
                return Ok(p);
            }
            let question = NetEvent::NeedPassword {
                server: server.clone(),
                user: user.clone(),
                register,
                again: again.load(Ordering::Relaxed),
            };
            match asker.ask(question) {
                Some(Answer::Password(Some(p))) => {
                    if let Ok(mut c) = cache.lock() {
                        *c = Some(p.clone());
                    }
                    Ok(p)
                }
                _ => Err(Error::NoCredentials("no password given".into())),
            }
        })
    }

    fn options(&self) -> ConnectOptions {
        let unknown = if self.cfg.accept_new {
            UnknownHost::AcceptNew
        } else {
            let asker = self.asker.clone();
            UnknownHost::Ask(Arc::new(move |server: &str, fp: &str| {
                let q = NetEvent::AskHostKey {
                    server: server.to_owned(),
                    fingerprint: fp.to_owned(),
                };
                matches!(asker.ask(q), Some(Answer::TrustHost(true)))
            }))
        };
        ConnectOptions {
            server: self.plan.server.clone(),
            user: self.plan.user.clone(),
            home: self.cfg.home.clone(),
            device_name: self.cfg.device_name.clone(),
            credentials: Credentials {
                use_ticket: !self.plan.register,
                key: if self.plan.register { None } else { self.cfg.key.clone() },
                password: Some(self.password_source()),
                register: self.plan.register,
            },
            host_keys: HostKeyPolicy {
                known_hosts: self.cfg.home.known_hosts(),
                unknown,
                expected: self.cfg.trust_fingerprint.clone(),
            },
            reconnect: Some(Backoff::default()),
        }
    }

    /// Waits for `Quit` (or the UI going away), dropping anything else: used while there
    /// is no connection to send it on. The UI does not send requests before `LoggedIn`.
    async fn wait_quit(requests: &mut mpsc::UnboundedReceiver<Request>) {
        while let Some(r) = requests.recv().await {
            if r == Request::Quit {
                return;
            }
        }
    }

    /// Logs in, retrying transient failures with backoff and asking again for a refused
    /// password. `None`: the UI quit, or the login cannot succeed.
    async fn login(&mut self) -> Option<(Client, Events)> {
        let mut delay = LOGIN_RETRY_INITIAL;
        loop {
            self.emit(NetEvent::Connecting);
            let opts = self.options();
            let result = tokio::select! {
                r = im_client::connect(opts) => r,
                () = Self::wait_quit(&mut self.requests) => return None,
            };
            let e = match result {
                Ok(pair) => return Some(pair),
                Err(e) => e,
            };
            if is_auth_failure(&e) && !self.plan.register {
                if let Ok(mut c) = self.password.lock() {
                    *c = None;
                }
                self.again.store(true, Ordering::Relaxed);
                self.emit(NetEvent::ConnectFailed {
                    error: e.to_string(),
                    retry_in: None,
                });
                continue;
            }
            if !e.is_transient() {
                self.emit(NetEvent::Fatal {
                    text: e.to_string(),
                    exit_code: e.exit_code(),
                });
                Self::wait_quit(&mut self.requests).await;
                return None;
            }
            let wait = delay.max(Duration::from_millis(e.retry_after_ms().unwrap_or(0).into()));
            self.emit(NetEvent::ConnectFailed {
                error: e.to_string(),
                retry_in: Some(wait),
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = Self::wait_quit(&mut self.requests) => return None,
            }
            delay = (delay * 2).min(LOGIN_RETRY_MAX);
        }
    }

    /// Remembers the server and user in the home's config after the first login (always
    /// after a registration), as `im-client` does, so the next start needs no arguments.
    fn remember(&self, session: &SessionInfo) {
        let Ok(mut config) = self.cfg.home.load_config() else {
            return;
        };
        let before = config.clone();
        if self.plan.register || config.server.is_none() {
            config.server = Some(session.server.key());
        }
        if self.plan.register || config.user.is_none() {
            config.user = Some(session.user.to_string());
        }
        if config != before {
            // Not worth failing the session for: the next start just asks again.
            let _ = self.cfg.home.save_config(&config);
        }
    }

    async fn run(mut self) {
        let Some((client, mut events)) = self.login().await else {
            return;
        };
        let session = client.session();
        self.remember(&session);
        self.emit(NetEvent::LoggedIn(session));
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        tokio::spawn(send_in_order(client.clone(), outbox_rx, self.events.clone()));
        loop {
            tokio::select! {
                req = self.requests.recv() => match req {
                    None | Some(Request::Quit) => {
                        client.close().await;
                        return;
                    }
                    Some(Request::Send { to, text, client_id, action }) => {
                        let _ = outbox.send((to, text, client_id, action));
                    }
                    // Both only queue a command for the connection's driver.
                    Some(Request::Ack(id)) => {
                        let _ = client.ack(id);
                    }
                    Some(Request::Typing(to)) => {
                        let _ = client.typing(to);
                    }
                    Some(other) => {
                        let (client, events, cfg) = (client.clone(), self.events.clone(), self.cfg.clone());
                        tokio::spawn(async move {
                            if let Some(reply) = perform(&client, &cfg, other).await {
                                let _ = events.send(NetEvent::Reply(reply));
                            }
                        });
                    }
                },
                ev = events.recv() => match ev {
                    Some(e) => self.emit(NetEvent::Event(e)),
                    None => {
                        // The driver stopped for good (its last event said why).
                        Self::wait_quit(&mut self.requests).await;
                        return;
                    }
                },
            }
        }
    }
}

/// The outbox: sends each message only after the previous one was stored, retrying a
/// rate-limited one after the server's advised wait.
async fn send_in_order(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<(Target, String, String, bool)>,
    events: mpsc::UnboundedSender<NetEvent>,
) {
    while let Some((to, text, client_id, action)) = rx.recv().await {
        let mut tries = 0;
        let result = loop {
            match client.send(&to, &text, &client_id, action).await {
                Err(Error::Server {
                    code: ErrorCode::RateLimited,
                    retry_after_ms,
                    ..
                }) if tries < SEND_RATE_LIMIT_RETRIES => {
                    tries += 1;
                    let ms = retry_after_ms.unwrap_or(1000).clamp(100, 30_000);
                    tokio::time::sleep(Duration::from_millis(ms.into())).await;
                }
                r => break r,
            }
        };
        let reply = Reply::Sent {
            to,
            client_id,
            result: result.map_err(Failure::from),
        };
        if events.send(NetEvent::Reply(reply)).is_err() {
            return;
        }
    }
}

/// Runs one request and says how it went. `None` for requests with no reply.
async fn perform(client: &Client, cfg: &WorkerConfig, req: Request) -> Option<Reply> {
    let done = |what: String, r: Result<(), Error>| {
        Some(Reply::Done {
            what,
            result: r.map_err(Failure::from),
            contacts_changed: false,
        })
    };
    match req {
        Request::History {
            with,
            kind,
            before,
            after,
        } => {
            let result = client
                .history(&with, before, after, HISTORY_PAGE)
                .await
                .map_err(Failure::from);
            Some(Reply::History { with, kind, result })
        }
        Request::Join(room) => Some(Reply::Joined {
            result: client.join(&room).await.map_err(Failure::from),
            room,
        }),
        Request::Leave(room) => Some(Reply::Left {
            result: client.leave(&room).await.map_err(Failure::from),
            room,
        }),
        Request::Topic { room, set, why } => {
            let result = client.topic(&room, set.as_deref()).await.map_err(Failure::from);
            Some(Reply::Topic { room, why, result })
        }
        Request::Names(room) => Some(Reply::Names {
            result: client.members(&room).await.map_err(Failure::from),
            room,
        }),
        Request::Rooms => Some(Reply::Rooms(client.rooms().await.map_err(Failure::from))),
        Request::Contacts => {
            let contacts = client.contacts().await.map_err(Failure::from);
            Some(Reply::Contacts(contacts))
        }
        Request::SetPresence { presence, text } => {
            let result = client
                .set_presence(presence, text.as_deref())
                .await
                .map_err(Failure::from);
            Some(Reply::PresenceSet { presence, text, result })
        }
        Request::Contact(op, user) => {
            let (what, r) = match op {
                ContactOp::Add => (
                    format!("contact request to {user}"),
                    client.contact_request(&user).await,
                ),
                ContactOp::Accept => (
                    format!("accepting {user} as a contact"),
                    client.contact_accept(&user).await,
                ),
                ContactOp::Remove => (format!("removing contact {user}"), client.contact_remove(&user).await),
            };
            Some(Reply::Done {
                what,
                result: r.map_err(Failure::from),
                contacts_changed: true,
            })
        }
        Request::Block(user) => done(format!("blocking {user}"), client.block(&user).await),
        Request::Unblock(user) => done(format!("unblocking {user}"), client.unblock(&user).await),
        Request::Moderate(action, room, user) => {
            let verb = crate::app::moderation_verb(action);
            done(
                format!("{verb} {user} in {room}"),
                client.moderate(action, &room, &user).await,
            )
        }
        Request::Devices => Some(Reply::Devices(client.devices().await.map_err(Failure::from))),
        Request::Fingerprint => {
            let session = client.session();
            let pinned = cfg.home.known_hosts().lookup(&session.server).map_err(Failure::from);
            Some(Reply::Fingerprint {
                server: session.server.key(),
                host: session.host_fingerprint,
                pinned,
                user_key: cfg.key.as_ref().map(|k| k.fingerprint()),
            })
        }
        // Handled by the worker loop itself.
        Request::Send { .. } | Request::Ack(_) | Request::Typing(_) | Request::Quit => None,
    }
}
