//! The local control socket, `<data-dir>/control.sock` (mode 0600, in a 0700 directory):
//! how `im-server status` and `im-server backup` reach a running server. Only the server's own
//! user (and root) can connect, so there is no authentication beyond the file mode.
//!
//! The protocol is text, one exchange per connection: the client sends one request line,
//! `status` or `backup`; the server answers with `key: value` lines and closes. A failure is
//! one `error: TEXT` line. `status` answers `version`, `pid`, `started_ms`, `uptime_secs`,
//! `connections` (logged in), `users`, `rooms`, `messages`, `last_message_id`, `host_key`,
//! `metrics`; `backup` writes a backup into a staging directory inside the data directory
//! (see [`crate::backup`]) and answers `staging` (its path), `last_message_id` and
//! `messages`, for the command to move into place.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::Mutex;

use crate::datadir::DataDir;
use crate::state::{Shared, now_ms};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 256;
/// A client must send its request within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `status` waits for its answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

/// One backup at a time.
static BACKUP: Mutex<()> = Mutex::const_new(());

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the server says: {0}")]
    Server(String),
}

/// Binds the control socket, replacing a stale one left by a server that was killed. Fails
/// if another server answers on it.
pub fn bind(dir: &DataDir) -> std::io::Result<UnixListener> {
    let path = dir.control_socket_path();
    if UnixStream::connect(&path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("another server answers on {}", path.display()),
        ));
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Answers requests until `shared.shutdown` fires, then removes the socket file.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, dir: DataDir) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (shared, dir) = (shared.clone(), dir.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, shared, dir).await {
                            tracing::debug!(error = %e, "control request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = std::fs::remove_file(dir.control_socket_path());
}

async fn answer(stream: tokio::net::UnixStream, shared: Arc<Shared>, dir: DataDir) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let reply = match line.trim() {
        "" => return Ok(()), // a probe: is anyone there?
        "status" => status(&shared).await,
        "backup" => backup(&shared, &dir).await,
        other => Err(format!("unknown request {other:?}; try status or backup")),
    };
    let text = match reply {
        Ok(lines) => lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect::<String>(),
        Err(e) => format!("error: {}\n", e.replace('\n', " ")),
    };
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

type Lines = Vec<(&'static str, String)>;

async fn status(shared: &Shared) -> Result<Lines, String> {
    let (users, rooms) = shared
        .db(|a| Ok((a.count_users()?, a.count_rooms()?)))
        .await
        .map_err(|e| e.to_string())?;
    let log = shared.log.clone();
    let messages = tokio::task::spawn_blocking(move || log.count())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let uptime = shared.started.elapsed();
    Ok(vec![
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("pid", std::process::id().to_string()),
        (
            "started_ms",
            (now_ms().saturating_sub(uptime.as_millis() as u64)).to_string(),
        ),
        ("uptime_secs", uptime.as_secs().to_string()),
        ("connections", shared.router.connections().to_string()),
        ("users", users.to_string()),
        ("rooms", rooms.to_string()),
        ("messages", messages.to_string()),
        ("last_message_id", shared.log.last_id().to_string()),
        ("host_key", shared.host_key.fingerprint()),
        (
            "metrics",
            shared
                .config
                .metrics_listen
                .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics")),
        ),
    ])
}

async fn backup(shared: &Arc<Shared>, dir: &DataDir) -> Result<Lines, String> {
    let _one_at_a_time = BACKUP.lock().await;
    let (shared, dir) = (shared.clone(), dir.clone());
    let staged = tokio::task::spawn_blocking(move || crate::backup::stage(&shared, &dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let (path, manifest) = staged;
    tracing::info!(path = %path.display(), last_message_id = manifest.last_message_id, "backup written");
    Ok(vec![
        ("staging", path.display().to_string()),
        ("last_message_id", manifest.last_message_id.to_string()),
        ("messages", manifest.messages.to_string()),
    ])
}

/// Sends `request` to the server running on `dir` and returns its `key: value` lines, or
/// `None` when no server listens there. Blocking; `timeout` bounds each read (`None`: wait
/// as long as it takes, for a backup).
pub fn request(
    dir: &DataDir,
    request: &str,
    timeout: Option<Duration>,
) -> Result<Option<Vec<(String, String)>>, ControlError> {
    let path = dir.control_socket_path();
    let err = |source| ControlError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(err(e)),
    };
    stream.set_read_timeout(timeout).map_err(err)?;
    stream.write_all(format!("{request}\n").as_bytes()).map_err(err)?;
    let mut lines = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(err)?;
        let (k, v) = line.split_once(": ").unwrap_or((line.as_str(), ""));
        if k == "error" {
            return Err(ControlError::Server(v.to_owned()));
        }
        lines.push((k.to_owned(), v.to_owned()));
    }
    Ok(Some(lines))
}

/// Whether a server answers on `dir`'s control socket.
pub fn is_running(dir: &DataDir) -> bool {
    UnixStream::connect(dir.control_socket_path()).is_ok()
}

/// The value of `key` in a reply.
pub fn value<'a>(lines: &'a [(String, String)], key: &str) -> Option<&'a str> {
    lines.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}
