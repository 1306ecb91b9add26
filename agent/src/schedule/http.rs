//! The two HTTP headers that bear on scheduling: `Retry-After` and `Cache-Control: max-age`.

use std::time::Duration;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// `Sun, 06 Nov 1994 08:49:37 GMT`, the form senders must use (RFC 9110 §5.6.7).
const IMF_FIXDATE: &[BorrowedFormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);
/// The date and time of `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete but still to be accepted), once the
/// weekday is cut off and the two-digit year widened.
const RFC850_TAIL: &[BorrowedFormatItem<'static>] =
    format_description!("[day]-[month repr:short]-[year] [hour]:[minute]:[second] GMT");
/// `Sun Nov  6 08:49:37 1994`, C's asctime, obsolete but still to be accepted.
const ASCTIME: &[BorrowedFormatItem<'static>] = format_description!(
    "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
);

/// Reads a `Retry-After` value as a delay from `now`: delta-seconds (`120`) or an HTTP-date in any of the
/// three forms RFC 9110 requires recipients to accept. A date in the past is a zero delay. `None` for a
/// value that is neither: the caller then backs off as for any failure.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits that overflow u64 are a very long time; the scheduler caps it anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(value, now)?;
    let secs = (at - now).whole_seconds();
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Reads `max-age` from a `Cache-Control` value (`public, max-age=300`). `no-cache` and `no-store` mean
/// no freshness at all, whatever `max-age` says. A repeated or malformed `max-age` is ignored, as RFC 9111
/// §4.2.1 asks of a cache that meets an invalid freshness directive.
pub fn parse_max_age(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    let mut seen = 0;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "no-cache" | "no-store" => return None,
            "max-age" => {
                seen += 1;
                let value = value.trim().trim_matches('"');
                max_age = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
    }
    if seen == 1 { max_age } else { None }
}

fn parse_http_date(value: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    if let Ok(t) = PrimitiveDateTime::parse(value, IMF_FIXDATE) {
        return Some(t.assume_utc());
    }
    if let Ok(t) = PrimitiveDateTime::parse(value, ASCTIME) {
        return Some(t.assume_utc());
    }
    parse_rfc850(value, now)
}

/// RFC 850 dates have a two-digit year, which `time` cannot place in a century; RFC 9110 says a year more
/// than 50 years in the future is in the past century.
fn parse_rfc850(value: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let (weekday, rest) = value.split_once(", ")?;
    if weekday.len() < 6 || !weekday.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let (day_month, rest) = rest.split_at_checked(7)?;
    let (two_digits, time_of_day) = rest.split_at_checked(2)?;
    if !two_digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let two_digits: i32 = two_digits.parse().ok()?;
    let century = now.year() - now.year().rem_euclid(100);
    let mut year = century + two_digits;
    if year > now.year() + 50 {
        year -= 100;
    }
    let widened = format!("{day_month}{year:04}{time_of_day}");
    PrimitiveDateTime::parse(&widened, RFC850_TAIL)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-11-25 06:00:00 UTC);

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            parse_retry_after("120", NOW),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", NOW), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", NOW),
            Some(Duration::from_secs(u64::MAX))
        );
        let in_90s = Some(Duration::from_secs(90));
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 06:01:30 GMT", NOW),
            in_90s
        );
        assert_eq!(
            parse_retry_after("Wednesday, 25-Nov-26 06:01:30 GMT", NOW),
            in_90s
        );
        assert_eq!(parse_retry_after("Wed Nov 25 06:01:30 2026", NOW), in_90s);
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:37 1994", NOW),
            Some(Duration::ZERO),
            "a past date is no delay"
        );
        for bad in ["", "-5", "1.5", "soon", "Wed, 25 Nov 2026 06:01:30 PST"] {
            assert_eq!(parse_retry_after(bad, NOW), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc850_years_follow_the_fifty_year_rule() {
        // 77 would be 2077, more than 50 years after 2026, so it is 1977: in the past.
        assert_eq!(
            parse_retry_after("Thursday, 25-Nov-77 06:00:00 GMT", NOW),
            Some(Duration::ZERO)
        );
        // 27 is next year.
        assert_eq!(
            parse_retry_after("Thursday, 25-Nov-27 06:00:00 GMT", NOW),
            Some(Duration::from_secs(365 * 86_400))
        );
    }

    #[test]
    fn max_age() {
        assert_eq!(
            parse_max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_max_age("Max-Age=\"60\""),
            Some(Duration::from_secs(60))
        );
        for none in [
            "",
            "public",
            "max-age=300, no-cache",
            "no-store, max-age=300",
            "max-age=1, max-age=2",
            "max-age=-1",
            "max-age=",
        ] {
            assert_eq!(parse_max_age(none), None, "{none:?}");
        }
    }
}
