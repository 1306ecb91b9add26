//! Weekly change windows: when a site may apply a release.
//!
//! A window is written `DAYS HH:MM-HH:MM [±HH:MM]`: `"Sat 01:00-05:00"`, `"Mon-Fri 22:00-02:00"` (an end at
//! or before the start crosses midnight, so that one is Monday 22:00 to Tuesday 02:00 through Friday 22:00
//! to Saturday 02:00), `"daily 02:00-04:00"`, `"Mon,Wed,Fri 03:00-04:00 +02:00"`. The days are the days a
//! window *opens*. The offset is fixed; without one the window is in UTC.
//!
//! Why no time zone names: the agent is a static binary that runs in empty containers, where there is no
//! tz database, and an embedded one goes stale with every government's change of rules. Maintenance
//! windows in telco operations are usually agreed in UTC or a fixed local offset; a site that follows
//! daylight saving time moves its offset twice a year, or writes its windows in UTC.

use std::fmt;
use std::str::FromStr;

use time::{Duration, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

use super::ScheduleError;

const MINUTES_PER_DAY: u16 = 24 * 60;
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
/// Offsets beyond ±18:00 exist nowhere (ISO 8601 and java.time use the same bound).
const MAX_OFFSET_MINUTES: i16 = 18 * 60;

/// The days of the week on which a window opens. Never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DaySet(u8);

/// One weekly window, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChangeWindow {
    days: DaySet,
    /// Minute of the day the window opens, `0..1440`, in `offset`.
    start: u16,
    /// Minute of the day it closes, `1..=1440`; at or before `start` means the next day.
    end: u16,
    offset: UtcOffset,
}

/// A site's change windows. Empty means always open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeWindows(Vec<ChangeWindow>);

impl DaySet {
    /// Every day.
    pub const ALL: Self = Self(0x7f);

    /// The days in `bits`, Monday as bit 0 through Sunday as bit 6; `None` when no day is set.
    pub fn from_bits(bits: u8) -> Option<Self> {
        let bits = bits & 0x7f;
        (bits != 0).then_some(Self(bits))
    }

    /// The days as bits, Monday as bit 0.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether the window opens on `day`.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & bit(day) != 0
    }
}

impl ChangeWindow {
    /// A window opening on `days` at minute `start` (`0..1440`) and closing at minute `end` (`0..=1440`,
    /// where 1440 is midnight at the end of the day), both in `offset`. An end at or before the start is on
    /// the next day; an end equal to the start is refused as ambiguous (write `00:00-24:00` for a whole day).
    pub fn new(
        days: DaySet,
        start: u16,
        end: u16,
        offset: UtcOffset,
    ) -> Result<Self, ScheduleError> {
        let bad = |reason: &str| ScheduleError::Window {
            window: format!("{start}..{end} minutes"),
            reason: reason.to_owned(),
        };
        if start >= MINUTES_PER_DAY || end > MINUTES_PER_DAY {
            return Err(bad("times must be within 00:00-24:00"));
        }
        if start == end {
            return Err(bad("a window must not end when it starts"));
        }
        if offset.seconds_past_minute() != 0 || offset.whole_minutes().abs() > MAX_OFFSET_MINUTES {
            return Err(bad("the offset must be whole minutes within ±18:00"));
        }
        // Midnight as an end is the same instant whichever way it is written; keep one spelling.
        let end = if end == 0 { MINUTES_PER_DAY } else { end };
        Ok(Self {
            days,
            start,
            end,
            offset,
        })
    }

    /// How long the window stays open.
    pub fn length(&self) -> Duration {
        let minutes = if self.end > self.start {
            self.end - self.start
        } else {
            self.end + MINUTES_PER_DAY - self.start
        };
        Duration::minutes(i64::from(minutes))
    }

    /// Whether `now` is inside an occurrence of this window.
    pub fn contains(&self, now: OffsetDateTime) -> bool {
        let local = now.to_offset(self.offset);
        let (h, m, s) = local.time().as_hms();
        let second_of_day = i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s);
        let start = i64::from(self.start) * 60;
        let end = start + self.length().whole_seconds();
        let today = local.weekday();
        // An occurrence that opened today, or one that opened yesterday and runs past midnight.
        (self.days.contains(today) && (start..end).contains(&second_of_day))
            || (self.days.contains(today.previous())
                && (start..end).contains(&(second_of_day + 86_400)))
    }

    /// The first time this window opens at or after `now`. `None` only at the very end of `time`'s range.
    pub fn next_start(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let opens = Time::from_hms(
            u8::try_from(self.start / 60).ok()?,
            u8::try_from(self.start % 60).ok()?,
            0,
        )
        .ok()?;
        let mut date = now.to_offset(self.offset).date();
        // Every day of the week comes up within eight days of today, even after today's opening passed.
        for _ in 0..8 {
            if self.days.contains(date.weekday()) {
                let at = PrimitiveDateTime::new(date, opens).assume_offset(self.offset);
                if at >= now {
                    return Some(at);
                }
            }
            date = date.next_day()?;
        }
        None
    }
}

