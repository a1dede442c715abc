//! The `im-tui` binary: reads the arguments and the home, sets the terminal up (and makes
//! sure it is restored on exit and on panic), and runs the event loop: terminal events,
//! network news and clock ticks become actions for [`App::update`]; its effects go to the
//! network worker or the terminal; the screen is redrawn from the state.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use crossterm::event::{DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use im_client::{Home, home, password};
use im_proto::msg::Timestamp;
use im_tui::action::{self, Action, Effect};
use im_tui::app::{App, StartOptions};
use im_tui::time::Zone;
use im_tui::ui;
use im_tui::worker::{self, Request, WorkerConfig};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

/// How often the clock ticks (typing notices and status notices expire on ticks).
const TICK: Duration = Duration::from_secs(1);
/// How long the terminal-reading thread waits for an event before checking for shutdown.
const INPUT_POLL: Duration = Duration::from_millis(200);
/// On quit, how long to wait for the connection to close cleanly (acks flushed).
const QUIT_GRACE: Duration = Duration::from_secs(3);

const AFTER_HELP: &str = "\
Uses the same home as im-client (config, known_hosts, user key, device): after one
`im-client register` (or the first run of im-tui, which offers to register), `im-tui`
starts with no arguments.

The password comes from IM_PASSWORD, --password-file, or is asked for in the TUI.

Keys: Alt+1..9, Ctrl+N/Ctrl+P, Alt+Left/Right switch conversations; Alt+A jumps to the next
unread one (mentions first); PageUp/PageDown and the mouse wheel scroll; Tab completes;
Up/Down recall sent lines; Ctrl+C quits. Type /help inside for the commands.

Examples:
  im-tui
  im-tui --server chat.example.org --user alice
  IM_HOME=~/.im-work im-tui --trust-fingerprint SHA256:hv6kM9uG46gppM1IcLXugU5pAcdLZPVtB4Hmgj/Cf3o";

