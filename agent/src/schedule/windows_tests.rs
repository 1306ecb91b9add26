use proptest::prelude::*;
use time::macros::{datetime, offset};

use super::*;

/// A Monday.
const MON: OffsetDateTime = datetime!(2026-11-23 00:00:00 UTC);

fn w(s: &str) -> ChangeWindow {
    s.parse().unwrap()
}

fn at(day: i64, hh: i64, mm: i64) -> OffsetDateTime {
    MON + Duration::days(day) + Duration::hours(hh) + Duration::minutes(mm)
}

#[test]
fn parses_the_documented_forms() {
    let sat = w("Sat 01:00-05:00");
    assert_eq!(sat.days.bits(), 1 << 5);
    assert_eq!((sat.start, sat.end), (60, 300));
    assert_eq!(sat.length(), Duration::hours(4));
    let nights = w("Mon-Fri 22:00-02:00");
    assert_eq!(nights.days.bits(), 0b1_1111);
    assert_eq!(nights.length(), Duration::hours(4));
    assert_eq!(w("daily 02:00-04:00").days, DaySet::ALL);
    assert_eq!(w("Fri-Mon 00:00-24:00").days.bits(), 0b111_0001);
    assert_eq!(w("mon,WED,Fri 03:00-04:00").days.bits(), 0b1_0101);
    assert_eq!(w("Sat 01:00-05:00 +02:00").offset, offset!(+2));
    assert_eq!(w("Sat 01:00-05:00 -05:30").offset, offset!(-5:30));
    assert_eq!(w("daily 22:00-00:00"), w("daily 22:00-24:00"));
}

#[test]
fn refuses_what_does_not_parse() {
    for bad in [
        "",
        "Sat",
        "Sat 01:00",
        "Sat 01:00-01:00",
        "Sat 1:00-05:00",
        "Sat 01:00-05:60",
        "Sat 24:00-05:00",
        "Sat 01:00-24:01",
        "Sad 01:00-05:00",
        "Mon-Fry 01:00-05:00",
        "Sat 01:00-05:00 02:00",
        "Sat 01:00-05:00 +19:00",
        "Sat 01:00-05:00 +02:00 extra",
        ",Sat 01:00-05:00",
        "Sat 01:00-05:00 CET",
    ] {
        let err = bad.parse::<ChangeWindow>().unwrap_err();
        assert!(
            matches!(&err, ScheduleError::Window { window, .. } if window == bad),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn crossing_midnight_belongs_to_the_day_it_opened() {
    let nights = w("Mon-Fri 22:00-02:00");
    assert!(!nights.contains(at(0, 1, 0)), "Monday 01:00 follows Sunday");
    assert!(nights.contains(at(0, 22, 0)));
    assert!(
        nights.contains(at(1, 1, 59)),
        "Tuesday 01:59 is Monday's night"
    );
    assert!(!nights.contains(at(1, 2, 0)), "the end is exclusive");
    assert!(
        nights.contains(at(5, 1, 0)),
        "Saturday 01:00 is Friday's night"
    );
    assert!(!nights.contains(at(5, 22, 0)));
}

#[test]
fn offsets_move_the_window() {
    // 01:00-05:00 at +02:00 is 23:00-03:00 UTC, from Friday 23:00 UTC.
    let sat = w("Sat 01:00-05:00 +02:00");
    assert!(sat.contains(at(4, 23, 0)));
    assert!(sat.contains(at(5, 2, 59)));
    assert!(!sat.contains(at(5, 3, 0)));
    assert_eq!(sat.next_start(at(0, 0, 0)), Some(at(4, 23, 0)));
}

#[test]
fn next_open_is_now_inside_and_the_next_start_outside() {
    let windows = ChangeWindows::new(vec![w("Sat 01:00-05:00"), w("Wed 12:00-13:00")]);
    assert_eq!(windows.next_open(at(2, 12, 30)), at(2, 12, 30));
    assert_eq!(windows.next_open(at(2, 13, 0)), at(5, 1, 0));
    assert_eq!(windows.next_open(at(5, 5, 0)), at(9, 12, 0));
    let always = ChangeWindows::default();
    assert!(always.is_always_open() && always.contains(at(3, 3, 3)));
    assert_eq!(always.next_open(at(3, 3, 3)), at(3, 3, 3));
}

#[test]
fn displays_canonically() {
    for (input, shown) in [
        ("daily 02:00-04:00", "daily 02:00-04:00"),
        ("Mon,Tue,Wed,Thu,Fri 22:00-02:00", "Mon-Fri 22:00-02:00"),
        ("Sun,Sat,Mon 00:00-24:00", "Sat-Mon 00:00-24:00"),
        ("Mon,Wed 01:00-02:00 +00:00", "Mon,Wed 01:00-02:00"),
        ("Tue 01:00-02:00 -03:30", "Tue 01:00-02:00 -03:30"),
    ] {
        assert_eq!(w(input).to_string(), shown);
    }
}

fn window() -> impl Strategy<Value = ChangeWindow> {
    (1u8..128, 0u16..1440, 0u16..=1440, -1080i32..=1080).prop_filter_map(
        "start == end",
        |(days, start, end, offset_min)| {
            let offset = UtcOffset::from_whole_seconds(offset_min * 60).ok()?;
            ChangeWindow::new(DaySet::from_bits(days)?, start, end, offset).ok()
        },
    )
}

proptest! {
    #[test]
    fn display_round_trips(win in window()) {
        let shown = win.to_string();
        prop_assert_eq!(shown.parse::<ChangeWindow>().unwrap(), win);
    }

    /// `next_open` is inside a window, and no whole minute between `now` and it is: every window opens on
    /// a whole minute, so stepping minute by minute cannot miss an earlier opening.
    #[test]
    fn next_open_is_the_first_open_instant(
        wins in proptest::collection::vec(window(), 1..4),
        offset_secs in 0i64..(7 * 86_400),
    ) {
        let windows = ChangeWindows::new(wins);
        let now = MON + Duration::seconds(offset_secs);
        let open = windows.next_open(now);
        prop_assert!(open >= now);
        prop_assert!(open - now <= Duration::days(7));
        prop_assert!(windows.contains(open));
        let mut t = now;
        while t < open {
            prop_assert!(!windows.contains(t), "open at {t} before {open}");
            let past_minute = Duration::seconds(i64::from(t.second()));
            t = t - past_minute + Duration::minutes(1);
        }
    }

    /// `contains` agrees with a plain minute-by-minute model of the window over a week.
    #[test]
    fn contains_matches_a_minute_model(win in window()) {
        let local_start = MON.replace_offset(win.offset) - Duration::days(2);
        let mut open = std::collections::HashSet::new();
        for day in 0..10i64 {
            let date = local_start + Duration::days(day);
            if win.days.contains(date.weekday()) {
                let from = date + Duration::minutes(i64::from(win.start));
                for m in 0..win.length().whole_minutes() {
                    open.insert(from + Duration::minutes(m));
                }
            }
        }
        for m in 0..(7 * 24 * 60) {
            let t = MON + Duration::minutes(m);
            prop_assert_eq!(win.contains(t), open.contains(&t), "at {}", t);
        }
    }
}