impl ChangeWindows {
    /// The windows; empty is always open.
    pub fn new(windows: Vec<ChangeWindow>) -> Self {
        Self(windows)
    }

    /// The windows, in the order given.
    pub fn as_slice(&self) -> &[ChangeWindow] {
        &self.0
    }

    /// Whether no window is configured, so applies may happen at any time.
    pub fn is_always_open(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an apply may start at `now`.
    pub fn contains(&self, now: OffsetDateTime) -> bool {
        self.0.is_empty() || self.0.iter().any(|w| w.contains(now))
    }

    /// `now` when a window is open, otherwise the next time one opens.
    pub fn next_open(&self, now: OffsetDateTime) -> OffsetDateTime {
        if self.contains(now) {
            return now;
        }
        self.0
            .iter()
            .filter_map(|w| w.next_start(now))
            .min()
            // Only reachable at the end of time's range, where waiting is moot.
            .unwrap_or(now)
    }
}

impl FromStr for ChangeWindow {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let bad = |reason: &str| ScheduleError::Window {
            window: s.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = s.split_whitespace();
        let (Some(days), Some(times)) = (parts.next(), parts.next()) else {
            return Err(bad("expected DAYS HH:MM-HH:MM [±HH:MM]"));
        };
        let offset = parts.next().map(parse_offset).transpose();
        let offset = offset.map_err(bad)?;
        if parts.next().is_some() {
            return Err(bad("expected DAYS HH:MM-HH:MM [±HH:MM]"));
        }
        let days = parse_days(days).map_err(|reason| bad(&reason))?;
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| bad("times are HH:MM-HH:MM"))?;
        let start = parse_minute(start, false).map_err(bad)?;
        let end = parse_minute(end, true).map_err(bad)?;
        Self::new(days, start, end, offset.unwrap_or(UtcOffset::UTC)).map_err(|e| match e {
            ScheduleError::Window { reason, .. } => bad(&reason),
            other => other,
        })
    }
}

impl fmt::Display for DaySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ALL {
            return f.write_str("daily");
        }
        let has = |i: usize| self.0 & (1 << (i % 7)) != 0;
        let mut first = true;
        for (i, name) in DAY_NAMES.iter().enumerate() {
            // A run starts at a day whose previous day (cyclically) is not in the set.
            if !has(i) || has(i + 6) {
                continue;
            }
            let mut last = i;
            while has(last + 1) {
                last += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(name)?;
            if last != i {
                write!(f, "-{}", DAY_NAMES[last % 7])?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for ChangeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}-{:02}:{:02}",
            self.days,
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )?;
        if self.offset != UtcOffset::UTC {
            let minutes = self.offset.whole_minutes();
            let sign = if minutes < 0 { '-' } else { '+' };
            let minutes = minutes.unsigned_abs();
            write!(f, " {sign}{:02}:{:02}", minutes / 60, minutes % 60)?;
        }
        Ok(())
    }
}

fn bit(day: Weekday) -> u8 {
    1 << day.number_days_from_monday()
}

fn parse_days(s: &str) -> Result<DaySet, String> {
    if s.eq_ignore_ascii_case("daily") {
        return Ok(DaySet::ALL);
    }
    let mut bits = 0u8;
    for item in s.split(',') {
        let (from, to) = item.split_once('-').unwrap_or((item, item));
        let (from, to) = (day_index(from)?, day_index(to)?);
        let mut i = from;
        loop {
            bits |= 1 << i;
            if i == to {
                break;
            }
            i = (i + 1) % 7;
        }
    }
    DaySet::from_bits(bits).ok_or_else(|| "no day given".to_owned())
}

fn day_index(name: &str) -> Result<usize, String> {
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("{name:?} is not a day (Mon..Sun, or daily)"))
}

/// `HH:MM` as a minute of the day; `24:00` only as an end.
fn parse_minute(s: &str, is_end: bool) -> Result<u16, &'static str> {
    let (h, m) = s.split_once(':').ok_or("times are HH:MM")?;
    let two = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !two(h) || !two(m) {
        return Err("times are HH:MM");
    }
    let (h, m): (u16, u16) = (
        h.parse().map_err(|_| "times are HH:MM")?,
        m.parse().map_err(|_| "times are HH:MM")?,
    );
    match (h, m) {
        (24, 0) if is_end => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err("times are 00:00 to 23:59 (24:00 as an end)"),
    }
}

fn parse_offset(s: &str) -> Result<UtcOffset, &'static str> {
    const FORM: &str = "the offset is +HH:MM or -HH:MM";
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1i16, &s[1..]),
        Some(b'-') => (-1i16, &s[1..]),
        _ => return Err(FORM),
    };
    let minutes = parse_minute(rest, false).map_err(|_| FORM)?;
    let minutes = i16::try_from(minutes).map_err(|_| FORM)?;
    if minutes > MAX_OFFSET_MINUTES {
        return Err("the offset must be within ±18:00");
    }
    let total = i32::from(sign * minutes) * 60;
    UtcOffset::from_whole_seconds(total).map_err(|_| FORM)
}

#[cfg(test)]
#[path = "windows_tests.rs"]
mod tests;
