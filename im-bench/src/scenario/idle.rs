//! `idle`: N authenticated connections that do nothing but answer pings. The figure is the
//! server's resident memory per connection: (RSS with N connections − RSS of the idle server
//! before the first) / N, read from /proc/PID/status. Measured at 5,000 connections and at the
//! full count, and (in a full run) again after a ping interval, when every connection has been
//! quiet long enough for the server to have dropped what an idle connection need not hold.
//!
//! The clients run in worker processes of at most [`PER_WORKER`] connections each (one
//! process may hold 20,000 open files here); their connect latencies come back as serialized
//! histograms and are merged.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::Ctx;
use crate::hist::Latency;
use crate::report::Unit;
use crate::seed::user_name;
use crate::target::PING_INTERVAL_SECS;
use crate::worker::{Job, Worker, encode_ticket};
use crate::{irc, sys};

/// Connections per worker process.
pub const PER_WORKER: usize = 7_000;

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.connections.unwrap_or(if ctx.quick { 2_000 } else { 19_000 });
    let mut checkpoints = vec![n];
    if n > 5_000 {
        checkpoints.insert(0, 5_000);
    }
    let settle = Duration::from_secs(if ctx.quick { 1 } else { 3 });

    // The jobs for every connection, in order, and how to read the server's RSS.
    let (job, pid, _server): (JobSlice, u32, Option<crate::target::ImServer>) = if ctx.is_im() {
        let names: Vec<_> = (0..n).map(|i| user_name("u", i)).collect();
        let (server, accounts) = ctx.im_server(&names).await?;
        let tickets: Vec<_> = accounts.iter().map(|a| encode_ticket(&a.ticket)).collect();
        let addr = server.addr;
        (JobSlice::Im { addr, tickets }, server.pid, Some(server))
    } else {
        let peer = ctx.peer()?;
        let nicks: Vec<_> = (0..n).map(|i| irc::nick('i', i)).collect();
        (JobSlice::Irc { addr: peer.addr, nicks }, peer.pid, None)
    };
    tokio::time::sleep(settle).await;
    let rss0 = sys::rss(pid)?;
    let v = ctx.variant("conns=0");
    ctx.report.add(&v, "rss_server", rss0 as f64, Unit::Bytes);
    eprintln!("server RSS before connecting: {:.1} MiB", rss0 as f64 / 1048576.0);

    let mut workers = Vec::new();
    let mut done = 0;
    let mut total_wall = 0.0;
    let mut all = Latency::new();
    let mut failed_all = 0;
    for &cp in &checkpoints {
        let t0 = Instant::now();
        let mut starting = Vec::new();
        let mut from = done;
        while from < cp {
            let to = (from + PER_WORKER).min(cp);
            starting.push(Worker::spawn(&job.slice(ctx, from, to)).await?);
            from = to;
        }
        let mut wave = Latency::new();
        let mut failed = 0;
        let mut first_error = None;
        for w in &mut starting {
            let c = w.connected().await?;
            wave.merge(&Latency::deserialize(&c.hist)?);
            failed += c.failed;
            if first_error.is_none() {
                first_error = c.first_error;
            }
        }
        workers.extend(starting);
        let wall = t0.elapsed().as_secs_f64();
        total_wall += wall;
        all.merge(&wave);
        let opened = cp - done;
        done = cp;
        if failed > 0 {
            eprintln!(
                "{failed} of {opened} connections failed; first error: {}",
                first_error.unwrap_or_default()
            );
        }
        tokio::time::sleep(settle).await;
        failed_all += failed;
        let rss = sys::rss(pid)?;
        let ok = (cp - failed_all) as f64;
        let v = ctx.variant(&format!("conns={cp}"));
        let r = &mut ctx.report;
        r.add(
            &v,
            "rss_per_conn",
            (rss.saturating_sub(rss0)) as f64 / ok.max(1.0),
            Unit::Bytes,
        );
        r.add(&v, "rss_server", rss as f64, Unit::Bytes);
        r.add(&v, "connect_time", total_wall * 1e3, Unit::Ms);
        r.add(&v, "connects", opened as f64 / wall, Unit::PerS);
        r.add(&v, "connect_p50", all.quantile_ms(0.5), Unit::Ms);
        r.add(&v, "connect_p99", all.quantile_ms(0.99), Unit::Ms);
        r.add(&v, "failed", failed as f64, Unit::Count);
        if failed * 100 > opened {
            bail!("more than 1% of connections failed: {failed} of {opened}");
        }
    }

    if !ctx.quick {
        // Every connection has now been quiet past a ping interval: the server has pinged it
        // (and should have dropped its key schedules).
        let wait = Duration::from_secs(PING_INTERVAL_SECS * 2 + 5);
        if ctx.is_im() {
            eprintln!("waiting {} s for a ping interval to pass", wait.as_secs());
            tokio::time::sleep(wait).await;
            let rss = sys::rss(pid)?;
            let v = ctx.variant(&format!("conns={n}"));
            ctx.report.add(
                &v,
                "rss_per_conn_after_ping",
                rss.saturating_sub(rss0) as f64 / n as f64,
                Unit::Bytes,
            );
        }
    }

    let mut lost = 0;
    for w in workers {
        lost += w.stop().await?.lost;
    }
    let v = ctx.variant(&format!("conns={n}"));
    ctx.report.add(&v, "dropped_by_server", lost as f64, Unit::Count);
    Ok(())
}

/// Every connection's job, sliced per worker.
enum JobSlice {
    Im {
        addr: std::net::SocketAddr,
        tickets: Vec<(String, String)>,
    },
    Irc {
        addr: std::net::SocketAddr,
        nicks: Vec<String>,
    },
}

impl JobSlice {
    fn slice(&self, ctx: &Ctx, from: usize, to: usize) -> Job {
        match self {
            JobSlice::Im { addr, tickets } => Job::ImIdle {
                addr: *addr,
                sources: ctx.sources.clone(),
                tickets: tickets[from..to].to_vec(),
                concurrency: ctx.connect_concurrency(),
            },
            JobSlice::Irc { addr, nicks } => Job::IrcIdle {
                addr: *addr,
                tls: ctx.tls,
                sources: ctx.sources.clone(),
                nicks: nicks[from..to].to_vec(),
                concurrency: ctx.connect_concurrency(),
            },
        }
    }
}
