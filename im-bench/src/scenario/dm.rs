//! `dm`: 100 pairs of users, each sender writing 100-byte direct messages to its partner on an
//! open-loop schedule, at stepped total rates. Per step: acknowledged messages per second (a
//! `Sent` means stored and fsynced), delivered messages per second, and p50/p99/p99.9 from the
//! intended send time to the `Sent` and to the `Message` at the recipient. Recipients
//! acknowledge what they get (every 20 ms at most), as a real client does, so the server also
//! sends delivery receipts. The step ladder goes past the first rate not held (p99 of both
//! latencies under 50 ms and every message through) up to the first rate the server does not
//! keep up with (less than 95 % of it acknowledged per second), which shows its ceiling; a
//! full run then tries the geometric midpoint between the best rate held and the first not.
//!
//! The bound, measured alone in the same run on the server's CPUs: the message log's own
//! append rate in the same 100 conversations, each with 16 appends in flight ([`STORE_DEPTH`]),
//! which is its ceiling.
//!
//! Against an IRC peer the same pairs PRIVMSG each other: there is no acknowledgement and no
//! storage, so only delivery is measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use im_proto::Target;
use im_proto::msg::{ClientMsg, MessageId, RequestId, ServerMsg};
use tokio::time::Instant;

use super::{login_all, secs};
use crate::hist::Latency;
use crate::im::{Event, Reader, Writer};
use crate::report::Unit;
use crate::schedule::{Schedule, Streams};
use crate::{Ctx, bounds, irc};

pub const PAIRS: usize = 100;
/// The latency goal a rate must hold at p99.
const HELD_P99_MS: f64 = 50.0;
/// Appends each conversation keeps in flight when the store's bound is measured: with 100
/// conversations, enough to reach the log's ceiling here (1,600 in flight: 71,000/s; 100:
/// 56,000/s), as an overloaded server's sessions do.
const STORE_DEPTH: usize = 16;
/// A rate is not kept up with when less than this share of it comes through per second.
const KEPT_UP: f64 = 0.95;
/// How often a recipient acknowledges, at most.
const ACK_EVERY: Duration = Duration::from_millis(20);

/// One step's schedules and what came back.
struct Step {
    schedules: Vec<Schedule>,
    ack: Latency,
    delivery: Latency,
    acked: u64,
    delivered: u64,
    last_ack: Option<Instant>,
    last_delivery: Option<Instant>,
}

type Steps = Arc<Mutex<Vec<Step>>>;

fn client_id(step: usize, pair: usize, k: u64) -> String {
    format!("{step}-{pair}-{k}")
}

fn parse_client_id(s: &str) -> Option<(usize, usize, u64)> {
    let mut it = s.split('-');
    let r = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    it.next().is_none().then_some(r)
}

impl Step {
    fn new(schedules: Vec<Schedule>) -> Self {
        Step {
            schedules,
            ack: Latency::new(),
            delivery: Latency::new(),
            acked: 0,
            delivered: 0,
            last_ack: None,
            last_delivery: None,
        }
    }

    fn sent(&self) -> u64 {
        self.schedules.iter().map(Schedule::total).sum()
    }

    fn on_ack(&mut self, pair: usize, k: u64, now: Instant) {
        if let Some(s) = self.schedules.get(pair) {
            self.ack.record(s.latency(k, now));
            self.acked += 1;
            self.last_ack = Some(now);
        }
    }

    fn on_delivery(&mut self, pair: usize, k: u64, now: Instant) {
        if let Some(s) = self.schedules.get(pair) {
            self.delivery.record(s.latency(k, now));
            self.delivered += 1;
            self.last_delivery = Some(now);
        }
    }
}

/// A step's figures.
struct Outcome {
    rate: f64,
    sent: u64,
    acked: u64,
    delivered: u64,
    acked_per_s: f64,
    delivered_per_s: f64,
    ack: Latency,
    delivery: Latency,
    held: bool,
}

/// The offered rates to try, in order: 1,000/s doubling up to 2,048,000/s. The top rungs are
/// for the IRC peers, whose one core gives out between 512,000 and 1,024,000/s (BENCHMARKS.md);
/// im stops far below them.
fn ladder(quick: bool) -> Vec<f64> {
    if quick {
        vec![2_000.0, 8_000.0, 32_000.0]
    } else {
        (0..12).map(|i| 1_000.0 * f64::from(1u32 << i)).collect()
    }
}

