//! The accept loop: bounds connections to what the open-files limit allows (pausing accepts,
//! with a log line, just below it), refuses addresses with too many unauthenticated
//! connections, spawns a task per connection, and on shutdown waits for every session to
//! send its Close.

use std::sync::Arc;
use std::time::Duration;

use im_proto::msg::ErrorCode;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::conn::refuse;
use crate::state::Shared;

/// File descriptors kept free for the stores, logs and the listener itself.
const RESERVED_FDS: u64 = 256;
/// How long sessions get to send their Close and flush on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Raises the soft open-files limit to the hard limit; returns the limit in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The most connections to hold at once.
pub fn connection_limit(configured: usize, nofile: u64) -> usize {
    let by_fds = nofile.saturating_sub(RESERVED_FDS).max(16) as usize;
    if configured == 0 {
        by_fds
    } else {
        configured.min(by_fds)
    }
}

/// Serves until `shared.shutdown` fires, then waits for the sessions to close.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, max_connections: usize) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    let mut paused = false;
    let housekeeping = tokio::spawn(housekeeping(shared.clone()));
    loop {
        let permit = if let Ok(p) = permits.clone().try_acquire_owned() {
            paused = false;
            p
        } else {
            if !paused {
                tracing::warn!(
                    max_connections,
                    "connection limit reached; not accepting until a connection closes"
                );
                paused = true;
            }
            tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shared.shutdown.cancelled() => break,
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let ip = peer.ip();
        let shared = shared.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match shared.limits.unauthenticated(ip) {
                Some(guard) => crate::session::serve(stream, ip, shared, guard).await,
                None => {
                    refuse(
                        stream,
                        ErrorCode::RateLimited,
                        1000,
                        "too many connections from your address",
                    )
                    .await
                }
            }
        });
    }
    drop(listener);
    housekeeping.abort();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!("some sessions did not close within the grace period");
    }
}

/// Messages deleted per retention batch: small, so no batch holds the writer for long.
const RETENTION_BATCH: usize = 500;

/// Periodic chores: forget idle rate-limit keys, purge expired tickets, apply retention.
async fn housekeeping(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        shared.limits.shrink();
        let now = crate::state::now_ms();
        if let Err(e) = shared.db(move |a| a.purge_expired_tickets(now)).await {
            tracing::warn!(error = %e, "purging expired tickets failed");
        }
        if let Some(days) = shared.config.retention_days {
            retention(&shared, now.saturating_sub(u64::from(days) * 86_400_000)).await;
        }
    }
}

/// Deletes messages older than `cutoff_ms` in small batches, yielding between them.
pub async fn retention(shared: &Shared, cutoff_ms: u64) -> usize {
    let mut total = 0;
    loop {
        let log = shared.log.clone();
        match tokio::task::spawn_blocking(move || log.delete_older_than(cutoff_ms, RETENTION_BATCH)).await {
            Ok(Ok(n)) => {
                total += n;
                if n < RETENTION_BATCH {
                    break;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "retention failed");
                break;
            }
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if total > 0 {
        tracing::info!(deleted = total, "retention: deleted old messages");
    }
    total
}
