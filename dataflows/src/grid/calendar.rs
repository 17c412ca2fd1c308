//! The city's calendar: local days in the city time zone (`time.city_tz`, CONTRACT §1) and the
//! working days of the grid time limits (weekends, public holidays, and the make-up working
//! days of 调休).
//!
//! Everything here is a pure function of epoch milliseconds and the configuration; days are
//! the city's local days, whose midnights are found through the time-zone database (so a zone
//! with daylight saving gets 23- and 25-hour days right).

use crate::config::ConfigError;
use crate::grid::config::{CalendarConfig, Limit};
use crate::time::Ms;
use chrono::{Datelike, NaiveDate, TimeZone, Weekday};
use chrono_tz::Tz;
use std::collections::BTreeSet;

/// Parses a weekday name (`mon` … `sun`, any case, or the full English name).
pub fn weekday(s: &str) -> Option<Weekday> {
    s.trim().parse::<Weekday>().ok()
}

/// Parses a time-zone name (IANA, e.g. `Asia/Shanghai`), naming the config key when it fails.
pub fn parse_tz(name: &str) -> Result<Tz, ConfigError> {
    name.parse::<Tz>().map_err(|_| ConfigError {
        key: "time.city_tz".into(),
        reason: format!("{name:?} is not an IANA time zone (e.g. Asia/Shanghai)"),
    })
}

/// The city's days and working days.
#[derive(Clone, Debug)]
pub struct Calendar {
    tz: Tz,
    weekend: BTreeSet<u32>,
    holidays: BTreeSet<NaiveDate>,
    workdays: BTreeSet<NaiveDate>,
}

/// The most days a working-day limit may look ahead (a calendar with no working day at all
/// would otherwise never end).
const MAX_DAYS: u32 = 3660;

impl Calendar {
    /// The calendar of time zone `tz` (IANA name) with `cfg`'s working days.
    pub fn new(tz: &str, cfg: &CalendarConfig) -> Result<Calendar, ConfigError> {
        let date = |s: &String| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        Ok(Calendar {
            tz: parse_tz(tz)?,
            weekend: cfg
                .weekend
                .iter()
                .filter_map(|d| weekday(d))
                .map(|w| w.num_days_from_monday())
                .collect(),
            holidays: cfg.holidays.iter().filter_map(date).collect(),
            workdays: cfg.workdays.iter().filter_map(date).collect(),
        })
    }

    /// The default calendar: Asia/Shanghai, Saturdays and Sundays off, no holidays.
    pub fn shanghai() -> Calendar {
        Calendar {
            tz: chrono_tz::Asia::Shanghai,
            weekend: [5, 6].into_iter().collect(),
            holidays: BTreeSet::new(),
            workdays: BTreeSet::new(),
        }
    }

    /// The local date of an instant.
    pub fn date(&self, t: Ms) -> NaiveDate {
        self.tz.timestamp_millis_opt(t as i64).single().map_or(NaiveDate::MIN, |d| d.date_naive())
    }

    /// The instant a local date begins (its first existing local time when midnight is skipped).
    pub fn midnight(&self, d: NaiveDate) -> Ms {
        (0..24)
            .find_map(|h| d.and_hms_opt(h, 0, 0).and_then(|l| self.tz.from_local_datetime(&l).earliest()))
            .map_or(0, |t| t.timestamp_millis().max(0) as Ms)
    }

    /// The start of the local day after the one holding `t`: when "today" ends.
    pub fn next_midnight(&self, t: Ms) -> Ms {
        self.date(t).succ_opt().map_or(Ms::MAX, |d| self.midnight(d))
    }

    /// Whether a local date is a working day: a make-up working day always is; otherwise a
    /// holiday or a weekend day is not.
    pub fn is_working(&self, d: NaiveDate) -> bool {
        if self.workdays.contains(&d) {
            return true;
        }
        !(self.holidays.contains(&d) || self.weekend.contains(&d.weekday().num_days_from_monday()))
    }

