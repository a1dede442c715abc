//! `im-server`: run the server, or administer its data directory.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use im_proto::UserName;
use im_proto::limits::{DEFAULT_PORT, MIN_PASSWORD_CHARS};
use im_server::Server;
use im_server::auth::hash_blocking;
use im_server::config::Config;
use im_server::control;
use im_server::datadir::DataDir;
use im_server::state::{format_ms, now_ms};
use im_server::store::accounts::{Accounts, AccountsError};
use im_server::store::messages::{MessageLog, StoreError};
use zeroize::Zeroizing;

const EXAMPLES: &str = "\
Examples:
  im-server                                  run on 127.0.0.1:7447 with the default data directory
  im-server --listen 0.0.0.0:7447 --data-dir /var/lib/im-server
  im-server --listen 127.0.0.1:0             any free port; the first line on stdout says which
  im-server fingerprint                      the host-key fingerprint to give your users
  IM_PASSWORD=secret im-server user add alice
  im-server user list
  im-server status                           version, uptime, users, rooms, messages, connections
  im-server backup /var/backups/im-$(date +%F)    a consistent copy, while the server runs or not
  im-server restore /var/backups/im-2025-01-31    the server must be stopped
  im-server rotate-host-key --grace-days 30  a new host key that clients follow by themselves

Logs go to stderr; set RUST_LOG=debug (or info, warn) to change how much.
The config file (default <data-dir>/config.toml) sets registration = \"open\" | \"closed\",
retention_days, metrics_listen, and every limit under [limits]; see README.md.";

