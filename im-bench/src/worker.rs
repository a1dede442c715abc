//! Worker processes for runs larger than one process's open-files limit (20,000 here): the
//! parent re-executes itself as `im-bench __worker`, hands the job over stdin (one JSON line;
//! tickets travel on the pipe, never on argv), and reads JSON lines back on the child's
//! stdout. A worker opens its connections, reports how long that took as a serialized HDR
//! histogram, holds them (answering pings) until the parent writes `stop`, and reports how
//! many the server dropped meanwhile. The parent merges the histograms.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use im_proto::handshake::ResumeTicket;
use im_proto::msg::{ClientMsg, ServerMsg};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, Semaphore};
use zeroize::Zeroizing;

use crate::hist::Latency;
use crate::{im, irc};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Connect by ticket and log in; hold.
    ImIdle {
        addr: SocketAddr,
        sources: Vec<IpAddr>,
        /// (ticket id, ticket secret), hex.
        tickets: Vec<(String, String)>,
        concurrency: usize,
    },
    /// Connect and register; hold.
    IrcIdle {
        addr: SocketAddr,
        tls: bool,
        sources: Vec<IpAddr>,
        nicks: Vec<String>,
        concurrency: usize,
    },
}

/// The worker's first report.
#[derive(Debug, Serialize, Deserialize)]
pub struct Connected {
    pub ok: usize,
    pub failed: usize,
    /// Wall time to connect them all.
    pub secs: f64,
    /// Connect-to-logged-in latency, [`Latency::serialize`]d.
    pub hist: String,
    pub first_error: Option<String>,
}

/// The worker's last report.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stopped {
    /// Connections the server closed while they were held.
    pub lost: usize,
}

pub fn encode_ticket(t: &ResumeTicket) -> (String, String) {
    (hex::encode(t.id), hex::encode(&t.secret[..]))
}

fn decode_ticket((id, secret): &(String, String)) -> Result<ResumeTicket> {
    let id: [u8; 16] = hex::decode(id)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("ticket id length"))?;
    let s = Zeroizing::new(hex::decode(secret)?);
    let mut secret = Zeroizing::new([0u8; 32]);
    if s.len() != 32 {
        bail!("ticket secret length");
    }
    secret.copy_from_slice(&s);
    Ok(ResumeTicket { id, secret })
}

/// The parent's handle on one worker.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Worker {
    pub async fn spawn(job: &Job) -> Result<Worker> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("__worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let mut line = serde_json::to_string(job)?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        Ok(Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn next<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T> {
        let line = self.lines.next_line().await?.context("worker exited early")?;
        serde_json::from_str(&line).with_context(|| format!("worker said {line:?}"))
    }

    pub async fn connected(&mut self) -> Result<Connected> {
        self.next().await
    }

    pub async fn stop(mut self) -> Result<Stopped> {
        self.stdin.write_all(b"stop\n").await?;
        self.stdin.flush().await?;
        let s = self.next().await?;
        let _ = self.child.wait().await;
        Ok(s)
    }
}

