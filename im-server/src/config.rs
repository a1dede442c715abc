//! The server's configuration file (`<data-dir>/config.toml` by default): every operational
//! limit lives here, with defaults that suit a small self-hosted server. Benchmarks raise the
//! per-address and per-user limits here rather than through special code paths.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Whether anyone may create an account over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    #[default]
    Open,
    /// Only the admin CLI (`im-server user add`) creates accounts.
    Closed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Default listen address when `--listen` is not given.
    pub listen: Option<std::net::SocketAddr>,
    pub registration: Registration,
    /// Delete messages older than this many days; unset keeps everything.
    pub retention_days: Option<u32>,
    /// Serve Prometheus metrics over HTTP here; unset (the default) serves none. A bare port
    /// (`9747` or `"9747"`) means that port on 127.0.0.1.
    #[serde(deserialize_with = "metrics_listen")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub limits: Limits,
}

/// `"ADDR:PORT"`, or a bare port on the loopback address.
fn metrics_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Listen {
        Port(u16),
        Text(String),
    }
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    match Listen::deserialize(d)? {
        Listen::Port(p) => Ok(Some(loopback(p))),
        Listen::Text(t) => match t.parse::<u16>() {
            Ok(p) => Ok(Some(loopback(p))),
            Err(_) => t.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!(
                    "metrics_listen = {t:?} is not an address like \"127.0.0.1:9747\" or a port"
                ))
            }),
        },
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: None,
            registration: Registration::Open,
            retention_days: None,
            metrics_listen: None,
            limits: Limits::default(),
        }
    }
}

/// Every operational limit, one field each. Protocol limits (sizes) are in
/// `im_proto::limits` and are not configurable.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// A connection must finish the handshake and log in within this many seconds.
    pub login_timeout_secs: u64,
    /// With nothing received for this long the server pings; with nothing for twice this
    /// long the connection is closed (`idle_timeout`).
    pub ping_interval_secs: u64,
    /// Most simultaneous connections; 0 = as many as the open-files limit allows.
    pub max_connections: usize,
    /// Connections from one IP address that have not logged in yet.
    pub unauthenticated_per_ip: u32,
    /// New handshakes per second from one IP address (and the burst allowed above it).
    pub handshakes_per_ip_per_sec: u32,
    pub handshake_burst_per_ip: u32,
    /// Login and registration attempts per minute from one IP address, and per account.
    pub logins_per_ip_per_min: u32,
    pub logins_per_account_per_min: u32,
    /// Messages a user may send per second (and the burst allowed above it).
    pub messages_per_user_per_sec: u32,
    pub message_burst_per_user: u32,
    /// Pushes queued for one connection before it counts as too slow and is disconnected
    /// (it catches up when it reconnects).
    pub outbound_queue: usize,
    /// Password hashes computed at once (each takes about 19 MiB and 30 ms).
    pub password_hash_concurrency: usize,
    /// How long a resumption ticket stays valid.
    pub ticket_lifetime_days: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            login_timeout_secs: 15,
            ping_interval_secs: 30,
            max_connections: 0,
            unauthenticated_per_ip: 32,
            handshakes_per_ip_per_sec: 10,
            handshake_burst_per_ip: 30,
            logins_per_ip_per_min: 30,
            logins_per_account_per_min: 10,
            messages_per_user_per_sec: 20,
            message_burst_per_user: 100,
            outbound_queue: 1024,
            password_hash_concurrency: 2,
            ticket_lifetime_days: 30,
        }
    }
}

impl Limits {
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout_secs.max(1))
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs.max(1))
    }

    pub fn ticket_lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.ticket_lifetime_days.max(1)) * 86_400)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
}

impl Config {
    /// Reads the file if it exists; a missing file means all defaults. A file that exists but
    /// does not parse is an error naming the file and the problem, never silently ignored.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_files() {
        let c: Config = toml::from_str("registration = \"closed\"\n[limits]\noutbound_queue = 8\n").unwrap();
        assert_eq!(c.registration, Registration::Closed);
        assert_eq!(c.limits.outbound_queue, 8);
        assert_eq!(c.limits.login_timeout_secs, 15);
        assert!(toml::from_str::<Config>("no_such_setting = 1").is_err());
        assert_eq!(c.metrics_listen, None);
    }

    #[test]
    fn metrics_listen_takes_an_address_or_a_loopback_port() {
        let at = |text: &str| toml::from_str::<Config>(text).map(|c| c.metrics_listen.map(|a| a.to_string()));
        assert_eq!(
            at("metrics_listen = \"0.0.0.0:9747\"").unwrap().unwrap(),
            "0.0.0.0:9747"
        );
        assert_eq!(at("metrics_listen = \"[::1]:9747\"").unwrap().unwrap(), "[::1]:9747");
        assert_eq!(at("metrics_listen = 9747").unwrap().unwrap(), "127.0.0.1:9747");
        assert_eq!(at("metrics_listen = \"9747\"").unwrap().unwrap(), "127.0.0.1:9747");
        assert!(at("metrics_listen = \"localhost\"").is_err());
    }
}
