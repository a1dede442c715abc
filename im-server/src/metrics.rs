//! Prometheus metrics, opt-in (`metrics_listen` in config.toml): every metric's name and
//! meaning, the helpers the rest of the server calls to record them, and the tiny HTTP
//! responder that serves `GET /metrics`.
//!
//! Recording goes through the `metrics` facade; without `metrics_listen` no recorder is
//! installed and every call is a no-op. With it, `metrics-exporter-prometheus` keeps the
//! values and renders the text format. Its own HTTP listener would bring hyper (and HTTP/2)
//! into the server for one loopback page, so this module answers scrapes itself: one request,
//! one response, `Connection: close`.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Open connections, by `state`: `handshaking` (before login) or `authenticated`.
pub const CONNECTIONS: &str = "im_connections";
/// Finished handshakes, by `kind` (`full`, `resumed`) and `result` (`ok`, `failed`).
pub const HANDSHAKES: &str = "im_handshakes_total";
/// Login attempts, by `method` (`password`, `key`, `ticket`, `register`) and `result`.
pub const LOGINS: &str = "im_logins_total";
/// Messages stored under a new id (retransmissions answered from the dedup window are not).
pub const MESSAGES_STORED: &str = "im_messages_stored_total";
/// Retransmissions answered with the stored original.
pub const MESSAGES_DUPLICATE: &str = "im_messages_duplicate_total";
/// Messages written to a device's connection, live or in catch-up.
pub const MESSAGES_DELIVERED: &str = "im_messages_delivered_total";
/// Connections ended because their push queue overflowed (`queue_overflow`).
pub const QUEUE_OVERFLOWS: &str = "im_queue_overflow_disconnects_total";
/// Requests or connections refused by a rate limit, by `limit` (the config field's name).
pub const RATE_LIMITED: &str = "im_rate_limited_total";
/// Time of one group commit of the message log (write plus fsync), in seconds.
pub const STORE_COMMIT_SECONDS: &str = "im_store_commit_seconds";
/// Messages in one group commit.
pub const STORE_COMMIT_MESSAGES: &str = "im_store_commit_messages";
/// Group commits that failed (their senders got an error, nothing was acknowledged).
pub const STORE_COMMIT_FAILURES: &str = "im_store_commit_failures_total";
/// Unix time the server started, in seconds (uptime = now - this).
pub const START_TIME: &str = "im_start_time_seconds";
/// Always 1, labelled with the server's `version`.
pub const BUILD_INFO: &str = "im_build_info";

/// Histogram buckets of a group commit, in seconds: an fsync takes from well under a
/// millisecond (battery-backed cache) to tens of milliseconds (a cheap VPS disk).
const COMMIT_BUCKETS: &[f64] = &[0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 4096.0];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// A scrape must send its request and take its answer within this.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head read before answering.
const MAX_REQUEST: usize = 8 * 1024;

/// Installs the global recorder and describes every metric. Call once, before the server
/// starts; fails if a recorder is already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(STORE_COMMIT_SECONDS.into()), COMMIT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(STORE_COMMIT_MESSAGES.into()), BATCH_BUCKETS)?
        .install_recorder()?;
    describe_gauge!(CONNECTIONS, "Open connections, by state (handshaking, authenticated)");
    describe_counter!(HANDSHAKES, "Handshakes by kind (full, resumed) and result (ok, failed)");
    describe_counter!(LOGINS, "Login attempts by method and result");
    describe_counter!(MESSAGES_STORED, "Messages stored under a new id");
    describe_counter!(MESSAGES_DUPLICATE, "Retransmissions answered with the stored original");
    describe_counter!(MESSAGES_DELIVERED, "Messages written to device connections");
    describe_counter!(QUEUE_OVERFLOWS, "Connections ended because their push queue was full");
    describe_counter!(RATE_LIMITED, "Refusals by rate limit");
    describe_histogram!(STORE_COMMIT_SECONDS, Unit::Seconds, "Message-log group commit time");
    describe_histogram!(STORE_COMMIT_MESSAGES, Unit::Count, "Messages per group commit");
    describe_counter!(STORE_COMMIT_FAILURES, "Failed message-log commits");
    describe_gauge!(START_TIME, Unit::Seconds, "Unix time the server started");
    describe_gauge!(BUILD_INFO, "Build information");
    gauge!(START_TIME).set(crate::state::now_ms() as f64 / 1000.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for state in ["handshaking", "authenticated"] {
        gauge!(CONNECTIONS, "state" => state).set(0.0);
    }
    Ok(handle)
}

