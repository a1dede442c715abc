//! `im-bench`: how many persistent encrypted connections im-server holds, how fast it
//! handshakes, stores and fans out, measured beside the bound of each figure and beside
//! ngIRCd and InspIRCd. BENCHMARKS.md has the figures and how to reproduce them.
//!
//! # Layout
//! - `main.rs`: the command line and [`Ctx`], what every scenario needs.
//! - `scenario/`: one file per scenario (idle, handshake, reconnect, dm, room, soak).
//! - `im.rs`: a raw im protocol client on im-proto. `irc.rs`: a minimal IRC client, TLS too.
//! - `target.rs`: the server under test (started here, external, or an IRC peer).
//! - `seed.rs`: accounts, devices and tickets for thousands of clients; room memberships.
//! - `bounds.rs`: the bounds (RSA signatures, Argon2, the store's appends, the raw-send floor),
//!   each in a child process on the server's CPUs.
//! - `worker.rs`: worker processes for runs past one process's open-files limit.
//! - `schedule.rs`: the open-loop send schedule. `hist.rs`: HDR histograms, serialized.
//! - `report.rs`: figures as JSON lines or a table. `sys.rs`: addresses, CPUs, RSS.

mod bounds;
mod hist;
mod im;
mod irc;
mod report;
mod scenario;
mod schedule;
mod seed;
mod sys;
mod target;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::report::Report;
use crate::target::{ImServer, Peer, StartOptions};

const EXAMPLES: &str = "\
Examples:
  cargo build --release -p im-server -p im-bench
  target/release/im-bench idle --quick                 2,000 idle connections, about 20 s
  target/release/im-bench idle --server-cpus 1 --bench-cpus 0
  target/release/im-bench dm --json >> figures.jsonl
  contrib/bench-peers.sh start                         ngIRCd and InspIRCd on loopback
  target/release/im-bench room --target inspircd --tls
  target/release/im-bench soak --duration 300
  target/release/im-bench handshake --server 127.0.0.1:7447 --server-pid 1234 --data-dir /srv/im

Without --server, im-bench starts the im-server binary next to its own executable with a
fresh data directory and a config that lifts per-user and per-address limits. --json prints
one object per figure and line: target, scenario, variant, metric, value, unit (bytes, ms,
per_s, count), and bound and ratio (value / bound) where the scenario measures a bound.";

#[derive(Parser)]
#[command(name = "im-bench", version, about = "Load generator and benchmarks for im-server", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    opts: Opts,
}

#[derive(clap::Args, Clone)]
struct Opts {
    /// A short run (about 20 s per scenario) for development
    #[arg(long, global = true)]
    quick: bool,
    /// One JSON object per figure and line on stdout
    #[arg(long, global = true)]
    json: bool,
    /// Which server to load
    #[arg(long, global = true, value_enum, default_value_t = TargetKind::Im)]
    target: TargetKind,
    /// TLS to an IRC peer (im is always encrypted)
    #[arg(long, global = true)]
    tls: bool,
    /// An im server that is already running, instead of starting one
    #[arg(long, global = true, value_name = "ADDR", requires = "server_pid")]
    server: Option<SocketAddr>,
    /// Its process id (for RSS and pinning)
    #[arg(long, global = true, value_name = "PID")]
    server_pid: Option<u32>,
    /// The running server's data directory: accounts are seeded there and the host key read
    /// from it; without it accounts are registered over the protocol (Argon2 each)
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The im-server binary [default: next to this executable]
    #[arg(long, global = true, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Pin the server (and the bounds measured for it) to these CPUs, e.g. 1 or 2-3
    #[arg(long, global = true, value_name = "LIST")]
    server_cpus: Option<String>,
    /// Pin im-bench (and its workers) to these CPUs
    #[arg(long, global = true, value_name = "LIST")]
    bench_cpus: Option<String>,
    /// Source addresses to spread clients over: 127.0.0.2 onwards
    #[arg(long, global = true, default_value_t = 16)]
    sources: usize,
    /// idle: connections to hold [default: 19000; --quick 2000]
    #[arg(long, global = true)]
    connections: Option<usize>,
    /// soak: how long, in seconds [default: 60; --quick 15]
    #[arg(long, global = true)]
    duration: Option<u64>,
    /// Where data directories and the store bound's scratch go [default: the temp dir]
    #[arg(long, global = true, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the server's data directory (and its log) after the run
    #[arg(long, global = true)]
    keep: bool,
    /// Where contrib/bench-peers.sh keeps the peers' pid files
    #[arg(long, global = true, value_name = "DIR", default_value = "/tmp/im-bench-peers")]
    peers_dir: PathBuf,
    /// An IRC peer's address, instead of the script's default port
    #[arg(long, global = true, value_name = "ADDR")]
    peer_addr: Option<SocketAddr>,
    /// An IRC peer's process id, instead of the script's pid file
    #[arg(long, global = true, value_name = "PID")]
    peer_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    Im,
    Ngircd,
    Inspircd,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Im => "im",
            TargetKind::Ngircd => "ngircd",
            TargetKind::Inspircd => "inspircd",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// N authenticated idle connections: server RSS per connection, time to connect
    Idle,
    /// A storm of new connections: full handshakes per second beside RSA signatures per second
    Handshake,
    /// Password logins, then reconnects by resumption ticket, per second
    Reconnect,
    /// 100 pairs at stepped offered rates: acknowledged and delivered messages, latency
    Dm,
    /// Rooms of 10 to 5,000 members at 10 msg/s: time to the last recipient beside the floor
    Room,
    /// Everything at once with clients coming and going, for --duration
    Soak,
    #[command(name = "__worker", hide = true)]
    Worker,
    #[command(name = "__sign-bound", hide = true)]
    SignBound {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        secs: f64,
    },
    #[command(name = "__argon2-bound", hide = true)]
    Argon2Bound {
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        secs: f64,
    },
    #[command(name = "__store-bound", hide = true)]
    StoreBound {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        conversations: usize,
        #[arg(long)]
        depth: usize,
        #[arg(long)]
        secs: f64,
    },
    /// By hand, not by a scenario: fjall alone at N entries per message (BENCHMARKS.md, DMs).
    #[command(name = "__engine-bound", hide = true)]
    EngineBound {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        entries: usize,
        #[arg(long)]
        secs: f64,
    },
    #[command(name = "__commit-bound", hide = true)]
    CommitBound {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        messages: usize,
        #[arg(long)]
        interval_ms: u64,
    },
    #[command(name = "__fanout-floor", hide = true)]
    FanoutFloor,
}

