//! The end-to-end harness: builds the real binaries once, starts `im-server` on a free
//! loopback port in a temporary data directory, and runs `im-client` commands against it
//! (in the style of ripgrep's `TestCommand`). Every child process is killed when its guard
//! drops, so a failing test leaves nothing running.
#![allow(dead_code)]

pub mod raw;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Builds every binary the tests start (once per test process) and returns their folder.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bins", "-p", "im-server", "-p", "im-client", "-p", "im-tui"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        // target/debug/deps/<test> -> target/debug
        let exe = std::env::current_exe().expect("current_exe");
        exe.parent().and_then(Path::parent).expect("target dir").to_owned()
    })
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running server with its own data directory.
pub struct Server {
    pub proc: Option<Proc>,
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub stderr_log: PathBuf,
    config: Option<String>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with_config(None)
    }

    /// Starts a server whose config file holds `config` (TOML).
    pub fn start_with_config(config: Option<&str>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        if let Some(c) = config {
            std::fs::write(data.join("config.toml"), c).unwrap();
        }
        let mut s = Server {
            proc: None,
            stderr_log: dir.path().join("server.log"),
            dir,
            addr: String::new(),
            config: config.map(str::to_owned),
        };
        s.spawn("127.0.0.1:0");
        s
    }

    /// Starts a server on a data directory prepared beforehand as `dir`/data (a restored
    /// backup, say).
    pub fn start_in(dir: tempfile::TempDir) -> Server {
        let mut s = Server {
            proc: None,
            stderr_log: dir.path().join("server.log"),
            dir,
            addr: String::new(),
            config: None,
        };
        s.spawn("127.0.0.1:0");
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `im-server --data-dir <ours> ARGS…` (an admin command), run to completion.
    pub fn admin(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(bin("im-server"));
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env("RUST_LOG", "warn");
        TestCommand { cmd, stdin: None }.run()
    }

    /// Starts the server binary and waits for its `listening on` line.
    fn spawn(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .unwrap();
        let mut child = Command::new(bin("im-server"))
            .args(["--data-dir"])
            .arg(self.data_dir())
            .args(["--listen", listen])
            .env(
                "RUST_LOG",
                std::env::var("IM_TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start im-server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read server stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", self.log()))
            .to_owned();
        self.addr = addr;
        self.proc = Some(Proc { child });
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let p = self.proc.take().expect("server running");
        // SAFETY: sending a signal to our own child's pid.
        unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
        let mut p = p;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = p.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        let addr = self.addr.clone();
        // The port may linger briefly; retry for a moment.
        for _ in 0..50 {
            let log = self.log().len();
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn(&addr)));
            if attempt.is_ok() {
                return;
            }
            let _ = log;
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not restart; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// A client with its own home directory.
    pub fn client(&self, name: &str) -> Client {
        let home = self.dir.path().join(format!("home-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        Client {
            home,
            server: self.addr.clone(),
            user: name.to_owned(),
            password: format!("{name}-password-1"),
        }
    }

    /// Registers `name` and returns its client.
    pub fn user(&self, name: &str) -> Client {
        let c = self.client(name);
        c.cmd(&["register"]).ok();
        c
    }
}

/// One user's client home; builds `im-client` commands.
#[derive(Clone)]
pub struct Client {
    pub home: PathBuf,
    pub server: String,
    pub user: String,
    pub password: String,
}

impl Client {
    /// A second device of the same user: another home, same account.
    pub fn device(&self, tag: &str) -> Client {
        let home = self
            .home
            .with_file_name(format!("{}-{tag}", self.home.file_name().unwrap().to_string_lossy()));
        std::fs::create_dir_all(&home).unwrap();
        Client { home, ..self.clone() }
    }

    pub fn command(&self, args: &[&str]) -> TestCommand {
        let mut cmd = Command::new(bin("im-client"));
        cmd.arg("--home")
            .arg(&self.home)
            .args(["--server", &self.server, "--user", &self.user, "--accept-new"])
            .args(args);
        cmd.env("IM_PASSWORD", &self.password)
            .env_remove("IM_HOME")
            .env_remove("IM_SERVER")
            .env_remove("IM_USER");
        TestCommand { cmd, stdin: None }
    }

    pub fn cmd(&self, args: &[&str]) -> Run {
        self.command(args).run()
    }
}

/// A command to run, ripgrep-style.
pub struct TestCommand {
    pub cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl TestCommand {
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn run(mut self) -> Run {
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn im-client");
        if let Some(input) = self.stdin.take() {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let out = wait_with_timeout(child, Duration::from_secs(60));
        Run {
            out,
            desc: format!("{:?}", self.cmd),
        }
    }

    /// Starts the command in the background (e.g. `listen`), its stdout readable line by line.
    pub fn spawn(mut self) -> Background {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn im-client");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Background {
            proc: Proc { child },
            stdout,
        }
    }
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// A finished command.
pub struct Run {
    pub out: Output,
    desc: String,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn explain(&self) -> String {
        format!(
            "{}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.desc,
            self.out.status,
            self.stdout(),
            self.stderr()
        )
    }

    /// Asserts exit 0 and returns self.
    pub fn ok(self) -> Run {
        assert_eq!(self.code(), 0, "command failed:\n{}", self.explain());
        self
    }

    /// Asserts the given exit code.
    pub fn code_is(self, code: i32) -> Run {
        assert_eq!(self.code(), code, "wrong exit code:\n{}", self.explain());
        self
    }

    /// Each stdout line parsed as JSON.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", self.explain())))
            .collect()
    }

    /// The JSON error object on stderr.
    pub fn json_error(&self) -> serde_json::Value {
        let line = self
            .stderr()
            .lines()
            .find(|l| l.starts_with('{'))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no JSON error on stderr:\n{}", self.explain()));
        serde_json::from_str(&line).unwrap()
    }
}

/// A command running in the background.
pub struct Background {
    pub proc: Proc,
    stdout: BufReader<ChildStdout>,
}

impl Background {
    pub fn from_parts(proc: Proc, stdout: BufReader<ChildStdout>) -> Self {
        Background { proc, stdout }
    }

    /// Waits for exit and parses every remaining stdout line as JSON (a line cut off by a
    /// killed server is skipped).
    pub fn wait_json(mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut line = String::new();
        while self.stdout.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if let Ok(v) = serde_json::from_str(line.trim()) {
                out.push(v);
            }
            line.clear();
        }
        let _ = self.proc.child.wait();
        out
    }

    /// The next stdout line as JSON (blocks; the command's own --timeout bounds it).
    pub fn next_json(&mut self) -> Option<serde_json::Value> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))),
        }
    }

    pub fn wait(mut self) -> Output {
        let child = std::mem::replace(&mut self.proc.child, Command::new("true").spawn().unwrap());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let out = wait_with_timeout_no_stdout(child);
        Output {
            stdout: rest.into_bytes(),
            ..out
        }
    }
}

fn wait_with_timeout_no_stdout(mut child: Child) -> Output {
    let mut stderr = child.stderr.take();
    let status = child.wait().unwrap();
    let mut e = Vec::new();
    if let Some(s) = stderr.as_mut() {
        let _ = s.read_to_end(&mut e);
    }
    Output {
        status,
        stdout: Vec::new(),
        stderr: e,
    }
}

/// Serializes tests that are heavy on CPU (crash loops), so they do not starve each other
/// on a 2-core CI machine.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `check` every 50 ms until it holds, for conditions no command can wait on itself
/// (someone else's connection being up); panics after 20 s, naming `what`.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `observer` sees `user` online in `room`: their listener is connected, so what
/// happens next reaches it live.
pub fn wait_online(observer: &Client, room: &str, user: &str) {
    wait_for(&format!("{user} online in {room}"), || {
        observer
            .cmd(&["--json", "members", room])
            .ok()
            .json()
            .iter()
            .any(|m| m["user"] == user && m["online"] == true)
    });
}

/// `listen --json --count N --timeout 20` in the background.
pub fn listen(c: &Client, count: usize) -> Background {
    c.command(&["--json", "listen", "--count", &count.to_string(), "--timeout", "20"])
        .spawn()
}