#[derive(Debug, Parser)]
#[command(name = "im-tui", version, about = "The im terminal chat client", after_help = AFTER_HELP)]
struct Args {
    /// Folder holding config, known_hosts, keys, device id and tickets [default: the platform's folders]
    #[arg(long, value_name = "DIR", env = "IM_HOME")]
    home: Option<PathBuf>,
    /// Server to use; the port defaults to 7447 [default: from the config]
    #[arg(long, short = 's', value_name = "HOST:PORT", env = "IM_SERVER")]
    server: Option<String>,
    /// User name [default: from the config]
    #[arg(long, short = 'u', value_name = "NAME", env = "IM_USER")]
    user: Option<String>,
    /// Read the password from the first line of FILE (or set IM_PASSWORD)
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Trust and pin the host key of a server seen for the first time, without asking
    #[arg(long)]
    accept_new: bool,
    /// Expect the server's host key to have this fingerprint (and pin it)
    #[arg(long, value_name = "SHA256:…")]
    trust_fingerprint: Option<String>,
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// Puts the terminal back as it was. Safe to call more than once.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Restores the terminal when dropped: on every way out of `main`, errors included.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn setup_terminal() -> anyhow::Result<(Terminal<CrosstermBackend<std::io::Stdout>>, TerminalGuard)> {
    // A panic restores the terminal before the message is printed, or it would be lost in
    // the alternate screen and the shell left in raw mode.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        default_hook(info);
    }));
    enable_raw_mode().context("cannot put the terminal in raw mode")?;
    let guard = TerminalGuard;
    execute!(
        std::io::stdout(),
        EnterAlternateScreen,
        EnableMouseCapture,
        EnableBracketedPaste
    )
    .context("cannot set the terminal up")?;
    let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout())).context("cannot draw on the terminal")?;
    Ok((terminal, guard))
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let home = Home::resolve(args.home.clone())?;
    let config = home.load_config()?;
    let server = args.server.clone().filter(|s| !s.is_empty()).or(config.server.clone());
    let user = args.user.clone().filter(|s| !s.is_empty()).or(config.user.clone());
    let password = match (password::from_env(password::PASSWORD_ENV), &args.password_file) {
        (Some(p), _) => Some(p),
        (None, Some(path)) => Some(password::read_file(path)?),
        (None, None) => None,
    };
    let key_path = home.key_path();
    let key = if key_path.exists() {
        Some(Arc::new(home::load_key(&key_path)?))
    } else {
        None
    };
    let cfg = WorkerConfig {
        home,
        accept_new: args.accept_new,
        trust_fingerprint: args.trust_fingerprint.clone(),
        password,
        key,
        device_name: home::default_device_name(),
    };
    let opts = StartOptions {
        server,
        user,
        first_run: config.user.is_none(),
        zone: Zone::Local,
        now: now(),
        client_id_prefix: format!("tui-{}", hex::encode(rand::random::<[u8; 6]>())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (mut terminal, guard) = setup_terminal()?;
    let result = runtime.block_on(run(&mut terminal, opts, cfg));
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(guard);
    result.map(ExitCode::from)
}

/// The network worker, once started.
struct Worker {
    requests: mpsc::UnboundedSender<Request>,
    handle: tokio::task::JoinHandle<()>,
}

async fn run(
    terminal: &mut Terminal<CrosstermBackend<std::io::Stdout>>,
    opts: StartOptions,
    cfg: WorkerConfig,
) -> anyhow::Result<u8> {
    let (mut app, mut effects) = App::new(opts);
    let size = terminal.size().context("cannot read the terminal size")?;
    app.update(Action::Resize {
        width: size.width,
        height: size.height,
    });

    // Terminal events are read on a thread of their own: crossterm's reads block.
    let (term_tx, mut term_rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_input = stop.clone();
    std::thread::spawn(move || {
        while !stop_input.load(Ordering::Relaxed) {
            match crossterm::event::poll(INPUT_POLL) {
                Ok(false) => {}
                Ok(true) => match crossterm::event::read() {
                    Ok(ev) => {
                        if term_tx.send(ev).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                },
                Err(_) => break,
            }
        }
    });

    let (net_tx, mut net_rx) = mpsc::unbounded_channel();
    let (answer_tx, answer_rx) = std_mpsc::channel();
    let mut answer_rx = Some(answer_rx);
    let mut worker: Option<Worker> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        for effect in effects.drain(..) {
            match effect {
                Effect::Connect(plan) => {
                    if let (None, Some(answers)) = (&worker, answer_rx.take()) {
                        let (requests, requests_rx) = mpsc::unbounded_channel();
                        let handle = worker::spawn(cfg.clone(), plan, requests_rx, answers, net_tx.clone());
                        worker = Some(Worker { requests, handle });
                    }
                }
                Effect::Request(r) => {
                    if let Some(w) = &worker {
                        let _ = w.requests.send(r);
                    }
                }
                Effect::Answer(a) => {
                    let _ = answer_tx.send(a);
                }
                Effect::Bell => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(b"\x07").and_then(|()| out.flush());
                }
                Effect::Redraw => terminal.clear().context("cannot clear the terminal")?,
                Effect::Quit => {}
            }
        }
        if app.quitting {
            break;
        }
        terminal.draw(|f| ui::draw(&app, f)).context("cannot draw")?;
        let action = tokio::select! {
            ev = term_rx.recv() => match ev {
                Some(ev) => action::from_terminal(ev),
                None => Some(Action::Quit),
            },
            Some(ev) = net_rx.recv() => Some(Action::Net(ev)),
            _ = tick.tick() => Some(Action::Tick(now())),
        };
        if let Some(a) = action {
            // The clock first, so that whatever the action stamps (a message typed, a line
            // of output) carries the time it happened.
            if !matches!(a, Action::Tick(_)) {
                app.update(Action::Tick(now()));
            }
            effects = app.update(a);
        }
    }

    stop.store(true, Ordering::Relaxed);
    // A question the worker is waiting on gets no answer: it gives up.
    drop(answer_tx);
    if let Some(w) = worker {
        let _ = w.requests.send(Request::Quit);
        let _ = tokio::time::timeout(QUIT_GRACE, w.handle).await;
    }
    Ok(app.exit_code)
}
