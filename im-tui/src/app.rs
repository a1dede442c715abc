//! The application state and its one door: [`App::update`] takes an [`Action`] and returns
//! the [`Effect`]s it wants (requests for the worker, answers to its questions, the bell).
//! Nothing here does I/O or reads a clock: time comes in with `Tick`, so every behaviour can
//! be tested by feeding actions and looking at the state.

use std::collections::BTreeMap;

use im_client::{Moderation, ServerAddr, SessionInfo, password};
use im_proto::limits::MAX_TEXT;
use im_proto::msg::{
    ChatMessage, Contact, ContactState, Member, Password, Presence, PresenceInfo, Role, RoomEventKind, Timestamp,
};
use im_proto::{RoomName, Target, UserName};
use ratatui::layout::Rect;

use crate::action::{Action, Effect};
use crate::commands::{self, COMMANDS, Command, Input};
use crate::conversation::{ConvId, Conversation, OutState, Outgoing};
use crate::input::{Candidates, EditOp, LineEditor};
use crate::layout::Areas;
use crate::mention::mentions;
use crate::sanitize;
use crate::time::Zone;
use crate::worker::{Answer, Failure, HistoryKind, LoginPlan, NetEvent, Reply, Request, TopicWhy};

/// A typing notice shows this long unless renewed (PROTOCOL.md: 6 s).
pub const TYPING_SHOWN_MS: u64 = 6_000;
/// We tell others we are typing at most this often (PROTOCOL.md: 3 s).
pub const TYPING_EVERY_MS: u64 = 3_000;
/// A notice in the status line fades after this long.
pub const NOTICE_MS: u64 = 15_000;

/// How things start: from the options, the environment and the home's config.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub server: Option<String>,
    pub user: Option<String>,
    /// Nothing was ever logged in from this home: ask where and who, and offer to register.
    pub first_run: bool,
    pub zone: Zone,
    pub now: Timestamp,
    /// Client ids of our messages are `PREFIX-N`: random per run, fixed in tests.
    pub client_id_prefix: String,
}

/// The connection, as the status bar shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// Waiting for the first-run questions.
    Setup,
    Connecting,
    /// The last login attempt failed; the next starts by itself.
    Retrying {
        error: String,
    },
    Online,
    /// Lost; the library is reconnecting with backoff.
    Reconnecting(String),
    /// Lost for good.
    Offline(String),
}

/// A question in a box over the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptKind {
    Server,
    User,
    /// Log in or register?
    Account,
    Password {
        server: String,
        user: String,
        register: bool,
        again: bool,
        /// For a new password: the first entry, waiting for its repetition.
        first: Option<Password>,
    },
    HostKey {
        server: String,
        fingerprint: String,
    },
    /// The login cannot succeed; any key quits.
    Fatal(String),
}

#[derive(Debug, Clone)]
pub struct Prompt {
    pub kind: PromptKind,
    pub editor: LineEditor,
    pub error: Option<String>,
}

impl Prompt {
    fn new(kind: PromptKind, text: &str) -> Self {
        let mut editor = LineEditor::default();
        editor.set(text);
        Prompt {
            kind,
            editor,
            error: None,
        }
    }
}

/// The status line: the result of the last command, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typing {
    pub conv: ConvId,
    pub user: UserName,
    pub until: Timestamp,
}

/// The first-run answers so far.
#[derive(Debug, Clone, Default)]
struct Setup {
    server: Option<ServerAddr>,
    user: Option<UserName>,
}

#[derive(Debug)]
pub struct App {
    pub zone: Zone,
    pub conn: Conn,
    pub session: Option<SessionInfo>,
    pub presence: Presence,
    pub status_text: Option<String>,
    /// The sidebar's conversations, in order; the status window is always first.
    pub convs: Vec<Conversation>,
    pub current: usize,
    pub contacts: BTreeMap<UserName, Contact>,
    pub input: LineEditor,
    pub prompt: Option<Prompt>,
    pub notice: Option<Notice>,
    pub typing: Vec<Typing>,
    /// The local clock, from the last `Tick`.
    pub now: Timestamp,
    /// The server's clock minus ours, from the login.
    skew_ms: i64,
    pub size: (u16, u16),
    pub quitting: bool,
    /// What the process exits with: 0, or the exit code of the error that stopped the login
    /// (the same codes as `im-client`).
    pub exit_code: u8,
    setup: Setup,
    client_id_prefix: String,
    next_client_id: u64,
    last_typing: Option<(Target, Timestamp)>,
}

impl App {
    /// The initial state, and the effects to start with (connecting, unless the first-run
    /// questions come first).
    pub fn new(opts: StartOptions) -> (App, Vec<Effect>) {
        let mut app = App {
            zone: opts.zone,
            conn: Conn::Connecting,
            session: None,
            presence: Presence::Online,
            status_text: None,
            convs: vec![Conversation::new(ConvId::Status)],
            current: 0,
            contacts: BTreeMap::new(),
            input: LineEditor::default(),
            prompt: None,
            notice: None,
            typing: Vec::new(),
            now: opts.now,
            skew_ms: 0,
            size: (80, 24),
            quitting: false,
            exit_code: 0,
            setup: Setup::default(),
            client_id_prefix: opts.client_id_prefix,
            next_client_id: 0,
            last_typing: None,
        };
        app.setup.server = opts.server.as_deref().and_then(|s| ServerAddr::parse(s).ok());
        app.setup.user = opts.user.as_deref().and_then(|u| UserName::parse(u).ok());
        let mut fx = Vec::new();
        match (&app.setup.server, &app.setup.user) {
            (Some(server), Some(user)) if !opts.first_run => {
                fx.push(Effect::Connect(LoginPlan {
                    server: server.clone(),
                    user: user.clone(),
                    register: false,
                }));
            }
            _ => {
                app.conn = Conn::Setup;
                app.prompt = Some(app.next_setup_prompt(opts.server.as_deref(), opts.user.as_deref()));
            }
        }
        (app, fx)
    }

