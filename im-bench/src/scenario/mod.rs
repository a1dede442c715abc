//! The scenarios, one file each, and what several of them share: logging in many clients at
//! once, and counting arrivals of fanned-out messages.

pub mod dm;
pub mod handshake;
pub mod idle;
pub mod reconnect;
pub mod room;
pub mod soak;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::hist::Latency;
use crate::im;
use crate::seed::Account;

/// Whether a connection's end is worth a line on stderr: not once the run is stopping the
/// server itself.
pub fn noteworthy() -> bool {
    !crate::target::stopping()
}

/// Connections opened at once while logging clients in.
pub const CONNECT_CONCURRENCY: usize = 128;

/// Connects and logs in every account by ticket, `CONNECT_CONCURRENCY` at a time; returns
/// the connections in the accounts' order.
pub async fn login_all(addr: SocketAddr, sources: &[IpAddr], accounts: &[Account]) -> Result<Vec<im::Conn>> {
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = Vec::with_capacity(accounts.len());
    for (i, a) in accounts.iter().enumerate() {
        let (sem, src, ticket) = (sem.clone(), sources[i % sources.len()], a.ticket.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut c = im::connect(src, addr, Some(&ticket)).await?;
            c.login_ticket().await?;
            anyhow::Ok(c)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Arrival times of fanned-out messages: for message `seq`, how many recipients have it and
/// when the last one got it; plus every single delivery's latency.
pub struct Arrivals {
    base: Instant,
    last_ns: Vec<AtomicU64>,
    count: Vec<AtomicU32>,
    deliveries: std::sync::Mutex<Latency>,
}

impl Arrivals {
    pub fn new(messages: usize) -> Arc<Self> {
        Arc::new(Arrivals {
            base: Instant::now(),
            last_ns: (0..messages).map(|_| AtomicU64::new(0)).collect(),
            count: (0..messages).map(|_| AtomicU32::new(0)).collect(),
            deliveries: std::sync::Mutex::new(Latency::new()),
        })
    }

    /// A recipient got message `seq`, due at `intended`, now.
    pub fn arrived(&self, seq: usize, intended: Instant, now: Instant) {
        if seq >= self.count.len() {
            return;
        }
        self.count[seq].fetch_add(1, Ordering::Relaxed);
        let ns = now.saturating_duration_since(self.base).as_nanos() as u64;
        self.last_ns[seq].fetch_max(ns, Ordering::Relaxed);
        if let Ok(mut d) = self.deliveries.lock() {
            d.record(now.saturating_duration_since(intended));
        }
    }

    /// Recipients that have message `seq`.
    pub fn count(&self, seq: usize) -> u32 {
        self.count.get(seq).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn delivered(&self) -> u64 {
        self.count.iter().map(|c| u64::from(c.load(Ordering::Relaxed))).sum()
    }

    /// Waits until every message has reached `recipients` recipients, or `timeout`.
    pub async fn wait_complete(&self, recipients: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count.iter().all(|c| c.load(Ordering::Relaxed) >= recipients) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Time to the last recipient, per message complete with `recipients`, measured from its
    /// intended send time; and the number of messages that did not reach everyone.
    pub fn time_to_last(&self, recipients: u32, intended: impl Fn(usize) -> Instant) -> (Latency, usize) {
        let mut h = Latency::new();
        let mut incomplete = 0;
        for (seq, c) in self.count.iter().enumerate() {
            if c.load(Ordering::Relaxed) >= recipients {
                let last = self.base + Duration::from_nanos(self.last_ns[seq].load(Ordering::Relaxed));
                h.record(last.saturating_duration_since(intended(seq)));
            } else {
                incomplete += 1;
            }
        }
        (h, incomplete)
    }

    pub fn delivery_latency(&self) -> Latency {
        self.deliveries.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// The latest arrival of all.
    pub fn last_arrival(&self) -> Instant {
        let ns = self
            .last_ns
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        self.base + Duration::from_nanos(ns)
    }
}

/// Runs `op` in `in_flight` loops for half a second of warm-up and then `secs`; returns the
/// operations completed within the measured window, their rate, latency, and the errors.
pub async fn closed_loop<F, Fut>(in_flight: usize, secs: f64, op: F) -> (u64, f64, Latency, u64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let t0 = Instant::now();
    let start = t0 + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(secs);
    let hist = Arc::new(Mutex::new(Latency::new()));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..in_flight {
        let (op, hist, done, errors, first_error) = (
            op.clone(),
            hist.clone(),
            done.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut k = i;
            while Instant::now() < end {
                let t = Instant::now();
                let r = op(k).await;
                k += in_flight;
                let finished = Instant::now();
                match r {
                    Ok(()) if t >= start && finished <= end => {
                        hist.lock().await.record(finished - t);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().await.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(e) = first_error.lock().await.as_ref() {
        eprintln!("first error: {e}");
    }
    let n = done.load(Ordering::Relaxed);
    let h = hist.lock().await.clone();
    (n, n as f64 / secs, h, errors.load(Ordering::Relaxed))
}

/// Seconds as the run's length allows: `quick` or `full`.
pub fn secs(quick: bool, q: f64, full: f64) -> f64 {
    if quick { q } else { full }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_last_is_the_latest_arrival_per_message() {
        let a = Arrivals::new(2);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        a.arrived(0, t0, at(3));
        a.arrived(0, t0, at(9));
        a.arrived(0, t0, at(5));
        a.arrived(1, at(100), at(104)); // one recipient of two
        let (h, incomplete) = a.time_to_last(3, |s| if s == 0 { t0 } else { at(100) });
        assert_eq!(incomplete, 1);
        assert_eq!(h.count(), 1);
        let ttl = h.quantile_ms(0.5);
        assert!((ttl - 9.0).abs() < 0.05, "{ttl}");
        assert_eq!(a.delivered(), 4);
        assert_eq!(a.delivery_latency().count(), 4);
    }
}
