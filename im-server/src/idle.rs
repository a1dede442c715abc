//! The runtime's idle moments, for work that can wait: a worker thread about to park has run
//! everything that was ready, so work started then delays nothing.
//!
//! What waits for them: sessions computing the keystream of their next records
//! (`Session::prepare`). Done right after a write, that would be on the path of every member
//! written after it in a room's fan-out; `yield_now` does not wait long enough, because the
//! runtime wakes yielded tasks at each periodic driver poll, in the middle of a fan-out.
//!
//! Each idle moment wakes one waiter, not all: after a fan-out to thousands, waking every
//! member at once would queue thousands of keystream computations (a few µs each) in front of
//! whatever arrives next, a DM say, for milliseconds. One at a time, the worker runs one, finds
//! nothing else ready, parks again and wakes the next; what arrives meanwhile waits for at most
//! one of them and the runtime's next driver poll.

use std::future::Future;
use std::task::{Context, Waker};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

static IDLE: Notify = Notify::const_new();

/// For the runtime's `on_thread_park`: wakes one waiter for an idle moment, if any waits.
pub fn parking() {
    IDLE.notify_one();
    // With no one waiting, `notify_one` keeps a permit that would let the next waiter through
    // at once, right after its write and in the middle of a fan-out: take it back.
    let unclaimed = std::pin::pin!(IDLE.notified());
    let _ = unclaimed.poll(&mut Context::from_waker(Waker::noop()));
}

/// Completes at an idle moment after it is first polled, one waiter per idle moment. Without
/// [`parking`] installed on the runtime (a test's runtime, say) it never completes, and what
/// waits on it never runs: only work that is an optimisation may wait here.
pub fn next() -> Notified<'static> {
    IDLE.notified()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_park(super::parking)
            .build()
            .unwrap()
    }

    /// One test, not two: every runtime's parking wakes the same waiters.
    #[test]
    fn idle_moments() {
        waiters_run_once_the_ready_work_is_done();
        one_waiter_per_idle_moment();
    }

    fn waiters_run_once_the_ready_work_is_done() {
        let rt = runtime();
        let busy = Arc::new(AtomicUsize::new(0));
        // All on the one worker: 100 ready tasks, then the waiter, which must see them done.
        let seen = rt.block_on(rt.spawn(async move {
            let work: Vec<_> = (0..100)
                .map(|_| {
                    let busy = busy.clone();
                    tokio::spawn(async move {
                        for _ in 0..10 {
                            tokio::task::yield_now().await;
                        }
                        busy.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            tokio::time::timeout(Duration::from_secs(5), super::next())
                .await
                .unwrap();
            let seen = busy.load(Ordering::SeqCst);
            for w in work {
                w.await.unwrap();
            }
            seen
        }));
        assert_eq!(seen.unwrap(), 100, "the idle waiter ran while other tasks were ready");
    }

    /// Each waiter's follow-up work runs before the next waiter: it is woken by the next idle
    /// moment, not queued with the others by the first.
    fn one_waiter_per_idle_moment() {
        let rt = runtime();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let afters = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, a) = (order.clone(), afters.clone());
        rt.block_on(rt.spawn(async move {
            let waiters: Vec<_> = (0..3)
                .map(|i| {
                    let (o, a) = (o.clone(), a.clone());
                    tokio::spawn(async move {
                        super::next().await;
                        o.lock().unwrap().push(format!("waiter {i}"));
                        let after = tokio::spawn(async move { o.lock().unwrap().push(format!("after {i}")) });
                        a.lock().unwrap().push(after);
                    })
                })
                .collect();
            for w in waiters {
                tokio::time::timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
            }
            let afters = std::mem::take(&mut *a.lock().unwrap());
            for after in afters {
                after.await.unwrap();
            }
        }))
        .unwrap();
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 6);
        for pair in order.chunks(2) {
            let i = pair[0].strip_prefix("waiter ").expect("a waiter first");
            assert_eq!(pair[1], format!("after {i}"), "the waiters ran back to back: {order:?}");
        }
    }
}
