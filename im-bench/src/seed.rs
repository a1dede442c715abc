//! Accounts for thousands of clients, without thousands of Argon2 hashes.
//!
//! A password login costs an Argon2id hash (~30 ms of a core) and a full handshake an RSA
//! signature (~4.5 ms), so logging in 19,000 clients by password would take minutes before the
//! benchmark starts. Instead, before the server starts, the accounts database is written with
//! the server's own code (`im_server::store::accounts`, what `im-server user add` uses): one
//! user per client, all with the same Argon2id hash of [`crate::im::PASSWORD`] (computed once),
//! one device each, and one resumption ticket each. The clients then connect by ticket
//! resumption: no signature, no hash. The writes go to a database on tmpfs (each commit is an
//! fsync on disk, 2.5 ms here), which is then copied into the fresh data directory.
//!
//! For a server this run did not start (no data directory), accounts are registered over the
//! protocol instead ([`register`]), which costs the hashes.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use im_proto::handshake::ResumeTicket;
use im_proto::msg::DeviceId;
use im_proto::{RoomName, UserName};
use im_server::store::accounts::Accounts;
use tokio::sync::Semaphore;

use crate::im;

/// A client the server knows: its user, device and ticket.
#[derive(Clone)]
pub struct Account {
    pub user: UserName,
    pub device: DeviceId,
    pub ticket: ResumeTicket,
}

pub fn user_name(prefix: &str, i: usize) -> UserName {
    UserName::parse(&format!("{prefix}{i}")).expect("valid user name")
}

/// Tickets made here last long past any run.
const TICKET_DAYS: u64 = 30;

/// Writes `names` (with one device and ticket each) into the accounts database at
/// `accounts_path`, which must not exist yet.
pub fn seed(accounts_path: &Path, names: &[UserName]) -> Result<Vec<Account>> {
    if accounts_path.exists() {
        bail!(
            "{} exists already: seeding needs a fresh data directory",
            accounts_path.display()
        );
    }
    let t0 = Instant::now();
    let hash = im_server::auth::hash_blocking(im::PASSWORD)?;
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let db_path = scratch.path().join("accounts.db");
    let now = im_server::state::now_ms();
    let expires = now + TICKET_DAYS * 86_400_000;
    let mut out = Vec::with_capacity(names.len());
    {
        let accounts = Accounts::open(&db_path)?;
        for (i, name) in names.iter().enumerate() {
            let uid = accounts.create_user(name, &hash, now)?;
            let device = DeviceId::new(i as u64 + 1).expect("non-zero");
            accounts.touch_device(uid, device.get(), "im-bench", now)?;
            let ticket = im_server::auth::new_ticket(uid, device.get(), expires);
            accounts.insert_ticket(&ticket)?;
            out.push(Account {
                user: name.clone(),
                device,
                ticket: ResumeTicket {
                    id: ticket.id,
                    secret: ticket.secret.clone(),
                },
            });
        }
    }
    // Closed: SQLite has checkpointed its WAL into the main file. Copy whatever is there.
    for suffix in ["", "-wal", "-shm"] {
        let from = scratch.path().join(format!("accounts.db{suffix}"));
        if from.exists() {
            let to = accounts_path.with_file_name(format!("accounts.db{suffix}"));
            std::fs::copy(&from, &to).with_context(|| format!("copying to {}", to.display()))?;
        }
    }
    eprintln!(
        "seeded {} accounts (user, device, ticket) in {:.1} s",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Registers accounts over the protocol (each costs the server an Argon2 hash and a full
/// handshake), `concurrency` at a time.
pub async fn register(
    addr: SocketAddr,
    sources: &[IpAddr],
    names: &[UserName],
    concurrency: usize,
) -> Result<Vec<Account>> {
    let t0 = Instant::now();
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (sem, name, src) = (sem.clone(), name.clone(), sources[i % sources.len()]);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut c = im::connect(src, addr, None).await?;
            let device = DeviceId::random();
            let ticket = c.register(&name, device).await?;
            anyhow::Ok(Account {
                user: name,
                device,
                ticket,
            })
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    eprintln!(
        "registered {} accounts over the protocol in {:.1} s",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Makes each account a member of its rooms over the protocol: connect by ticket, `Join`
/// each room, disconnect. Members join while the others are offline, so the join events go
/// to at most `concurrency` online members rather than to everyone (which would make a
/// 5,000-member room cost 12.5 million pushes before the benchmark starts).
///
/// Returns `Ok(false)` when the server does not support rooms (`unsupported`).
pub async fn join_rooms(
    addr: SocketAddr,
    sources: &[IpAddr],
    memberships: Vec<(Account, Vec<RoomName>)>,
    concurrency: usize,
) -> Result<bool> {
    let t0 = Instant::now();
    let n = memberships.len();
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for (i, (acct, rooms)) in memberships.into_iter().enumerate() {
        let (sem, src) = (sem.clone(), sources[i % sources.len()]);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut c = im::connect(src, addr, Some(&acct.ticket)).await?;
            c.login_ticket().await?;
            for (j, room) in rooms.iter().enumerate() {
                c.join(10 + j as u32, room).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        if let Err(e) = t.await? {
            if format!("{e:#}").contains("unsupported") {
                return Ok(false);
            }
            return Err(e);
        }
    }
    eprintln!("{n} members joined their rooms in {:.1} s", t0.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(true)
}