/// What every scenario gets.
pub struct Ctx {
    pub quick: bool,
    pub target: TargetKind,
    pub tls: bool,
    pub sources: Vec<IpAddr>,
    /// The server's CPU list as taskset takes it, when it is pinned (or when the bench is
    /// and the server must be kept off the bench's CPUs' restriction).
    pub server_cpus: Option<String>,
    pub connections: Option<usize>,
    pub duration: Option<u64>,
    pub work_dir: PathBuf,
    pub report: Report,
    opts: Opts,
}

impl Ctx {
    pub fn is_im(&self) -> bool {
        self.target == TargetKind::Im
    }

    /// Variant names for IRC peers say whether TLS was on.
    pub fn mode(&self) -> &'static str {
        match (self.target, self.tls) {
            (TargetKind::Im, _) => "encrypted",
            (_, true) => "tls",
            (_, false) => "plain",
        }
    }

    /// Connections to open at once. ngIRCd listens with a backlog of 10 (hard-coded): more
    /// at once overflow its accept queue, and the dropped SYNs come back seconds later.
    /// InspIRCd 3 completes registrations on its once-a-second timer, so each takes a second
    /// however idle it is: many at once hide that.
    pub fn connect_concurrency(&self) -> usize {
        match self.target {
            TargetKind::Ngircd => 4,
            TargetKind::Inspircd => 512,
            TargetKind::Im => scenario::CONNECT_CONCURRENCY,
        }
    }

    /// A variant name; for an IRC peer, with `,plain` or `,tls` after it.
    pub fn variant(&self, base: &str) -> String {
        if self.is_im() {
            base.to_owned()
        } else {
            format!("{base},{}", self.mode())
        }
    }

    /// Starts (or attaches to) the im server; `seed` runs with the data directory before the
    /// server starts and returns the accounts it made. For an external server without a data
    /// directory, `register` names are registered over the protocol instead.
    pub async fn im_server(&self, names: &[im_proto::UserName]) -> Result<(ImServer, Vec<seed::Account>)> {
        self.im_server_pinging(names, crate::target::PING_INTERVAL_SECS).await
    }

    /// [`im_server`](Ctx::im_server) with its own keepalive interval (for a server this run
    /// starts).
    pub async fn im_server_pinging(
        &self,
        names: &[im_proto::UserName],
        ping_interval_secs: u64,
    ) -> Result<(ImServer, Vec<seed::Account>)> {
        if let Some(addr) = self.opts.server {
            let pid = self.opts.server_pid.context("--server needs --server-pid")?;
            let server = ImServer::external(addr, pid, self.opts.data_dir.clone(), self.server_cpus.as_deref())?;
            let accounts = if names.is_empty() {
                Vec::new()
            } else {
                eprintln!("registering {} accounts over the protocol (Argon2 each)", names.len());
                seed::register(addr, &self.sources, names, 32).await?
            };
            return Ok((server, accounts));
        }
        let bin = match &self.opts.server_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("im-server"),
        };
        let mut accounts = Vec::new();
        let names = names.to_vec();
        let mut before = |data: &Path| {
            if !names.is_empty() {
                accounts = seed::seed(&data.join("accounts.db"), &names)?;
            }
            Ok(())
        };
        let server = ImServer::start(StartOptions {
            bin: &bin,
            work_dir: &self.work_dir,
            cpus: self.server_cpus.as_deref(),
            keep: self.opts.keep,
            ping_interval_secs,
            before_start: &mut before,
        })?;
        eprintln!(
            "im-server pid {} on {} (cpus {}), data in {}",
            server.pid,
            server.addr,
            server.cpus.as_deref().unwrap_or("any"),
            server.data_dir.as_ref().map_or("?".into(), |d| d.display().to_string())
        );
        Ok((server, accounts))
    }

    /// The IRC peer this run loads.
    pub fn peer(&self) -> Result<Peer> {
        let name = match self.target {
            TargetKind::Ngircd => "ngircd",
            TargetKind::Inspircd => "inspircd",
            TargetKind::Im => bail!("not an IRC target"),
        };
        let peer = Peer::find(
            name,
            self.tls,
            &self.opts.peers_dir,
            self.opts.peer_addr,
            self.opts.peer_pid,
        )?;
        if let Some(c) = &self.server_cpus {
            sys::pin_pid(peer.pid, c)?;
        }
        Ok(peer)
    }

    /// CPUs the server has: what the bounds run on.
    pub fn server_cores(&self) -> usize {
        self.server_cpus
            .as_deref()
            .and_then(|c| sys::parse_cpus(c).ok())
            .map_or_else(online_cpus, |c| c.len())
    }
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// The server's allocator: the store bound runs the server's message log in this process, and
/// must allocate as the server does to be its bound.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("im-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Readers compute keystream ahead at idle moments, as the server's sessions do.
        .on_thread_park(im_server::idle::parking)
        .build()?)
}