    /// The instant `share` (0..=1) of `limit` has run from `start`: for hours, calendar time; for
    /// working days, time on working days only.
    pub fn after(&self, start: Ms, limit: Limit, share: f64) -> Ms {
        let need = (limit.running_ms() as f64 * share).round() as Ms;
        match limit {
            Limit::Hours(_) => start.saturating_add(need),
            Limit::WorkingDays(_) => {
                let (mut t, mut need) = (start, need);
                let mut day = self.date(t);
                for _ in 0..MAX_DAYS {
                    let Some(next) = day.succ_opt() else { break };
                    let end = self.midnight(next);
                    if self.is_working(day) {
                        let available = end.saturating_sub(t);
                        if need <= available {
                            return t + need;
                        }
                        need -= available;
                    }
                    t = end;
                    day = next;
                }
                Ms::MAX
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Ms {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as Ms
    }

    fn cal(holidays: &[&str], workdays: &[&str]) -> Calendar {
        let cfg = CalendarConfig {
            holidays: holidays.iter().map(|s| s.to_string()).collect(),
            workdays: workdays.iter().map(|s| s.to_string()).collect(),
            ..CalendarConfig::default()
        };
        Calendar::new("Asia/Shanghai", &cfg).unwrap()
    }

    #[test]
    fn hours_run_on_the_calendar() {
        let c = cal(&[], &[]);
        // Saturday 23:00 + 2 h is Sunday 01:00: urgent limits ignore weekends.
        assert_eq!(
            c.after(at("2026-10-10T23:00:00+08:00"), Limit::Hours(2), 1.0),
            at("2026-10-11T01:00:00+08:00")
        );
    }

    #[test]
    fn working_days_skip_weekends_holidays_and_count_make_up_days() {
        let c = cal(&["2026-10-01", "2026-10-02", "2026-10-05"], &["2026-10-10"]);
        // Friday 10:00 + 1wd = Monday 10:00.
        assert_eq!(
            c.after(at("2026-09-25T10:00:00+08:00"), Limit::WorkingDays(1), 1.0),
            at("2026-09-28T10:00:00+08:00")
        );
        // Saturday 10:00 + 1wd = the end of Monday.
        assert_eq!(
            c.after(at("2026-09-26T10:00:00+08:00"), Limit::WorkingDays(1), 1.0),
            at("2026-09-29T00:00:00+08:00")
        );
        // Wednesday 30 Sept 15:00 + 2wd: 1–2 Oct holidays, 3–4 weekend, 5 Oct holiday,
        // so Tuesday 6 Oct counts, then Wednesday 7 Oct 15:00.
        assert_eq!(
            c.after(at("2026-09-30T15:00:00+08:00"), Limit::WorkingDays(2), 1.0),
            at("2026-10-07T15:00:00+08:00")
        );
        // Friday 9 Oct 12:00 + 1wd: Saturday 10 Oct is a make-up working day.
        assert_eq!(
            c.after(at("2026-10-09T12:00:00+08:00"), Limit::WorkingDays(1), 1.0),
            at("2026-10-10T12:00:00+08:00")
        );
        // Amber at 80 % of 1wd from Monday 00:00 is Monday 19:12.
        assert_eq!(
            c.after(at("2026-09-28T00:00:00+08:00"), Limit::WorkingDays(1), 0.8),
            at("2026-09-28T19:12:00+08:00")
        );
    }

    #[test]
    fn today_ends_at_the_local_midnight() {
        let c = cal(&[], &[]);
        assert_eq!(c.next_midnight(at("2026-03-02T23:59:59+08:00")), at("2026-03-03T00:00:00+08:00"));
        assert_eq!(c.next_midnight(at("2026-03-02T16:00:00Z")), at("2026-03-04T00:00:00+08:00"));
        let ny = Calendar::new("America/New_York", &CalendarConfig::default()).unwrap();
        // The day daylight saving starts has 23 hours.
        let d = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        assert_eq!(ny.midnight(d.succ_opt().unwrap()) - ny.midnight(d), 23 * 3_600_000);
        assert!(Calendar::new("Mars/Olympus", &CalendarConfig::default()).is_err());
    }
}
