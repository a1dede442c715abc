//! Timestamps for people: `HH:MM` in the message pane and a day line between days, in the
//! local time zone (or UTC, for tests and for `TZ=UTC`).

use im_proto::msg::Timestamp;

/// Which clock times are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Utc,
    /// The system's local time zone (`TZ`, `/etc/localtime`).
    Local,
}

impl Zone {
    /// Seconds east of UTC at the instant `unix_secs`.
    fn offset_secs(self, unix_secs: i64) -> i64 {
        match self {
            Zone::Utc => 0,
            Zone::Local => local_offset(unix_secs),
        }
    }

    /// Seconds since the epoch, shifted into this zone.
    fn local_secs(self, ts: Timestamp) -> i64 {
        let secs = (ts.0 / 1000) as i64;
        secs + self.offset_secs(secs)
    }

    /// `14:05`.
    pub fn hm(self, ts: Timestamp) -> String {
        let s = self.local_secs(ts).rem_euclid(86_400);
        format!("{:02}:{:02}", s / 3600, s / 60 % 60)
    }

    /// The local day number (days since 1970-01-01): equal numbers are the same day.
    pub fn day(self, ts: Timestamp) -> i64 {
        self.local_secs(ts).div_euclid(86_400)
    }
}

/// The offset of the local time zone from UTC at `unix_secs`, as the C library knows it.
fn local_offset(unix_secs: i64) -> i64 {
    let t = unix_secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null `tm_zone` pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `localtime_r` reads `t` and writes only into `tm`, both owned by this frame; it
    // is the reentrant variant, safe to call from any thread.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    // `c_long` is `i32` on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    if r.is_null() { 0 } else { i64::from(tm.tm_gmtoff) }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

const WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `Thursday 26 November 2026`, for a day number from [`Zone::day`].
pub fn day_label(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    let weekday = WEEKDAYS[day.rem_euclid(7) as usize];
    format!("{weekday} {d} {} {y}", MONTHS[(m - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_and_days() {
        // 2026-11-26T14:05:09Z
        let ts = Timestamp(1_795_701_909_000);
        assert_eq!(Zone::Utc.hm(ts), "14:05");
        assert_eq!(day_label(Zone::Utc.day(ts)), "Thursday 26 November 2026");
        assert_eq!(day_label(0), "Thursday 1 January 1970");
        assert_eq!(
            day_label(Zone::Utc.day(Timestamp(951_782_400_000))),
            "Tuesday 29 February 2000"
        );
        assert_ne!(Zone::Utc.day(ts), Zone::Utc.day(Timestamp(ts.0 + 10 * 3_600_000)));
    }

    #[test]
    fn local_time_is_whole_minutes_away_from_utc() {
        let ts = Timestamp(1_795_701_909_000);
        let off = Zone::Local.offset_secs(1_795_701_909);
        assert!(off.abs() <= 14 * 3600 && off % 60 == 0, "{off}");
        assert_eq!(Zone::Local.hm(ts).len(), 5);
    }
}
