//! Recurrence rules for repeating tasks: the validated rule, its wire shape, and the calendar that
//! turns a rule plus the series' first due time (the anchor) into later due times.
//!
//! All calendar arithmetic happens on the anchor's local wall-clock time in the rule's IANA time
//! zone; each result is converted back to UTC, which is what we store (an offset is never dropped
//! without converting).
//!
//! - Daily and weekly rules add whole days or weeks to the local date and keep the local
//!   wall-clock time, so 09:00 in Europe/Berlin stays 09:00 across a DST change while the UTC
//!   instant moves by an hour.
//! - Monthly rules stay on the anchor's day of month and clamp it to the month's last day
//!   (Jan 31 -> Feb 28 -> Mar 31 -> Apr 30). Every occurrence is computed from the anchor, never
//!   from the previous, possibly clamped, date. Yearly rules are twelve-month steps, so Feb 29
//!   becomes Feb 28 in common years and Feb 29 again in the next leap year.
//!
//! # Local times that do not exist, or exist twice
//!
//! We follow RFC 5545 §3.3.5 (iCalendar DATE-TIME), as java.time's `ZonedDateTime` does:
//! - A local time inside a spring-forward gap is read with the UTC offset in force before the
//!   gap, which moves it forward by the gap's length: 02:30 on the day Europe/Berlin or
//!   America/New_York springs forward becomes 03:30 (02:15 becomes 02:45 where the gap is
//!   30 minutes, as on Lord Howe Island). The next day is back at 02:30.
//! - A local time that occurs twice (fall back) takes the earlier instant.
//!
//! Occurrence 0 is always the anchor itself, even when the anchor is the later instant of an
//! ambiguous local time.
//!
//! Occurrences of a rule are strictly increasing, with one historic exception: where a zone
//! skipped a whole calendar day (Kwajalein in 1993, Kiritimati and Kanton in 1994, Apia and
//! Fakaofo in 2011), a daily occurrence on the skipped day moves forward a full day and
//! coincides with the next one.

use std::fmt;

use chrono::{
    DateTime, Datelike, Days, LocalResult, Months, NaiveDateTime, Offset, SecondsFormat, TimeZone,
    Utc,
};
use chrono_tz::{GapInfo, Tz};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::validation::FieldError;

/// The largest accepted `interval`.
pub const MAX_INTERVAL: u16 = 365;
/// The largest accepted `count`.
pub const MAX_COUNT: u32 = 1000;
/// The UTC years an `until` or an occurrence may fall in: those RFC 3339 can write, with four
/// digits.
pub const SUPPORTED_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// How often a series repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    /// Every `interval` days, at the same local wall-clock time.
    Daily,
    /// Every `interval` weeks, on the same weekday and local wall-clock time.
    Weekly,
    /// Every `interval` months, on the anchor's day of month clamped to the month's end.
    Monthly,
    /// Every `interval` years, on the anchor's date (Feb 29 clamps to Feb 28).
    Yearly,
}

impl Frequency {
    /// Every frequency, in the order used by error messages.
    pub const ALL: [Frequency; 4] = [
        Frequency::Daily,
        Frequency::Weekly,
        Frequency::Monthly,
        Frequency::Yearly,
    ];

    /// The wire name: `daily`, `weekly`, `monthly` or `yearly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Daily => "daily",
            Frequency::Weekly => "weekly",
            Frequency::Monthly => "monthly",
            Frequency::Yearly => "yearly",
        }
    }

    /// The frequency with this exact wire name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accepted frequency names, for error messages.
const FREQUENCY_NAMES: &str = "daily, weekly, monthly, yearly";

/// A validated recurrence rule. Serializes to the wire shape of [`RecurrenceInput`], with `until`
/// in UTC.
///
/// Build it with [`Recurrence::parse`] (or `TryFrom`, or by deserializing) so that the limits
/// below hold; the calendar never panics even when they do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    /// How often the series repeats.
    pub frequency: Frequency,
    /// Repeat every `interval` frequency units, `1..=365`.
    pub interval: u16,
    /// The last instant an occurrence may fall on (inclusive).
    pub until: Option<DateTime<Utc>>,
    /// How many occurrences the series has, including the first, `1..=1000`.
    pub count: Option<u32>,
    /// The zone whose wall clock the calendar follows; UTC unless the client names one.
    pub timezone: Tz,
}

/// A recurrence rule as clients send it:
///
/// ```json
/// {"frequency": "monthly", "interval": 1, "until": "2027-01-01T00:00:00+01:00",
///  "count": 12, "timezone": "Europe/Berlin"}
/// ```
///
/// Everything but `frequency` is optional: `interval` defaults to 1, `timezone` to UTC, and
/// without `until` and `count` the series never ends. With both, it ends at whichever comes first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrenceInput {
    /// `daily`, `weekly`, `monthly` or `yearly`.
    pub frequency: String,
    /// `1..=365`, default 1.
    #[serde(default, deserialize_with = "crate::validation::optional_whole_number")]
    pub interval: Option<i64>,
    /// An RFC 3339 date-time with offset; the last instant an occurrence may fall on.
    pub until: Option<String>,
    /// `1..=1000`: the number of occurrences, the first one included.
    #[serde(default, deserialize_with = "crate::validation::optional_whole_number")]
    pub count: Option<i64>,
    /// An IANA time zone name such as `Europe/Berlin`, default `UTC`.
    pub timezone: Option<String>,
}

