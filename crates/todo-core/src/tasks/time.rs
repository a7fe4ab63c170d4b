//! Time stamps on the wire: RFC 3339 in any offset on input, always UTC (`Z`) on output.
//!
//! Convert to UTC first, never drop the offset (dropping it without converting shifts the time).

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

/// Parses an RFC 3339 date-time that carries an offset and converts it to UTC, rounded to
/// microseconds (what PostgreSQL stores), so the value read back equals the value written.
pub fn parse_utc(text: &str) -> Result<DateTime<Utc>, &'static str> {
    let parsed = DateTime::parse_from_rfc3339(text.trim()).map_err(
        |_| "must be an RFC 3339 date-time with a UTC offset, e.g. 2026-05-01T09:00:00+02:00",
    )?;
    let utc = parsed.with_timezone(&Utc).trunc_subsecs(6);
    // PostgreSQL's timestamptz range; keeps far-future sentinels usable in sort keys.
    if !(1..=9998).contains(&chrono::Datelike::year(&utc)) {
        return Err("must be between the years 0001 and 9998");
    }
    Ok(utc)
}

/// The current time at the precision PostgreSQL stores.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A time stamp as the API and events write it: UTC, `Z`, sub-seconds only when set.
pub fn format(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_converted_not_dropped() {
        let utc = parse_utc("2026-03-29T09:00:00+02:00").expect("valid");
        assert_eq!(format(&utc), "2026-03-29T07:00:00Z");
    }

    #[test]
    fn date_times_without_offset_are_rejected() {
        for text in [
            "2026-03-29T09:00:00",
            "2026-03-29",
            "tomorrow",
            "",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(parse_utc(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn sub_microsecond_digits_are_truncated() {
        let utc = parse_utc("2026-01-01T00:00:00.123456789Z").expect("valid");
        assert_eq!(format(&utc), "2026-01-01T00:00:00.123456Z");
    }
}