/// `im-bench __worker`: runs one job from stdin.
pub async fn main() -> Result<()> {
    crate::sys::raise_nofile();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let job: Job = serde_json::from_str(&stdin.next_line().await?.context("no job on stdin")?)?;
    let lost = Arc::new(AtomicUsize::new(0));
    let hist = Arc::new(Mutex::new(Latency::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let t0 = Instant::now();
    let (n, concurrency) = match &job {
        Job::ImIdle {
            tickets, concurrency, ..
        } => (tickets.len(), *concurrency),
        Job::IrcIdle { nicks, concurrency, .. } => (nicks.len(), *concurrency),
    };
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let tls = match &job {
        Job::IrcIdle { tls: true, .. } => Some(irc::tls_connector()?),
        _ => None,
    };
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (sem, lost, hist, failed, first_error) = (
            sem.clone(),
            lost.clone(),
            hist.clone(),
            failed.clone(),
            first_error.clone(),
        );
        let permit = sem.acquire_owned().await?;
        let fail = move |e: anyhow::Error, failed: &AtomicUsize, first: &Mutex<Option<String>>| {
            failed.fetch_add(1, Ordering::Relaxed);
            let mut f = first.try_lock().ok();
            if let Some(f) = f.as_mut()
                && f.is_none()
            {
                **f = Some(format!("{e:#}"));
            }
        };
        match &job {
            Job::ImIdle {
                addr, sources, tickets, ..
            } => {
                let (addr, src, ticket) = (*addr, sources[i % sources.len()], decode_ticket(&tickets[i])?);
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let start = Instant::now();
                    let conn = async {
                        let mut c = im::connect(src, addr, Some(&ticket)).await?;
                        c.login_ticket().await?;
                        anyhow::Ok(c)
                    }
                    .await;
                    drop(permit);
                    match conn {
                        Ok(c) => {
                            hist.lock().await.record(start.elapsed());
                            let _ = tx.send(());
                            if hold_im(c).await.is_err() {
                                lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            fail(e, &failed, &first_error);
                            let _ = tx.send(());
                        }
                    }
                });
                tasks.push(rx);
            }
            Job::IrcIdle {
                addr, sources, nicks, ..
            } => {
                let (addr, src, nick, tls) = (*addr, sources[i % sources.len()], nicks[i].clone(), tls.clone());
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let start = Instant::now();
                    let conn = irc::register(src, addr, tls.as_ref(), &nick).await;
                    drop(permit);
                    match conn {
                        Ok(c) => {
                            hist.lock().await.record(start.elapsed());
                            let _ = tx.send(());
                            if hold_irc(c).await.is_err() {
                                lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            fail(e, &failed, &first_error);
                            let _ = tx.send(());
                        }
                    }
                });
                tasks.push(rx);
            }
        }
    }
    for rx in tasks {
        let _ = rx.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    let report = Connected {
        ok: n - failed,
        failed,
        secs,
        hist: hist.lock().await.serialize(),
        first_error: first_error.lock().await.clone(),
    };
    println!("{}", serde_json::to_string(&report)?);
    // Hold until told to stop (or the parent goes away).
    loop {
        match stdin.next_line().await? {
            Some(l) if l.trim() == "stop" => break,
            Some(_) => {}
            None => break,
        }
    }
    let stopped = Stopped {
        lost: lost.load(Ordering::Relaxed),
    };
    println!("{}", serde_json::to_string(&stopped)?);
    std::process::exit(0);
}

/// Holds an idle im connection: answers pings, nothing else. Returns when the server ends it.
async fn hold_im(mut c: im::Conn) -> Result<()> {
    loop {
        match c.recv().await? {
            im::Event::Msg(ServerMsg::Ping { nonce }) => c.send(&ClientMsg::Pong { nonce }).await?,
            im::Event::Msg(_) => {}
            im::Event::Closed(r) => bail!("closed by the server: {} ({})", r.text, r.code.name()),
        }
    }
}

async fn hold_irc(mut c: irc::Client) -> Result<()> {
    let mut line = String::new();
    while c.next_line(&mut line).await? {}
    bail!("closed by the server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_tickets_round_trip_through_json() {
        let t = ResumeTicket {
            id: [7; 16],
            secret: Zeroizing::new([9; 32]),
        };
        let job = Job::ImIdle {
            addr: "127.0.0.1:7447".parse().unwrap(),
            sources: crate::sys::sources(2),
            tickets: vec![encode_ticket(&t)],
            concurrency: 4,
        };
        let line = serde_json::to_string(&job).unwrap();
        assert!(!line.contains('\n'));
        let Job::ImIdle { tickets, .. } = serde_json::from_str(&line).unwrap() else {
            panic!("wrong kind")
        };
        let back = decode_ticket(&tickets[0]).unwrap();
        assert_eq!((back.id, *back.secret), (t.id, *t.secret));
    }
}
