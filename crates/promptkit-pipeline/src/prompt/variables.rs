//! Variable providers: sources of template variables resolved once per execution.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use promptkit_core::{BoxFuture, StateError, StateStore, Timestamp};
use serde_json::Value;

use crate::run_context::RunData;

/// Why a variable provider failed.
#[derive(Debug, thiserror::Error)]
#[error("variable provider `{provider}` failed: {message}")]
pub struct VariableError {
    /// The provider.
    pub provider: String,
    /// What happened.
    pub message: String,
}

/// A source of template variables. Object-safe: held as `Arc<dyn VariableProvider>`.
pub trait VariableProvider: Send + Sync + fmt::Debug {
    /// The provider's name (for errors).
    fn name(&self) -> &str;

    /// The variables for this turn.
    fn provide<'a>(
        &'a self,
        turn: &'a RunData,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, VariableError>>;
}

/// Fixed variables.
#[derive(Debug, Clone, Default)]
pub struct StaticVariables(pub BTreeMap<String, String>);

impl StaticVariables {
    /// From pairs.
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl VariableProvider for StaticVariables {
    fn name(&self) -> &str {
        "static"
    }

    fn provide<'a>(
        &'a self,
        _turn: &'a RunData,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, VariableError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// The current time: `current_time` (RFC 3339), `current_date` (YYYY-MM-DD), `current_year`,
/// `current_month` (name), `current_weekday` (name) and `current_hour` (0-23), in UTC or at a
/// fixed offset.
#[derive(Clone)]
pub struct TimeVariables {
    offset_seconds: i32,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

impl fmt::Debug for TimeVariables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeVariables")
            .field("offset_seconds", &self.offset_seconds)
            .finish_non_exhaustive()
    }
}

impl Default for TimeVariables {
    fn default() -> Self {
        Self {
            offset_seconds: 0,
            clock: Arc::new(Timestamp::now),
        }
    }
}

impl TimeVariables {
    /// UTC, system clock.
    pub fn utc() -> Self {
        Self::default()
    }

    /// At a fixed offset from UTC, in seconds (east positive).
    #[must_use]
    pub fn with_offset_seconds(mut self, offset: i32) -> Self {
        self.offset_seconds = offset;
        self
    }

    /// With a clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn values(&self) -> Result<BTreeMap<String, String>, String> {
        let ts = jiff::Timestamp::from_millisecond((self.clock)().as_unix_millis())
            .map_err(|e| e.to_string())?;
        let offset =
            jiff::tz::Offset::from_seconds(self.offset_seconds).map_err(|e| e.to_string())?;
        let zoned = ts.to_zoned(jiff::tz::TimeZone::fixed(offset));
        let dt = zoned.datetime();
        let month = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ][usize::try_from(dt.month() - 1).unwrap_or(0)];
        let weekday = match dt.weekday() {
            jiff::civil::Weekday::Monday => "Monday",
            jiff::civil::Weekday::Tuesday => "Tuesday",
            jiff::civil::Weekday::Wednesday => "Wednesday",
            jiff::civil::Weekday::Thursday => "Thursday",
            jiff::civil::Weekday::Friday => "Friday",
            jiff::civil::Weekday::Saturday => "Saturday",
            jiff::civil::Weekday::Sunday => "Sunday",
        };
        Ok(BTreeMap::from([
            (
                "current_time".to_owned(),
                zoned.timestamp().display_with_offset(offset).to_string(),
            ),
            ("current_date".to_owned(), dt.date().to_string()),
            ("current_year".to_owned(), dt.year().to_string()),
            ("current_month".to_owned(), month.to_owned()),
            ("current_weekday".to_owned(), weekday.to_owned()),
            ("current_hour".to_owned(), dt.hour().to_string()),
        ]))
    }
}

impl VariableProvider for TimeVariables {
    fn name(&self) -> &str {
        "time"
    }

    fn provide<'a>(
        &'a self,
        _turn: &'a RunData,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, VariableError>> {
        Box::pin(async move {
            self.values().map_err(|message| VariableError {
                provider: "time".to_owned(),
                message,
            })
        })
    }
}

/// Variables from the conversation's stored metadata (string values as they are, others as
/// JSON). With a prefix, only keys starting with it are used, with the prefix removed.
#[derive(Debug, Clone)]
pub struct StateVariables {
    store: Arc<dyn StateStore>,
    prefix: Option<String>,
}

impl StateVariables {
    /// Reads metadata from `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            prefix: None,
        }
    }

    /// Uses only keys starting with `prefix` (stripped).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
}

impl VariableProvider for StateVariables {
    fn name(&self) -> &str {
        "state"
    }

    fn provide<'a>(
        &'a self,
        turn: &'a RunData,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, VariableError>> {
        Box::pin(async move {
            let Some(session) = turn.session_id.as_deref() else {
                return Ok(BTreeMap::new());
            };
            let conversation =
                self.store
                    .load_recent(session, 0)
                    .await
                    .map_err(|e: StateError| VariableError {
                        provider: "state".to_owned(),
                        message: e.to_string(),
                    })?;
            let mut out = BTreeMap::new();
            for (k, v) in conversation.map(|c| c.metadata).unwrap_or_default() {
                let key = match &self.prefix {
                    Some(p) => match k.strip_prefix(p.as_str()) {
                        Some(rest) => rest.to_owned(),
                        None => continue,
                    },
                    None => k,
                };
                let value = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, value);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn time_variables_at_an_offset() {
        // 2026-11-24T16:18:08Z is a Tuesday.
        let fixed = Timestamp::from_unix_millis(1_795_537_088_000).unwrap();
        let vars = TimeVariables::utc()
            .with_offset_seconds(3600)
            .with_clock(move || fixed)
            .provide(&RunData::default())
            .await
            .unwrap();
        assert_eq!(vars["current_time"], "2026-11-24T17:18:08+01:00");
        assert_eq!(vars["current_date"], "2026-11-24");
        assert_eq!(vars["current_year"], "2026");
        assert_eq!(vars["current_month"], "November");
        assert_eq!(vars["current_weekday"], "Tuesday");
        assert_eq!(vars["current_hour"], "17");
    }

    #[tokio::test]
    async fn static_variables() {
        let vars = StaticVariables::new([("a", "1")])
            .provide(&RunData::default())
            .await
            .unwrap();
        assert_eq!(vars["a"], "1");
    }
}
