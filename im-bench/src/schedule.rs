//! The open-loop send schedule: message k of a stream is due at a fixed time,
//! `start + offset + k × interval`, whatever happened to earlier messages. Latency is measured
//! from that intended time, not from when the sender got round to it, so a server that stalls
//! cannot hide the stall by slowing the sender down (coordinated omission).
//!
//! A total rate is split over several streams (one per sending connection), each offset by a
//! fraction of its interval so that the sends interleave evenly instead of arriving in bursts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    offset: Duration,
    /// Whole nanoseconds, so that `at` and `due` agree exactly.
    interval_ns: u64,
    /// Messages in the stream.
    total: u64,
}

impl Schedule {
    /// Stream `index` of `streams` that together offer `total_rate` messages per second for
    /// `secs`, starting at `start`.
    pub fn for_stream(start: Instant, total_rate: f64, streams: usize, index: usize, secs: f64) -> Self {
        let streams = streams.max(1);
        let per_stream = (total_rate / streams as f64).max(1e-9);
        let interval_ns = ((1e9 / per_stream).round() as u64).max(1);
        let offset = Duration::from_nanos(interval_ns * index as u64 / streams as u64);
        let total = (per_stream * secs).round().max(1.0) as u64;
        Schedule {
            start,
            offset,
            interval_ns,
            total,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// When message `k` is due.
    pub fn at(&self, k: u64) -> Instant {
        self.start + self.offset + Duration::from_nanos(self.interval_ns.saturating_mul(k))
    }

    /// How many messages are due at `now` (messages 0 to n-1), at most `total`.
    pub fn due(&self, now: Instant) -> u64 {
        let first = self.start + self.offset;
        if now < first {
            return 0;
        }
        let elapsed = (now - first).as_nanos().min(u128::from(u64::MAX)) as u64;
        (elapsed / self.interval_ns + 1).min(self.total)
    }

    /// The latency of message `k` observed at `now`, measured from when it was due.
    pub fn latency(&self, k: u64, now: Instant) -> Duration {
        now.saturating_duration_since(self.at(k))
    }
}

/// Drives a sender: waits until at least one message is due, then says which ones to send now
/// (all that are due, so a sender that fell behind catches up in one batch rather than drifting).
pub struct Pacer {
    schedule: Schedule,
    next: u64,
    precise: bool,
}

/// How long before a due time a precise pacer stops sleeping on tokio's timer and spins.
const SPIN: Duration = Duration::from_millis(2);

impl Pacer {
    /// Waits on tokio's timer, which fires on whole milliseconds: a send goes out up to about
    /// 1 ms after it was due, the same lateness in every message of a stream (they share the
    /// phase against the millisecond ticks), and it counts into the latency. For the soak,
    /// whose streams run in tasks of their own and whose point is what is lost, not latency.
    pub fn new(schedule: Schedule) -> Self {
        Pacer {
            schedule,
            next: 0,
            precise: false,
        }
    }

    /// Sleeps to [`SPIN`] before each due time, then yields in a loop until it: a send goes
    /// out within microseconds of its due time, at the cost of up to [`SPIN`] of the bench's
    /// core per send. For sparse schedules whose latencies are a millisecond or two, where the
    /// timer's lateness would be a third of the figure and vary between runs with its phase.
    pub fn precise(schedule: Schedule) -> Self {
        Pacer {
            precise: true,
            ..Pacer::new(schedule)
        }
    }

    /// The range of message numbers to send now; `None` when the stream is done.
    pub async fn next_batch(&mut self) -> Option<std::ops::Range<u64>> {
        if self.next >= self.schedule.total {
            return None;
        }
        let due = self.schedule.due(Instant::now());
        if due <= self.next {
            let at = self.schedule.at(self.next);
            if !self.precise {
                tokio::time::sleep_until(at).await;
            } else {
                wait_precisely(at).await;
            }
        }
        let due = self.schedule.due(Instant::now()).max(self.next + 1);
        let batch = self.next..due;
        self.next = due;
        Some(batch)
    }
}

/// Sleeps on tokio's timer to [`SPIN`] before `at`, then yields until it.
async fn wait_precisely(at: Instant) {
    if let Some(early) = at.checked_sub(SPIN) {
        tokio::time::sleep_until(early).await;
    }
    // Each yield lets the runtime poll its I/O driver, so readers still run.
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// Paces many streams from one task, each send within microseconds of its due time, like
/// [`Pacer::precise`]: a precise pacer per stream would have a hundred streams spinning at
/// once, one task spins for them all. Its sends must not block (the bench's writers queue
/// them), or one stream's wait would make every other late.
pub struct Streams {
    schedules: Vec<Schedule>,
    next: Vec<u64>,
    /// When each unfinished stream's next message is due.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Streams {
    pub fn new(schedules: Vec<Schedule>) -> Self {
        let due = schedules
            .iter()
            .enumerate()
            .filter(|(_, s)| s.total > 0)
            .map(|(i, s)| Reverse((s.at(0), i)))
            .collect();
        Streams {
            next: vec![0; schedules.len()],
            schedules,
            due,
        }
    }

    /// Waits until a message is due, then fills `out` with each stream that has messages due
    /// and their numbers (all that are due, so a stream that fell behind catches up in one
    /// batch). `false` once every stream is done.
    pub async fn next_batches(&mut self, out: &mut Vec<(usize, std::ops::Range<u64>)>) -> bool {
        out.clear();
        let Some(&Reverse((at, _))) = self.due.peek() else {
            return false;
        };
        wait_precisely(at).await;
        let now = Instant::now();
        while let Some(&Reverse((at, i))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let s = &self.schedules[i];
            let upto = s.due(now).max(self.next[i] + 1);
            out.push((i, self.next[i]..upto));
            self.next[i] = upto;
            if upto < s.total {
                self.due.push(Reverse((s.at(upto), i)));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_share_the_rate_and_interleave() {
        let t0 = Instant::now();
        // 1,000 msg/s over 4 streams: each sends every 4 ms, offset by 1 ms from the last.
        let s: Vec<_> = (0..4).map(|i| Schedule::for_stream(t0, 1000.0, 4, i, 2.0)).collect();
        for (i, sch) in s.iter().enumerate() {
            assert_eq!(sch.total(), 500);
            assert_eq!(sch.at(0) - t0, Duration::from_millis(i as u64));
            assert_eq!(sch.at(10) - sch.at(9), Duration::from_millis(4));
        }
        let total: u64 = s.iter().map(|x| x.total()).sum();
        assert_eq!(total, 2000);
    }

    #[test]
    fn due_counts_match_the_intended_times() {
        let t0 = Instant::now();
        let s = Schedule::for_stream(t0, 100.0, 1, 0, 1.0); // every 10 ms
        assert_eq!(s.due(t0), 1); // message 0 is due at the start
        assert_eq!(s.due(t0 + Duration::from_micros(9_999)), 1);
        assert_eq!(s.due(t0 + Duration::from_millis(10)), 2);
        assert_eq!(s.due(t0 + Duration::from_secs(60)), 100); // capped at the total
        for k in 0..100 {
            assert_eq!(s.due(s.at(k)), k + 1);
        }
    }

    #[test]
    fn latency_counts_from_the_intended_time_not_the_actual_send() {
        let t0 = Instant::now();
        let s = Schedule::for_stream(t0, 100.0, 1, 0, 1.0);
        // A stalled sender sends message 5 (due at 50 ms) only at 300 ms, and its reply comes
        // at 301 ms: the latency is 251 ms, not 1 ms.
        let reply = t0 + Duration::from_millis(301);
        assert_eq!(s.latency(5, reply), Duration::from_millis(251));
        // A reply "before" its due time (clock granularity) is zero, never negative.
        assert_eq!(s.latency(50, t0), Duration::ZERO);
    }

    /// Real time: the spin never lets paused time advance.
    #[tokio::test]
    async fn streams_send_every_message_once_in_order_and_never_early() {
        let t0 = Instant::now() + Duration::from_millis(5);
        let schedules: Vec<_> = (0..3).map(|i| Schedule::for_stream(t0, 600.0, 3, i, 0.05)).collect();
        let mut streams = Streams::new(schedules.clone());
        let mut seen = vec![Vec::new(); 3];
        let mut batches = Vec::new();
        while streams.next_batches(&mut batches).await {
            assert!(!batches.is_empty());
            let now = Instant::now();
            for (i, range) in batches.drain(..) {
                assert!(
                    schedules[i].at(range.start) <= now,
                    "stream {i} message {} sent early",
                    range.start
                );
                seen[i].extend(range);
            }
        }
        for (i, s) in schedules.iter().enumerate() {
            assert_eq!(seen[i], (0..s.total()).collect::<Vec<_>>(), "stream {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_sends_in_schedule_and_catches_up_in_one_batch() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Schedule::for_stream(t0, 100.0, 1, 0, 0.1)); // 10 messages
        assert_eq!(p.next_batch().await, Some(0..1));
        assert_eq!(p.next_batch().await, Some(1..2));
        assert_eq!(Instant::now() - t0, Duration::from_millis(10));
        // The sender stalls for 45 ms: messages 2 to 5 are overdue and come as one batch.
        tokio::time::sleep(Duration::from_millis(45)).await;
        assert_eq!(p.next_batch().await, Some(2..6));
        let mut rest = Vec::new();
        while let Some(b) = p.next_batch().await {
            rest.extend(b);
        }
        assert_eq!(rest, vec![6, 7, 8, 9]);
    }
}
