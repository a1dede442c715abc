//! `room`: rooms of 10, 100, 1,000 and 5,000 members; one member sends 100-byte messages at
//! 10 msg/s (open loop) and every other member's connection times each arrival. The figure is
//! the time from a message's intended send time to its last recipient, p50 and p99, with the
//! deliveries per second.
//!
//! The bound, measured in the same run for the same number of recipients: the raw-send floor
//! (`bounds::floor_main`), a fan-out server on the server's CPUs that does nothing but one
//! small write to each member socket, spread over tasks like the real server. Its recipients
//! do with each record what im's do (MAC check, decryption, decoding; see [`sealed_floor`]),
//! so that the ratio, im's time to last / the floor's, compares the servers and not the
//! recipients' work on the bench's core: the goal is 1.25 or better. The floor with recipients
//! that only read bytes is reported beside it (`raw_floor_*`).
//!
//! im routes a message only after the commit holding it is fsynced, so no room can do better
//! than the floor plus one durable commit. That commit is measured alone first
//! (`bounds::commit`, `commit_p50`), and the time to last is reported against the sum too
//! (`time_to_last_p50_durable`): what is left above it is the server's own overhead.
//!
//! Sends leave on time to within microseconds ([`Pacer::precise`]): on tokio's millisecond
//! timer alone, the first passes' small-room figures carried up to a millisecond of the
//! sender's own lateness, different in every run.
//!
//! Memberships are made before any member stays online (`seed::join_rooms`), so the join
//! events do not cost a quadratic burst of pushes. An IRC channel cannot be joined offline:
//! against a peer, members JOIN live, and the join flood drains before timing starts.
//! Recipients do not acknowledge room messages here (a real client would, now and then).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use im_proto::keys::TrafficSecret;
use im_proto::msg::{ChatMessage, ClientMsg, MessageId, RequestId, ServerMsg, Timestamp};
use im_proto::record::{Opener, RekeyPolicy, Sealer};
use im_proto::session::Session;
use im_proto::{RoomName, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{Arrivals, login_all};
use crate::bounds::{self, FLOOR_MEMBER, FLOOR_MSG_LEN, FLOOR_READY, FLOOR_SENDER, Floor};
use crate::hist::Latency;
use crate::im::{Event, Reader, Writer};
use crate::report::Unit;
use crate::schedule::{Pacer, Schedule};
use crate::seed::{self, user_name};
use crate::target::ROOM_PING_INTERVAL_SECS;
use crate::{Ctx, irc, sys};

const RATE: f64 = 10.0;

/// The measurement in progress for each room size.
type Current = Arc<RwLock<HashMap<usize, (Arc<Arrivals>, Schedule)>>>;

fn room(size: usize) -> RoomName {
    RoomName::parse(&format!("#r{size}")).expect("valid room name")
}

/// What one size gave.
struct Measured {
    ttl: Latency,
    incomplete: usize,
    deliveries: Latency,
    per_s: f64,
}

fn measured(a: &Arrivals, recipients: usize, sch: &Schedule) -> Measured {
    let (ttl, incomplete) = a.time_to_last(recipients as u32, |s| sch.at(s as u64));
    let span = a
        .last_arrival()
        .saturating_duration_since(sch.at(0))
        .as_secs_f64()
        .max(1e-3);
    Measured {
        ttl,
        incomplete,
        deliveries: a.delivery_latency(),
        per_s: a.delivered() as f64 / span,
    }
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let sizes: Vec<usize> = if ctx.quick {
        vec![10, 100, 1_000]
    } else {
        vec![10, 100, 1_000, 5_000]
    };
    let messages = if ctx.quick { 20 } else { 100 };
    if ctx.is_im() {
        run_im(ctx, &sizes, messages).await
    } else {
        run_irc(ctx, &sizes, messages).await
    }
}

async fn run_im(ctx: &mut Ctx, sizes: &[usize], messages: usize) -> Result<()> {
    let max = *sizes.last().expect("sizes");
    let names: Vec<_> = (0..max).map(|i| user_name("r", i)).collect();
    let (server, accounts) = ctx.im_server_pinging(&names, ROOM_PING_INTERVAL_SECS).await?;
    let memberships = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), sizes.iter().filter(|&&s| i < s).map(|&s| room(s)).collect()))
        .collect();
    let supported = seed::join_rooms(server.addr, &ctx.sources, memberships, 32).await?;
    if !supported {
        eprintln!("im-server answers Join with `unsupported`: rooms are not implemented yet; measuring the floor only");
    }
    // One durable commit alone, at the room's pace, while the machine is quiet.
    let commits = if ctx.quick { 20 } else { 50 };
    let interval = Duration::from_secs_f64(1.0 / RATE);
    let commit = bounds::commit(ctx.server_cpus.as_deref(), &ctx.work_dir, commits, interval).await?;
    ctx.report.add("alone", "commit_p50", commit.p50_ms, Unit::Ms);
    ctx.report.add("alone", "commit_p99", commit.p99_ms, Unit::Ms);
    let raw_floor = Floor::start(ctx.server_cpus.as_deref()).await?;
    let current: Current = Arc::default();
    let mut writers: Vec<Writer> = Vec::new();
    let mut raw_members = 0;
    let mut raw_sender = floor_connect(&ctx.sources, raw_floor.addr, FLOOR_SENDER).await?;
    for &size in sizes {
        let v = format!("members={size}");
        let recipients = size - 1;
        let mut im = None;
        if supported {
            let fresh = login_all(server.addr, &ctx.sources, &accounts[writers.len()..size]).await?;
            for c in fresh {
                let (reader, writer) = c.split();
                tokio::spawn(read_im(reader, Some(writer.clone()), current.clone()));
                writers.push(writer);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (sch, arrivals) = start_measuring(&current, size, messages);
            let sender = writers[0].clone();
            let to = Target::Room(room(size));
            let text = bounds::text(bounds::TEXT_LEN);
            let mut pacer = Pacer::precise(sch);
            while let Some(batch) = pacer.next_batch().await {
                let msgs: Vec<ClientMsg> = batch
                    .map(|k| ClientMsg::Send {
                        req: RequestId(k as u32),
                        to: to.clone(),
                        client_id: format!("{size}-{k}"),
                        action: false,
                        text: text.clone(),
                    })
                    .collect();
                sender.send_all(&msgs).await?;
            }
            arrivals.wait_complete(recipients as u32, Duration::from_secs(10)).await;
            im = Some(measured(&arrivals, recipients, &sch));
        }

        // The floor for the same number of recipients, who open and decode records as im's do.
        let fl = sealed_floor(ctx, size, messages, &current).await?;

        // And with recipients that only read bytes.
        while raw_members < recipients {
            let s = floor_connect(&ctx.sources, raw_floor.addr, FLOOR_MEMBER).await?;
            tokio::spawn(read_raw_floor(s, current.clone()));
            raw_members += 1;
        }
        let (sch, arrivals) = start_measuring(&current, raw_key(size), messages);
        let mut pacer = Pacer::precise(sch);
        while let Some(batch) = pacer.next_batch().await {
            let mut out = Vec::new();
            for k in batch {
                let mut msg = [0u8; FLOOR_MSG_LEN];
                msg[..8].copy_from_slice(&((raw_key(size) as u64) << 32 | k).to_be_bytes());
                bounds::floor_message(&mut out, |o| o.extend_from_slice(&msg));
            }
            raw_sender.write_all(&out).await?;
        }
        arrivals.wait_complete(recipients as u32, Duration::from_secs(10)).await;
        let raw = measured(&arrivals, recipients, &sch);

        let r = &mut ctx.report;
        match im {
            Some(m) => {
                let (f50, f99) = (fl.ttl.quantile_ms(0.5), fl.ttl.quantile_ms(0.99));
                r.add_bounded(&v, "time_to_last_p50", m.ttl.quantile_ms(0.5), Unit::Ms, f50);
                r.add_bounded(&v, "time_to_last_p99", m.ttl.quantile_ms(0.99), Unit::Ms, f99);
                // What im's durability allows at best: routing waits for the fsync.
                let durable = f50 + commit.p50_ms;
                r.add_bounded(
                    &v,
                    "time_to_last_p50_durable",
                    m.ttl.quantile_ms(0.5),
                    Unit::Ms,
                    durable,
                );
                r.add(&v, "deliveries", m.per_s, Unit::PerS);
                r.add(&v, "delivery_p50", m.deliveries.quantile_ms(0.5), Unit::Ms);
                r.add(&v, "delivery_p99", m.deliveries.quantile_ms(0.99), Unit::Ms);
                r.add(&v, "incomplete", m.incomplete as f64, Unit::Count);
            }
            None => {
                r.add(&v, "floor_time_to_last_p50", fl.ttl.quantile_ms(0.5), Unit::Ms);
                r.add(&v, "floor_time_to_last_p99", fl.ttl.quantile_ms(0.99), Unit::Ms);
            }
        }
        r.add(&v, "floor_deliveries", fl.per_s, Unit::PerS);
        r.add(&v, "floor_incomplete", fl.incomplete as f64, Unit::Count);
        r.add(&v, "raw_floor_time_to_last_p50", raw.ttl.quantile_ms(0.5), Unit::Ms);
        r.add(&v, "raw_floor_time_to_last_p99", raw.ttl.quantile_ms(0.99), Unit::Ms);
        r.add(&v, "raw_floor_incomplete", raw.incomplete as f64, Unit::Count);
    }
    if supported {
        ctx.report.add(
            &format!("members={max}"),
            "rss_server",
            server.rss()? as f64,
            Unit::Bytes,
        );
    }
    drop(raw_floor);
    Ok(())
}

