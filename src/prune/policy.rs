//! Which snapshots a retention policy keeps, with restic's `forget` semantics, per account:
//!
//! - `--keep-last N`: the N newest snapshots.
//! - `--keep-daily N`: for each of the last N days that have snapshots, the newest snapshot of that day.
//!   `--keep-weekly` and `--keep-monthly` do the same with ISO weeks and calendar months. Days, weeks and
//!   months are in local time (`TZ`), like the mount's directory names.
//! - `--keep-within DURATION` (e.g. `30d`, `2w`, `1y6m`, `36h`): every snapshot less than DURATION older than
//!   the account's newest snapshot.
//!
//! A snapshot kept by any rule is kept. `--keep-daily 30` run nightly after the backup keeps a rolling 30 days.

use crate::format::tree::Timestamp;
use crate::vfs::naming;
use std::collections::HashSet;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    /// Seconds.
    pub within: Option<i64>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// Parses `1y2m3w4d5h`: years of 365 days, months of 30 days.
pub fn parse_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            'y' => 365 * 86_400,
            'm' => 30 * 86_400,
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (digits.is_empty() && total > 0).then_some(total)
}

/// ISO 8601 week of a civil date: (ISO year, week).
fn iso_week(y: i64, m: u32, d: u32) -> (i64, u32) {
    let days = naming::days_from_civil(y, m, d);
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday
    let thursday = days - weekday + 3;
    let (ty, _, _) = civil_from_days(thursday);
    let jan1 = naming::days_from_civil(ty, 1, 1);
    (ty, ((thursday - jan1) / 7 + 1) as u32)
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let (y, m, d, ..) = naming::utc(Timestamp {
        sec: days * 86_400,
        nsec: 0,
    });
    (y, m, d)
}

/// Indices into `times` (sorted oldest first) of the snapshots the policy keeps.
pub fn keep(times: &[Timestamp], policy: &Policy) -> HashSet<usize> {
    let mut kept = HashSet::new();
    let newest_first: Vec<usize> = (0..times.len()).rev().collect();
    if let Some(n) = policy.last {
        kept.extend(newest_first.iter().take(n));
    }
    let local: Vec<naming::Civil> = times.iter().map(|t| naming::local(*t)).collect();
    let buckets: [(Option<usize>, &dyn Fn(&naming::Civil) -> (i64, u32, u32)); 3] = [
        (policy.daily, &|c| (c.0, c.1, c.2)),
        (policy.weekly, &|c| {
            let (y, w) = iso_week(c.0, c.1, c.2);
            (y, w, 0)
        }),
        (policy.monthly, &|c| (c.0, c.1, 0)),
    ];
    for (count, bucket) in buckets {
        let Some(n) = count else { continue };
        let mut seen = Vec::new();
        for &i in &newest_first {
            let b = bucket(&local[i]);
            if !seen.contains(&b) {
                if seen.len() == n {
                    break;
                }
                seen.push(b);
                kept.insert(i);
            }
        }
    }
    if let (Some(within), Some(&newest)) = (policy.within, newest_first.first()) {
        let limit = times[newest].sec - within;
        kept.extend(newest_first.iter().filter(|&&i| times[i].sec > limit));
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: i64, hour: i64) -> Timestamp {
        // 2026-11-01T00:00:00Z plus d days and the hour.
        Timestamp {
            sec: 1_793_491_200 + d * 86_400 + hour * 3600,
            nsec: 0,
        }
    }

    #[test]
    fn keep_daily_keeps_newest_per_day_for_n_days() {
        std::env::set_var("TZ", "UTC");
        let times = vec![day(0, 3), day(1, 3), day(1, 15), day(2, 3), day(3, 3)];
        let kept = keep(
            &times,
            &Policy {
                daily: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(kept, HashSet::from([3, 4]));
        let kept = keep(
            &times,
            &Policy {
                daily: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(
            kept,
            HashSet::from([2, 3, 4]),
            "the newest of a day with two snapshots"
        );
        let kept = keep(
            &times,
            &Policy {
                daily: Some(30),
                ..Default::default()
            },
        );
        assert_eq!(kept, HashSet::from([0, 2, 3, 4]));
    }

    #[test]
    fn other_rules_combine() {
        std::env::set_var("TZ", "UTC");
        let times: Vec<Timestamp> = (0..60).map(|d| day(d, 3)).collect();
        let kept = keep(
            &times,
            &Policy {
                last: Some(3),
                monthly: Some(2),
                ..Default::default()
            },
        );
        // Last 3 (57..=59), newest of December (59) and of November (29).
        assert_eq!(kept, HashSet::from([57, 58, 59, 29]));
        let kept = keep(
            &times,
            &Policy {
                within: parse_duration("1w"),
                ..Default::default()
            },
        );
        assert_eq!(kept.len(), 7);
        let kept = keep(
            &times,
            &Policy {
                weekly: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(kept, HashSet::from([59]));
        assert!(keep(&times, &Policy::default()).is_empty());
    }

    #[test]
    fn durations_and_iso_weeks() {
        assert_eq!(parse_duration("30d"), Some(30 * 86_400));
        assert_eq!(parse_duration("1y2m"), Some(425 * 86_400));
        assert_eq!(parse_duration("12"), None);
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(iso_week(2026, 1, 1), (2026, 1));
        assert_eq!(iso_week(2027, 1, 1), (2026, 53));
        assert_eq!(iso_week(2026, 11, 21), (2026, 47));
    }
}
