//! Timestamps of the log: milliseconds since the Unix epoch, written as RFC 3339 in UTC.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::error::TimeError;

/// A point in time: milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0);
        Self(millis)
    }

    /// RFC 3339 with milliseconds in UTC, e.g. `2026-11-21T05:40:19.123Z`.
    pub fn to_rfc3339(self) -> String {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        self.date_time()
            .format(format)
            .unwrap_or_else(|_| format!("@{}ms", self.0))
    }

    /// A compact form for file names, e.g. `20261121T054019.123Z`.
    pub fn to_file_stamp(self) -> String {
        let format =
            format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z");
        self.date_time()
            .format(format)
            .unwrap_or_else(|_| self.0.to_string())
    }

    /// Parses RFC 3339 (any offset, any sub-second precision; truncated to milliseconds).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|error| TimeError {
            text: text.to_owned(),
            reason: error.to_string(),
        })?;
        Ok(Self((parsed.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    fn date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_rfc3339())
    }
}

impl FromStr for UnixMillis {
    type Err = TimeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(text)
    }
}

impl Serialize for UnixMillis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for UnixMillis {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_with_milliseconds() {
        let at = UnixMillis(1_795_240_819_123);
        assert_eq!(at.to_rfc3339(), "2026-11-21T06:00:19.123Z");
        assert_eq!(at.to_file_stamp(), "20261121T060019.123Z");
        assert_eq!(UnixMillis::parse_rfc3339(&at.to_rfc3339()).unwrap(), at);
        assert_eq!(
            UnixMillis::parse_rfc3339("2026-11-21T07:00:19.123456+01:00").unwrap(),
            at
        );
        assert!(UnixMillis::parse_rfc3339("yesterday").is_err());
    }
}
