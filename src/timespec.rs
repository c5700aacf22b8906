//! Time arguments as agents write them: RFC 3339 (`2026-11-24T09:30:00Z`), a date
//! (`2026-11-24`, midnight UTC), `now`, `today`, `yesterday`, or a relative offset
//! (`2h ago`, `-30m`, `7d`, meaning that long before now).

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Micros;

/// A point in time parsed from an agent-friendly string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSpec(pub DateTime<Utc>);

impl TimeSpec {
    pub fn micros(self) -> Micros {
        self.0.timestamp_micros()
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        parse_at(s, Utc::now()).map(TimeSpec)
    }
}

/// Years a time may fall in: what RFC 3339 can write and sqlite can sort.
const YEARS: std::ops::RangeInclusive<i32> = -9999..=9999;
/// Longest time text read; anything longer is not a time.
const MAX_TIME_CHARS: usize = 64;

fn parse_at(input: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if input.len() > MAX_TIME_CHARS {
        return Err(bad(input));
    }
    let t = parse_unbounded(input, now)?;
    if !YEARS.contains(&chrono::Datelike::year(&t)) {
        return Err(format!(
            "time {:?} falls outside the years -9999 to 9999: give a nearer time",
            crate::error::truncate_chars(input, MAX_TIME_CHARS)
        ));
    }
    Ok(t)
}

fn parse_unbounded(input: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = input.trim();
    let lower = s.to_ascii_lowercase();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    match lower.as_str() {
        "now" => return Ok(now),
        "today" => return midnight(now.date_naive()).ok_or_else(|| bad(input)),
        "yesterday" => {
            return midnight(now.date_naive() - chrono::Days::new(1)).ok_or_else(|| bad(input));
        }
        "tomorrow" => {
            return midnight(now.date_naive() + chrono::Days::new(1)).ok_or_else(|| bad(input));
        }
        _ => {}
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return midnight(d).ok_or_else(|| bad(input));
    }
    // "in 2h" is ahead of now; "2h ago", "-2h" and a bare "2h" are before it.
    let (ahead, rel) = match lower.strip_prefix("in ") {
        Some(rest) => (true, rest),
        None => (
            false,
            lower
                .strip_suffix("ago")
                .map(str::trim)
                .or_else(|| lower.strip_prefix('-'))
                .unwrap_or(&lower),
        ),
    };
    let rel = rel.replace(' ', "");
    let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
    let (num, unit) = rel.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad(input))?;
    let secs = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return Err(bad(input)),
    };
    let offset = n.checked_mul(secs).and_then(chrono::Duration::try_seconds);
    let shift = if ahead {
        DateTime::checked_add_signed
    } else {
        DateTime::checked_sub_signed
    };
    offset.and_then(|d| shift(now, d)).ok_or_else(|| bad(input))
}

fn bad(input: &str) -> String {
    let input = crate::error::truncate_chars(input, MAX_TIME_CHARS);
    format!(
        "cannot read time {input:?}: use RFC 3339 (2026-11-24T09:30:00Z), a date (2026-11-24), \
         now, today, yesterday, tomorrow, or an offset such as '2h ago', '30m', '7d', 'in 2h'"
    )
}

impl Serialize for TimeSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TimeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TimeSpec::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for TimeSpec {
    fn schema_name() -> Cow<'static, str> {
        "TimeSpec".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": MAX_TIME_CHARS,
            "description": "A time: RFC 3339, a date (2026-11-24), 'now', 'today', 'yesterday', 'tomorrow', or an offset ('2h ago', '7d', 'in 2h')."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Result<DateTime<Utc>, String> {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        parse_at(s, now)
    }

    #[test]
    fn reads_the_forms_agents_write() {
        let t = |s: &str| at(s).unwrap().to_rfc3339();
        assert_eq!(t("2026-11-20T08:00:00+01:00"), "2026-11-20T07:00:00+00:00");
        assert_eq!(t("2026-11-20"), "2026-11-20T00:00:00+00:00");
        assert_eq!(t("yesterday"), "2026-11-23T00:00:00+00:00");
        assert_eq!(t("today"), "2026-11-24T00:00:00+00:00");
        assert_eq!(t("2h ago"), "2026-11-24T10:00:00+00:00");
        assert_eq!(t("-30m"), "2026-11-24T11:30:00+00:00");
        assert_eq!(t("7d"), "2026-11-17T12:00:00+00:00");
        assert_eq!(t("1 week ago"), "2026-11-17T12:00:00+00:00");
        assert_eq!(t("tomorrow"), "2026-11-25T00:00:00+00:00");
        assert_eq!(t("in 2h"), "2026-11-24T14:00:00+00:00");
        assert_eq!(t("in 2 days"), "2026-11-26T12:00:00+00:00");
    }

    #[test]
    fn rejects_nonsense_with_guidance() {
        let err = at("last tuesday").unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
        assert!(at("5 fortnights ago").is_err());
        assert!(at("").is_err());
    }

    #[test]
    fn huge_offsets_and_far_years_are_errors_not_panics() {
        for s in [
            "20000000000000d",
            "9223372036854775807s",
            "10000000000000000s",
            "-9223372036854775808s",
            "99999999999w ago",
            "5000000d",
            "in 5000000d",
            "in 9223372036854775807s",
            "+10000-01-01T00:00:00Z",
        ] {
            assert!(at(s).is_err(), "{s}");
        }
        let long = "1".repeat(10_000) + "d";
        let err = at(&long).unwrap_err();
        assert!(err.len() < 300, "{err}");
        assert!(at("3000000d").is_ok(), "8,200 years back is still a year");
    }
}