fn run(cli: Cli) -> Result<()> {
    let opts = cli.opts;
    let scenario = match cli.command {
        Command::Worker => return runtime()?.block_on(worker::main()),
        Command::SignBound { key, threads, secs } => return bounds::sign_main(&key, threads, secs),
        Command::Argon2Bound { threads, secs } => return bounds::argon2_main(threads, secs),
        Command::StoreBound {
            dir,
            conversations,
            depth,
            secs,
        } => {
            return runtime()?.block_on(bounds::store_main(&dir, conversations, depth, secs));
        }
        Command::EngineBound { dir, entries, secs } => return bounds::engine_main(&dir, entries, secs),
        Command::CommitBound {
            dir,
            messages,
            interval_ms,
        } => {
            let interval = std::time::Duration::from_millis(interval_ms);
            return runtime()?.block_on(bounds::commit_main(&dir, messages, interval));
        }
        Command::FanoutFloor => return runtime()?.block_on(bounds::floor_main()),
        Command::Idle => "idle",
        Command::Handshake => "handshake",
        Command::Reconnect => "reconnect",
        Command::Dm => "dm",
        Command::Room => "room",
        Command::Soak => "soak",
    };
    if opts.target != TargetKind::Im && !matches!(scenario, "idle" | "dm" | "room") {
        bail!("{scenario} runs against im only; the IRC peers run idle, dm and room");
    }
    if opts.target == TargetKind::Im && opts.tls {
        bail!("--tls is for the IRC peers: im connections are always encrypted");
    }
    // The server must not inherit the bench's CPU restriction: when only the bench is pinned,
    // the server gets every CPU explicitly.
    let server_cpus = match (&opts.server_cpus, &opts.bench_cpus) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(_)) => Some(format!("0-{}", online_cpus() - 1)),
        (None, None) => None,
    };
    if let Some(c) = &opts.bench_cpus {
        sys::pin_self(&sys::parse_cpus(c)?)?;
    }
    let nofile = sys::raise_nofile();
    eprintln!("machine: {}", sys::machine());
    eprintln!(
        "im-bench {scenario} --target {}{}{}: server cpus {}, bench cpus {}, open files {nofile}",
        opts.target.name(),
        if opts.tls { " --tls" } else { "" },
        if opts.quick { " --quick" } else { "" },
        server_cpus.as_deref().unwrap_or("any"),
        opts.bench_cpus.as_deref().unwrap_or("any"),
    );
    let work_dir = opts.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut ctx = Ctx {
        quick: opts.quick,
        target: opts.target,
        tls: opts.tls,
        sources: sys::sources(opts.sources),
        server_cpus,
        connections: opts.connections,
        duration: opts.duration,
        work_dir,
        report: Report::new(opts.json, opts.target.name(), scenario),
        opts,
    };
    let rt = runtime()?;
    rt.block_on(async {
        match scenario {
            "idle" => scenario::idle::run(&mut ctx).await,
            "handshake" => scenario::handshake::run(&mut ctx).await,
            "reconnect" => scenario::reconnect::run(&mut ctx).await,
            "dm" => scenario::dm::run(&mut ctx).await,
            "room" => scenario::room::run(&mut ctx).await,
            _ => scenario::soak::run(&mut ctx).await,
        }
    })?;
    ctx.report.finish();
    // Connections still open in detached tasks end with the process.
    rt.shutdown_background();
    Ok(())
}