#[derive(Parser)]
#[command(name = "im-server", version, about = "Self-hosted encrypted instant-messaging server", after_help = EXAMPLES)]
struct Cli {
    /// Data directory: host key, databases, config [default: the platform's data folder]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:7447, [::1]:7447, 0.0.0.0:7447
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Config file [default: <data-dir>/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default)
    Run,
    /// Print the host-key fingerprint, for users to check when they first connect
    Fingerprint,
    /// Manage accounts (safe while the server runs)
    #[command(subcommand)]
    User(UserCommand),
    /// Show version, uptime, users, rooms, messages and connections
    Status,
    /// Copy the data directory to DEST consistently, while the server runs or not
    Backup {
        /// A new directory for the backup
        dest: PathBuf,
        /// Replace an earlier backup at DEST
        #[arg(long)]
        force: bool,
    },
    /// Put a backup back into the data directory (stop the server first)
    Restore {
        /// A directory written by `im-server backup`
        src: PathBuf,
        /// Replace existing data (moved to <data-dir>/replaced-<time>/, not deleted)
        #[arg(long)]
        force: bool,
    },
    /// Make a new host key that the current one endorses, so clients follow without asking
    RotateHostKey {
        /// Days the old key's endorsement is sent: clients that connect within them switch
        /// by themselves; later ones see a changed key
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
        grace_days: u32,
        /// Rotate even while an earlier rotation's grace period lasts
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; password from IM_PASSWORD, --password-file, or a prompt
    Add {
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Delete an account with its devices, keys, tickets, memberships and contacts
    Del { name: String },
    /// List accounts
    List,
    /// Set a new password (and revoke every device's ticket)
    Passwd {
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

/// glibc's malloc took a fifth of the message log's CPU at its ceiling (`perf`, BENCHMARKS.md);
/// with mimalloc it appends a tenth more, and the server acknowledges more DMs (same page).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("im-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = match &cli.data_dir {
        Some(d) => d.clone(),
        None => DataDir::default_path()?,
    };
    check_owner(&root)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => serve(&root, cli.listen, cli.config.as_deref()),
        Command::Fingerprint => {
            let dir = DataDir::open_existing(&root)
                .with_context(|| "no data directory yet: start the server once to create it")?;
            println!("{}", dir.existing_host_key()?.fingerprint());
            Ok(())
        }
        Command::User(cmd) => user(&root, cmd),
        Command::Status => status(&root),
        Command::Backup { dest, force } => backup(&root, &dest, force),
        Command::Restore { src, force } => restore(&root, &src, force),
        Command::RotateHostKey { grace_days, force } => rotate_host_key(&root, grace_days, force),
    }
}

/// Refuses to act as root on a data directory that belongs to another user (the service's):
/// files created here would then be root's, and the server could not open them.
fn check_owner(root: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match std::fs::metadata(root) {
        Ok(m) if euid == 0 && m.uid() != 0 => bail!(
            "{} belongs to uid {}, but this runs as root: files it creates would be root's and the server could not read them. Run it as the owner: sudo -u '#{}' im-server ...",
            root.display(),
            m.uid(),
            m.uid()
        ),
        _ => Ok(()),
    }
}

fn existing(root: &Path) -> Result<DataDir> {
    DataDir::open_existing(root).with_context(|| "no data directory yet: start the server once to create it")
}

/// Prints the server's state: from the running server through its control socket, or from
/// the files when it is stopped. `key: value` lines.
fn status(root: &Path) -> Result<()> {
    let dir = existing(root)?;
    println!("data_dir: {}", root.display());
    if let Some(lines) = control::request(&dir, "status", Some(control::STATUS_TIMEOUT))? {
        println!("running: yes");
        for (k, v) in &lines {
            match (k.as_str(), v.parse::<u64>()) {
                ("started_ms", Ok(ms)) => println!("started: {} UTC", format_ms(ms)),
                ("uptime_secs", Ok(secs)) => println!("uptime: {}", human_duration(secs)),
                _ => println!("{k}: {v}"),
            }
        }
        return Ok(());
    }
    println!("running: no");
    println!("version: {}", env!("CARGO_PKG_VERSION"));
    let accounts = Accounts::open(&dir.accounts_path())?;
    println!("users: {}", accounts.count_users()?);
    println!("rooms: {}", accounts.count_rooms()?);
    let log = match MessageLog::open(&dir.messages_path()) {
        Err(StoreError::Locked { .. }) => {
            bail!("the message log is locked by a running server whose control socket does not answer")
        }
        r => r?,
    };
    println!("messages: {}", log.count()?);
    println!("last_message_id: {}", log.last_id());
    log.close()?;
    println!("host_key: {}", dir.existing_host_key()?.fingerprint());
    Ok(())
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    match (d, h) {
        (0, 0) => format!("{m}m {s}s"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn backup(root: &Path, dest: &Path, force: bool) -> Result<()> {
    let dir = existing(root)?;
    im_server::backup::check_destination(dest, force)?;
    let started = std::time::Instant::now();
    let (how, last_id, messages) = match control::request(&dir, "backup", None)? {
        Some(lines) => {
            // The server names its staging directory as it sees it; it is in our data
            // directory either way.
            let staged = control::value(&lines, "staging")
                .and_then(|p| Path::new(p).file_name())
                .context("the server's answer names no staging directory")?;
            im_server::backup::place(&dir.root().join(staged), dest)?;
            let num = |k| control::value(&lines, k).unwrap_or("?").to_owned();
            ("from the running server", num("last_message_id"), num("messages"))
        }
        None => {
            let partial = im_server::backup::sibling(dest, ".partial");
            if partial.exists() {
                std::fs::remove_dir_all(&partial).with_context(|| format!("cannot remove {}", partial.display()))?;
            }
            let m = im_server::backup::offline(&dir, &partial)?;
            im_server::backup::place(&partial, dest)?;
            (
                "from the stopped server's files",
                m.last_message_id.to_string(),
                m.messages.to_string(),
            )
        }
    };
    let manifest = im_server::backup::read_manifest(dest)?;
    println!(
        "backed up {} {how} to {} in {:.1} s: {messages} messages up to id {last_id}; {}",
        root.display(),
        dest.display(),
        started.elapsed().as_secs_f64(),
        manifest.files.join(", ")
    );
    Ok(())
}

fn restore(root: &Path, src: &Path, force: bool) -> Result<()> {
    let running = DataDir::open_existing(root).is_ok_and(|d| control::is_running(&d));
    let r = im_server::backup::restore(src, root, force, running)?;
    let m = &r.manifest;
    println!(
        "restored {} (taken {} by im-server {}) into {}: {} users, {} rooms, {} messages up to id {}; {}",
        src.display(),
        m.created,
        m.server_version,
        root.display(),
        r.users,
        r.rooms,
        m.messages,
        m.last_message_id,
        r.files.join(", ")
    );
    if let Some(aside) = &r.replaced {
        println!(
            "the files it replaced are in {}; delete that directory once the server runs well",
            aside.display()
        );
    }
    Ok(())
}

fn rotate_host_key(root: &Path, grace_days: u32, force: bool) -> Result<()> {
    let dir = existing(root)?;
    let now = now_ms();
    let until = now + u64::from(grace_days) * 86_400_000;
    let r = dir.rotate_host_key(now, until, force)?;
    println!("new host key: {}", r.new);
    println!(
        "endorsed by the previous key {} until {} UTC: clients that pinned it and connect before then switch to the new key without asking; later ones see a changed key",
        r.old,
        format_ms(r.not_after_ms)
    );
    println!("the previous key is kept in {}", dir.old_host_key_path().display());
    if control::is_running(&dir) {
        println!("the running server still uses the previous key: restart it to switch");
    }
    Ok(())
}

fn serve(root: &Path, listen: Option<SocketAddr>, config: Option<&Path>) -> Result<()> {
    let dir = DataDir::open_or_create(root)?;
    let config = match config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(&dir.config_path(), false)?,
    };
    let addr = listen
        .or(config.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)));
    let metrics = match config.metrics_listen {
        Some(at) => Some((at, im_server::metrics::install().context("cannot set up metrics")?)),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(im_server::idle::parking)
        .build()?;
    let socket = dir.control_socket_path();
    let served = runtime.block_on(async move {
        let server = Server::open(&dir, config)?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(data_dir = %dir.root().display(), host_key = %server.fingerprint(), "im-server {} starting", env!("CARGO_PKG_VERSION"));
        if let Some((at, handle)) = metrics {
            let scrapes = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot serve metrics on {at} (metrics_listen)"))?;
            im_server::metrics::announce(scrapes.local_addr()?);
            tokio::spawn(im_server::metrics::serve(scrapes, handle, server.shared.shutdown.clone()));
        }
        match control::bind(&dir) {
            Ok(l) => {
                tokio::spawn(control::serve(l, server.shared.clone(), dir.clone()));
            }
            Err(e) => tracing::warn!(
                path = %dir.control_socket_path().display(),
                error = %e,
                "no control socket: `im-server status` and `backup` cannot reach this server"
            ),
        }
        let shared = server.shared.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: closing every connection");
            shared.shut_down();
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
        drop(out);
        server.serve(listener).await;
        tracing::info!("stopped");
        Ok(())
    });
    if served.is_ok() {
        // Only a server that got as far as serving bound the socket; never remove another's.
        let _ = std::fs::remove_file(socket);
    }
    served
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn user(root: &Path, cmd: UserCommand) -> Result<()> {
    let dir = DataDir::open_or_create(root)?;
    let accounts = Accounts::open(&dir.accounts_path())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    match cmd {
        UserCommand::Add { name, password_file } => {
            let name = UserName::parse(&name)?;
            let password = read_password(password_file.as_deref())?;
            match accounts.create_user(&name, &hash_blocking(&password)?, now) {
                Ok(_) => println!("created user {name}"),
                Err(AccountsError::Exists(_)) => bail!("user {name} already exists"),
                Err(e) => return Err(e.into()),
            }
        }
        UserCommand::Del { name } => {
            let name = UserName::parse(&name)?;
            if !accounts.delete_user(&name)? {
                bail!("no user named {name}");
            }
            println!(
                "deleted user {name} (their messages stay in the log; sessions already open end at their next login)"
            );
        }
        UserCommand::List => {
            for (name, created) in accounts.list_users()? {
                println!("{name}\tcreated {}", im_server::state::format_ms(created));
            }
        }
        UserCommand::Passwd { name, password_file } => {
            let name = UserName::parse(&name)?;
            let Some(user) = accounts.user(&name)? else {
                bail!("no user named {name}")
            };
            let password = read_password(password_file.as_deref())?;
            accounts.set_password(user.id, &hash_blocking(&password)?)?;
            let revoked = accounts.delete_tickets_of_user(user.id)?;
            println!("password of {name} changed; {revoked} device ticket(s) revoked");
        }
    }
    Ok(())
}

/// The password from IM_PASSWORD, a file (first line), or a prompt on a terminal; never argv.
fn read_password(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let password = if let Some(path) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("cannot read password file {}", path.display()))?,
        );
        Zeroizing::new(text.lines().next().unwrap_or("").to_owned())
    } else if let Ok(p) = std::env::var("IM_PASSWORD") {
        Zeroizing::new(p)
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password("Password: ")?);
        let again = Zeroizing::new(rpassword::prompt_password("Again: ")?);
        if first != again {
            bail!("the passwords differ");
        }
        first
    } else {
        bail!("no password: set IM_PASSWORD, use --password-file, or run on a terminal");
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("passwords need at least {MIN_PASSWORD_CHARS} characters");
    }
    Ok(password)
}
