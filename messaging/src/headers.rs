//! Reading and writing the AMQP headers of the failure path (their names are in
//! [`contracts::headers`] and re-exported here).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

pub use contracts::headers::*;

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A mutable copy of a message's headers.
#[derive(Clone, Debug, Default)]
pub struct Headers(BTreeMap<ShortString, AMQPValue>);

impl Headers {
    pub fn from_table(table: Option<&FieldTable>) -> Self {
        Self(table.map(|t| t.inner().clone()).unwrap_or_default())
    }

    pub fn into_table(self) -> FieldTable {
        FieldTable::from(self.0)
    }

    pub fn str(&self, name: &str) -> Option<String> {
        match self.0.get(&ShortString::from(name))? {
            AMQPValue::LongString(value) => {
                Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
            }
            AMQPValue::ShortString(value) => Some(value.to_string()),
            _ => None,
        }
    }

    /// The `reason` of the broker's latest `x-death` entry (`rejected`, `expired`,
    /// `delivery_limit`, `maxlen`): set when RabbitMQ itself dead-lettered the message.
    pub fn death_reason(&self) -> Option<String> {
        let AMQPValue::FieldArray(deaths) = self.0.get(&ShortString::from("x-death"))? else {
            return None;
        };
        let AMQPValue::FieldTable(latest) = deaths.as_slice().first()? else {
            return None;
        };
        Headers(latest.inner().clone()).str("reason")
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(&ShortString::from(name))? {
            AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
            AMQPValue::LongInt(v) => Some(i64::from(*v)),
            AMQPValue::LongUInt(v) => Some(i64::from(*v)),
            AMQPValue::LongLongInt(v) => Some(*v),
            AMQPValue::LongString(v) => String::from_utf8_lossy(v.as_bytes()).parse().ok(),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(
            self.0.get(&ShortString::from(name)),
            Some(AMQPValue::Boolean(true))
        )
    }

    pub fn time(&self, name: &str) -> Option<DateTime<Utc>> {
        self.str(name)
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|time| time.with_timezone(&Utc))
    }

    pub fn set_str(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value: String = value.into();
        self.0.insert(
            name.into(),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
        self
    }

    pub fn set_int(&mut self, name: &str, value: i64) -> &mut Self {
        self.0.insert(name.into(), AMQPValue::LongLongInt(value));
        self
    }

    pub fn set_bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.0.insert(name.into(), AMQPValue::Boolean(value));
        self
    }

    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.0.remove(&ShortString::from(name));
        self
    }

    /// The delivery number of this message (1 when the header is absent or nonsense).
    pub fn attempt(&self) -> u32 {
        self.int(ATTEMPT)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_a_field_table() {
        let mut headers = Headers::default();
        headers
            .set_int(ATTEMPT, 3)
            .set_str(FAILURE_REASON, "boom")
            .set_bool(POISON, true);
        let headers = Headers::from_table(Some(&headers.into_table()));
        assert_eq!(headers.attempt(), 3);
        assert_eq!(headers.str(FAILURE_REASON).as_deref(), Some("boom"));
        assert!(headers.bool(POISON));
        assert_eq!(Headers::default().attempt(), 1);
    }
}
