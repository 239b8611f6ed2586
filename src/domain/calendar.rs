//! Business days are KST days (Asia/Seoul), whatever the machine's own time zone is.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Asia::Seoul;

/// The KST calendar day of an instant.
pub fn kst_date(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&Seoul).date_naive()
}

/// The first instant of a KST day, in UTC. KST has had no daylight saving since 1988, so every
/// day starts at exactly one instant.
pub fn kst_day_start(date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    Seoul.from_local_datetime(&midnight).earliest().map_or_else(
        || DateTime::<Utc>::from_naive_utc_and_offset(midnight, Utc),
        |local| local.with_timezone(&Utc),
    )
}

/// A date as the sortable number `yyyymmdd`, for keys that begin with the day.
pub fn date_key(date: NaiveDate) -> u32 {
    let year = u32::try_from(date.year()).unwrap_or(0);
    year * 10_000 + date.month() * 100 + date.day()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_before_and_at_kst_midnight_fall_on_two_days() {
        // 2026-11-23 23:59:59 KST is 14:59:59 UTC; midnight KST is 15:00:00 UTC.
        let before = DateTime::parse_from_rfc3339("2026-11-23T23:59:59+09:00")
            .unwrap()
            .with_timezone(&Utc);
        let at = DateTime::parse_from_rfc3339("2026-11-24T00:00:00+09:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            kst_date(before),
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
        );
        assert_eq!(kst_date(at), NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
        assert_eq!(kst_day_start(kst_date(at)), at);
        assert_eq!(date_key(kst_date(at)), 20_261_124);
    }
}
