//! The API's timestamp format.

use chrono::{DateTime, SecondsFormat, Utc};

/// ISO 8601 with milliseconds and `Z`, as the spec shows: `2026-05-20T09:30:00.000Z`.
pub fn iso8601(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn matches_spec_format() {
        let t = Utc.with_ymd_and_hms(2026, 5, 20, 9, 30, 0).unwrap();
        assert_eq!(iso8601(t), "2026-05-20T09:30:00.000Z");
    }
}
