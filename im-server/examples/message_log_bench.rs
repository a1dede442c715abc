//! Throughput and latency of the durable message log (fjall, group commit, fsync per commit).
//!
//! ```text
//! cargo run --release -p im-server --example message_log_bench [-- PARENT_DIR [SECONDS]]
//! ```
//!
//! Runs in a fresh temporary directory under PARENT_DIR (default: the system temp dir; give
//! a directory on the disk the server will use, since fsync cost is the disk's). Each phase
//! runs for SECONDS (default 5):
//! 1. 64 concurrent appenders (tokio tasks), each message to a random one of 1,000 direct
//!    conversations, 100-byte texts, each with a client id (so dedup lookups are included);
//! 2. one appender, one message at a time: the latency of a single durable append;
//! 3. reads on the result: a 50-message history page, and a catch-up of one user;
//! 4. a restart: the time to open the log again (the journal's check and replay, and the
//!    writer's dedup filter reading today's and yesterday's dedup buckets).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use im_proto::{RoomName, Target, UserName};
use im_server::store::messages::{Conversation, MessageLog, NewMessage};

const CONVERSATIONS: usize = 1_000;
const TEXT_LEN: usize = 100;
const CONCURRENT: usize = 64;

fn user(i: usize) -> UserName {
    UserName::parse(&format!("user{i}")).expect("valid name")
}

/// The two members of conversation `c`: users 2c and 2c+1.
fn message(c: usize, seq: u64, task: usize) -> NewMessage {
    NewMessage {
        from: user(2 * c),
        to: Target::User(user(2 * c + 1)),
        client_id: format!("{task}-{seq}"),
        action: false,
        text: "x".repeat(TEXT_LEN),
        sender_device: task as u64 + 1,
    }
}

/// A small deterministic generator, so every run spreads messages the same way.
fn next_rand(x: &mut u64) -> usize {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    (*x >> 11) as usize
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn report_latencies(label: &str, lat: &mut [Duration]) {
    lat.sort_unstable();
    let mean = lat.iter().sum::<Duration>().as_secs_f64() * 1e3 / lat.len().max(1) as f64;
    println!(
        "  {label} latency ms: mean {mean:.3}  p50 {:.3}  p99 {:.3}  max {:.3}",
        percentile(lat, 0.50),
        percentile(lat, 0.99),
        percentile(lat, 1.0)
    );
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let parent = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let phase = Duration::from_secs(secs);
    let dir = tempfile::tempdir_in(&parent)?;
    let log = MessageLog::open(dir.path())?;
    println!("message log bench in {} ({secs} s per phase)", dir.path().display());

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    // 1. Concurrent appenders over 1,000 conversations.
    let before = log.stats();
    let start = Instant::now();
    let deadline = start + phase;
    let mut lat: Vec<Duration> = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..CONCURRENT {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (t as u64 + 1);
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let c = next_rand(&mut rng) % CONVERSATIONS;
                    let t0 = Instant::now();
                    log.append(message(c, seq, t)).await.expect("append");
                    lat.push(t0.elapsed());
                    seq += 1;
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let elapsed = start.elapsed().as_secs_f64();
    let after = log.stats();
    let (n, commits) = (after.appended - before.appended, after.commits - before.commits);
    println!(
        "{CONCURRENT} concurrent appenders, {CONVERSATIONS} DM conversations, {TEXT_LEN}-byte texts, \
         fsync per group commit:"
    );
    println!(
        "  {n} appends in {elapsed:.2} s = {:.0} appends/s; {commits} commits = {:.0} commits/s, \
         {:.1} messages per commit",
        n as f64 / elapsed,
        commits as f64 / elapsed,
        n as f64 / commits.max(1) as f64
    );
    report_latencies("append", &mut lat);

    // 2. One appender: the cost of one durable append on its own.
    let before = log.stats();
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut rng = 42u64;
    let mut seq = 0u64;
    while start.elapsed() < phase {
        let c = next_rand(&mut rng) % CONVERSATIONS;
        let t0 = Instant::now();
        log.append_blocking(message(c, seq, 1_000_000))?;
        lat.push(t0.elapsed());
        seq += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = log.stats().appended - before.appended;
    println!("1 appender, one message at a time:");
    println!("  {n} appends in {elapsed:.2} s = {:.0} appends/s", n as f64 / elapsed);
    report_latencies("append", &mut lat);

    // 3. Reads on what is there now.
    let total = log.count()?;
    let mut rng = 7u64;
    let mut lat = Vec::new();
    let mut got = 0;
    let start = Instant::now();
    while start.elapsed() < phase.min(Duration::from_secs(2)) {
        let c = next_rand(&mut rng) % CONVERSATIONS;
        let conv = Conversation::direct(&user(2 * c), &user(2 * c + 1));
        let t0 = Instant::now();
        got += log.history(&conv, None, None, 50)?.0.len();
        lat.push(t0.elapsed());
    }
    println!("reads over {total} stored messages:");
    println!("  {} history pages of up to 50 ({} messages)", lat.len(), got);
    report_latencies("history page", &mut lat);
    let mut lat = Vec::new();
    let mut got = 0;
    let rooms: Vec<(RoomName, u64)> = Vec::new();
    let after_id = log.last_id().saturating_sub(total / 2);
    for i in 0..200 {
        let t0 = Instant::now();
        got += log
            .catch_up(&user(2 * (i * 5 % CONVERSATIONS) + 1), &rooms, after_id, 500)?
            .len();
        lat.push(t0.elapsed());
    }
    println!("  200 catch-ups over the newest half of the log ({got} messages)");
    report_latencies("catch-up", &mut lat);

    // 4. A restart.
    log.close()?;
    let start = Instant::now();
    let log = MessageLog::open(dir.path())?;
    println!(
        "reopen with {} messages (all from today, with client ids): {:.0} ms",
        log.count()?,
        start.elapsed().as_secs_f64() * 1e3
    );
    log.close()?;
    Ok(())
}