fn outcome(step: &Step, rate: f64, start: Instant, acks: bool) -> Outcome {
    let sent = step.sent();
    let per_s = |n: u64, last: Option<Instant>| {
        last.map_or(0.0, |l| {
            n as f64 / l.saturating_duration_since(start).as_secs_f64().max(1e-3)
        })
    };
    let all_through = step.delivered >= sent && (!acks || step.acked >= sent);
    let fast = step.delivery.quantile_ms(0.99) < HELD_P99_MS && (!acks || step.ack.quantile_ms(0.99) < HELD_P99_MS);
    Outcome {
        rate,
        sent,
        acked: step.acked,
        delivered: step.delivered,
        acked_per_s: per_s(step.acked, step.last_ack),
        delivered_per_s: per_s(step.delivered, step.last_delivery),
        ack: step.ack.clone(),
        delivery: step.delivery.clone(),
        held: all_through && fast,
    }
}

fn report_step(ctx: &mut Ctx, o: &Outcome, acks: bool) {
    let v = ctx.variant(&format!("rate={}", o.rate));
    let r = &mut ctx.report;
    if acks {
        r.add(&v, "acked", o.acked_per_s, Unit::PerS);
    }
    r.add(&v, "delivered", o.delivered_per_s, Unit::PerS);
    if acks {
        r.add(&v, "ack_p50", o.ack.quantile_ms(0.5), Unit::Ms);
        r.add(&v, "ack_p99", o.ack.quantile_ms(0.99), Unit::Ms);
        r.add(&v, "ack_p999", o.ack.quantile_ms(0.999), Unit::Ms);
    }
    r.add(&v, "delivery_p50", o.delivery.quantile_ms(0.5), Unit::Ms);
    r.add(&v, "delivery_p99", o.delivery.quantile_ms(0.99), Unit::Ms);
    r.add(&v, "delivery_p999", o.delivery.quantile_ms(0.999), Unit::Ms);
    let lost = o
        .sent
        .saturating_sub(if acks { o.acked.min(o.delivered) } else { o.delivered });
    r.add(&v, "not_through", lost as f64, Unit::Count);
    eprintln!(
        "  rate {:.0}/s: {} sent, {} acked, {} delivered: {}",
        o.rate,
        o.sent,
        o.acked,
        o.delivered,
        if o.held { "held" } else { "NOT held" }
    );
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let step_secs = secs(ctx.quick, 1.5, 4.0);
    let (mut senders, steps, store_rate, _server) = if ctx.is_im() {
        setup_im(ctx).await?
    } else {
        let (s, st) = setup_irc(ctx).await?;
        (s, st, None, None)
    };
    let acks = ctx.is_im();
    let rates = ladder(ctx.quick);
    let mut outcomes: Vec<Outcome> = Vec::new();
    // Up the ladder until a rate is not held, and on until one is not kept up with: a rate
    // held too slowly may still be served in full, and only an overloaded server shows its
    // ceiling of messages per second. Then, in a full run, the geometric midpoint between the
    // best rate held and the first one not held.
    let mut first_failure = None;
    for rate in rates {
        let o = step(&mut senders, &steps, rate, step_secs, acks).await?;
        report_step(ctx, &o, acks);
        let (held, through) = (o.held, if acks { o.acked_per_s } else { o.delivered_per_s });
        outcomes.push(o);
        if !held {
            first_failure.get_or_insert(rate);
            if through < KEPT_UP * rate {
                break;
            }
        }
    }
    let best = outcomes.iter().filter(|o| o.held).map(|o| o.rate).fold(0.0, f64::max);
    if let Some(fail) = first_failure
        && !ctx.quick
        && best > 0.0
        && best < fail
    {
        let mid = (best * fail).sqrt().round();
        let o = step(&mut senders, &steps, mid, step_secs, acks).await?;
        report_step(ctx, &o, acks);
        outcomes.push(o);
    }
    let best = outcomes.iter().filter(|o| o.held).map(|o| o.rate).fold(0.0, f64::max);
    let max_acked = outcomes.iter().map(|o| o.acked_per_s).fold(0.0, f64::max);
    let max_delivered = outcomes.iter().map(|o| o.delivered_per_s).fold(0.0, f64::max);
    let v = ctx.variant("max");
    let r = &mut ctx.report;
    if let Some(store) = store_rate {
        r.add_bounded(&v, "acked", max_acked, Unit::PerS, store);
    }
    r.add(&v, "delivered", max_delivered, Unit::PerS);
    r.add(&v, "highest_rate_p99_under_50ms", best, Unit::PerS);
    Ok(())
}

/// The senders' writing halves, by pair.
enum Senders {
    Im(Vec<Writer>),
    Irc(Vec<irc::Writer>),
}

