//! Wall-clock timestamps with a stable serialised form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time (UTC), as stored on messages, conversations and events.
///
/// Serialised as an RFC 3339 string in UTC with up to nanosecond precision, for example
/// `"2026-11-24T16:18:08.123Z"`. Deserialisation accepts any RFC 3339 offset and converts
/// it to UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(jiff::Timestamp);

impl Timestamp {
    /// The current time read from the system clock.
    pub fn now() -> Self {
        Self(jiff::Timestamp::now())
    }

    /// Builds a timestamp from milliseconds since the Unix epoch.
    ///
    /// # Errors
    /// Returns [`TimestampError`] when the value is outside the supported range
    /// (years -9999 to 9999).
    pub fn from_unix_millis(millis: i64) -> Result<Self, TimestampError> {
        jiff::Timestamp::from_millisecond(millis)
            .map(Self)
            .map_err(|e| TimestampError(e.to_string()))
    }

    /// Milliseconds since the Unix epoch (negative before 1970).
    pub fn as_unix_millis(&self) -> i64 {
        self.0.as_millisecond()
    }

    /// Nanoseconds since the Unix epoch.
    pub fn as_unix_nanos(&self) -> i128 {
        self.0.as_nanosecond()
    }
}

/// A timestamp that could not be parsed or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp: {0}")]
pub struct TimestampError(String);

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<jiff::Timestamp>()
            .map(Self)
            .map_err(|e| TimestampError(format!("{s:?}: {e}")))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde adapter: [`std::time::Duration`] as whole milliseconds.
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// The same for `Option<Duration>`; pair it with `default` and
    /// `skip_serializing_if = "Option::is_none"`.
    pub(crate) mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_rfc3339_utc_and_round_trips() {
        let ts = Timestamp::from_unix_millis(1_764_001_088_123).unwrap();
        let json = serde_json::to_string(&ts).unwrap();
        assert_eq!(json, "\"2025-11-24T16:18:08.123Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ts);
        assert_eq!(back.as_unix_millis(), 1_764_001_088_123);
    }

    #[test]
    fn accepts_offsets_and_rejects_garbage() {
        let ts: Timestamp = serde_json::from_str("\"2025-11-24T17:18:08.123+01:00\"").unwrap();
        assert_eq!(ts.as_unix_millis(), 1_764_001_088_123);
        let err = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(err.to_string().contains("invalid timestamp"), "{err}");
    }
}
