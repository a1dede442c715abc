//! `room`: rooms of 10, 100, 1,000 and 5,000 members; one member sends 100-byte messages at
//! 10 msg/s (open loop) and every other member's connection times each arrival. The figure is
//! the time from a message's intended send time to its last recipient, p50 and p99, with the
//! deliveries per second.
//!
//! The bound, measured in the same run for the same number of recipients: the raw-send floor
//! (`bounds::floor_main`), a fan-out server on the server's CPUs that does nothing but one
//! small write to each member socket, spread over tasks like the real server. The ratio is
//! im's time to last / the floor's: the goal is 1.25 or better.
//!
//! Memberships are made before any member stays online (`seed::join_rooms`), so the join
//! events do not cost a quadratic burst of pushes. An IRC channel cannot be joined offline:
//! against a peer, members JOIN live, and the join flood drains before timing starts.
//! Recipients do not acknowledge room messages here (a real client would, now and then).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use im_proto::msg::{ClientMsg, RequestId, ServerMsg};
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
    let (server, accounts) = ctx.im_server(&names).await?;
    let memberships = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.clone(), sizes.iter().filter(|&&s| i < s).map(|&s| room(s)).collect()))
        .collect();
    let supported = seed::join_rooms(server.addr, &ctx.sources, memberships, 32).await?;
    if !supported {
        eprintln!("im-server answers Join with `unsupported`: rooms are not implemented yet; measuring the floor only");
    }
    let floor = Floor::start(ctx.server_cpus.as_deref()).await?;
    let current: Current = Arc::default();
    let mut writers: Vec<Writer> = Vec::new();
    let mut floor_members = 0;
    let mut floor_sender = floor_connect(&ctx.sources, floor.addr, FLOOR_SENDER).await?;
    for &size in sizes {
        let v = format!("members={size}");
        let recipients = size - 1;
        let mut im = None;
        if supported {
            let fresh = login_all(server.addr, &ctx.sources, &accounts[writers.len()..size]).await?;
            for c in fresh {
                let (reader, writer) = c.split();
                tokio::spawn(read_im(reader, writer.clone(), current.clone()));
                writers.push(writer);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
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
                .insert(size, (arrivals.clone(), sch));
            let sender = writers[0].clone();
            let to = Target::Room(room(size));
            let text = bounds::text(bounds::TEXT_LEN);
            let mut pacer = Pacer::new(sch);
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

        // The floor for the same number of recipients.
        while floor_members < recipients {
            let s = floor_connect(&ctx.sources, floor.addr, FLOOR_MEMBER).await?;
            tokio::spawn(read_floor(s, current.clone()));
            floor_members += 1;
        }
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
            .insert(floor_key(size), (arrivals.clone(), sch));
        let mut pacer = Pacer::new(sch);
        while let Some(batch) = pacer.next_batch().await {
            let mut out = Vec::new();
            for k in batch {
                out.extend_from_slice(&((floor_key(size) as u64) << 32 | k).to_be_bytes());
            }
            floor_sender.write_all(&out).await?;
        }
        arrivals.wait_complete(recipients as u32, Duration::from_secs(10)).await;
        let fl = measured(&arrivals, recipients, &sch);

        let r = &mut ctx.report;
        match im {
            Some(m) => {
                let (f50, f99) = (fl.ttl.quantile_ms(0.5), fl.ttl.quantile_ms(0.99));
                r.add_bounded(&v, "time_to_last_p50", m.ttl.quantile_ms(0.5), Unit::Ms, f50);
                r.add_bounded(&v, "time_to_last_p99", m.ttl.quantile_ms(0.99), Unit::Ms, f99);
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
    }
    if supported {
        ctx.report.add(
            &format!("members={max}"),
            "rss_server",
            server.rss()? as f64,
            Unit::Bytes,
        );
    }
    drop(floor);
    Ok(())
}

/// Floor measurements live in the same map as im's, under keys that cannot be a size.
fn floor_key(size: usize) -> usize {
    size + 1_000_000
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

async fn read_floor(mut s: TcpStream, current: Current) {
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

async fn read_im(mut reader: Reader, writer: Writer, current: Current) {
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
                    if writer.send(ClientMsg::Pong { nonce }).await.is_err() {
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
            .insert(size, (arrivals.clone(), sch));
        let sender = sender.context("no members")?;
        let text = bounds::text(bounds::TEXT_LEN);
        let mut pacer = Pacer::new(sch);
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
