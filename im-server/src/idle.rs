//! The runtime's idle moments, for work that can wait: a worker thread about to park has run
//! everything that was ready, so work started then delays nothing.
//!
//! What waits for them: sessions computing the keystream of their next records
//! (`Session::prepare`). Done right after a write, that would be on the path of every member
//! written after it in a room's fan-out; `yield_now` does not wait long enough, because the
//! runtime wakes yielded tasks at each periodic driver poll, in the middle of a fan-out.

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

static IDLE: Notify = Notify::const_new();

/// For the runtime's `on_thread_park`: wakes whoever waits for an idle moment.
pub fn parking() {
    IDLE.notify_waiters();
}

/// Completes at the next idle moment after it is first polled. Without [`parking`] installed
/// on the runtime (a test's runtime, say) it never does, and what waits on it never runs:
/// only work that is an optimisation may wait here.
pub fn next() -> Notified<'static> {
    IDLE.notified()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn waiters_run_once_the_ready_work_is_done() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_park(super::parking)
            .build()
            .unwrap();
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
}