/// A fresh schedule starting shortly, and its arrivals registered under `key`.
fn start_measuring(current: &Current, key: usize, messages: usize) -> (Schedule, Arc<Arrivals>) {
    let sch = Schedule::for_stream(
        Instant::now() + Duration::from_millis(50),
        RATE,
        1,
        0,
        messages as f64 / RATE,
    );
    let arrivals = Arrivals::new(messages);
    current
        .write()
        .expect("not poisoned")
        .insert(key, (arrivals.clone(), sch));
    (sch, arrivals)
}

/// The bound: the floor server's one write per member, to recipients that do what im's do
/// with each record (read it, check its MAC, decrypt it with keystream computed ahead, decode
/// the message). The recipients share the bench's core, so their work is part of any time to
/// the last of them; the floor's must match im's for the ratio to be the servers' alone.
///
/// Every recipient holds its own session (its own key schedule and keystream) keyed like all
/// the others, so one record, sealed once by the sender, is valid for each: the floor server
/// still passes bytes on, with no crypto. A record's counter position depends on every record
/// before it, so each size gets a fresh floor server and recipients that start at the first.
async fn sealed_floor(ctx: &Ctx, size: usize, messages: usize, current: &Current) -> Result<Measured> {
    let recipients = size - 1;
    let floor = Floor::start(ctx.server_cpus.as_deref()).await?;
    let secret: [u8; 32] = rand::random();
    let unused = [0u8; 32];
    let keyed = |seal: [u8; 32], open: [u8; 32]| {
        let policy = RekeyPolicy::default();
        Session::new(
            Sealer::new(TrafficSecret::from_bytes(seal), 0, policy),
            Opener::new(TrafficSecret::from_bytes(open), 0, policy),
        )
    };
    let mut members = Vec::with_capacity(recipients);
    for _ in 0..recipients {
        let s = floor_connect(&ctx.sources, floor.addr, FLOOR_MEMBER).await?;
        let (r, w) = s.into_split();
        let reader = Reader::new(r, keyed(unused, secret));
        let current = current.clone();
        members.push(tokio::spawn(async move {
            let _keep_open = w;
            read_im(reader, None, current).await
        }));
    }
    let mut sender = floor_connect(&ctx.sources, floor.addr, FLOOR_SENDER).await?;
    let mut sealer = keyed(secret, unused);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = floor_key(size);
    let (sch, arrivals) = start_measuring(current, key, messages);
    let (from, to, text) = (
        user_name("r", 0),
        Target::Room(room(size)),
        bounds::text(bounds::TEXT_LEN),
    );
    let mut pacer = Pacer::precise(sch);
    let mut out = Vec::new();
    while let Some(batch) = pacer.next_batch().await {
        out.clear();
        for k in batch {
            let msg = ServerMsg::Message(ChatMessage {
                id: MessageId(k + 1),
                ts: Timestamp(im_server::state::now_ms()),
                from: from.clone(),
                to: to.clone(),
                client_id: format!("{key}-{k}"),
                action: false,
                text: text.clone(),
            });
            bounds::floor_message(&mut out, |o| sealer.seal_with(o, |o| msg.encode(o)))?;
        }
        sender.write_all(&out).await?;
    }
    arrivals.wait_complete(recipients as u32, Duration::from_secs(10)).await;
    for m in members {
        m.abort();
    }
    Ok(measured(&arrivals, recipients, &sch))
}