    fn next_setup_prompt(&self, server: Option<&str>, user: Option<&str>) -> Prompt {
        match (&self.setup.server, &self.setup.user) {
            (None, _) => Prompt::new(PromptKind::Server, server.unwrap_or("")),
            (_, None) => Prompt::new(PromptKind::User, user.unwrap_or("")),
            _ => Prompt::new(PromptKind::Account, ""),
        }
    }

    pub fn me(&self) -> Option<&UserName> {
        self.session.as_ref().map(|s| &s.user)
    }

    /// Now on the server's clock, for local lines placed among the server's messages.
    pub fn server_now(&self) -> Timestamp {
        Timestamp(self.now.0.saturating_add_signed(self.skew_ms))
    }

    pub fn current_conv(&self) -> &Conversation {
        &self.convs[self.current]
    }

    pub fn areas(&self) -> Areas {
        Areas::new(Rect::new(0, 0, self.size.0, self.size.1), self.notice.is_some())
    }

    /// Who is typing in the current conversation.
    pub fn typing_here(&self) -> Vec<&UserName> {
        let here = &self.convs[self.current].id;
        self.typing
            .iter()
            .filter(|t| &t.conv == here)
            .map(|t| &t.user)
            .collect()
    }

    fn conv_index(&self, id: &ConvId) -> Option<usize> {
        self.convs.iter().position(|c| &c.id == id)
    }

    fn ensure_conv(&mut self, id: ConvId) -> usize {
        match self.conv_index(&id) {
            Some(i) => i,
            None => {
                self.convs.push(Conversation::new(id));
                self.convs.len() - 1
            }
        }
    }

    fn notify(&mut self, text: impl Into<String>, error: bool) {
        self.notice = Some(Notice {
            text: text.into(),
            error,
            at: self.now,
        });
    }

    fn fail(&mut self, what: &str, f: &Failure) {
        self.notify(format!("{what}: {}", sanitize::line(&f.text)), true);
    }

    /// A local line in the current conversation.
    fn info(&mut self, text: impl Into<String>) {
        let ts = self.server_now();
        self.convs[self.current].add_info(ts, text, false);
    }

    fn status_info(&mut self, text: impl Into<String>, error: bool) {
        let ts = self.server_now();
        self.convs[0].add_info(ts, text, error);
    }

    fn online(&self) -> bool {
        self.conn == Conn::Online
    }

