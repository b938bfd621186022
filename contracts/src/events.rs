//! The event contracts: a versioned envelope around each payload.
//!
//! On the wire an event is persistent JSON:
//! `{"event_id", "event_type", "schema_version", "occurred_at", "correlation_id", "payload"}`,
//! and the AMQP `message_id` equals `event_id`. A consumer accepts only the `event_type` it expects
//! and a `schema_version` it knows; anything else is poison and goes to the dead-letter queue.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::routing_keys;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A payload type with its place in the contract.
pub trait Event: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    const EVENT_TYPE: &'static str;
    const ROUTING_KEY: &'static str;

    /// The order the event is about: its envelope's `correlation_id` must say the same.
    fn order_id(&self) -> Uuid;

    /// Whether this type reads events of `event_type` (a type standing for several events,
    /// like [`OrderWork`], reads each of them).
    fn reads(event_type: &str) -> bool {
        event_type == Self::EVENT_TYPE
    }

    /// The payload of an event of `event_type`, one [`Event::reads`].
    fn from_payload(_event_type: &str, payload: &RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload.get())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The order id: every event of one order shares it.
    pub correlation_id: Uuid,
    pub payload: P,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("message is not valid JSON for {expected}: {reason}")]
    Malformed {
        expected: &'static str,
        reason: String,
    },
    #[error("unexpected event_type {found:?}, expected {expected:?}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("unsupported schema_version {found}, this build reads {SCHEMA_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("AMQP message_id {message_id:?} does not match event_id {event_id}")]
    MessageIdMismatch { message_id: String, event_id: Uuid },
}

impl<P: Event> Envelope<P> {
    /// A new event about `correlation_id`, occurring now.
    pub fn new(correlation_id: Uuid, payload: P) -> Self {
        Self {
            // Time-ordered (v7): the outbox's unique index grows at its right edge.
            event_id: Uuid::now_v7(),
            event_type: P::EVENT_TYPE.to_owned(),
            schema_version: SCHEMA_VERSION,
            occurred_at: Utc::now(),
            correlation_id,
            payload,
        }
    }

    /// The event `event_id`, which occurred at `occurred_at`: an event that is built again later
    /// with the same id (the order service's `order.created`, whose id is the order's, published
    /// again by reconciliation).
    pub fn with_id(
        event_id: Uuid,
        correlation_id: Uuid,
        occurred_at: chrono::DateTime<Utc>,
        payload: P,
    ) -> Self {
        Self {
            event_id,
            event_type: P::EVENT_TYPE.to_owned(),
            schema_version: SCHEMA_VERSION,
            occurred_at,
            correlation_id,
            payload,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses a message body, checking type and version before the payload.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Header {
            event_type: String,
            schema_version: u32,
        }
        let malformed = |e: serde_json::Error| DecodeError::Malformed {
            expected: P::EVENT_TYPE,
            reason: e.to_string(),
        };
        let header: Header = serde_json::from_slice(body).map_err(malformed)?;
        if !P::reads(&header.event_type) {
            return Err(DecodeError::WrongType {
                expected: P::EVENT_TYPE,
                found: header.event_type,
            });
        }
        if header.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: header.schema_version,
            });
        }
        let raw: Envelope<Box<RawValue>> = serde_json::from_slice(body).map_err(malformed)?;
        let payload = P::from_payload(&raw.event_type, &raw.payload).map_err(malformed)?;
        Ok(Envelope {
            event_id: raw.event_id,
            event_type: raw.event_type,
            schema_version: raw.schema_version,
            occurred_at: raw.occurred_at,
            correlation_id: raw.correlation_id,
            payload,
        })
    }
}

/// One line of an order, as carried by events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: u32,
    /// Exact decimal, as a string on the wire.
    pub price: Decimal,
}

/// `order.created`: an order was accepted and stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: String,
    pub items: Vec<OrderLine>,
    pub total_amount: Decimal,
    pub created_at: DateTime<Utc>,
}

impl Event for OrderCreated {
    const EVENT_TYPE: &'static str = "order.created";
    const ROUTING_KEY: &'static str = routing_keys::ORDER_CREATED;

    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

/// `order.cancelled`: a pending order was cancelled; the processor must not decide it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub cancelled_at: DateTime<Utc>,
}

impl Event for OrderCancelled {
    const EVENT_TYPE: &'static str = "order.cancelled";
    const ROUTING_KEY: &'static str = routing_keys::ORDER_CANCELLED;

    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

/// What the processor's work queue carries: `order.created` and `order.cancelled`. Read only
/// (it is never published as such): [`Envelope::decode`] picks the payload by `event_type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OrderWork {
    Created(OrderCreated),
    Cancelled(OrderCancelled),
}