/// Answers scrapes on `listener` until `shutdown` fires, and folds histogram samples
/// between scrapes.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &handle)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Reads one request head and answers it: the metrics for `GET /metrics` (or `/`), else 404.
async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics" | b"/") => ("200 OK", handle.render()),
        _ => ("404 Not Found", "try GET /metrics\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Logs where metrics are served, warning when that is not a loopback address.
pub fn announce(addr: SocketAddr) {
    if addr.ip().is_loopback() {
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
    } else {
        tracing::warn!(%addr, "metrics on http://{addr}/metrics: not a loopback address, so anyone who can reach it can read them; firewall it");
    }
}

/// A connection's place in the `im_connections` gauge: counted as handshaking from the
/// start, moved to authenticated at login, and uncounted when dropped.
pub struct ConnectionGauge {
    state: &'static str,
}

impl ConnectionGauge {
    pub fn handshaking() -> Self {
        gauge!(CONNECTIONS, "state" => "handshaking").increment(1.0);
        ConnectionGauge { state: "handshaking" }
    }

    pub fn authenticated(&mut self) {
        gauge!(CONNECTIONS, "state" => self.state).decrement(1.0);
        self.state = "authenticated";
        gauge!(CONNECTIONS, "state" => self.state).increment(1.0);
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        gauge!(CONNECTIONS, "state" => self.state).decrement(1.0);
    }
}

/// One handshake's outcome, counted when dropped: a handshake abandoned midway (a timeout
/// cancels it) counts as failed.
#[derive(Default)]
pub struct HandshakeOutcome {
    resumed: bool,
    ok: bool,
}

impl HandshakeOutcome {
    pub fn resumed(&mut self) {
        self.resumed = true;
    }

    pub fn ok(&mut self) {
        self.ok = true;
    }
}

impl Drop for HandshakeOutcome {
    fn drop(&mut self) {
        let kind = if self.resumed { "resumed" } else { "full" };
        let result = if self.ok { "ok" } else { "failed" };
        counter!(HANDSHAKES, "kind" => kind, "result" => result).increment(1);
    }
}

/// The `method` label of a login attempt, or `None` for a message that is not one.
pub fn login_method(msg: &im_proto::msg::ClientMsg) -> Option<&'static str> {
    use im_proto::msg::ClientMsg;
    match msg {
        ClientMsg::Register { .. } => Some("register"),
        ClientMsg::LoginPassword { .. } => Some("password"),
        ClientMsg::LoginKey { .. } => Some("key"),
        ClientMsg::LoginTicket { .. } => Some("ticket"),
        _ => None,
    }
}

pub fn login(method: &'static str, ok: bool) {
    counter!(LOGINS, "method" => method, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

pub fn delivered(n: usize) {
    if n > 0 {
        counter!(MESSAGES_DELIVERED).increment(n as u64);
    }
}

pub fn queue_overflow() {
    counter!(QUEUE_OVERFLOWS).increment(1);
}

/// One successful group commit of `stored` new messages.
pub fn committed(elapsed: Duration, stored: u64) {
    histogram!(STORE_COMMIT_SECONDS).record(elapsed.as_secs_f64());
    histogram!(STORE_COMMIT_MESSAGES).record(stored as f64);
    counter!(MESSAGES_STORED).increment(stored);
}

pub fn duplicates(n: usize) {
    if n > 0 {
        counter!(MESSAGES_DUPLICATE).increment(n as u64);
    }
}

pub fn commit_failed() {
    counter!(STORE_COMMIT_FAILURES).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_get_metrics_and_nothing_else() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || counter!(MESSAGES_STORED).increment(3));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, handle, stop.clone()));
        let get = |request: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\nim_messages_stored_total 3\n"), "{ok}");
        let missing = get("GET /other HTTP/1.0\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
        stop.cancel();
        server.await.unwrap();
    }
}
