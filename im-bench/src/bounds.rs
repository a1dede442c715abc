//! The bounds each figure is judged against, measured in the same run on the server's CPUs:
//! RSA-3072 signatures per second (handshakes), Argon2id verifications per second (password
//! logins), the message log's own append rate (acknowledged messages), and the raw-send floor
//! of a fan-out (room delivery).
//!
//! Each runs in a child process (`im-bench __sign-bound` and friends) started under `taskset`
//! with the server's CPU list, so a bound is what the server's cores can do, not the bench's.
//! A child prints one JSON line.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use im_proto::hostkey::RsaSigner;
use im_proto::{Target, UserName};
use im_server::store::messages::{MessageLog, NewMessage};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{RwLock, mpsc};

/// What a bound child prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rate {
    pub per_s: f64,
    pub count: u64,
    pub secs: f64,
}

/// A command for this executable, under `taskset -c CPUS` when given.
fn self_command(cpus: Option<&str>) -> Result<Command> {
    let exe = std::env::current_exe()?;
    Ok(match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c]).arg(exe);
            cmd
        }
        None => Command::new(exe),
    })
}

/// Runs a bound child and parses the one JSON line it prints.
async fn run_bound<T: serde::de::DeserializeOwned>(cpus: Option<&str>, args: &[String]) -> Result<T> {
    let out = self_command(cpus)?
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("running a bound")?;
    if !out.status.success() {
        bail!("bound {:?} failed", args.first());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("bound printed {text:?}"))
}

/// RSA-PSS signatures per second with the server's host key, in `threads` threads.
pub async fn sign(cpus: Option<&str>, key: &Path, threads: usize, secs: f64) -> Result<Rate> {
    run_bound(
        cpus,
        &[
            "__sign-bound".into(),
            "--key".into(),
            key.display().to_string(),
            "--threads".into(),
            threads.to_string(),
            "--secs".into(),
            secs.to_string(),
        ],
    )
    .await
}

/// Argon2id verifications per second (the server's parameters), in `threads` threads.
pub async fn argon2(cpus: Option<&str>, threads: usize, secs: f64) -> Result<Rate> {
    run_bound(
        cpus,
        &[
            "__argon2-bound".into(),
            "--threads".into(),
            threads.to_string(),
            "--secs".into(),
            secs.to_string(),
        ],
    )
    .await
}

/// Appends per second to a fresh message log under `dir`: direct messages in `conversations`
/// conversations, as the DM scenario's senders write them, each with `depth` appends in
/// flight, as a session pipelines a client's sends. Enough in flight makes this the log's
/// ceiling: its group commits grow with what is queued.
pub async fn store(cpus: Option<&str>, dir: &Path, conversations: usize, depth: usize, secs: f64) -> Result<Rate> {
    run_bound(
        cpus,
        &[
            "__store-bound".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--conversations".into(),
            conversations.to_string(),
            "--depth".into(),
            depth.to_string(),
            "--secs".into(),
            secs.to_string(),
        ],
    )
    .await
}