impl Event for OrderWork {
    const EVENT_TYPE: &'static str = "order.created|order.cancelled";
    const ROUTING_KEY: &'static str = "order.created|order.cancelled";

    fn order_id(&self) -> Uuid {
        match self {
            Self::Created(created) => created.order_id,
            Self::Cancelled(cancelled) => cancelled.order_id,
        }
    }

    fn reads(event_type: &str) -> bool {
        event_type == OrderCreated::EVENT_TYPE || event_type == OrderCancelled::EVENT_TYPE
    }

    fn from_payload(event_type: &str, payload: &RawValue) -> Result<Self, serde_json::Error> {
        if event_type == OrderCancelled::EVENT_TYPE {
            serde_json::from_str(payload.get()).map(Self::Cancelled)
        } else {
            serde_json::from_str(payload.get()).map(Self::Created)
        }
    }
}

/// The processor's verdict on an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingStatus {
    Completed,
    Rejected,
    Failed,
}

impl ProcessingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "completed" => Some(Self::Completed),
            "rejected" => Some(Self::Rejected),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// `order.processed`: the processor decided an order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderProcessed {
    pub order_id: Uuid,
    pub status: ProcessingStatus,
    /// Why, for `rejected` and `failed`.
    pub reason: Option<String>,
    pub processed_at: DateTime<Utc>,
}

impl Event for OrderProcessed {
    const EVENT_TYPE: &'static str = "order.processed";
    const ROUTING_KEY: &'static str = routing_keys::ORDER_PROCESSED;

    fn order_id(&self) -> Uuid {
        self.order_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn created() -> Envelope<OrderCreated> {
        Envelope::new(
            Uuid::new_v4(),
            OrderCreated {
                order_id: Uuid::new_v4(),
                customer_id: "c".into(),
                items: vec![OrderLine {
                    product_id: "p".into(),
                    quantity: 2,
                    price: Decimal::from_str("10.50").unwrap(),
                }],
                total_amount: Decimal::from_str("21.00").unwrap(),
                created_at: Utc::now(),
            },
        )
    }

    #[test]
    fn an_envelope_round_trips_with_decimals_as_strings() {
        let event = created();
        let body = event.encode().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["payload"]["total_amount"], "21.00");
        assert_eq!(json["schema_version"], 1);
        assert_eq!(Envelope::<OrderCreated>::decode(&body).unwrap(), event);
    }

    #[test]
    fn a_wrong_event_type_is_refused() {
        let body = created().encode().unwrap();
        assert!(matches!(
            Envelope::<OrderProcessed>::decode(&body),
            Err(DecodeError::WrongType { .. })
        ));
    }

    #[test]
    fn an_unknown_schema_version_is_refused() {
        let mut json = serde_json::to_value(created()).unwrap();
        json["schema_version"] = 99.into();
        let body = serde_json::to_vec(&json).unwrap();
        assert_eq!(
            Envelope::<OrderCreated>::decode(&body),
            Err(DecodeError::UnsupportedVersion { found: 99 })
        );
    }

    #[test]
    fn the_work_queue_reads_a_creation_and_a_cancellation_by_their_type() {
        let created = created();
        let work = Envelope::<OrderWork>::decode(&created.encode().unwrap()).unwrap();
        assert_eq!(work.payload, OrderWork::Created(created.payload.clone()));
        let order_id = Uuid::new_v4();
        let cancelled = Envelope::new(
            order_id,
            OrderCancelled {
                order_id,
                cancelled_at: Utc::now(),
            },
        );
        let work = Envelope::<OrderWork>::decode(&cancelled.encode().unwrap()).unwrap();
        assert_eq!(work.payload, OrderWork::Cancelled(cancelled.payload));
        assert_eq!(work.event_type, "order.cancelled");
        // A cancellation's type with a creation's payload is malformed, not a creation.
        let mut json = serde_json::to_value(&created).unwrap();
        json["event_type"] = "order.cancelled".into();
        json["payload"] = serde_json::json!({"order_id": "x"});
        assert!(matches!(
            Envelope::<OrderWork>::decode(&serde_json::to_vec(&json).unwrap()),
            Err(DecodeError::Malformed { .. })
        ));
        let processed = Envelope::new(
            order_id,
            OrderProcessed {
                order_id,
                status: ProcessingStatus::Completed,
                reason: None,
                processed_at: Utc::now(),
            },
        );
        assert!(matches!(
            Envelope::<OrderWork>::decode(&processed.encode().unwrap()),
            Err(DecodeError::WrongType { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            Envelope::<OrderCreated>::decode(b"not json"),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
