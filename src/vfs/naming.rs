//! Names of the dated snapshot directories, in the mount's local time zone (`TZ` respected).
//!
//! The first snapshot of a day (in time order) is `YYYY-MM-DD`; later ones that day are `YYYY-MM-DD_HHMMSS`,
//! and `-<ordinal>` is appended should two fall in the same second. A mount never renames a snapshot it has
//! shown: names already given are kept, even if a backfilled snapshot lands earlier on the same day.

use crate::format::tree::Timestamp;
use std::collections::{HashMap, HashSet};

/// Broken-down time: (year, month, day, hour, minute, second).
pub type Civil = (i64, u32, u32, u32, u32, u32);

extern "C" {
    fn tzset();
}

pub fn local(t: Timestamp) -> Civil {
    let secs = t.sec as libc::time_t;
    // SAFETY: tm is plain data; localtime_r writes it and reads the TZ database initialised by tzset.
    unsafe {
        tzset();
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return utc(t);
        }
        (
            tm.tm_year as i64 + 1900,
            tm.tm_mon as u32 + 1,
            tm.tm_mday as u32,
            tm.tm_hour as u32,
            tm.tm_min as u32,
            tm.tm_sec as u32,
        )
    }
}

pub fn utc(t: Timestamp) -> Civil {
    let days = t.sec.div_euclid(86_400);
    let rem = t.sec.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

pub fn rfc3339_utc(t: Timestamp) -> String {
    let (y, mo, d, h, mi, s) = utc(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:09}Z", t.nsec)
}

/// Gives a name to every snapshot in `snaps` (ordinal, time), sorted by time, keeping the names in `given`.
pub fn assign(snaps: &[(u64, Timestamp)], given: &mut HashMap<u64, String>) {
    let mut taken: HashSet<String> = snaps
        .iter()
        .filter_map(|(o, _)| given.get(o).cloned())
        .collect();
    for &(ordinal, time) in snaps {
        if given.contains_key(&ordinal) {
            continue;
        }
        let (y, mo, d, h, mi, s) = local(time);
        let day = format!("{y:04}-{mo:02}-{d:02}");
        let candidates = [
            day.clone(),
            format!("{day}_{h:02}{mi:02}{s:02}"),
            format!("{day}_{h:02}{mi:02}{s:02}-{ordinal}"),
        ];
        let name = candidates
            .into_iter()
            .find(|n| !taken.contains(n))
            .unwrap_or_else(|| format!("snapshot-{ordinal}"));
        taken.insert(name.clone());
        given.insert(ordinal, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_civil() {
        assert_eq!(utc(Timestamp { sec: 0, nsec: 0 }), (1970, 1, 1, 0, 0, 0));
        assert_eq!(
            utc(Timestamp {
                sec: 1_795_219_200,
                nsec: 0
            }),
            (2026, 11, 21, 0, 0, 0)
        );
        assert_eq!(
            utc(Timestamp { sec: -1, nsec: 0 }),
            (1969, 12, 31, 23, 59, 59)
        );
    }

    #[test]
    fn later_snapshots_of_a_day_get_the_time() {
        std::env::set_var("TZ", "UTC");
        let t = |sec| Timestamp { sec, nsec: 0 };
        let day = 1_795_219_200;
        let mut names = HashMap::new();
        assign(
            &[
                (1, t(day + 3600)),
                (2, t(day + 7200)),
                (3, t(day + 7200)),
                (4, t(day + 86_400)),
            ],
            &mut names,
        );
        assert_eq!(names[&1], "2026-11-21");
        assert_eq!(names[&2], "2026-11-21_020000");
        assert_eq!(names[&3], "2026-11-21_020000-3");
        assert_eq!(names[&4], "2026-11-22");
        // A backfill earlier the same day does not take the name already shown.
        assign(&[(5, t(day)), (1, t(day + 3600))], &mut names);
        assert_eq!(names[&1], "2026-11-21");
        assert_eq!(names[&5], "2026-11-21_000000");
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nsec = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let padded = format!("{:0<9}", &digits[..digits.len().min(9)]);
        nsec = padded.parse().ok()?;
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let mins = tz[1..3].parse::<i64>().ok()? * 60 + tz[4..6].parse::<i64>().ok()?;
            if tz.starts_with('-') {
                -mins * 60
            } else {
                mins * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86_400 + (h * 3600 + mi * 60 + sec) as i64 - offset;
    Some(Timestamp { sec: secs, nsec })
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339("2026-11-21T00:00:00Z").unwrap();
        assert_eq!(
            t,
            Timestamp {
                sec: 1_795_219_200,
                nsec: 0
            }
        );
        let t = parse_rfc3339("2026-11-21T01:30:00.25+01:30").unwrap();
        assert_eq!(
            t,
            Timestamp {
                sec: 1_795_219_200,
                nsec: 250_000_000
            }
        );
        assert_eq!(rfc3339_utc(t), "2026-11-21T00:00:00.250000000Z");
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_none());
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