fn print_rate(count: u64, elapsed: Duration) -> Result<()> {
    let secs = elapsed.as_secs_f64();
    let r = Rate {
        per_s: count as f64 / secs,
        count,
        secs,
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

/// Runs `work` in `threads` threads for `secs`; returns the total count.
fn threaded(threads: usize, secs: f64, work: impl Fn() + Send + Sync + 'static) -> (u64, Duration) {
    let work = Arc::new(work);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (work, stop, count) = (work.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    work();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    (count.load(Ordering::Relaxed), t0.elapsed())
}

/// `__sign-bound`
pub fn sign_main(key: &Path, threads: usize, secs: f64) -> Result<()> {
    let pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let signer = Arc::new(RsaSigner::from_pkcs8_pem(&pem)?);
    let msg = [7u8; 48];
    let (n, el) = threaded(threads, secs, move || {
        std::hint::black_box(signer.sign(&mut rand::rng(), &msg));
    });
    print_rate(n, el)
}

/// `__argon2-bound`
pub fn argon2_main(threads: usize, secs: f64) -> Result<()> {
    let hash = Arc::new(im_server::auth::hash_blocking(crate::im::PASSWORD)?);
    let (n, el) = threaded(threads, secs, move || {
        assert!(im_server::auth::verify_blocking(crate::im::PASSWORD, &hash));
    });
    print_rate(n, el)
}

/// The DM scenario's conversation `p`: user `a{p}` to `b{p}`.
pub fn dm_pair(p: usize) -> (UserName, UserName) {
    (crate::seed::user_name("a", p), crate::seed::user_name("b", p))
}

/// A message text of `len` bytes.
pub fn text(len: usize) -> String {
    "x".repeat(len)
}

pub const TEXT_LEN: usize = 100;

/// `__store-bound`
pub async fn store_main(dir: &Path, conversations: usize, depth: usize, secs: f64) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("im-bench-store-").tempdir_in(dir)?;
    let log = MessageLog::open(tmp.path())?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..conversations * depth {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let (from, to) = dm_pair(p % conversations.max(1));
            let mut n = 0u64;
            while Instant::now() < deadline {
                log.append(NewMessage {
                    from: from.clone(),
                    to: Target::User(to.clone()),
                    client_id: format!("s-{p}-{n}"),
                    action: false,
                    text: text(TEXT_LEN),
                    sender_device: (p % conversations.max(1)) as u64 + 1,
                })
                .await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let el = t0.elapsed();
    tokio::task::spawn_blocking(move || log.close()).await??;
    print_rate(total, el)
}

/// `__engine-bound`: messages per second that fjall itself stores with `entries` inserts per
/// message (a 200-byte record and 16-byte index entries, each in its own keyspace, keys like
/// the log's), 256 messages per commit with `fsync`, from one thread: the storage engine's
/// ceiling for a given layout, without the log's encoding, dedup lookups and hand-offs. The
/// message log writes five entries per direct message.
pub fn engine_main(dir: &Path, entries: usize, secs: f64) -> Result<()> {
    const BATCH: u64 = 256;
    let tmp = tempfile::Builder::new().prefix("im-bench-engine-").tempdir_in(dir)?;
    let db = fjall::Database::builder(tmp.path()).open()?;
    let keyspaces = (0..entries.max(1))
        .map(|i| db.keyspace(&format!("k{i}"), fjall::KeyspaceCreateOptions::default))
        .collect::<fjall::Result<Vec<_>>>()?;
    let record = [b'x'; 200];
    let t0 = Instant::now();
    let mut id = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let mut wb = db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for _ in 0..BATCH {
            id += 1;
            for (i, ks) in keyspaces.iter().enumerate() {
                let mut key = format!("conv-a{:03}-b{:03}/", id % 100, i).into_bytes();
                key.extend_from_slice(&id.to_be_bytes());
                wb.insert(ks, key, if i == 0 { &record[..] } else { &record[..16] });
            }
        }
        wb.commit()?;
    }
    print_rate(id, t0.elapsed())
}

/// What `__commit-bound` prints: the latency of one append to an idle message log.
#[derive(Debug, Serialize, Deserialize)]
pub struct Commit {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub count: u64,
}

/// The latency of a durable commit of one message, as a room message at `interval` meets it:
/// appends to a fresh message log under `dir`, one at a time, `interval` apart, on the
/// server's CPUs. No fan-out can reach its last member sooner than its floor plus this,
/// because im routes a message only once the commit holding it is fsynced.
pub async fn commit(cpus: Option<&str>, dir: &Path, messages: usize, interval: Duration) -> Result<Commit> {
    run_bound(
        cpus,
        &[
            "__commit-bound".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--messages".into(),
            messages.to_string(),
            "--interval-ms".into(),
            interval.as_millis().to_string(),
        ],
    )
    .await
}

/// `__commit-bound`
pub async fn commit_main(dir: &Path, messages: usize, interval: Duration) -> Result<()> {
    let c = commit_latency(dir, messages, interval).await?;
    println!("{}", serde_json::to_string(&c)?);
    Ok(())
}

async fn commit_latency(dir: &Path, messages: usize, interval: Duration) -> Result<Commit> {
    let tmp = tempfile::Builder::new().prefix("im-bench-commit-").tempdir_in(dir)?;
    let log = MessageLog::open(tmp.path())?;
    let (from, to) = (crate::seed::user_name("r", 0), Target::parse("#commit")?);
    let mut latency = crate::hist::Latency::new();
    for n in 0..messages {
        tokio::time::sleep(interval).await;
        let msg = NewMessage {
            from: from.clone(),
            to: to.clone(),
            client_id: format!("c-{n}"),
            action: false,
            text: text(TEXT_LEN),
            sender_device: 1,
        };
        let t0 = Instant::now();
        log.append(msg).await?;
        latency.record(t0.elapsed());
    }
    tokio::task::spawn_blocking(move || log.close()).await??;
    Ok(Commit {
        p50_ms: latency.quantile_ms(0.5),
        p99_ms: latency.quantile_ms(0.99),
        count: latency.count(),
    })
}

// ---------------------------------------------------------------------------------------
// The raw-send floor of a fan-out.

/// Bytes of one unsealed floor message: about what a sealed room message is on the wire.
pub const FLOOR_MSG_LEN: usize = 200;
/// The largest message the floor passes on.
pub const FLOOR_MAX_MSG: usize = 64 * 1024;

/// A running fan-out floor server (a child process on the server's CPUs).
pub struct Floor {
    pub addr: SocketAddr,
    /// Killed on drop.
    _child: Child,
}

impl Floor {
    pub async fn start(cpus: Option<&str>) -> Result<Floor> {
        let mut child = self_command(cpus)?
            .arg("__fanout-floor")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next_line().await?.unwrap_or_default();
        let addr = first
            .strip_prefix("listening on ")
            .with_context(|| format!("fan-out floor said {first:?}"))?
            .parse()?;
        Ok(Floor { addr, _child: child })
    }
}

/// Who a floor connection is: its first byte.
pub const FLOOR_MEMBER: u8 = b'M';
pub const FLOOR_SENDER: u8 = b'S';
/// The floor's answer to a member once it is registered.
pub const FLOOR_READY: u8 = b'k';

/// Appends one message for a floor sender connection: its length (4 bytes, big-endian), then
/// what `write` appends, which is what every member receives.
pub fn floor_message<T>(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let written = write(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    written
}

type Members = Arc<RwLock<Vec<mpsc::Sender<Arc<[u8]>>>>>;

/// `__fanout-floor`: the least any server must do to deliver a room message: one small write
/// to each member's socket, no crypto, no store. Each member connection has its own task and
/// bounded queue, and a message is fanned out by pushing one shared buffer into every queue,
/// as im-server's router does, so the writes spread over all worker threads. A sender
/// connection writes messages each prefixed with its length (4 bytes, big-endian, at most
/// [`FLOOR_MAX_MSG`]); each goes to every member as it is. Ends when stdin closes.
pub async fn floor_main() -> Result<()> {
    crate::sys::raise_nofile();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    let members: Members = Arc::default();
    tokio::spawn(async {
        let mut stdin = tokio::io::stdin();
        let mut b = [0u8; 64];
        while matches!(stdin.read(&mut b).await, Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    loop {
        let (mut s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        let members = members.clone();
        tokio::spawn(async move {
            let mut role = [0u8; 1];
            s.read_exact(&mut role).await?;
            match role[0] {
                FLOOR_MEMBER => {
                    let (tx, mut rx) = mpsc::channel::<Arc<[u8]>>(1024);
                    members.write().await.push(tx);
                    s.write_all(&[FLOOR_READY]).await?;
                    let mut out = Vec::new();
                    while let Some(m) = rx.recv().await {
                        out.clear();
                        out.extend_from_slice(&m);
                        while let Ok(more) = rx.try_recv() {
                            out.extend_from_slice(&more);
                        }
                        s.write_all(&out).await?;
                    }
                }
                FLOOR_SENDER => {
                    let mut len = [0u8; 4];
                    loop {
                        s.read_exact(&mut len).await?;
                        let len = u32::from_be_bytes(len) as usize;
                        anyhow::ensure!(len <= FLOOR_MAX_MSG, "a floor message of {len} bytes");
                        let mut msg = vec![0u8; len];
                        s.read_exact(&mut msg).await?;
                        let msg: Arc<[u8]> = msg.into();
                        for tx in members.read().await.iter() {
                            let _ = tx.try_send(msg.clone());
                        }
                    }
                }
                _ => {}
            }
            anyhow::Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every append is timed, and the fresh log is removed after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_commit_bound_times_each_append_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let c = commit_latency(dir.path(), 5, Duration::from_millis(1)).await.unwrap();
        assert_eq!(c.count, 5);
        assert!(c.p50_ms > 0.0 && c.p50_ms <= c.p99_ms, "{c:?}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the fresh log was removed"
        );
    }
}
