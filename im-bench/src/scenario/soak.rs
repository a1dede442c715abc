//! `soak`: everything at once for `--duration` seconds: idle connections answering pings,
//! direct-message pairs at a steady rate, a room with a sender at 10 msg/s, and churning
//! clients that connect by ticket, join the room, stay a moment, leave it and disconnect.
//!
//! Checked, and reported as counts: no error reply and no connection closed by the server;
//! every acknowledged direct message delivered to its recipient; every acknowledged room
//! message delivered to every member who stayed the whole time; the server's RSS sampled
//! every second (its growth over the run, and over its second half alone).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use im_proto::msg::{ClientMsg, MessageId, RequestId, ServerMsg};
use im_proto::{RoomName, Target};
use tokio::time::Instant;

use super::{Arrivals, login_all};
use crate::im::{self, Event, Reader, Writer};
use crate::report::Unit;
use crate::schedule::{Pacer, Schedule};
use crate::seed::{self, user_name};
use crate::{Ctx, bounds};

/// What went wrong, counted.
#[derive(Default)]
struct Health {
    errors: AtomicU64,
    closed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Health {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first.lock() {
            f.get_or_insert(what);
        }
    }

    fn closed(&self, what: String) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first.lock() {
            f.get_or_insert(what);
        }
    }
}

/// Client ids acknowledged to senders and delivered to recipients.
#[derive(Default)]
struct Ledger {
    dm_acked: Mutex<HashSet<String>>,
    dm_delivered: Mutex<HashSet<String>>,
    room_acked: Mutex<HashSet<u64>>,
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let secs = ctx.duration.unwrap_or(if ctx.quick { 15 } else { 60 }) as f64;
    let (idle_n, pairs, stayers, churners, churn_tasks, dm_rate) = if ctx.quick {
        (300, 10, 50, 100, 4, 100.0)
    } else {
        (2_000, 20, 200, 400, 8, 400.0)
    };
    let mut names = Vec::new();
    names.extend((0..idle_n).map(|i| user_name("k", i)));
    for p in 0..pairs {
        let (a, b) = bounds::dm_pair(p);
        names.extend([a, b]);
    }
    names.extend((0..stayers).map(|i| user_name("s", i)));
    names.extend((0..churners).map(|i| user_name("c", i)));
    let (server, accounts) = ctx.im_server(&names).await?;
    let addr = server.addr;
    let (idle_acc, rest) = accounts.split_at(idle_n);
    let (pair_acc, rest) = rest.split_at(2 * pairs);
    let (stay_acc, churn_acc) = rest.split_at(stayers);
    let room = RoomName::parse("#soak").expect("valid");
    let rooms = seed::join_rooms(
        addr,
        &ctx.sources,
        stay_acc.iter().map(|a| (a.clone(), vec![room.clone()])).collect(),
        32,
    )
    .await?;
    if !rooms {
        eprintln!("im-server answers Join with `unsupported`: the soak runs without its room");
    }

    let health = Arc::new(Health::default());
    let ledger = Arc::new(Ledger::default());
    let room_msgs = (secs * 10.0) as usize;
    let arrivals = Arrivals::new(room_msgs.max(1));
    let start = Instant::now() + Duration::from_millis(500);
    let room_sch = Schedule::for_stream(start, 10.0, 1, 0, secs);