impl Recurrence {
    /// Validates a rule as clients send it, reporting every invalid field at once.
    pub fn parse(input: RecurrenceInput) -> Result<Self, Vec<FieldError>> {
        let frequency = parse_frequency(&input.frequency);
        let interval = parse_interval(input.interval);
        let until = parse_until(input.until.as_deref());
        let count = parse_count(input.count);
        let timezone = parse_timezone(input.timezone.as_deref());
        match (frequency, interval, until, count, timezone) {
            (Ok(frequency), Ok(interval), Ok(until), Ok(count), Ok(timezone)) => Ok(Self {
                frequency,
                interval,
                until,
                count,
                timezone,
            }),
            (frequency, interval, until, count, timezone) => Err([
                frequency.err(),
                interval.err(),
                until.err(),
                count.err(),
                timezone.err(),
            ]
            .into_iter()
            .flatten()
            .collect()),
        }
    }

    /// Maps the legacy `is_recurring: true` + `recurring_interval` pair to a rule: interval 1,
    /// in UTC, never ending.
    pub fn from_legacy(recurring_interval: &str) -> Result<Self, FieldError> {
        let frequency = Frequency::from_name(recurring_interval).ok_or_else(|| {
            FieldError::new(
                "recurring_interval",
                format!("recurring_interval must be one of {FREQUENCY_NAMES}"),
            )
        })?;
        Ok(Self {
            frequency,
            interval: 1,
            until: None,
            count: None,
            timezone: Tz::UTC,
        })
    }

    /// The due time of occurrence `n` of the series that starts at `anchor` (occurrence 0 is the
    /// anchor itself), or `None` when the series has ended by then: `n` reached `count`, the
    /// occurrence falls after `until`, or it falls outside the UTC years 1 to 9999
    /// ([`SUPPORTED_YEARS`]).
    pub fn occurrence(&self, anchor: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
        if self.count.is_some_and(|count| n >= count) {
            return None;
        }
        let due = if n == 0 {
            anchor
        } else {
            self.step_from(anchor, n)?
        };
        if self.until.is_some_and(|until| due > until) || !SUPPORTED_YEARS.contains(&due.year()) {
            return None;
        }
        Some(due)
    }

    /// The occurrence after occurrence `n`, i.e. `occurrence(anchor, n + 1)`.
    pub fn next_after(&self, anchor: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
        self.occurrence(anchor, n.checked_add(1)?)
    }

    /// Every occurrence of the series, in order, ending where [`Recurrence::occurrence`] first
    /// returns `None`. Without `until` and `count` it runs until year 9999, so take what you
    /// need.
    pub fn occurrences(&self, anchor: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        (0..=u32::MAX).map_while(move |n| self.occurrence(anchor, n))
    }

    /// Occurrence `n` before the `count` and `until` limits apply.
    fn step_from(&self, anchor: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
        let local = local_wall_clock(anchor, self.timezone)?;
        // At most u32::MAX * u16::MAX, far below u64::MAX.
        let steps = u64::from(n) * u64::from(self.interval);
        let date = local.date();
        let date = match self.frequency {
            Frequency::Daily => date.checked_add_days(Days::new(steps)),
            Frequency::Weekly => date.checked_add_days(Days::new(steps.checked_mul(7)?)),
            // chrono clamps the day to the end of the target month.
            Frequency::Monthly => date.checked_add_months(Months::new(u32::try_from(steps).ok()?)),
            Frequency::Yearly => {
                date.checked_add_months(Months::new(u32::try_from(steps.checked_mul(12)?).ok()?))
            }
        }?;
        resolve_wall_clock(self.timezone, date.and_time(local.time()))
    }
}

impl TryFrom<RecurrenceInput> for Recurrence {
    type Error = Vec<FieldError>;

    fn try_from(input: RecurrenceInput) -> Result<Self, Self::Error> {
        Self::parse(input)
    }
}

impl Serialize for Recurrence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            frequency: Frequency,
            interval: u16,
            until: Option<String>,
            count: Option<u32>,
            timezone: &'a str,
        }
        Wire {
            frequency: self.frequency,
            interval: self.interval,
            until: self
                .until
                .map(|until| until.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            count: self.count,
            timezone: self.timezone.name(),
        }
        .serialize(serializer)
    }
}

/// Reads the wire shape and validates it, so a stored rule is checked again when loaded.
impl<'de> Deserialize<'de> for Recurrence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let input = RecurrenceInput::deserialize(deserializer)?;
        Self::parse(input).map_err(|errors| {
            let messages: Vec<String> = errors
                .iter()
                .map(|error| format!("{}: {}", error.field, error.message))
                .collect();
            serde::de::Error::custom(messages.join("; "))
        })
    }
}

fn parse_frequency(name: &str) -> Result<Frequency, FieldError> {
    Frequency::from_name(name).ok_or_else(|| {
        FieldError::new(
            "recurrence.frequency",
            format!("frequency must be one of {FREQUENCY_NAMES}"),
        )
    })
}

fn parse_interval(interval: Option<i64>) -> Result<u16, FieldError> {
    let Some(interval) = interval else {
        return Ok(1);
    };
    u16::try_from(interval)
        .ok()
        .filter(|interval| (1..=MAX_INTERVAL).contains(interval))
        .ok_or_else(|| {
            FieldError::new(
                "recurrence.interval",
                format!("interval must be between 1 and {MAX_INTERVAL}"),
            )
        })
}

fn parse_until(until: Option<&str>) -> Result<Option<DateTime<Utc>>, FieldError> {
    let Some(until) = until else {
        return Ok(None);
    };
    let until = DateTime::parse_from_rfc3339(until)
        .map_err(|_| {
            FieldError::new(
                "recurrence.until",
                "until must be an RFC 3339 date-time with offset",
            )
        })?
        .to_utc();
    // Keeps the stored value writable and readable as RFC 3339, which has four-digit years.
    if !SUPPORTED_YEARS.contains(&until.year()) {
        return Err(FieldError::new(
            "recurrence.until",
            "until must fall between the years 1 and 9999 in UTC",
        ));
    }
    Ok(Some(until))
}

