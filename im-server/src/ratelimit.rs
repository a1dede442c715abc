//! Rate limits keyed by source address, account or user (governor's GCRA), plus the count
//! of not-yet-authenticated connections per address. Each refusal carries the time after
//! which a retry would pass, which the client sees as `retry_after_ms`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use im_proto::UserName;

use crate::config::Limits;

/// One keyed limiter.
pub struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    /// The config field that sets it: the `limit` label of its refusals in the metrics.
    name: &'static str,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(name: &'static str, quota: Quota) -> Self {
        Keyed {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            name,
        }
    }

    /// `Ok` if `key` may proceed now, else how long until it may.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter.check_key(key).map_err(|not_until| {
            crate::metrics::rate_limited(self.name);
            not_until.wait_time_from(DefaultClock::default().now())
        })
    }

    fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

fn per_second(rate: u32, burst: u32) -> Quota {
    Quota::per_second(nz(rate)).allow_burst(nz(burst.max(rate)))
}

fn per_minute(rate: u32) -> Quota {
    Quota::per_minute(nz(rate))
}

/// All the server's rate limits.
pub struct RateLimits {
    pub handshakes_per_ip: Keyed<IpAddr>,
    pub logins_per_ip: Keyed<IpAddr>,
    pub logins_per_account: Keyed<UserName>,
    pub messages_per_user: Keyed<UserName>,
    unauthenticated: Arc<Mutex<HashMap<IpAddr, u32>>>,
    unauthenticated_max: u32,
}

impl RateLimits {
    pub fn new(l: &Limits) -> Self {
        RateLimits {
            handshakes_per_ip: Keyed::new(
                "handshakes_per_ip_per_sec",
                per_second(l.handshakes_per_ip_per_sec, l.handshake_burst_per_ip),
            ),
            logins_per_ip: Keyed::new("logins_per_ip_per_min", per_minute(l.logins_per_ip_per_min)),
            logins_per_account: Keyed::new("logins_per_account_per_min", per_minute(l.logins_per_account_per_min)),
            messages_per_user: Keyed::new(
                "messages_per_user_per_sec",
                per_second(l.messages_per_user_per_sec, l.message_burst_per_user),
            ),
            unauthenticated: Arc::default(),
            unauthenticated_max: l.unauthenticated_per_ip,
        }
    }

    /// Counts a new unauthenticated connection from `ip`, or refuses it when the address
    /// already has its maximum. The count drops when the guard does (login or disconnect).
    pub fn unauthenticated(&self, ip: IpAddr) -> Option<UnauthGuard> {
        let mut map = self.unauthenticated.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.unauthenticated_max {
            crate::metrics::rate_limited("unauthenticated_per_ip");
            return None;
        }
        *n += 1;
        Some(UnauthGuard {
            map: self.unauthenticated.clone(),
            ip,
        })
    }

    /// Forgets idle keys; called periodically so the maps do not grow with every address
    /// ever seen.
    pub fn shrink(&self) {
        self.handshakes_per_ip.shrink();
        self.logins_per_ip.shrink();
        self.logins_per_account.shrink();
        self.messages_per_user.shrink();
    }
}

pub struct UnauthGuard {
    map: Arc<Mutex<HashMap<IpAddr, u32>>>,
    ip: IpAddr,
}

impl Drop for UnauthGuard {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_with_a_retry_time_and_guards_release() {
        let l = Limits {
            logins_per_account_per_min: 2,
            unauthenticated_per_ip: 1,
            ..Limits::default()
        };
        let r = RateLimits::new(&l);
        let alice = UserName::parse("alice").unwrap();
        assert!(r.logins_per_account.check(&alice).is_ok());
        assert!(r.logins_per_account.check(&alice).is_ok());
        let wait = r.logins_per_account.check(&alice).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let g = r.unauthenticated(ip).unwrap();
        assert!(r.unauthenticated(ip).is_none());
        drop(g);
        assert!(r.unauthenticated(ip).is_some());
    }
}
