//! The terminal client end to end: the real `im-tui` in a real terminal (tmux), against the
//! real server, with `im-client` as the other side. The screen is read with
//! `tmux capture-pane` and polled with a deadline; nothing waits a fixed time.

mod harness;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use harness::*;

/// How long anything may take to show on the screen.
const SCREEN_DEADLINE: Duration = Duration::from_secs(30);

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
    session: &'static str,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a detached session of `width`x`height`.
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "im-tui-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let t = Tmux { socket, session: "tui" };
        let (w, h) = (width.to_string(), height.to_string());
        let out = t.tmux(&["new-session", "-d", "-s", t.session, "-x", &w, "-y", &h, command]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            // Not nested in the tmux the tests may be running in.
            .env_remove("TMUX")
            .output()
            .expect("run tmux (is it installed?)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", self.session]).stdout).into_owned()
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        assert!(
            self.tmux(&["send-keys", "-t", self.session, "-l", text])
                .status
                .success()
        );
    }

    /// Presses keys by their tmux names (`Enter`, `M-1`, `PPage`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.session];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    fn alive(&self) -> bool {
        self.tmux(&["has-session", "-t", self.session]).status.success()
    }

    /// Polls the screen until `check` holds; panics with the last screen after the deadline.
    fn wait(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_DEADLINE;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_text(&self, text: &str) -> String {
        self.wait(&format!("{text:?}"), |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// A shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command line that runs im-tui as `c`, then shows how it ended: its exit status and
/// whether the terminal is back in canonical (cooked) mode, and waits for Enter.
fn tui_command(c: &Client) -> String {
    let tui = bin("im-tui");
    format!(
        "env -u IM_HOME -u IM_SERVER -u IM_USER IM_PASSWORD={pw} {tui} --home {home} --server {server} --user {user} --accept-new; \
         echo \"exit=$?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon | sed 's/^/tty=/'; read _",
        pw = quote(&c.password),
        tui = quote(&tui.to_string_lossy()),
        home = quote(&c.home.to_string_lossy()),
        server = quote(&c.server),
        user = quote(&c.user),
    )
}

#[test]
fn the_tui_joins_a_room_sends_receives_and_quits_cleanly() {
    let server = Server::start();
    let alice = server.user("alice");
    let bob = server.user("bob");
    bob.cmd(&["join", "#tui"]).ok();
    // bob writes to alice while she is away: it is there when she starts.
    bob.cmd(&["send", "alice", "welcome back"]).ok();

    let tmux = Tmux::start(100, 30, &tui_command(&alice));
    tmux.wait_for_text("[connected]");
    // The direct message that came while away: a conversation with one unread message.
    let screen = tmux.wait_for_text(" 2 bob ");
    assert!(
        screen.lines().any(|l| l.starts_with(" 2 bob") && l.contains("1│")),
        "{screen}"
    );

    tmux.type_text("/join #tui");
    tmux.keys(&["Enter"]);
    tmux.wait_for_text("3:#tui");
    tmux.wait_for_text("alice joined #tui");

    tmux.type_text("hello from the tui 🦀");
    tmux.keys(&["Enter"]);
    let got = bob
        .cmd(&["--json", "listen", "--count", "1", "--timeout", "30"])
        .ok()
        .json();
    let m = got
        .iter()
        .find(|v| v["type"] == "message")
        .unwrap_or_else(|| panic!("no message: {got:?}"));
    assert_eq!(
        (&m["from"], &m["room"], &m["text"]),
        (&"alice".into(), &"#tui".into(), &"hello from the tui 🦀".into())
    );

    bob.cmd(&["send", "#tui", "hi alice, from the command line"]).ok();
    tmux.wait_for_text("bob │ hi alice, from the command line");

    // Alt+2 shows the direct conversation and pays its unread count.
    tmux.keys(&["M-2"]);
    tmux.wait(":bob and its history", |s| {
        s.contains("2:bob") && s.contains("bob │ welcome back")
    });

    tmux.type_text("/quit");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for_text("tty=");
    assert!(screen.contains("exit=0"), "{screen}");
    assert!(
        screen.lines().any(|l| l == "tty=icanon"),
        "the terminal was left in raw mode:\n{screen}"
    );
    assert!(
        !screen.contains("[connected]"),
        "the alternate screen was not left:\n{screen}"
    );
    tmux.keys(&["Enter"]);
    let deadline = Instant::now() + SCREEN_DEADLINE;
    while tmux.alive() {
        assert!(Instant::now() < deadline, "the tmux session did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}