    /// Queues a request for the worker; refused with a notice while there is no connection
    /// to carry it (messages are different: they wait in the outbox).
    fn request(&mut self, r: Request, fx: &mut Vec<Effect>) {
        if self.online() {
            fx.push(Effect::Request(r));
        } else {
            self.notify("not connected: try again once the connection is back", true);
        }
    }

    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        let mut fx = Vec::new();
        match action {
            Action::Quit => {
                self.quitting = true;
                fx.push(Effect::Quit);
            }
            Action::Resize { width, height } => self.size = (width, height),
            Action::Tick(now) => {
                self.now = now;
                self.typing.retain(|t| t.until > now);
                if self
                    .notice
                    .as_ref()
                    .is_some_and(|n| now.0.saturating_sub(n.at.0) >= NOTICE_MS)
                {
                    self.notice = None;
                }
            }
            Action::Net(ev) => self.on_net(ev, &mut fx),
            key if self.prompt.is_some() => self.on_prompt_key(key, &mut fx),
            Action::Edit(op) => {
                let typed_text = matches!(op, EditOp::Insert(_) | EditOp::InsertStr(_));
                if self.input.apply(op) && typed_text {
                    self.maybe_typing(&mut fx);
                }
            }
            Action::HistoryPrev => self.input.history_prev(),
            Action::HistoryNext => self.input.history_next(),
            Action::Complete => {
                let c = self.candidates();
                self.input.complete(&c);
            }
            Action::Submit => self.submit(&mut fx),
            Action::Cancel => {
                self.notice = None;
                self.scroll_down(usize::MAX);
            }
            Action::Redraw => fx.push(Effect::Redraw),
            Action::Select(i) => {
                if i < self.convs.len() {
                    self.focus(i, &mut fx);
                }
            }
            Action::NextConversation => {
                let i = (self.current + 1) % self.convs.len();
                self.focus(i, &mut fx);
            }
            Action::PrevConversation => {
                let i = (self.current + self.convs.len() - 1) % self.convs.len();
                self.focus(i, &mut fx);
            }
            Action::NextActive => match self.next_active() {
                Some(i) => self.focus(i, &mut fx),
                None => self.notify("no unread messages", false),
            },
            Action::ScrollUp(n) => self.scroll_up(n, &mut fx),
            Action::ScrollDown(n) => self.scroll_down(n),
            Action::PageUp => self.scroll_up(self.page(), &mut fx),
            Action::PageDown => self.scroll_down(self.page()),
        }
        fx
    }

    // --- conversations -------------------------------------------------------------------

    /// Shows conversation `i`: its unread count is paid, and its history is fetched the
    /// first time.
    fn focus(&mut self, i: usize, fx: &mut Vec<Effect>) {
        self.current = i;
        let c = &mut self.convs[i];
        c.unread = 0;
        c.mentions = 0;
        if c.scroll == 0 {
            c.unseen_below = 0;
        }
        self.open_history(i, fx);
    }

    fn open_history(&mut self, i: usize, fx: &mut Vec<Effect>) {
        let online = self.online();
        let c = &mut self.convs[i];
        let Some(with) = c.id.target().cloned() else { return };
        if c.history.opened || !online {
            return;
        }
        c.history.opened = true;
        c.history.loading = true;
        fx.push(Effect::Request(Request::History {
            with,
            kind: HistoryKind::Open,
            before: None,
            after: None,
        }));
    }

    /// Asks for the page before the oldest message shown. Returns whether it did.
    fn older_history(&mut self, i: usize, fx: &mut Vec<Effect>) -> bool {
        let online = self.online();
        let c = &mut self.convs[i];
        let Some(with) = c.id.target().cloned() else {
            return false;
        };
        if !c.history.opened || c.history.loading || !c.history.more_before || !online {
            return false;
        }
        c.history.loading = true;
        let before = c.oldest_id();
        fx.push(Effect::Request(Request::History {
            with,
            kind: HistoryKind::Older,
            before,
            after: None,
        }));
        true
    }

    /// The next conversation with unread messages after the current one, in sidebar order:
    /// those that mention us first, then direct conversations (addressed to us too), then
    /// the rest.
    pub fn next_active(&self) -> Option<usize> {
        let n = self.convs.len();
        let priority = |c: &Conversation| match () {
            _ if c.unread == 0 => 0,
            _ if c.mentions > 0 => 3,
            _ if c.id.is_direct() => 2,
            _ => 1,
        };
        let mut best: Option<(u8, usize)> = None;
        for k in 1..n {
            let i = (self.current + k) % n;
            let p = priority(&self.convs[i]);
            if p > 0 && best.is_none_or(|(bp, _)| p > bp) {
                best = Some((p, i));
            }
        }
        best.map(|(_, i)| i)
    }

    fn candidates(&self) -> Candidates {
        let mut nicks = self.convs[self.current].nicks();
        nicks.extend(self.contacts.keys().map(|u| u.to_string()));
        nicks.extend(
            self.convs
                .iter()
                .filter(|c| c.id.is_direct())
                .map(|c| c.id.name().to_owned()),
        );
        Candidates {
            commands: COMMANDS.iter().map(|c| c.name.to_owned()).collect(),
            rooms: self
                .convs
                .iter()
                .filter(|c| matches!(c.id.target(), Some(Target::Room(_))))
                .map(|c| c.id.name().to_owned())
                .collect(),
            nicks,
        }
    }

    // --- scrolling -----------------------------------------------------------------------

    fn page(&self) -> usize {
        usize::from(self.areas().messages.height.saturating_sub(1)).max(1)
    }

    /// Rows the current conversation has at the current width.
    fn row_count(&self, i: usize) -> usize {
        crate::ui::messages::rows(&self.convs[i], self.areas().messages.width, self.zone, self.me()).len()
    }

    fn scroll_up(&mut self, n: usize, fx: &mut Vec<Effect>) {
        let i = self.current;
        let pane = self.areas().messages;
        let height = usize::from(pane.height);
        let want = self.convs[i].scroll.saturating_add(n);
        let (rows, all) = crate::ui::messages::tail(
            &self.convs[i],
            pane.width,
            self.zone,
            self.me(),
            want.saturating_add(height),
        );
        // Without all the rows there are more than `want` above the screen.
        let max = if all { rows.len().saturating_sub(height) } else { want };
        self.convs[i].scroll = want.min(max);
        if want > max {
            // Past the top: that is a request for older messages.
            self.older_history(i, fx);
        }
    }

    fn scroll_down(&mut self, n: usize) {
        let c = &mut self.convs[self.current];
        c.scroll = c.scroll.saturating_sub(n);
        if c.scroll == 0 {
            c.unseen_below = 0;
        }
    }

    // --- input ---------------------------------------------------------------------------

    fn maybe_typing(&mut self, fx: &mut Vec<Effect>) {
        let Some(to) = self.convs[self.current].id.target().cloned() else {
            return;
        };
        if !self.online() || self.input.text().starts_with('/') {
            return;
        }
        if let Some((t, at)) = &self.last_typing
            && t == &to
            && self.now.0.saturating_sub(at.0) < TYPING_EVERY_MS
        {
            return;
        }
        self.last_typing = Some((to.clone(), self.now));
        fx.push(Effect::Request(Request::Typing(to)));
    }

    fn submit(&mut self, fx: &mut Vec<Effect>) {
        if self.input.text().trim().is_empty() {
            return;
        }
        match commands::parse(self.input.text()) {
            // The line stays, to be fixed.
            Err(e) => self.notify(e.to_string(), true),
            Ok(Input::Text(text)) => {
                if self.send(text, false, fx) {
                    self.input.take();
                }
            }
            Ok(Input::Command(cmd)) => {
                self.input.take();
                self.notice = None;
                // Its output goes at the bottom: show it.
                let c = &mut self.convs[self.current];
                c.scroll = 0;
                c.unseen_below = 0;
                self.run(cmd, fx);
            }
        }
    }

    fn new_client_id(&mut self) -> String {
        self.next_client_id += 1;
        format!("{}-{}", self.client_id_prefix, self.next_client_id)
    }

    /// Sends a message to the current conversation, or queues it while offline. Returns
    /// whether it was taken.
    fn send(&mut self, text: String, action: bool, fx: &mut Vec<Effect>) -> bool {
        if text.len() > MAX_TEXT {
            self.notify(
                format!("the message is {} bytes; at most {MAX_TEXT} are allowed", text.len()),
                true,
            );
            return false;
        }
        let c = &self.convs[self.current];
        let Some(to) = c.id.target().cloned() else {
            self.notify("this is the status window: /join a room or /msg someone first", true);
            return false;
        };
        if matches!(to, Target::Room(_)) && !c.joined {
            self.notify(format!("you are not in {to}: /join {to}"), true);
            return false;
        }
        let client_id = self.new_client_id();
        let online = self.online();
        let state = if online { OutState::Sending } else { OutState::Queued };
        let ts = self.server_now();
        let c = &mut self.convs[self.current];
        c.outbox.push(Outgoing {
            client_id: client_id.clone(),
            text: text.clone(),
            action,
            ts,
            state,
        });
        c.scroll = 0;
        c.unseen_below = 0;
        self.last_typing = None;
        if online {
            fx.push(Effect::Request(Request::Send {
                to,
                text,
                client_id,
                action,
            }));
        } else {
            self.notify(
                "not connected: the message will be sent once the connection is back",
                false,
            );
        }
        true
    }

    /// Sends what waited for a connection, in the order it was typed.
    fn resend_queued(&mut self, fx: &mut Vec<Effect>) {
        for c in &mut self.convs {
            let Some(to) = c.id.target().cloned() else { continue };
            for o in &mut c.outbox {
                if o.state == OutState::Queued {
                    o.state = OutState::Sending;
                    fx.push(Effect::Request(Request::Send {
                        to: to.clone(),
                        text: o.text.clone(),
                        client_id: o.client_id.clone(),
                        action: o.action,
                    }));
                }
            }
        }
    }

    fn current_room(&mut self, command: &str) -> Option<RoomName> {
        match self.convs[self.current].id.target() {
            Some(Target::Room(r)) => Some(r.clone()),
            _ => {
                self.notify(format!("/{command} works in a room"), true);
                None
            }
        }
    }

    fn run(&mut self, cmd: Command, fx: &mut Vec<Effect>) {
        match cmd {
            Command::Join(room) => {
                let id = ConvId::With(Target::Room(room.clone()));
                match self.conv_index(&id) {
                    Some(i) if self.convs[i].joined => self.focus(i, fx),
                    _ => self.request(Request::Join(room), fx),
                }
            }
            Command::Part(room) => {
                let room = match room {
                    Some(r) => r,
                    None => match self.convs[self.current].id.clone() {
                        ConvId::Status => return self.notify("the status window cannot be closed", true),
                        ConvId::With(Target::User(_)) => return self.close(self.current),
                        // Not a member any more (kicked, say): just close the window.
                        ConvId::With(Target::Room(_)) if !self.convs[self.current].joined => {
                            return self.close(self.current);
                        }
                        ConvId::With(Target::Room(r)) => r,
                    },
                };
                self.request(Request::Leave(room), fx);
            }
            Command::Msg { to, text } => {
                let i = self.ensure_conv(ConvId::With(to));
                self.focus(i, fx);
                if let Some(t) = text {
                    self.send(t, false, fx);
                }
            }
            Command::Me(text) => {
                self.send(text, true, fx);
            }
            Command::Topic(set) => {
                if let Some(room) = self.current_room("topic") {
                    let why = if set.is_some() { TopicWhy::Set } else { TopicWhy::Asked };
                    self.request(Request::Topic { room, set, why }, fx);
                }
            }
            Command::Names => {
                if let Some(room) = self.current_room("names") {
                    self.request(Request::Names(room), fx);
                }
            }
            Command::Status { presence, text } => self.request(Request::SetPresence { presence, text }, fx),
            Command::Contact(op, user) => self.request(Request::Contact(op, user), fx),
            Command::Block(user) => self.request(Request::Block(user), fx),
            Command::Unblock(user) => self.request(Request::Unblock(user), fx),
            Command::Moderate(m, user) => {
                if let Some(room) = self.current_room(moderation_verb(m)) {
                    self.request(Request::Moderate(m, room, user), fx);
                }
            }
            Command::History => {
                let i = self.current;
                if self.convs[i].id == ConvId::Status {
                    self.notify("the status window has no history", true);
                } else if !self.older_history(i, fx) {
                    let h = &self.convs[i].history;
                    let why = if h.loading {
                        "already loading"
                    } else if h.opened && !h.more_before {
                        "this is the beginning of the conversation"
                    } else {
                        "not connected"
                    };
                    self.notify(why, !h.opened || h.more_before);
                }
            }
            Command::Fingerprint => self.request(Request::Fingerprint, fx),
            Command::Devices => self.request(Request::Devices, fx),
            Command::Help => self.help(),
            Command::Quit => {
                self.quitting = true;
                fx.push(Effect::Quit);
            }
        }
    }

    /// Removes conversation `i` from the sidebar (not the status window).
    fn close(&mut self, i: usize) {
        if i == 0 || i >= self.convs.len() {
            return;
        }
        self.convs.remove(i);
        if self.current >= i {
            self.current = self.current.saturating_sub(1).min(self.convs.len() - 1);
        }
    }

    fn help(&mut self) {
        self.info("commands:");
        for c in COMMANDS {
            let usage = if c.args.is_empty() {
                format!("/{}", c.name)
            } else {
                format!("/{} {}", c.name, c.args)
            };
            self.info(format!("  {usage:<40} {}", c.help));
        }
        for line in [
            "keys:",
            "  Alt+1..9, Ctrl+N/Ctrl+P, Alt+Left/Right  switch conversations",
            "  Alt+A                                   next unread (mentions first)",
            "  PageUp/PageDown, mouse wheel            scroll; past the top loads older messages",
            "  Up/Down                                 input history",
            "  Tab                                     complete commands, #rooms and nicks",
            "  Ctrl+A/E, Ctrl+W, Ctrl+U, Ctrl+K        start/end, delete word, to start, to end",
            "  Esc                                     back to the newest messages",
            "  Ctrl+L                                  repaint the screen",
            "  Ctrl+C                                  quit",
        ] {
            self.info(line);
        }
    }

    // --- prompts -------------------------------------------------------------------------

    fn on_prompt_key(&mut self, action: Action, fx: &mut Vec<Effect>) {
        let Some(mut p) = self.prompt.take() else { return };
        let single_key = matches!(
            p.kind,
            PromptKind::Account | PromptKind::HostKey { .. } | PromptKind::Fatal(_)
        );
        match action {
            Action::Edit(EditOp::Insert(c)) if single_key => {
                let c = c.to_ascii_lowercase();
                match (&p.kind, c) {
                    (PromptKind::Account, 'l' | 'r') => return self.start(c == 'r', fx),
                    (PromptKind::HostKey { .. }, 'y' | 'n') => {
                        fx.push(Effect::Answer(Answer::TrustHost(c == 'y')));
                        return;
                    }
                    (PromptKind::Fatal(_), 'q') => return self.update_quit(fx),
                    _ => {}
                }
            }
            Action::Edit(op) if !single_key => {
                p.editor.apply(op);
                p.error = None;
            }
            Action::Submit => return self.submit_prompt(p, fx),
            Action::Cancel => match p.kind {
                PromptKind::Password { .. } => {
                    fx.push(Effect::Answer(Answer::Password(None)));
                    return;
                }
                PromptKind::HostKey { .. } => {
                    fx.push(Effect::Answer(Answer::TrustHost(false)));
                    return;
                }
                _ => return self.update_quit(fx),
            },
            _ => {}
        }
        self.prompt = Some(p);
    }

    fn update_quit(&mut self, fx: &mut Vec<Effect>) {
        self.quitting = true;
        fx.push(Effect::Quit);
    }

    /// Ends the first-run questions: connect (and register if asked).
    fn start(&mut self, register: bool, fx: &mut Vec<Effect>) {
        let (Some(server), Some(user)) = (self.setup.server.clone(), self.setup.user.clone()) else {
            return;
        };
        self.conn = Conn::Connecting;
        fx.push(Effect::Connect(LoginPlan { server, user, register }));
    }

    fn submit_prompt(&mut self, mut p: Prompt, fx: &mut Vec<Effect>) {
        match p.kind.clone() {
            PromptKind::Server => match ServerAddr::parse(p.editor.text()) {
                Ok(s) => {
                    self.setup.server = Some(s);
                    self.prompt = Some(self.next_setup_prompt(None, None));
                    return;
                }
                Err(e) => p.error = Some(e.to_string()),
            },
            PromptKind::User => match UserName::parse(p.editor.text().trim()) {
                Ok(u) => {
                    self.setup.user = Some(u);
                    self.prompt = Some(self.next_setup_prompt(None, None));
                    return;
                }
                Err(e) => p.error = Some(e.to_string()),
            },
            // Enter means the usual: log in.
            PromptKind::Account => return self.start(false, fx),
            PromptKind::Password {
                server,
                user,
                register,
                again,
                first,
            } => {
                let typed = Password::new(p.editor.take_secret());
                if !register {
                    fx.push(Effect::Answer(Answer::Password(Some(typed))));
                    return;
                }
                match first {
                    None => match password::check_new(&typed) {
                        Ok(()) => {
                            p.kind = PromptKind::Password {
                                server,
                                user,
                                register,
                                again,
                                first: Some(typed),
                            };
                            p.error = None;
                        }
                        Err(e) => p.error = Some(e.to_string()),
                    },
                    Some(first) if first == typed => {
                        fx.push(Effect::Answer(Answer::Password(Some(typed))));
                        return;
                    }
                    Some(_) => {
                        p.kind = PromptKind::Password {
                            server,
                            user,
                            register,
                            again,
                            first: None,
                        };
                        p.error = Some("the passwords do not match; choose one again".into());
                    }
                }
            }
            PromptKind::HostKey { .. } => {}
            PromptKind::Fatal(_) => return self.update_quit(fx),
        }
        self.prompt = Some(p);
    }

    // --- the network ---------------------------------------------------------------------

    fn on_net(&mut self, ev: NetEvent, fx: &mut Vec<Effect>) {
        match ev {
            NetEvent::Connecting => {
                if !matches!(self.conn, Conn::Retrying { .. }) {
                    self.conn = Conn::Connecting;
                }
            }
            NetEvent::ConnectFailed { error, retry_in } => {
                let error = sanitize::line(&error);
                let text = match retry_in {
                    Some(d) => format!("cannot log in: {error}; retrying in {} s", d.as_secs_f64().ceil()),
                    None => format!("cannot log in: {error}"),
                };
                self.status_info(text, true);
                self.conn = Conn::Retrying { error };
            }
            NetEvent::NeedPassword {
                server,
                user,
                register,
                again,
            } => {
                let kind = PromptKind::Password {
                    server,
                    user: user.to_string(),
                    register,
                    again,
                    first: None,
                };
                let mut p = Prompt::new(kind, "");
                if again {
                    p.error = Some("wrong user name or password; try again".into());
                }
                self.prompt = Some(p);
            }
            NetEvent::AskHostKey { server, fingerprint } => {
                self.prompt = Some(Prompt::new(PromptKind::HostKey { server, fingerprint }, ""));
            }
            NetEvent::Fatal { text, exit_code } => {
                self.exit_code = exit_code;
                self.conn = Conn::Offline("cannot log in".into());
                self.status_info(format!("cannot log in: {}", sanitize::line(&text)), true);
                self.prompt = Some(Prompt::new(PromptKind::Fatal(text), ""));
            }
            NetEvent::LoggedIn(info) => {
                self.skew_ms = info.server_time.0 as i64 - self.now.0 as i64;
                self.status_info(
                    format!(
                        "logged in to {} as {} (device {})",
                        info.server, info.user, info.device_id
                    ),
                    false,
                );
                self.session = Some(info);
                self.conn = Conn::Online;
                self.prompt = None;
                fx.push(Effect::Request(Request::Rooms));
                fx.push(Effect::Request(Request::Contacts));
                self.open_history(self.current, fx);
                self.resend_queued(fx);
            }
            NetEvent::Event(e) => self.on_event(e, fx),
            NetEvent::Reply(r) => self.on_reply(r, fx),
        }
    }

    fn on_event(&mut self, e: im_client::Event, fx: &mut Vec<Effect>) {
        use im_client::Event;
        match e {
            Event::Message(m) => self.on_message(m, true, fx),
            Event::Receipt { .. } | Event::Ticket { .. } => {}
            Event::Typing { from, to } => {
                let conv = match to {
                    Target::Room(r) => ConvId::With(Target::Room(r)),
                    Target::User(_) => ConvId::With(Target::User(from.clone())),
                };
                let until = Timestamp(self.now.0 + TYPING_SHOWN_MS);
                self.typing.retain(|t| !(t.conv == conv && t.user == from));
                self.typing.push(Typing {
                    conv,
                    user: from,
                    until,
                });
            }
            Event::Room {
                room,
                kind,
                user,
                by,
                topic,
                ts,
            } => self.on_room_event(room, kind, user, by, topic, ts, fx),
            Event::Presence(p) => self.on_presence(p),
            Event::Contact { user, state } => match state {
                None => {
                    self.contacts.remove(&user);
                }
                Some(state) => {
                    let entry = self.contacts.entry(user.clone()).or_insert_with(|| Contact {
                        user: user.clone(),
                        state,
                        presence: Presence::Offline,
                        text: None,
                    });
                    entry.state = state;
                    match state {
                        ContactState::Incoming => {
                            self.notify(format!("{user} asks to be your contact: /contact accept {user}"), false)
                        }
                        ContactState::Accepted => self.notify(format!("{user} is now a contact"), false),
                        ContactState::Outgoing => {}
                    }
                }
            },
            Event::ServerError { code, text, .. } => {
                self.notify(format!("server: {code}: {}", sanitize::line(&text)), true);
            }
            Event::Disconnected { reason, reconnecting } => {
                let why = sanitize::line(&reason.to_string());
                self.status_info(why.clone(), true);
                for c in &mut self.convs {
                    for o in &mut c.outbox {
                        match o.state {
                            OutState::Sending | OutState::Queued if !reconnecting => {
                                o.state = OutState::Failed("the connection is closed".into())
                            }
                            OutState::Sending => o.state = OutState::Queued,
                            _ => {}
                        }
                    }
                }
                self.typing.clear();
                // Pages on their way are lost with the connection: ask again once back.
                for c in &mut self.convs {
                    if c.history.loading {
                        c.history.loading = false;
                        if c.newest_id().is_none() {
                            c.history.opened = false;
                        }
                    }
                }
                self.conn = if reconnecting {
                    Conn::Reconnecting(why)
                } else {
                    Conn::Offline(why)
                };
            }
            Event::Reconnected(info) => {
                self.skew_ms = info.server_time.0 as i64 - self.now.0 as i64;
                self.status_info(format!("reconnected to {}", info.server), false);
                self.session = Some(info);
                self.conn = Conn::Online;
                // Catch up on what was missed, then send what waited.
                for c in &mut self.convs {
                    let Some(with) = c.id.target().cloned() else { continue };
                    if c.history.opened && !c.history.loading {
                        let (kind, after) = match c.newest_id() {
                            Some(id) => (HistoryKind::CatchUp, Some(id)),
                            None => (HistoryKind::Open, None),
                        };
                        c.history.loading = kind == HistoryKind::Open;
                        fx.push(Effect::Request(Request::History {
                            with,
                            kind,
                            before: None,
                            after,
                        }));
                    }
                }
                self.open_history(self.current, fx);
                fx.push(Effect::Request(Request::Rooms));
                fx.push(Effect::Request(Request::Contacts));
                if self.presence != Presence::Online || self.status_text.is_some() {
                    fx.push(Effect::Request(Request::SetPresence {
                        presence: self.presence,
                        text: self.status_text.clone(),
                    }));
                }
                self.resend_queued(fx);
            }
        }
    }

    /// A message pushed by the server (`live`) or from a history page.
    fn on_message(&mut self, m: ChatMessage, live: bool, fx: &mut Vec<Effect>) {
        let me = self.me().cloned();
        let from_me = me.as_ref() == Some(&m.from);
        let id = match &m.to {
            Target::Room(_) => ConvId::With(m.to.clone()),
            Target::User(to) if from_me => ConvId::With(Target::User(to.clone())),
            Target::User(_) => ConvId::With(Target::User(m.from.clone())),
        };
        let mention = !from_me && me.as_ref().is_some_and(|u| mentions(&m.text, u.as_str()));
        let msg_id = m.id;
        let from = m.from.clone();
        let i = self.ensure_conv(id);
        let keep_view = live && i == self.current && self.convs[i].scroll > 0;
        let rows_before = if keep_view { self.row_count(i) } else { 0 };
        if !self.convs[i].add_message(m, mention) {
            if live {
                fx.push(Effect::Request(Request::Ack(msg_id)));
            }
            return;
        }
        if !live {
            return;
        }
        fx.push(Effect::Request(Request::Ack(msg_id)));
        let conv_id = self.convs[i].id.clone();
        self.typing.retain(|t| !(t.conv == conv_id && t.user == from));
        if keep_view {
            let added = self.row_count(i).saturating_sub(rows_before);
            let c = &mut self.convs[i];
            c.scroll += added;
            c.unseen_below += 1;
        }
        if i != self.current && !from_me {
            let c = &mut self.convs[i];
            c.unread += 1;
            c.mentions += u32::from(mention);
        }
        if mention {
            fx.push(Effect::Bell);
        }
        if i == self.current {
            // A direct conversation that just appeared (first message) gets its history.
            self.open_history(i, fx);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_room_event(
        &mut self,
        room: RoomName,
        kind: RoomEventKind,
        user: UserName,
        by: Option<UserName>,
        topic: Option<String>,
        ts: Timestamp,
        fx: &mut Vec<Effect>,
    ) {
        let about_me = self.me() == Some(&user);
        let i = self.ensure_conv(ConvId::With(Target::Room(room.clone())));
        let c = &mut self.convs[i];
        c.add_room_event(ts, kind, user.clone(), by.clone(), topic.clone());
        match kind {
            RoomEventKind::Topic => c.topic = topic,
            RoomEventKind::Join => {
                if about_me {
                    c.joined = true;
                }
                if !c.members.iter().any(|m| m.user == user) && !c.members.is_empty() {
                    c.members.push(Member {
                        user: user.clone(),
                        role: Role::Member,
                        online: true,
                    });
                }
            }
            RoomEventKind::Leave | RoomEventKind::Kick | RoomEventKind::Ban => {
                c.members.retain(|m| m.user != user);
                if about_me {
                    c.joined = false;
                }
            }
            RoomEventKind::Op | RoomEventKind::Deop => {
                let role = if kind == RoomEventKind::Op {
                    Role::Operator
                } else {
                    Role::Member
                };
                for m in c.members.iter_mut().filter(|m| m.user == user && m.role != Role::Owner) {
                    m.role = role;
                }
            }
            RoomEventKind::Unban => {}
        }
        if about_me && matches!(kind, RoomEventKind::Kick | RoomEventKind::Ban) {
            let by = by.map(|b| format!(" by {b}")).unwrap_or_default();
            self.notify(format!("you were removed from {room}{by} ({kind})"), true);
        }
        if about_me && kind == RoomEventKind::Join && i == self.current {
            self.open_history(i, fx);
        }
    }

    fn on_presence(&mut self, p: PresenceInfo) {
        if self.me() == Some(&p.user) {
            self.presence = p.presence;
            self.status_text = p.text;
            return;
        }
        let entry = self.contacts.entry(p.user.clone()).or_insert_with(|| Contact {
            user: p.user.clone(),
            state: ContactState::Accepted,
            presence: Presence::Offline,
            text: None,
        });
        entry.presence = p.presence;
        entry.text = p.text;
    }

    fn on_reply(&mut self, r: Reply, fx: &mut Vec<Effect>) {
        match r {
            Reply::Sent { to, client_id, result } => self.on_sent(to, client_id, result),
            Reply::History { with, kind, result } => {
                let Some(i) = self.conv_index(&ConvId::With(with.clone())) else {
                    return;
                };
                match result {
                    Ok(page) => {
                        let newest = page.messages.last().map(|m| m.id);
                        for m in page.messages {
                            // A catch-up page holds what we missed: it counts as pushed.
                            self.on_message(m, kind == HistoryKind::CatchUp, fx);
                        }
                        let c = &mut self.convs[i];
                        match kind {
                            HistoryKind::Open | HistoryKind::Older => {
                                c.history.loading = false;
                                c.history.more_before = page.more;
                            }
                            HistoryKind::CatchUp if page.more => {
                                fx.push(Effect::Request(Request::History {
                                    with,
                                    kind,
                                    before: None,
                                    after: newest,
                                }));
                            }
                            HistoryKind::CatchUp => {}
                        }
                    }
                    Err(f) => {
                        self.convs[i].history.loading = false;
                        if kind == HistoryKind::Open {
                            // Try again on the next reconnection or opening.
                            self.convs[i].history.opened = false;
                        }
                        self.fail(&format!("history of {with}"), &f);
                    }
                }
            }
            Reply::Joined { room, result } => match result {
                Ok(()) => {
                    let i = self.ensure_conv(ConvId::With(Target::Room(room.clone())));
                    self.convs[i].joined = true;
                    self.focus(i, fx);
                    fx.push(Effect::Request(Request::Names(room.clone())));
                    fx.push(Effect::Request(Request::Topic {
                        room,
                        set: None,
                        why: TopicWhy::Joined,
                    }));
                }
                Err(f) => self.fail(&format!("cannot join {room}"), &f),
            },
            Reply::Left { room, result } => match result {
                Ok(()) => {
                    if let Some(i) = self.conv_index(&ConvId::With(Target::Room(room.clone()))) {
                        self.close(i);
                    }
                    self.notify(format!("you left {room}"), false);
                }
                Err(f) => self.fail(&format!("cannot leave {room}"), &f),
            },
            Reply::Topic { room, why, result } => match result {
                Ok(topic) => {
                    let i = self.ensure_conv(ConvId::With(Target::Room(room.clone())));
                    self.convs[i].topic = topic.clone();
                    let text = match (topic.filter(|t| !t.is_empty()), why) {
                        (_, TopicWhy::Set) | (None, TopicWhy::Joined) => return,
                        (Some(t), _) => format!("topic of {room}: {}", sanitize::line(&t)),
                        (None, _) => format!("{room} has no topic"),
                    };
                    let ts = self.server_now();
                    self.convs[i].add_info(ts, text, false);
                }
                Err(f) => self.fail(&format!("topic of {room}"), &f),
            },
            Reply::Names { room, result } => match result {
                Ok(members) => {
                    let i = self.ensure_conv(ConvId::With(Target::Room(room.clone())));
                    let list: Vec<String> = members
                        .iter()
                        .map(|m| {
                            let sigil = match m.role {
                                Role::Owner => "~",
                                Role::Operator => "@",
                                Role::Member => "",
                            };
                            let away = if m.online { "" } else { "(offline)" };
                            format!("{sigil}{}{away}", m.user)
                        })
                        .collect();
                    let text = format!("members of {room} ({}): {}", members.len(), list.join(" "));
                    let ts = self.server_now();
                    let c = &mut self.convs[i];
                    c.members = members;
                    c.add_info(ts, text, false);
                }
                Err(f) => self.fail(&format!("members of {room}"), &f),
            },
            Reply::Rooms(result) => match result {
                Ok(rooms) => {
                    let mut joined = Vec::new();
                    for r in rooms.into_iter().filter(|r| r.joined) {
                        let i = self.ensure_conv(ConvId::With(Target::Room(r.room.clone())));
                        let c = &mut self.convs[i];
                        c.joined = true;
                        c.topic = r.topic;
                        joined.push(i);
                    }
                    for (i, c) in self.convs.iter_mut().enumerate() {
                        if matches!(c.id.target(), Some(Target::Room(_))) && !joined.contains(&i) {
                            c.joined = false;
                        }
                    }
                    self.open_history(self.current, fx);
                }
                Err(f) => self.fail("cannot list rooms", &f),
            },
            Reply::Contacts(result) => match result {
                Ok(list) => self.contacts = list.into_iter().map(|c| (c.user.clone(), c)).collect(),
                Err(f) => self.fail("cannot list contacts", &f),
            },
            Reply::PresenceSet { presence, text, result } => match result {
                Ok(()) => {
                    let note = text
                        .as_deref()
                        .map(|t| format!(": {}", sanitize::line(t)))
                        .unwrap_or_default();
                    self.notify(format!("you are {presence}{note}"), false);
                    self.presence = presence;
                    self.status_text = text;
                }
                Err(f) => self.fail("cannot set your status", &f),
            },
            Reply::Done {
                what,
                result,
                contacts_changed,
            } => match result {
                Ok(()) => {
                    self.notify(format!("{what}: done"), false);
                    if contacts_changed {
                        self.request(Request::Contacts, fx);
                    }
                }
                Err(f) => self.fail(&what, &f),
            },
            Reply::Devices(result) => match result {
                Ok(devices) => {
                    self.info(format!("your devices ({}):", devices.len()));
                    for d in devices {
                        let seen = format!(
                            "{} {}",
                            crate::time::day_label(self.zone.day(d.last_seen)),
                            self.zone.hm(d.last_seen)
                        );
                        let this = if d.current { "  ← this device" } else { "" };
                        self.info(format!(
                            "  {:>16}  {}  last seen {seen}{this}",
                            d.id,
                            sanitize::line(&d.name)
                        ));
                    }
                }
                Err(f) => self.fail("cannot list devices", &f),
            },
            Reply::Fingerprint {
                server,
                host,
                pinned,
                user_key,
            } => {
                match (&host, &pinned) {
                    (Some(fp), Ok(Some((pin, line)))) if pin == fp => {
                        self.info(format!("server {server}: {fp} (pinned, line {line} of known_hosts)"))
                    }
                    (Some(fp), Ok(Some((pin, line)))) => self.info(format!(
                        "server {server}: presented {fp}, but line {line} of known_hosts pins {pin}"
                    )),
                    (Some(fp), _) => self.info(format!("server {server}: {fp} (not pinned)")),
                    (None, _) => self.info(format!("server {server}: fingerprint unknown")),
                }
                if let Err(f) = pinned {
                    self.fail("cannot read known_hosts", &f);
                }
                match user_key {
                    Some(fp) => self.info(format!("your user key: {fp}")),
                    None => self.info("no user key in this home (create one with: im-client keygen)"),
                }
                self.info("compare fingerprints with the other side over a channel you trust");
            }
        }
    }

    fn on_sent(&mut self, to: Target, client_id: String, result: Result<im_client::Sent, Failure>) {
        let Some(i) = self.conv_index(&ConvId::With(to.clone())) else {
            return;
        };
        let me = self.me().cloned();
        let online = self.online();
        let gave_up = matches!(self.conn, Conn::Offline(_));
        let c = &mut self.convs[i];
        let Some(pos) = c.outbox.iter().position(|o| o.client_id == client_id) else {
            return;
        };
        match result {
            Ok(sent) => {
                let o = c.outbox.remove(pos);
                if let Some(from) = me {
                    let msg = ChatMessage {
                        id: sent.id,
                        ts: sent.ts,
                        from,
                        to,
                        client_id: o.client_id,
                        action: o.action,
                        text: o.text,
                    };
                    c.add_message(msg, false);
                }
            }
            Err(f) if f.connection && !gave_up => {
                c.outbox[pos].state = OutState::Queued;
                if online {
                    self.notify(
                        format!(
                            "not sent yet ({}); it will be sent after reconnecting",
                            sanitize::line(&f.text)
                        ),
                        true,
                    );
                }
            }
            Err(f) => {
                c.outbox[pos].state = OutState::Failed(sanitize::line(&f.text));
            }
        }
    }
}

/// The command name of a moderation action.
pub fn moderation_verb(m: Moderation) -> &'static str {
    match m {
        Moderation::Kick => "kick",
        Moderation::Ban => "ban",
        Moderation::Unban => "unban",
        Moderation::Op => "op",
        Moderation::Deop => "deop",
    }
}

#[cfg(test)]
mod tests;