    for c in login_all(addr, &ctx.sources, idle_acc).await? {
        let health = health.clone();
        tokio::spawn(async move {
            let (reader, writer) = c.split();
            read(reader, writer, health, None, false).await;
        });
    }
    let mut dm_writers = Vec::new();
    for (i, c) in login_all(addr, &ctx.sources, pair_acc).await?.into_iter().enumerate() {
        let (reader, writer) = c.split();
        let role = Role::Dm(ledger.clone());
        tokio::spawn(read(reader, writer.clone(), health.clone(), Some(role), i % 2 == 1));
        if i % 2 == 0 {
            dm_writers.push(writer);
        }
    }
    let mut room_sender = None;
    if rooms {
        for (i, c) in login_all(addr, &ctx.sources, stay_acc).await?.into_iter().enumerate() {
            let (reader, writer) = c.split();
            let role = Role::Room(ledger.clone(), arrivals.clone(), room_sch);
            tokio::spawn(read(reader, writer.clone(), health.clone(), Some(role), true));
            if i == 0 {
                room_sender = Some(writer);
            }
        }
    }
    tokio::time::sleep_until(start).await;
    let rss_samples = Arc::new(Mutex::new(Vec::new()));
    let end = start + Duration::from_secs_f64(secs);
    let sampler = {
        let (samples, pid) = (rss_samples.clone(), server.pid);
        tokio::spawn(async move {
            while Instant::now() < end {
                if let Ok(r) = crate::sys::rss(pid)
                    && let Ok(mut s) = samples.lock()
                {
                    s.push(r);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // Senders: the pairs, and the room.
    let mut tasks = Vec::new();
    let text = bounds::text(bounds::TEXT_LEN);
    for (p, w) in dm_writers.into_iter().enumerate() {
        let sch = Schedule::for_stream(start, dm_rate, pairs, p, secs);
        let (to, text) = (Target::User(bounds::dm_pair(p).1), text.clone());
        tasks.push(tokio::spawn(async move {
            let mut pacer = Pacer::new(sch);
            while let Some(batch) = pacer.next_batch().await {
                let msgs: Vec<_> = batch
                    .map(|k| ClientMsg::Send {
                        req: RequestId(k as u32),
                        to: to.clone(),
                        client_id: format!("soak-{p}-{k}"),
                        action: false,
                        text: text.clone(),
                    })
                    .collect();
                w.send_all(&msgs).await?;
            }
            anyhow::Ok(())
        }));
    }
    if let Some(w) = room_sender {
        let (to, text) = (Target::Room(room.clone()), text.clone());
        tasks.push(tokio::spawn(async move {
            let mut pacer = Pacer::new(room_sch);
            while let Some(batch) = pacer.next_batch().await {
                let msgs: Vec<_> = batch
                    .map(|k| ClientMsg::Send {
                        req: RequestId(k as u32),
                        to: to.clone(),
                        client_id: format!("room-{k}"),
                        action: false,
                        text: text.clone(),
                    })
                    .collect();
                w.send_all(&msgs).await?;
            }
            anyhow::Ok(())
        }));
    }
    // Churn.
    let cycles = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let churn_acc = Arc::new(churn_acc.to_vec());
    for t in 0..churn_tasks {
        let (cycles, next, churn_acc, health, room) = (
            cycles.clone(),
            next.clone(),
            churn_acc.clone(),
            health.clone(),
            room.clone(),
        );
        let sources = ctx.sources.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = t;
            while Instant::now() < end {
                let a = &churn_acc[next.fetch_add(1, Ordering::Relaxed) % churn_acc.len()];
                let stay = Duration::from_millis(200 + rand::random_range(0..1800));
                let r = churn_once(sources[n % sources.len()], addr, a, rooms.then_some(&room), stay).await;
                n += churn_tasks;
                match r {
                    Ok(()) => {
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => health.error(format!("churn: {e:#}")),
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        if let Err(e) = t.await? {
            health.error(format!("sender: {e:#}"));
        }
    }
    let _ = sampler.await;
    eprintln!("load done; draining");
    // Drain: everything acknowledged should arrive.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (dm_missing, room_missing) = missing(&ledger, &arrivals, stayers.saturating_sub(1) as u32, rooms);
        if (dm_missing == 0 && room_missing == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (dm_missing, room_missing) = missing(&ledger, &arrivals, stayers.saturating_sub(1) as u32, rooms);
    let samples = rss_samples.lock().map(|s| s.clone()).unwrap_or_default();
    let (first, last) = (
        samples.first().copied().unwrap_or(0),
        samples.last().copied().unwrap_or(0),
    );
    let max = samples.iter().copied().max().unwrap_or(0);
    let half = samples.get(samples.len() / 2).copied().unwrap_or(0);
    let three_quarters = samples.get(samples.len() * 3 / 4).copied().unwrap_or(0);
    let v = format!("secs={secs:.0}");
    let r = &mut ctx.report;
    r.add(&v, "errors", health.errors.load(Ordering::Relaxed) as f64, Unit::Count);
    r.add(
        &v,
        "closed_by_server",
        health.closed.load(Ordering::Relaxed) as f64,
        Unit::Count,
    );
    r.add(
        &v,
        "dm_acked",
        ledger.dm_acked.lock().map_or(0, |s| s.len()) as f64,
        Unit::Count,
    );
    r.add(&v, "dm_missing", dm_missing as f64, Unit::Count);
    if rooms {
        r.add(
            &v,
            "room_acked",
            ledger.room_acked.lock().map_or(0, |s| s.len()) as f64,
            Unit::Count,
        );
        r.add(&v, "room_missing", room_missing as f64, Unit::Count);
    }
    r.add(&v, "churn_cycles", cycles.load(Ordering::Relaxed) as f64, Unit::Count);
    r.add(&v, "rss_start", first as f64, Unit::Bytes);
    r.add(&v, "rss_end", last as f64, Unit::Bytes);
    r.add(&v, "rss_max", max as f64, Unit::Bytes);
    r.add(&v, "rss_growth", last as f64 - first as f64, Unit::Bytes);
    // Flat means the second half adds (next to) nothing.
    r.add(&v, "rss_growth_second_half", last as f64 - half as f64, Unit::Bytes);
    // The server's bounded buffers (the message log's memtables and block cache: 64 MiB)
    // take minutes to fill at the soak's write rate; a long run shows the plateau here.
    r.add(
        &v,
        "rss_growth_last_quarter",
        last as f64 - three_quarters as f64,
        Unit::Bytes,
    );
    if let Some(e) = health.first.lock().ok().and_then(|f| f.clone()) {
        eprintln!("first problem: {e}");
    }
    Ok(())
}

/// Acknowledged but undelivered: direct messages, and room deliveries to members who stayed.
fn missing(ledger: &Ledger, arrivals: &Arrivals, recipients: u32, rooms: bool) -> (usize, u64) {
    let dm = {
        let acked = ledger.dm_acked.lock().expect("not poisoned");
        let delivered = ledger.dm_delivered.lock().expect("not poisoned");
        acked.iter().filter(|id| !delivered.contains(*id)).count()
    };
    let room = if rooms {
        let acked = ledger.room_acked.lock().expect("not poisoned");
        acked
            .iter()
            .map(|&k| u64::from(recipients.saturating_sub(arrivals.count(k as usize))))
            .sum()
    } else {
        0
    };
    (dm, room)
}

async fn churn_once(
    src: std::net::IpAddr,
    addr: std::net::SocketAddr,
    a: &seed::Account,
    room: Option<&RoomName>,
    stay: Duration,
) -> Result<()> {
    let mut c = im::connect(src, addr, Some(&a.ticket)).await?;
    c.login_ticket().await?;
    if let Some(room) = room {
        c.join(2, room).await?;
    }
    let until = Instant::now() + stay;
    loop {
        match tokio::time::timeout_at(until, c.recv()).await {
            Err(_) => break,
            Ok(Ok(Event::Msg(ServerMsg::Ping { nonce }))) => c.send(&ClientMsg::Pong { nonce }).await?,
            Ok(Ok(Event::Msg(ServerMsg::Error { code, text, .. }))) => anyhow::bail!("error: {text} ({})", code.name()),
            Ok(Ok(Event::Msg(_))) => {}
            Ok(Ok(Event::Closed(r))) => anyhow::bail!("closed by the server: {}", r.text),
            Ok(Err(e)) => return Err(e),
        }
    }
    if let Some(room) = room {
        let req = RequestId(3);
        c.send(&ClientMsg::Leave {
            req,
            room: room.clone(),
        })
        .await?;
        match c.reply(req).await? {
            ServerMsg::Ok { .. } => {}
            other => anyhow::bail!("leave refused: {}", im::describe(&other)),
        }
    }
    Ok(())
}

enum Role {
    Dm(Arc<Ledger>),
    Room(Arc<Ledger>, Arc<Arrivals>, Schedule),
}

/// A long-lived client's receiving loop: answers pings, acknowledges what it gets (when
/// `acks`), and books sends and deliveries for its role.
async fn read(mut reader: Reader, writer: Writer, health: Arc<Health>, role: Option<Role>, acks: bool) {
    let mut events = Vec::new();
    let (mut max_id, mut acked_id) = (0u64, 0u64);
    loop {
        events.clear();
        if let Err(e) = reader.recv_batch(&mut events).await {
            health.closed(format!("connection ended: {e:#}"));
            return;
        }
        let now = Instant::now();
        let mut replies = Vec::new();
        for e in events.drain(..) {
            match e {
                Event::Msg(ServerMsg::Ping { nonce }) => replies.push(ClientMsg::Pong { nonce }),
                Event::Msg(ServerMsg::Sent { client_id, .. }) => match &role {
                    Some(Role::Dm(l)) => {
                        l.dm_acked.lock().expect("not poisoned").insert(client_id);
                    }
                    Some(Role::Room(l, ..)) => {
                        if let Some(k) = client_id.strip_prefix("room-").and_then(|k| k.parse().ok()) {
                            l.room_acked.lock().expect("not poisoned").insert(k);
                        }
                    }
                    None => {}
                },
                Event::Msg(ServerMsg::Message(m)) => {
                    max_id = max_id.max(m.id.0);
                    match &role {
                        Some(Role::Dm(l)) => {
                            l.dm_delivered.lock().expect("not poisoned").insert(m.client_id);
                        }
                        Some(Role::Room(_, a, sch)) => {
                            if let Some(k) = m.client_id.strip_prefix("room-").and_then(|k| k.parse::<u64>().ok()) {
                                a.arrived(k as usize, sch.at(k), now);
                            }
                        }
                        None => {}
                    }
                }
                Event::Msg(ServerMsg::Error { code, text, .. }) => health.error(format!("{text} ({})", code.name())),
                Event::Msg(_) => {}
                Event::Closed(r) => {
                    health.closed(format!("closed by the server: {} ({})", r.text, r.code.name()));
                    return;
                }
            }
        }
        if acks && max_id > acked_id {
            replies.push(ClientMsg::Ack {
                up_to: MessageId(max_id),
            });
            acked_id = max_id;
        }
        if !replies.is_empty() && writer.send_all(&replies).await.is_err() {
            return;
        }
    }
}
