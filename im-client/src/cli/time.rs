//! Timestamps for output: RFC 3339 UTC with milliseconds for JSON
//! (`2026-11-26T10:00:01.000Z`), and `2026-11-26 10:00:01` (UTC) for people.

use im_proto::msg::Timestamp;

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Parts {
    date: (i64, u32, u32),
    h: u64,
    m: u64,
    s: u64,
    ms: u64,
}

fn parts(ts: Timestamp) -> Parts {
    let ms = ts.0 % 1000;
    let secs = ts.0 / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    Parts {
        date: civil_from_days(days),
        h: rem / 3600,
        m: rem / 60 % 60,
        s: rem % 60,
        ms,
    }
}

/// `2026-11-26T10:00:01.000Z`.
pub fn rfc3339(ts: Timestamp) -> String {
    let p = parts(ts);
    let (y, mo, d) = p.date;
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", p.h, p.m, p.s, p.ms)
}

/// `2026-11-26 10:00:01`, in UTC.
pub fn human(ts: Timestamp) -> String {
    let p = parts(ts);
    let (y, mo, d) = p.date;
    format!("{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}", p.h, p.m, p.s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(Timestamp(1_700_000_000_000)), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(Timestamp(1_767_225_600_000)), "2026-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(Timestamp(951_782_400_007)), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339(Timestamp(1_795_687_201_999)), "2026-11-26T10:00:01.999Z");
        assert_eq!(rfc3339(Timestamp(253_402_300_799_000)), "9999-12-31T23:59:59.000Z");
        assert_eq!(human(Timestamp(1_795_687_201_999)), "2026-11-26 10:00:01");
    }

    #[test]
    fn agrees_with_a_day_by_day_count() {
        // Walk 1970..2100 a day at a time and compare with a naive calendar.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        for days in 0..47_482i64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