async fn step(senders: &mut Senders, steps: &Steps, rate: f64, secs: f64, acks: bool) -> Result<Outcome> {
    let start = Instant::now() + Duration::from_millis(50);
    let schedules: Vec<Schedule> = (0..PAIRS)
        .map(|p| Schedule::for_stream(start, rate, PAIRS, p, secs))
        .collect();
    let idx = {
        let mut st = steps.lock().expect("not poisoned");
        st.push(Step::new(schedules.clone()));
        st.len() - 1
    };
    let text = bounds::text(bounds::TEXT_LEN);
    // Each stream's recipient, once: the loop below is the bench's hot path.
    let dm_to: Vec<Target> = (0..PAIRS).map(|p| Target::User(bounds::dm_pair(p).1)).collect();
    let irc_to: Vec<String> = (0..PAIRS).map(|p| irc::nick('d', 2 * p + 1)).collect();
    // One task paces every stream (the writers queue what it sends, so it never blocks).
    let mut streams = Streams::new(schedules);
    let mut batches = Vec::new();
    let mut out = String::new();
    while streams.next_batches(&mut batches).await {
        for (p, batch) in batches.drain(..) {
            match senders {
                Senders::Im(w) => {
                    let msgs: Vec<ClientMsg> = batch
                        .map(|k| ClientMsg::Send {
                            req: RequestId(k as u32),
                            to: dm_to[p].clone(),
                            client_id: client_id(idx, p, k),
                            action: false,
                            text: text.clone(),
                        })
                        .collect();
                    w[p].send_all(&msgs).await?;
                }
                Senders::Irc(w) => {
                    let to = &irc_to[p];
                    out.clear();
                    for k in batch {
                        out.push_str(&format!("PRIVMSG {to} :{} {text}\r\n", client_id(idx, p, k)));
                    }
                    w[p].send(&out).await?;
                }
            }
        }
    }
    // Drain: everything sent should come back; give a saturated server time to catch up.
    let timeout = Duration::from_secs_f64((2.0 * secs).max(3.0));
    let deadline = Instant::now() + timeout;
    loop {
        let through = {
            let st = steps.lock().expect("not poisoned");
            let s = &st[idx];
            s.delivered >= s.sent() && (!acks || s.acked >= s.sent())
        };
        if through || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = steps.lock().expect("not poisoned");
    Ok(outcome(&st[idx], rate, start, acks))
}

type Setup = (Senders, Steps, Option<f64>, Option<crate::target::ImServer>);

async fn setup_im(ctx: &mut Ctx) -> Result<Setup> {
    let names: Vec<_> = (0..PAIRS)
        .flat_map(|p| {
            let (a, b) = bounds::dm_pair(p);
            [a, b]
        })
        .collect();
    let (server, accounts) = ctx.im_server(&names).await?;
    let store = bounds::store(
        ctx.server_cpus.as_deref(),
        &ctx.work_dir,
        PAIRS,
        STORE_DEPTH,
        secs(ctx.quick, 2.0, 5.0),
    )
    .await?;
    ctx.report
        .add(&ctx.variant("alone"), "store_appends", store.per_s, Unit::PerS);
    let conns = login_all(server.addr, &ctx.sources, &accounts).await?;
    let steps: Steps = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let (reader, writer) = c.split();
        let sender = i % 2 == 0;
        tokio::spawn(read_im(reader, writer.clone(), steps.clone(), errors.clone(), sender));
        if sender {
            writers.push(writer);
        }
    }
    Ok((Senders::Im(writers), steps, Some(store.per_s), Some(server)))
}

