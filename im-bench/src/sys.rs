//! The operating-system side: loopback source addresses, CPU pinning, resident memory of a
//! process, open-files limits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses 127.0.0.2, 127.0.0.3, ...: each gives its own ~28,000 ephemeral ports, so
/// tens of thousands of connections (and the TIME_WAIT of a reconnect storm) never run out,
/// and per-address limits are spread too.
pub fn sources(n: usize) -> Vec<IpAddr> {
    (0..n.max(1))
        .map(|i| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                (((i + 2) >> 8) & 0xff) as u8,
                ((i + 2) & 0xff) as u8,
            ))
        })
        .collect()
}

/// A TCP connection to `dst` from `src` (any port), with Nagle off.
pub async fn connect_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if dst.ip().is_loopback() {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    let stream = sock.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Like [`connect_from`], retrying briefly when the listener's backlog is full or the address
/// is momentarily out of ports, which a connection storm provokes.
pub async fn connect_retry(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let mut wait = Duration::from_millis(5);
    let mut tries = 0;
    loop {
        match connect_from(src, dst).await {
            Ok(s) => return Ok(s),
            Err(e) if tries < 8 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Parses a CPU list as taskset takes it: `1`, `0,2`, `2-3`.
pub fn parse_cpus(list: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
                if a > b {
                    bail!("bad CPU range {part}");
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().with_context(|| format!("bad CPU number {part}"))?),
        }
    }
    if cpus.is_empty() {
        bail!("empty CPU list");
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Pins the calling process (and every thread and child it creates afterwards) to `cpus`.
/// Call before the async runtime starts its threads.
pub fn pin_self(cpus: &[usize]) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it; the call
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins every thread of a running process (an external server, an IRC peer) with taskset.
pub fn pin_pid(pid: u32, cpus: &str) -> Result<()> {
    let st = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    if !st.success() {
        bail!("taskset -a -p -c {cpus} {pid} failed");
    }
    Ok(())
}

/// Number of CPUs this process may run on.
pub fn cpus_available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resident memory of `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone (reading /proc/{pid}/status)"))?;
    parse_vmrss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raises the soft open-files limit to the hard limit; returns it. The server's own function:
/// the bench holds as many sockets as the server does.
pub use im_server::server::raise_nofile_limit as raise_nofile;

/// The machine, for the head of a report: CPU model, CPUs, memory, kernel, load.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_owned();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!(
        "{model}, {online} CPUs online, {mem} GiB, Linux {}, load {}",
        kernel.trim(),
        load.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("1").unwrap(), vec![1]);
        assert_eq!(parse_cpus("0,2-3, 2").unwrap(), vec![0, 2, 3]);
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("x").is_err());
    }

    #[test]
    fn sources_skip_the_default_loopback_address() {
        let s = sources(300);
        assert_eq!(s[0].to_string(), "127.0.0.2");
        assert_eq!(s[253].to_string(), "127.0.0.255");
        assert_eq!(s[254].to_string(), "127.0.1.0");
        assert!(s.iter().all(|a| a.is_loopback()));
    }

    #[test]
    fn vmrss_parses() {
        assert_eq!(parse_vmrss("Name:\tx\nVmRSS:\t   1234 kB\n"), Some(1234 * 1024));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }
}