/// Floor measurements live in the same map as im's, under keys that cannot be a size.
fn floor_key(size: usize) -> usize {
    size + 1_000_000
}

fn raw_key(size: usize) -> usize {
    size + 2_000_000
}

async fn floor_connect(sources: &[std::net::IpAddr], addr: std::net::SocketAddr, role: u8) -> Result<TcpStream> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut s = sys::connect_retry(sources[i % sources.len()], addr).await?;
    s.write_all(&[role]).await?;
    if role == FLOOR_MEMBER {
        let mut ready = [0u8; 1];
        s.read_exact(&mut ready).await?;
        anyhow::ensure!(ready[0] == FLOOR_READY, "floor server said {ready:?}");
    }
    Ok(s)
}

async fn read_raw_floor(mut s: TcpStream, current: Current) {
    let mut buf = vec![0u8; FLOOR_MSG_LEN * 64];
    let mut have = 0;
    loop {
        match s.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
        let now = Instant::now();
        let whole = have / FLOOR_MSG_LEN * FLOOR_MSG_LEN;
        for m in buf[..whole].chunks_exact(FLOOR_MSG_LEN) {
            let tag = u64::from_be_bytes(m[..8].try_into().expect("8 bytes"));
            arrived(&current, (tag >> 32) as usize, tag & 0xffff_ffff, now);
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
}

fn arrived(current: &Current, key: usize, k: u64, now: Instant) {
    let found = current.read().expect("not poisoned").get(&key).cloned();
    if let Some((a, sch)) = found {
        a.arrived(k as usize, sch.at(k), now);
    }
}

/// Times each room message's arrival; answers pings when it has a `writer` (the floor's
/// recipients have none, and the floor never pings).
async fn read_im(mut reader: Reader, writer: Option<Writer>, current: Current) {
    let mut events = Vec::new();
    loop {
        events.clear();
        if reader.recv_batch(&mut events).await.is_err() {
            return;
        }
        let now = Instant::now();
        for e in events.drain(..) {
            match e {
                Event::Msg(ServerMsg::Message(m)) => {
                    if let Some((size, k)) = m.client_id.split_once('-')
                        && let (Ok(size), Ok(k)) = (size.parse(), k.parse())
                    {
                        arrived(&current, size, k, now);
                    }
                }
                Event::Msg(ServerMsg::Ping { nonce }) => {
                    if let Some(w) = &writer
                        && w.send(ClientMsg::Pong { nonce }).await.is_err()
                    {
                        return;
                    }
                }
                Event::Msg(_) => {}
                Event::Closed(r) => {
                    if super::noteworthy() {
                        eprintln!("server closed a member: {} ({})", r.text, r.code.name());
                    }
                    return;
                }
            }
        }
    }
}

async fn run_irc(ctx: &mut Ctx, sizes: &[usize], messages: usize) -> Result<()> {
    let peer = ctx.peer()?;
    let tls = if ctx.tls {
        Some(Arc::new(irc::tls_connector()?))
    } else {
        None
    };
    let current: Current = Arc::default();
    for &size in sizes {
        let t0 = Instant::now();
        let channel = format!("#r{size}");
        let sem = Arc::new(Semaphore::new(ctx.connect_concurrency()));
        let mut joins = Vec::new();
        for i in 0..size {
            let (sem, tls, channel) = (sem.clone(), tls.clone(), channel.clone());
            let (src, addr) = (ctx.sources[i % ctx.sources.len()], peer.addr);
            let nick = irc::nick('r', size * 10 + i);
            joins.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let mut c = irc::register(src, addr, tls.as_deref(), &nick).await?;
                c.join(&channel).await?;
                anyhow::Ok(c)
            }));
        }
        let mut readers = Vec::new();
        let mut sender = None;
        for (i, j) in joins.into_iter().enumerate() {
            let c = j.await?.with_context(|| format!("member {i} of {channel}"))?;
            if i == 0 {
                sender = Some(c.writer.clone());
            }
            readers.push(tokio::spawn(read_irc(c, current.clone())));
        }
        // Everyone's JOIN went to everyone already there: let that flood drain.
        tokio::time::sleep(Duration::from_millis(500 + size as u64 / 2)).await;
        eprintln!("{size} members joined {channel} in {:.1} s", t0.elapsed().as_secs_f64());
        let (sch, arrivals) = start_measuring(&current, size, messages);
        let sender = sender.context("no members")?;
        let text = bounds::text(bounds::TEXT_LEN);
        let mut pacer = Pacer::precise(sch);
        while let Some(batch) = pacer.next_batch().await {
            let mut out = String::new();
            for k in batch {
                out.push_str(&format!("PRIVMSG {channel} :{size}-{k} {text}\r\n"));
            }
            sender.send(&out).await?;
        }
        arrivals.wait_complete((size - 1) as u32, Duration::from_secs(10)).await;
        let m = measured(&arrivals, size - 1, &sch);
        let v = ctx.variant(&format!("members={size}"));
        let r = &mut ctx.report;
        r.add(&v, "time_to_last_p50", m.ttl.quantile_ms(0.5), Unit::Ms);
        r.add(&v, "time_to_last_p99", m.ttl.quantile_ms(0.99), Unit::Ms);
        r.add(&v, "deliveries", m.per_s, Unit::PerS);
        r.add(&v, "delivery_p50", m.deliveries.quantile_ms(0.5), Unit::Ms);
        r.add(&v, "delivery_p99", m.deliveries.quantile_ms(0.99), Unit::Ms);
        r.add(&v, "incomplete", m.incomplete as f64, Unit::Count);
        r.add(&v, "join_setup", t0.elapsed().as_secs_f64() * 1e3, Unit::Ms);
        if size == *sizes.last().expect("sizes") {
            r.add(&v, "rss_server", peer.rss()? as f64, Unit::Bytes);
        }
        for h in readers {
            h.abort();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

async fn read_irc(mut c: irc::Client, current: Current) {
    let mut line = String::new();
    while let Ok(true) = c.next_line(&mut line).await {
        let Some(l) = irc::parse(&line) else { continue };
        if l.command != "PRIVMSG" {
            continue;
        }
        let Some(text) = l.params.get(1) else { continue };
        let Some((size, k)) = text.split(' ').next().and_then(|t| t.split_once('-')) else {
            continue;
        };
        if let (Ok(size), Ok(k)) = (size.parse(), k.parse()) {
            arrived(&current, size, k, Instant::now());
        }
    }
}
