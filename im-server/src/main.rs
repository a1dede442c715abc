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
use im_server::datadir::DataDir;
use im_server::store::accounts::{Accounts, AccountsError};
use zeroize::Zeroizing;

const EXAMPLES: &str = "\
Examples:
  im-server                                  run on 127.0.0.1:7447 with the default data directory
  im-server --listen 0.0.0.0:7447 --data-dir /var/lib/im-server
  im-server --listen 127.0.0.1:0             any free port; the first line on stdout says which
  im-server fingerprint                      the host-key fingerprint to give your users
  IM_PASSWORD=secret im-server user add alice
  im-server user list

Logs go to stderr; set RUST_LOG=debug (or info, warn) to change how much.
The config file (default <data-dir>/config.toml) sets registration = \"open\" | \"closed\",
retention_days, and every limit under [limits]; see README.md.";

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
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => serve(&root, cli.listen, cli.config.as_deref()),
        Command::Fingerprint => {
            let dir = DataDir::open_existing(&root)
                .with_context(|| "no data directory yet: start the server once to create it")?;
            println!("{}", dir.existing_host_key()?.fingerprint());
            Ok(())
        }
        Command::User(cmd) => user(&root, cmd),
    }
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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let server = Server::open(&dir, config)?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(data_dir = %dir.root().display(), host_key = %server.fingerprint(), "im-server {} starting", env!("CARGO_PKG_VERSION"));
        let shutdown = server.shared.shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: closing every connection");
            shutdown.cancel();
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
        drop(out);
        server.serve(listener).await;
        tracing::info!("stopped");
        Ok(())
    })
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