/// A pair member's receiving loop: `Sent` (senders) and `Message` (recipients) are timed;
/// recipients acknowledge; everyone answers pings.
async fn read_im(mut reader: Reader, writer: Writer, steps: Steps, errors: Arc<AtomicU64>, sender: bool) {
    let mut events = Vec::new();
    let (mut max_id, mut acked_id) = (0u64, 0u64);
    let mut last_ack = Instant::now();
    loop {
        events.clear();
        if let Err(e) = reader.recv_batch(&mut events).await {
            if super::noteworthy() {
                eprintln!("a dm connection ended: {e:#}");
            }
            return;
        }
        let now = Instant::now();
        let mut replies = Vec::new();
        {
            let mut st = steps.lock().expect("not poisoned");
            for e in events.drain(..) {
                match e {
                    Event::Msg(ServerMsg::Sent { client_id, .. }) => {
                        if let Some((s, p, k)) = parse_client_id(&client_id)
                            && let Some(step) = st.get_mut(s)
                        {
                            step.on_ack(p, k, now);
                        }
                    }
                    Event::Msg(ServerMsg::Message(m)) => {
                        max_id = max_id.max(m.id.0);
                        if let Some((s, p, k)) = parse_client_id(&m.client_id)
                            && let Some(step) = st.get_mut(s)
                        {
                            step.on_delivery(p, k, now);
                        }
                    }
                    Event::Msg(ServerMsg::Ping { nonce }) => replies.push(ClientMsg::Pong { nonce }),
                    Event::Msg(ServerMsg::Error { code, text, .. }) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("server error: {text} ({})", code.name());
                        }
                    }
                    Event::Msg(_) => {}
                    Event::Closed(r) => {
                        if super::noteworthy() {
                            eprintln!("server closed a dm connection: {} ({})", r.text, r.code.name());
                        }
                        return;
                    }
                }
            }
        }
        if !sender && max_id > acked_id && now - last_ack >= ACK_EVERY {
            replies.push(ClientMsg::Ack {
                up_to: MessageId(max_id),
            });
            acked_id = max_id;
            last_ack = now;
        }
        if !replies.is_empty() && writer.send_all(&replies).await.is_err() {
            return;
        }
    }
}

async fn setup_irc(ctx: &mut Ctx) -> Result<(Senders, Steps)> {
    let peer = ctx.peer()?;
    let tls = if ctx.tls { Some(irc::tls_connector()?) } else { None };
    let steps: Steps = Arc::default();
    let sem = Arc::new(tokio::sync::Semaphore::new(ctx.connect_concurrency()));
    let mut joins = Vec::new();
    for i in 0..2 * PAIRS {
        let (src, addr, tls, sem) = (ctx.sources[i % ctx.sources.len()], peer.addr, tls.clone(), sem.clone());
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            irc::register(src, addr, tls.as_ref(), &irc::nick('d', i)).await
        }));
    }
    let mut writers = Vec::new();
    for (i, j) in joins.into_iter().enumerate() {
        let c = j.await??;
        if i % 2 == 0 {
            writers.push(c.writer.clone());
        }
        tokio::spawn(read_irc(c, steps.clone()));
    }
    if writers.len() != PAIRS {
        bail!("not every pair connected");
    }
    // Let the welcome burst (MOTD and the like) drain before timing anything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((Senders::Irc(writers), steps))
}

async fn read_irc(mut c: irc::Client, steps: Steps) {
    let mut line = String::new();
    loop {
        match c.next_line(&mut line).await {
            Ok(true) => {}
            _ => return,
        }
        let Some(l) = irc::parse(&line) else { continue };
        if l.command != "PRIVMSG" {
            continue;
        }
        let Some(text) = l.params.get(1) else { continue };
        let Some((s, p, k)) = text.split(' ').next().and_then(parse_client_id) else {
            continue;
        };
        let now = Instant::now();
        if let Some(step) = steps.lock().expect("not poisoned").get_mut(s) {
            step.on_delivery(p, k, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_round_trip_and_stay_valid() {
        let id = client_id(3, 99, 123_456);
        assert!(im_proto::msg::is_valid_client_id(&id));
        assert_eq!(parse_client_id(&id), Some((3, 99, 123_456)));
        assert_eq!(parse_client_id("3-99"), None);
        assert_eq!(parse_client_id("3-99-1-2"), None);
    }

    #[test]
    fn a_step_is_held_only_when_everything_is_through_in_time() {
        let start = Instant::now();
        let sch = Schedule::for_stream(start, 10.0, 1, 0, 1.0);
        let mut s = Step::new(vec![sch]);
        for k in 0..10 {
            s.on_ack(0, k, sch.at(k) + Duration::from_millis(2));
            s.on_delivery(0, k, sch.at(k) + Duration::from_millis(3));
        }
        let o = outcome(&s, 10.0, start, true);
        assert!(o.held);
        assert_eq!((o.sent, o.acked, o.delivered), (10, 10, 10));
        assert!((o.acked_per_s - 10.0 / 0.902).abs() < 0.1, "{}", o.acked_per_s);
        // One slow delivery among ten puts p99 over the goal.
        s.on_delivery(0, 9, sch.at(9) + Duration::from_millis(80));
        assert!(!outcome(&s, 10.0, start, true).held);
        // Without acknowledgements (IRC) only delivery counts; a missing one fails the step.
        let mut irc = Step::new(vec![sch]);
        for k in 0..9 {
            irc.on_delivery(0, k, sch.at(k));
        }
        assert!(!outcome(&irc, 10.0, start, false).held);
    }
}