fn parse_count(count: Option<i64>) -> Result<Option<u32>, FieldError> {
    let Some(count) = count else {
        return Ok(None);
    };
    u32::try_from(count)
        .ok()
        .filter(|count| (1..=MAX_COUNT).contains(count))
        .map(Some)
        .ok_or_else(|| {
            FieldError::new(
                "recurrence.count",
                format!("count must be between 1 and {MAX_COUNT}"),
            )
        })
}

fn parse_timezone(name: Option<&str>) -> Result<Tz, FieldError> {
    let Some(name) = name else {
        return Ok(Tz::UTC);
    };
    name.parse::<Tz>().map_err(|_| {
        FieldError::new(
            "recurrence.timezone",
            format!("timezone '{}' is not an IANA time zone name", excerpt(name)),
        )
    })
}

/// Client text quoted in a message, cut short so a huge value cannot blow up the response.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The wall-clock time `instant` shows in `tz`, or `None` outside chrono's date range.
fn local_wall_clock(instant: DateTime<Utc>, tz: Tz) -> Option<NaiveDateTime> {
    let utc = instant.naive_utc();
    utc.checked_add_offset(tz.offset_from_utc_datetime(&utc).fix())
}

/// The instant at which `tz` shows the wall-clock time `local`, resolved as RFC 5545 §3.3.5 says
/// (see the module docs): ambiguous times take the earlier instant, times in a gap are read with
/// the offset in force before the gap, which moves them forward by the gap's length.
fn resolve_wall_clock(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(instant) => Some(instant.to_utc()),
        LocalResult::Ambiguous(first, second) => Some(first.min(second).to_utc()),
        LocalResult::None => {
            // Not in a gap means out of chrono's range; `begin` is absent only before the
            // zone's first transition, where there is no gap.
            let (_, offset_before) = GapInfo::new(&local, &tz)?.begin?;
            local
                .checked_sub_offset(offset_before.fix())
                .map(|utc| utc.and_utc())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::{NaiveDate, TimeDelta};
    use proptest::prelude::*;

    fn instant(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap_or_else(|e| panic!("bad test date {rfc3339}: {e}"))
            .to_utc()
    }

    fn zone(name: &str) -> Tz {
        name.parse()
            .unwrap_or_else(|e| panic!("bad test zone {name}: {e}"))
    }

    fn rule(frequency: Frequency, interval: u16, timezone: &str) -> Recurrence {
        Recurrence {
            frequency,
            interval,
            until: None,
            count: None,
            timezone: zone(timezone),
        }
    }

    fn input(frequency: &str) -> RecurrenceInput {
        RecurrenceInput {
            frequency: frequency.to_owned(),
            ..RecurrenceInput::default()
        }
    }

    fn field_error(field: &str, message: &str) -> FieldError {
        FieldError::new(field, message)
    }

    use Frequency::{Daily, Monthly, Weekly, Yearly};

    struct Series {
        what: &'static str,
        rule: Recurrence,
        /// Occurrence 0 first; each written in the local offset it should have.
        expected: &'static [&'static str],
    }

    fn check_series(cases: &[Series]) {
        for case in cases {
            let anchor = instant(case.expected[0]);
            for (n, expected) in case.expected.iter().enumerate() {
                let n = u32::try_from(n).expect("short series");
                assert_eq!(
                    case.rule.occurrence(anchor, n),
                    Some(instant(expected)),
                    "{}: occurrence {n}",
                    case.what
                );
            }
        }
    }

    #[test]
    fn monthly_series_clamp_to_month_end_and_return_to_the_anchor_day() {
        check_series(&[
            Series {
                what: "Jan 31 over a full year lands on every month's last day",
                rule: rule(Monthly, 1, "UTC"),
                expected: &[
                    "2026-01-31T09:00:00Z",
                    "2026-02-28T09:00:00Z",
                    "2026-03-31T09:00:00Z",
                    "2026-04-30T09:00:00Z",
                    "2026-05-31T09:00:00Z",
                    "2026-06-30T09:00:00Z",
                    "2026-07-31T09:00:00Z",
                    "2026-08-31T09:00:00Z",
                    "2026-09-30T09:00:00Z",
                    "2026-10-31T09:00:00Z",
                    "2026-11-30T09:00:00Z",
                    "2026-12-31T09:00:00Z",
                    "2027-01-31T09:00:00Z",
                ],
            },
            Series {
                what: "Mar 31 goes to Apr 30 and back to May 31",
                rule: rule(Monthly, 1, "UTC"),
                expected: &[
                    "2026-03-31T12:00:00Z",
                    "2026-04-30T12:00:00Z",
                    "2026-05-31T12:00:00Z",
                ],
            },
            Series {
                what: "Jan 31 through a leap February lands on Feb 29",
                rule: rule(Monthly, 1, "UTC"),
                expected: &[
                    "2028-01-31T08:00:00Z",
                    "2028-02-29T08:00:00Z",
                    "2028-03-31T08:00:00Z",
                ],
            },
            Series {
                what: "month ends in Berlin keep 09:00 local across the March DST change",
                rule: rule(Monthly, 1, "Europe/Berlin"),
                expected: &[
                    "2026-01-31T09:00:00+01:00",
                    "2026-02-28T09:00:00+01:00",
                    "2026-03-31T09:00:00+02:00",
                    "2026-04-30T09:00:00+02:00",
                ],
            },
            Series {
                what: "the local date decides the month end, not the UTC date",
                rule: rule(Monthly, 1, "America/New_York"),
                // 2026-01-31T23:30-05:00 is already Feb 1 in UTC.
                expected: &[
                    "2026-01-31T23:30:00-05:00",
                    "2026-02-28T23:30:00-05:00",
                    "2026-03-31T23:30:00-04:00",
                ],
            },
        ]);
    }

    #[test]
    fn yearly_series_on_feb_29_fall_back_to_feb_28_in_common_years() {
        check_series(&[
            Series {
                what: "Feb 29 yearly over 8 years",
                rule: rule(Yearly, 1, "UTC"),
                expected: &[
                    "2024-02-29T10:00:00Z",
                    "2025-02-28T10:00:00Z",
                    "2026-02-28T10:00:00Z",
                    "2027-02-28T10:00:00Z",
                    "2028-02-29T10:00:00Z",
                    "2029-02-28T10:00:00Z",
                    "2030-02-28T10:00:00Z",
                    "2031-02-28T10:00:00Z",
                    "2032-02-29T10:00:00Z",
                ],
            },
            Series {
                what: "every 4 years from Feb 29 stays on Feb 29",
                rule: rule(Yearly, 4, "UTC"),
                expected: &[
                    "2024-02-29T10:00:00Z",
                    "2028-02-29T10:00:00Z",
                    "2032-02-29T10:00:00Z",
                ],
            },
            Series {
                what: "2100 is not a leap year",
                rule: rule(Yearly, 4, "UTC"),
                expected: &[
                    "2096-02-29T10:00:00Z",
                    "2100-02-28T10:00:00Z",
                    "2104-02-29T10:00:00Z",
                ],
            },
        ]);
    }

    #[test]
    fn daily_and_weekly_series_keep_the_local_time_across_dst_changes() {
        check_series(&[
            Series {
                what: "daily 09:00 Berlin across the spring change (Mar 29)",
                rule: rule(Daily, 1, "Europe/Berlin"),
                expected: &[
                    "2026-03-27T09:00:00+01:00",
                    "2026-03-28T09:00:00+01:00",
                    "2026-03-29T09:00:00+02:00",
                    "2026-03-30T09:00:00+02:00",
                ],
            },
            Series {
                what: "daily 09:00 Berlin across the fall change (Oct 25)",
                rule: rule(Daily, 1, "Europe/Berlin"),
                expected: &[
                    "2026-10-24T09:00:00+02:00",
                    "2026-10-25T09:00:00+01:00",
                    "2026-10-26T09:00:00+01:00",
                ],
            },
            Series {
                what: "daily 09:00 New York across the spring change (Mar 8)",
                rule: rule(Daily, 1, "America/New_York"),
                expected: &[
                    "2026-03-07T09:00:00-05:00",
                    "2026-03-08T09:00:00-04:00",
                    "2026-03-09T09:00:00-04:00",
                ],
            },
            Series {
                what: "daily 09:00 New York across the fall change (Nov 1)",
                rule: rule(Daily, 1, "America/New_York"),
                expected: &[
                    "2026-10-31T09:00:00-04:00",
                    "2026-11-01T09:00:00-05:00",
                    "2026-11-02T09:00:00-05:00",
                ],
            },
            Series {
                what: "weekly Sunday 09:00 Berlin across both changes of 2026",
                rule: rule(Weekly, 1, "Europe/Berlin"),
                expected: &[
                    "2026-03-22T09:00:00+01:00",
                    "2026-03-29T09:00:00+02:00",
                    "2026-04-05T09:00:00+02:00",
                ],
            },
            Series {
                what: "weekly Sunday Berlin across the fall change",
                rule: rule(Weekly, 1, "Europe/Berlin"),
                expected: &[
                    "2026-10-18T09:00:00+02:00",
                    "2026-10-25T09:00:00+01:00",
                    "2026-11-01T09:00:00+01:00",
                ],
            },
            Series {
                what: "weekly Sunday 18:00 New York across the spring change",
                rule: rule(Weekly, 1, "America/New_York"),
                expected: &[
                    "2026-03-01T18:00:00-05:00",
                    "2026-03-08T18:00:00-04:00",
                    "2026-03-15T18:00:00-04:00",
                ],
            },
            Series {
                what: "UTC has no DST: the instant never shifts",
                rule: rule(Daily, 1, "UTC"),
                expected: &[
                    "2026-03-28T09:00:00Z",
                    "2026-03-29T09:00:00Z",
                    "2026-03-30T09:00:00Z",
                ],
            },
        ]);
    }

    #[test]
    fn times_in_a_dst_gap_move_forward_and_ambiguous_times_take_the_earlier_instant() {
        check_series(&[
            Series {
                what: "02:30 Berlin daily: the gap day is 03:30, the next day 02:30 again",
                rule: rule(Daily, 1, "Europe/Berlin"),
                expected: &[
                    "2026-03-28T02:30:00+01:00",
                    "2026-03-29T03:30:00+02:00",
                    "2026-03-30T02:30:00+02:00",
                ],
            },
            Series {
                what: "02:30 New York daily across the spring gap",
                rule: rule(Daily, 1, "America/New_York"),
                expected: &[
                    "2026-03-07T02:30:00-05:00",
                    "2026-03-08T03:30:00-04:00",
                    "2026-03-09T02:30:00-04:00",
                ],
            },
            Series {
                what: "02:30 Berlin weekly lands in the gap and moves to 03:30",
                rule: rule(Weekly, 1, "Europe/Berlin"),
                expected: &[
                    "2026-03-22T02:30:00+01:00",
                    "2026-03-29T03:30:00+02:00",
                    "2026-04-05T02:30:00+02:00",
                ],
            },
            Series {
                what: "a 30-minute gap (Lord Howe Island) moves 02:15 to 02:45",
                rule: rule(Daily, 1, "Australia/Lord_Howe"),
                expected: &[
                    "2026-10-03T02:15:00+10:30",
                    "2026-10-04T02:45:00+11:00",
                    "2026-10-05T02:15:00+11:00",
                ],
            },
            Series {
                what: "02:30 Berlin on the fall-back day is the first 02:30 (still CEST)",
                rule: rule(Daily, 1, "Europe/Berlin"),
                expected: &[
                    "2026-10-24T02:30:00+02:00",
                    "2026-10-25T02:30:00+02:00",
                    "2026-10-26T02:30:00+01:00",
                ],
            },
            Series {
                what: "01:30 New York on the fall-back day is the first 01:30 (still EDT)",
                rule: rule(Daily, 1, "America/New_York"),
                expected: &[
                    "2026-10-31T01:30:00-04:00",
                    "2026-11-01T01:30:00-04:00",
                    "2026-11-02T01:30:00-05:00",
                ],
            },
            Series {
                what: "an anchor at the second 02:30 stays occurrence 0 as given",
                rule: rule(Daily, 1, "Europe/Berlin"),
                expected: &["2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00"],
            },
        ]);
    }

    #[test]
    fn intervals_multiply_the_step() {
        check_series(&[
            Series {
                what: "every 2 weeks",
                rule: rule(Weekly, 2, "UTC"),
                expected: &[
                    "2026-01-05T10:00:00Z",
                    "2026-01-19T10:00:00Z",
                    "2026-02-02T10:00:00Z",
                    "2026-02-16T10:00:00Z",
                ],
            },
            Series {
                what: "every 3 months from Nov 30 clamps only in February",
                rule: rule(Monthly, 3, "UTC"),
                expected: &[
                    "2025-11-30T10:00:00Z",
                    "2026-02-28T10:00:00Z",
                    "2026-05-30T10:00:00Z",
                    "2026-08-30T10:00:00Z",
                    "2026-11-30T10:00:00Z",
                ],
            },
            Series {
                what: "every 365 days drifts a day after a leap year",
                rule: rule(Daily, 365, "UTC"),
                expected: &[
                    "2026-01-01T10:00:00Z",
                    "2027-01-01T10:00:00Z",
                    "2028-01-01T10:00:00Z",
                    "2028-12-31T10:00:00Z",
                ],
            },
            Series {
                what: "every 3 days in Berlin across the spring change",
                rule: rule(Daily, 3, "Europe/Berlin"),
                expected: &[
                    "2026-03-26T07:45:00+01:00",
                    "2026-03-29T07:45:00+02:00",
                    "2026-04-01T07:45:00+02:00",
                ],
            },
        ]);
    }

    #[test]
    fn count_and_until_end_the_series() {
        let anchor = instant("2026-01-01T09:00:00Z");
        let with = |count: Option<u32>, until: Option<&str>| Recurrence {
            count,
            until: until.map(instant),
            ..rule(Daily, 1, "UTC")
        };
        let cases: &[(&str, Recurrence, usize)] = &[
            ("count 1 is just the anchor", with(Some(1), None), 1),
            ("count 3 gives three occurrences", with(Some(3), None), 3),
            (
                "until is inclusive: an occurrence exactly at until exists",
                with(None, Some("2026-01-03T09:00:00Z")),
                3,
            ),
            (
                "one second before the third occurrence ends at two",
                with(None, Some("2026-01-03T08:59:59Z")),
                2,
            ),
            (
                "until before the anchor leaves no occurrence",
                with(None, Some("2025-12-31T09:00:00Z")),
                0,
            ),
            (
                "count first: count 2 ends before until",
                with(Some(2), Some("2026-01-10T09:00:00Z")),
                2,
            ),
            (
                "until first: until ends before count 10",
                with(Some(10), Some("2026-01-04T09:00:00Z")),
                4,
            ),
        ];
        for (what, rule, expected) in cases {
            assert_eq!(rule.occurrences(anchor).count(), *expected, "{what}");
            let last = u32::try_from(*expected).expect("small");
            assert_eq!(rule.occurrence(anchor, last), None, "{what}: past the end");
        }
    }

    #[test]
    fn next_after_is_the_following_occurrence() {
        let anchor = instant("2026-01-31T09:00:00Z");
        let monthly = rule(Monthly, 1, "UTC");
        assert_eq!(
            monthly.next_after(anchor, 0),
            Some(instant("2026-02-28T09:00:00Z")),
            "next after the anchor"
        );
        assert_eq!(
            monthly.next_after(anchor, 1),
            Some(instant("2026-03-31T09:00:00Z")),
            "next after the clamped February comes from the anchor, not from Feb 28"
        );
        let once = Recurrence {
            count: Some(1),
            ..monthly.clone()
        };
        assert_eq!(once.next_after(anchor, 0), None, "count 1 means no next");
        assert_eq!(
            monthly.next_after(anchor, u32::MAX),
            None,
            "no occurrence after the last index"
        );
    }

    struct Extreme {
        what: &'static str,
        rule: Recurrence,
        anchor: DateTime<Utc>,
        n: u32,
        expected: Option<&'static str>,
    }

    #[test]
    fn extreme_dates_end_the_series_instead_of_panicking() {
        let anchor = instant("2026-01-01T00:00:00Z");
        let cases = [
            Extreme {
                what: "yearly into year 9999 still works",
                rule: rule(Yearly, 1, "UTC"),
                anchor: instant("9998-06-01T00:00:00Z"),
                n: 1,
                expected: Some("9999-06-01T00:00:00Z"),
            },
            Extreme {
                what: "yearly past year 9999 ends",
                rule: rule(Yearly, 1, "UTC"),
                anchor: instant("9999-06-01T00:00:00Z"),
                n: 1,
                expected: None,
            },
            Extreme {
                what: "the limit is on UTC years: 10000-01-01 in Kiritimati is still 9999 in UTC",
                rule: rule(Daily, 1, "Pacific/Kiritimati"),
                anchor: instant("9999-12-30T12:00:00Z"),
                n: 1,
                expected: Some("9999-12-31T12:00:00Z"),
            },
            Extreme {
                what: "daily past 9999-12-31 ends",
                rule: rule(Daily, 1, "UTC"),
                anchor: instant("9999-12-31T08:00:00Z"),
                n: 1,
                expected: None,
            },
            Extreme {
                what: "an anchor at the last instant chrono can hold",
                rule: rule(Daily, 1, "Europe/Berlin"),
                anchor: DateTime::<Utc>::MAX_UTC,
                n: 1,
                expected: None,
            },
            Extreme {
                what: "an anchor at the first instant chrono can hold, west of UTC",
                rule: rule(Daily, 1, "America/New_York"),
                anchor: DateTime::<Utc>::MIN_UTC,
                n: 1,
                expected: None,
            },
            Extreme {
                what: "the largest index of a yearly rule with the largest interval",
                rule: rule(Yearly, 365, "Asia/Tokyo"),
                anchor,
                n: u32::MAX,
                expected: None,
            },
            Extreme {
                what: "the largest index of a monthly rule",
                rule: rule(Monthly, 365, "UTC"),
                anchor,
                n: u32::MAX,
                expected: None,
            },
            Extreme {
                what: "the largest index of a weekly rule",
                rule: rule(Weekly, 365, "UTC"),
                anchor,
                n: u32::MAX,
                expected: None,
            },
            Extreme {
                what: "the largest index of a daily rule",
                rule: rule(Daily, 1, "UTC"),
                anchor,
                n: u32::MAX,
                expected: None,
            },
        ];
        for case in cases {
            assert_eq!(
                case.rule.occurrence(case.anchor, case.n),
                case.expected.map(instant),
                "{}",
                case.what
            );
        }
        assert_eq!(
            rule(Daily, 1, "UTC").occurrence(DateTime::<Utc>::MAX_UTC, 0),
            None,
            "an anchor after year 9999 is not an occurrence"
        );
    }

    #[test]
    fn legacy_intervals_map_to_interval_1_in_utc() {
        for (legacy, frequency) in [
            ("daily", Daily),
            ("weekly", Weekly),
            ("monthly", Monthly),
            ("yearly", Yearly),
        ] {
            assert_eq!(
                Recurrence::from_legacy(legacy),
                Ok(Recurrence {
                    frequency,
                    interval: 1,
                    until: None,
                    count: None,
                    timezone: Tz::UTC,
                }),
                "legacy {legacy}"
            );
        }
        for (what, legacy) in [
            ("unknown word", "hourly"),
            ("empty", ""),
            ("wrong case", "Daily"),
            ("padded", " daily"),
        ] {
            assert_eq!(
                Recurrence::from_legacy(legacy),
                Err(field_error(
                    "recurring_interval",
                    "recurring_interval must be one of daily, weekly, monthly, yearly"
                )),
                "{what}"
            );
        }
    }

    #[test]
    fn parse_accepts_the_wire_shape_with_defaults() {
        let minimal = Recurrence::parse(input("weekly")).expect("only frequency is required");
        assert_eq!(minimal, rule(Weekly, 1, "UTC"), "defaults");

        let full: RecurrenceInput = serde_json::from_str(
            r#"{"frequency": "monthly", "interval": 1, "until": "2027-01-01T00:00:00+01:00",
                "count": 12, "timezone": "Europe/Berlin"}"#,
        )
        .expect("the documented example deserializes");
        let full = Recurrence::parse(full).expect("the documented example is valid");
        assert_eq!(
            full,
            Recurrence {
                frequency: Monthly,
                interval: 1,
                until: Some(instant("2026-12-31T23:00:00Z")),
                count: Some(12),
                timezone: zone("Europe/Berlin"),
            },
            "until is converted to UTC"
        );

        let nulls: RecurrenceInput = serde_json::from_str(
            r#"{"frequency":"daily","interval":null,"until":null,"count":null,"timezone":null}"#,
        )
        .expect("nulls deserialize");
        assert_eq!(
            Recurrence::parse(nulls),
            Ok(rule(Daily, 1, "UTC")),
            "null means default"
        );

        let boundaries = RecurrenceInput {
            interval: Some(365),
            count: Some(1000),
            until: Some("2026-06-01T12:00:00.5Z".to_owned()),
            timezone: Some("America/New_York".to_owned()),
            ..input("yearly")
        };
        assert!(
            Recurrence::parse(boundaries).is_ok(),
            "interval 365, count 1000, fractional seconds"
        );
    }

    #[test]
    fn parse_reports_every_invalid_field_precisely() {
        const FREQUENCY: &str = "frequency must be one of daily, weekly, monthly, yearly";
        const INTERVAL: &str = "interval must be between 1 and 365";
        const COUNT: &str = "count must be between 1 and 1000";
        const UNTIL: &str = "until must be an RFC 3339 date-time with offset";
        let cases: Vec<(&str, RecurrenceInput, Vec<FieldError>)> = vec![
            (
                "unknown frequency",
                input("hourly"),
                vec![field_error("recurrence.frequency", FREQUENCY)],
            ),
            (
                "frequency is case-sensitive",
                input("Monthly"),
                vec![field_error("recurrence.frequency", FREQUENCY)],
            ),
            (
                "interval 0",
                RecurrenceInput {
                    interval: Some(0),
                    ..input("daily")
                },
                vec![field_error("recurrence.interval", INTERVAL)],
            ),
            (
                "interval 366",
                RecurrenceInput {
                    interval: Some(366),
                    ..input("daily")
                },
                vec![field_error("recurrence.interval", INTERVAL)],
            ),
            (
                "negative interval",
                RecurrenceInput {
                    interval: Some(-1),
                    ..input("daily")
                },
                vec![field_error("recurrence.interval", INTERVAL)],
            ),
            (
                "interval beyond u16",
                RecurrenceInput {
                    interval: Some(i64::MAX),
                    ..input("daily")
                },
                vec![field_error("recurrence.interval", INTERVAL)],
            ),
            (
                "count 0",
                RecurrenceInput {
                    count: Some(0),
                    ..input("daily")
                },
                vec![field_error("recurrence.count", COUNT)],
            ),
            (
                "count 1001",
                RecurrenceInput {
                    count: Some(1001),
                    ..input("daily")
                },
                vec![field_error("recurrence.count", COUNT)],
            ),
            (
                "until without a time",
                RecurrenceInput {
                    until: Some("2027-01-01".to_owned()),
                    ..input("daily")
                },
                vec![field_error("recurrence.until", UNTIL)],
            ),
            (
                "until without an offset",
                RecurrenceInput {
                    until: Some("2027-01-01T00:00:00".to_owned()),
                    ..input("daily")
                },
                vec![field_error("recurrence.until", UNTIL)],
            ),
            (
                "until in words",
                RecurrenceInput {
                    until: Some("tomorrow".to_owned()),
                    ..input("daily")
                },
                vec![field_error("recurrence.until", UNTIL)],
            ),
            (
                "until before year 1 in UTC",
                RecurrenceInput {
                    until: Some("0001-01-01T00:00:00+01:00".to_owned()),
                    ..input("daily")
                },
                vec![field_error(
                    "recurrence.until",
                    "until must fall between the years 1 and 9999 in UTC",
                )],
            ),
            (
                "unknown time zone",
                RecurrenceInput {
                    timezone: Some("Mars/Base".to_owned()),
                    ..input("daily")
                },
                vec![field_error(
                    "recurrence.timezone",
                    "timezone 'Mars/Base' is not an IANA time zone name",
                )],
            ),
            (
                "empty time zone",
                RecurrenceInput {
                    timezone: Some(String::new()),
                    ..input("daily")
                },
                vec![field_error(
                    "recurrence.timezone",
                    "timezone '' is not an IANA time zone name",
                )],
            ),
            (
                "a fixed offset is not a zone name",
                RecurrenceInput {
                    timezone: Some("+02:00".to_owned()),
                    ..input("daily")
                },
                vec![field_error(
                    "recurrence.timezone",
                    "timezone '+02:00' is not an IANA time zone name",
                )],
            ),
            (
                "a long time zone is quoted cut short",
                RecurrenceInput {
                    timezone: Some("x".repeat(100)),
                    ..input("daily")
                },
                vec![field_error(
                    "recurrence.timezone",
                    &format!(
                        "timezone '{}…' is not an IANA time zone name",
                        "x".repeat(64)
                    ),
                )],
            ),
            (
                "every field wrong at once, in field order",
                RecurrenceInput {
                    frequency: "often".to_owned(),
                    interval: Some(0),
                    until: Some("soon".to_owned()),
                    count: Some(-5),
                    timezone: Some("Mars/Base".to_owned()),
                },
                vec![
                    field_error("recurrence.frequency", FREQUENCY),
                    field_error("recurrence.interval", INTERVAL),
                    field_error("recurrence.until", UNTIL),
                    field_error("recurrence.count", COUNT),
                    field_error(
                        "recurrence.timezone",
                        "timezone 'Mars/Base' is not an IANA time zone name",
                    ),
                ],
            ),
        ];
        for (what, input, expected) in cases {
            assert_eq!(Recurrence::parse(input), Err(expected), "{what}");
        }
    }

    #[test]
    fn the_wire_shape_rejects_unknown_fields() {
        let result =
            serde_json::from_str::<RecurrenceInput>(r#"{"frequency":"daily","byweekday":["MO"]}"#);
        assert!(result.is_err(), "unknown fields are refused");
    }

    #[test]
    fn serializes_to_the_wire_shape_in_utc_and_reads_it_back() {
        let rule = Recurrence {
            frequency: Monthly,
            interval: 2,
            until: Some(instant("2027-01-01T00:00:00+01:00")),
            count: Some(12),
            timezone: zone("Europe/Berlin"),
        };
        let json = serde_json::to_value(&rule).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "frequency": "monthly",
                "interval": 2,
                "until": "2026-12-31T23:00:00Z",
                "count": 12,
                "timezone": "Europe/Berlin",
            }),
            "full rule"
        );
        let back: Recurrence = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, rule, "round trip");

        assert_eq!(
            serde_json::to_value(rule_with_defaults()).expect("serializes"),
            serde_json::json!({
                "frequency": "daily",
                "interval": 1,
                "until": null,
                "count": null,
                "timezone": "UTC",
            }),
            "absent limits are null"
        );

        let invalid = serde_json::from_str::<Recurrence>(r#"{"frequency":"daily","interval":0}"#)
            .expect_err("deserializing validates");
        assert!(
            invalid
                .to_string()
                .contains("interval must be between 1 and 365"),
            "the validation message survives: {invalid}"
        );
    }

    fn rule_with_defaults() -> Recurrence {
        rule(Daily, 1, "UTC")
    }

    // Properties. Zones with DST in both hemispheres, half-hour offsets and a 30-minute DST gap.
    const ZONES: &[&str] = &[
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "America/Sao_Paulo",
        "America/St_Johns",
        "Australia/Sydney",
        "Australia/Lord_Howe",
        "Pacific/Auckland",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Africa/Casablanca",
    ];

    fn any_zone() -> impl Strategy<Value = Tz> {
        prop::sample::select(ZONES).prop_map(zone)
    }

    /// Instants from 1970 to 2100 at whole minutes.
    fn any_anchor() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..(130 * 365 * 24 * 60))
            .prop_map(|minutes| DateTime::from_timestamp(minutes * 60, 0).expect("in range"))
    }

    fn any_frequency() -> impl Strategy<Value = Frequency> {
        prop::sample::select(Frequency::ALL.to_vec())
    }

    fn local(instant: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
        local_wall_clock(instant, tz).expect("test dates are in range")
    }

    fn is_gap(tz: Tz, wall_clock: NaiveDateTime) -> bool {
        matches!(tz.from_local_datetime(&wall_clock), LocalResult::None)
    }

    fn days_in_month(year: i32, month: u32) -> u32 {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    proptest! {
        #[test]
        fn occurrences_are_strictly_increasing(
            frequency in any_frequency(),
            interval in 1u16..=MAX_INTERVAL,
            anchor in any_anchor(),
            timezone in any_zone(),
        ) {
            let rule = Recurrence { frequency, interval, until: None, count: Some(12), timezone };
            let occurrences: Vec<_> = rule.occurrences(anchor).collect();
            // Only a yearly rule with a large interval can run past year 9999 this early.
            prop_assert!(occurrences.len() == 12 || frequency == Yearly);
            for pair in occurrences.windows(2) {
                prop_assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
            }
        }

        #[test]
        fn daily_and_weekly_keep_the_local_time_except_in_gaps(
            weekly in any::<bool>(),
            interval in 1u16..=30,
            anchor in any_anchor(),
            timezone in any_zone(),
            n in 0u32..400,
        ) {
            let frequency = if weekly { Weekly } else { Daily };
            let rule = Recurrence { frequency, interval, until: None, count: None, timezone };
            let start = local(anchor, timezone);
            let days = u64::from(n) * u64::from(interval) * if weekly { 7 } else { 1 };
            let wall_clock = start.checked_add_days(Days::new(days)).expect("in range");
            let due = rule.occurrence(anchor, n).expect("no limits");
            let shown = local(due, timezone);
            if is_gap(timezone, wall_clock) {
                let moved = shown - wall_clock;
                prop_assert!(
                    moved > TimeDelta::zero() && moved <= TimeDelta::hours(2),
                    "{wall_clock} in a gap moved by {moved}"
                );
            } else {
                prop_assert_eq!(shown, wall_clock);
            }
        }

        #[test]
        fn monthly_day_is_the_anchor_day_clamped_to_the_month(
            yearly in any::<bool>(),
            interval in 1u16..=24,
            anchor in any_anchor(),
            timezone in any_zone(),
            n in 0u32..200,
        ) {
            let frequency = if yearly { Yearly } else { Monthly };
            let rule = Recurrence { frequency, interval, until: None, count: None, timezone };
            let start = local(anchor, timezone);
            let months = i64::from(n) * i64::from(interval) * if yearly { 12 } else { 1 };
            let month_index = i64::from(start.year()) * 12 + i64::from(start.month0()) + months;
            let year = i32::try_from(month_index.div_euclid(12)).expect("small");
            let month = u32::try_from(month_index.rem_euclid(12)).expect("small") + 1;
            let day = start.day().min(days_in_month(year, month));
            let expected = NaiveDate::from_ymd_opt(year, month, day).expect("valid date");

            let due = rule.occurrence(anchor, n).expect("no limits");
            if !is_gap(timezone, expected.and_time(start.time())) {
                prop_assert_eq!(local(due, timezone), expected.and_time(start.time()));
            }
        }

        #[test]
        fn occurrence_never_panics(
            frequency in any_frequency(),
            interval in any::<u16>(),
            seconds in any::<i64>(),
            zone_index in 0..chrono_tz::TZ_VARIANTS.len(),
            n in any::<u32>(),
            count in any::<Option<u32>>(),
        ) {
            let anchor = DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
            let timezone = chrono_tz::TZ_VARIANTS[zone_index];
            let rule = Recurrence { frequency, interval, until: None, count, timezone };
            let _ = rule.occurrence(anchor, n);
            let _ = rule.next_after(anchor, n);
            let _ = rule.occurrence(anchor, n % 1000);
        }

        #[test]
        fn parse_never_panics(
            frequency in ".*",
            interval in any::<Option<i64>>(),
            until in proptest::option::of(".*"),
            count in any::<Option<i64>>(),
            timezone in proptest::option::of(".*"),
        ) {
            let input = RecurrenceInput { frequency, interval, until, count, timezone };
            let _ = Recurrence::parse(input);
        }

        #[test]
        fn parse_never_panics_on_date_like_strings(
            until in concat!(
                r"[0-9+\-]{1,6}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}",
                r"(\.[0-9]{1,12})?([Zz]|[+\-][0-9]{2}:[0-9]{2})",
            ),
            timezone in r"[A-Za-z_/+\-0-9]{0,30}",
        ) {
            let _ = Recurrence::parse(RecurrenceInput {
                until: Some(until),
                timezone: Some(timezone),
                ..input("daily")
            });
        }

        #[test]
        fn deserializing_never_panics(json in ".*") {
            let _ = serde_json::from_str::<Recurrence>(&json);
        }

        #[test]
        fn valid_rules_survive_a_round_trip(
            frequency in any_frequency(),
            interval in 1u16..=MAX_INTERVAL,
            until in proptest::option::of(any_anchor()),
            count in proptest::option::of(1u32..=MAX_COUNT),
            zone_index in 0..chrono_tz::TZ_VARIANTS.len(),
        ) {
            let rule = Recurrence {
                frequency,
                interval,
                until,
                count,
                timezone: chrono_tz::TZ_VARIANTS[zone_index],
            };
            let json = serde_json::to_string(&rule).expect("serializes");
            let back: Recurrence = serde_json::from_str(&json).expect("reads back");
            prop_assert_eq!(back, rule);
        }
    }
}
