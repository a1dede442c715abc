//! The server under test: an `im-server` this run starts (fresh data directory, benchmark
//! config, optionally pinned), an im server someone else started (`--server ADDR
//! --server-pid PID`), or an IRC peer started by contrib/bench-peers.sh.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::sys;

/// The benchmark's config.toml: every per-user and per-address limit lifted, so the numbers
/// show what the server can do rather than what it allows one address.
pub fn bench_config(password_hash_concurrency: usize, ping_interval_secs: u64) -> String {
    format!(
        "# Written by im-bench: the limits a benchmark must lift (README.md, [limits]).\n\
         registration = \"open\"\n\
         [limits]\n\
         login_timeout_secs = 120\n\
         ping_interval_secs = {ping_interval_secs}\n\
         max_connections = 0\n\
         unauthenticated_per_ip = 1000000\n\
         handshakes_per_ip_per_sec = 1000000\n\
         handshake_burst_per_ip = 1000000\n\
         logins_per_ip_per_min = 100000000\n\
         logins_per_account_per_min = 100000000\n\
         messages_per_user_per_sec = 1000000\n\
         message_burst_per_user = 1000000\n\
         outbound_queue = 4096\n\
         password_hash_concurrency = {password_hash_concurrency}\n"
    )
}

/// The keepalive interval of most runs: short, so that an idle run sees connections after a
/// quiet ping interval (when the server drops their key schedules).
pub const PING_INTERVAL_SECS: u64 = 10;

/// The `room` run's: no keepalive round during it. Thousands of members pinged at once take
/// both cores for a moment (a Ping sealed and a Pong opened each, with their key schedules
/// expanded again), which the fan-out floor, measured while im's members sit idle, would
/// otherwise share at random; the IRC peers ping every two minutes by default.
pub const ROOM_PING_INTERVAL_SECS: u64 = 600;

/// Set when this run starts stopping the server: connections closed from then on are
/// expected.
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// Where the server runs and how to measure it.
pub struct ImServer {
    pub addr: SocketAddr,
    pub pid: u32,
    /// Its data directory, when known (seeding, host key, the store bound's disk).
    pub data_dir: Option<PathBuf>,
    /// CPUs it is pinned to (taskset list), if any.
    pub cpus: Option<String>,
    /// CPUs it may use: the count the bounds use.
    pub cores: usize,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

pub struct StartOptions<'a> {
    pub bin: &'a Path,
    pub work_dir: &'a Path,
    pub cpus: Option<&'a str>,
    pub keep: bool,
    pub ping_interval_secs: u64,
    /// Called with the data directory before the server starts (to seed accounts).
    pub before_start: &'a mut dyn FnMut(&Path) -> Result<()>,
}

impl ImServer {
    /// Starts `im-server` on a free loopback port with a fresh data directory.
    pub fn start(o: StartOptions<'_>) -> Result<ImServer> {
        std::fs::create_dir_all(o.work_dir).with_context(|| format!("creating {}", o.work_dir.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix("im-bench-")
            .tempdir_in(o.work_dir)
            .context("creating the data directory")?;
        let data = tmp.path().join("data");
        let cores = match o.cpus {
            Some(c) => sys::parse_cpus(c)?.len(),
            None => sys::cpus_available(),
        };
        let datadir = im_server::datadir::DataDir::open_or_create(&data)?;
        std::fs::write(datadir.config_path(), bench_config(cores, o.ping_interval_secs))?;
        (o.before_start)(&data)?;
        let mut cmd = match o.cpus {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", c]).arg(o.bin);
                cmd
            }
            None => Command::new(o.bin),
        };
        let log = std::fs::File::create(tmp.path().join("server.log"))?;
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "run"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (build it: cargo build --release -p im-server)",
                o.bin.display()
            )
        })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().transpose()?.unwrap_or_default();
        let Some(addr) = first.strip_prefix("listening on ") else {
            let _ = child.kill();
            let log = std::fs::read_to_string(tmp.path().join("server.log")).unwrap_or_default();
            bail!("im-server did not start: {first:?}\n{log}");
        };
        let addr: SocketAddr = addr.trim().parse()?;
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let tmp = if o.keep {
            eprintln!("keeping {}", tmp.path().display());
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        Ok(ImServer {
            addr,
            pid: child.id(),
            data_dir: Some(data),
            cpus: o.cpus.map(str::to_owned),
            cores,
            child: Some(child),
            _tmp: tmp,
        })
    }

    /// A server started by someone else.
    pub fn external(addr: SocketAddr, pid: u32, data_dir: Option<PathBuf>, cpus: Option<&str>) -> Result<ImServer> {
        sys::rss(pid).context("--server-pid")?;
        if let Some(c) = cpus {
            sys::pin_pid(pid, c)?;
        }
        let cores = match cpus {
            Some(c) => sys::parse_cpus(c)?.len(),
            None => sys::cpus_available(),
        };
        Ok(ImServer {
            addr,
            pid,
            data_dir,
            cpus: cpus.map(str::to_owned),
            cores,
            child: None,
            _tmp: None,
        })
    }

    pub fn rss(&self) -> Result<u64> {
        sys::rss(self.pid)
    }

    pub fn host_key_path(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("host_key.pem"))
    }

    /// Stops a server this run started: SIGTERM (it closes every session), then SIGKILL.
    pub fn stop(&mut self) {
        STOPPING.store(true, Ordering::Relaxed);
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ImServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An IRC peer as contrib/bench-peers.sh runs it.
pub struct Peer {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub pid: u32,
}

impl Peer {
    pub fn find(
        name: &'static str,
        tls: bool,
        peers_dir: &Path,
        addr: Option<SocketAddr>,
        pid: Option<u32>,
    ) -> Result<Peer> {
        let port = match (name, tls) {
            ("ngircd", false) => 16667,
            ("ngircd", true) => 16697,
            ("inspircd", false) => 26667,
            (_, false) => 26667,
            (_, true) => 26697,
        };
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)));
        let pid = match pid {
            Some(p) => p,
            None => {
                let f = peers_dir.join(format!("{name}.pid"));
                std::fs::read_to_string(&f)
                    .with_context(|| format!("{} (start the peers: contrib/bench-peers.sh start)", f.display()))?
                    .trim()
                    .parse()?
            }
        };
        sys::rss(pid).with_context(|| format!("{name} is not running (contrib/bench-peers.sh start)"))?;
        Ok(Peer { name, addr, pid })
    }

    pub fn rss(&self) -> Result<u64> {
        sys::rss(self.pid)
    }
}
