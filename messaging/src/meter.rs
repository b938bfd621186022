//! The service's metrics: every component registers the handles it records with once, from the
//! [`Meter`] of its own service (not a process-wide recorder, so that two services, or two tests, in
//! one process count apart). A handle records with an atomic operation; exposing them (Prometheus
//! text format at `GET /metrics`) is the service kit's job.
//!
//! Names and units follow Prometheus conventions: base units in the name (`_seconds`), counters end
//! in `_total`. Every metric is listed, with its meaning, in the README's "Observability".

use std::sync::Arc;
use std::time::Duration;

pub use metrics::{Counter, Gauge, Histogram, Label};
use metrics::{Key, KeyName, Level, Metadata, Recorder};

const METADATA: Metadata<'static> = Metadata::new("order_pipeline", Level::INFO, None);

/// Where a service's components register their metrics.
#[derive(Clone)]
pub struct Meter(Arc<dyn Recorder + Send + Sync>);

impl Meter {
    pub fn new(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        Self(recorder)
    }

    /// A meter whose handles record nothing (components built outside a service, in tests).
    pub fn disabled() -> Self {
        Self(Arc::new(metrics::NoopRecorder))
    }

    pub fn counter(&self, name: &'static str, help: &'static str, labels: &[Pair]) -> Counter {
        self.0
            .describe_counter(KeyName::from_const_str(name), None, help.into());
        self.0.register_counter(&key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[Pair]) -> Gauge {
        self.0
            .describe_gauge(KeyName::from_const_str(name), None, help.into());
        self.0.register_gauge(&key(name, labels), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, help: &'static str, labels: &[Pair]) -> Histogram {
        self.0
            .describe_histogram(KeyName::from_const_str(name), None, help.into());
        self.0.register_histogram(&key(name, labels), &METADATA)
    }

    /// Describes a counter once, for handles registered later with [`Meter::labelled_counter`].
    pub fn describe_counter(&self, name: &'static str, help: &'static str) {
        self.0
            .describe_counter(KeyName::from_const_str(name), None, help.into());
    }

    /// Describes a histogram once, for handles registered later with
    /// [`Meter::labelled_histogram`].
    pub fn describe_histogram(&self, name: &'static str, help: &'static str) {
        self.0
            .describe_histogram(KeyName::from_const_str(name), None, help.into());
    }

    /// The handle of a described counter with these label values (a lookup: for label values
    /// known only when recording, like an HTTP status).
    pub fn labelled_counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.0
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// The handle of a described histogram with these label values.
    pub fn labelled_histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.0
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meter")
    }
}

/// A label and its value.
pub type Pair = (&'static str, String);

fn key(name: &'static str, labels: &[Pair]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(label, value)| Label::new(*label, value.clone()))
            .collect::<Vec<_>>(),
    )
}

/// Records a duration in seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.record(elapsed.as_secs_f64());
}

/// What became of a delivery, as the consumer metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Fate {
    // In the order of `ALL`: the discriminant indexes the counters.
    /// Acknowledged: handled, or a duplicate of something handled.
    Acknowledged,
    /// Published to a retry queue, to be delivered again later.
    Retried,
    /// Dead-lettered after its attempts, or because it can never succeed.
    DeadLettered,
    /// Unreadable (not JSON, wrong type or version, ids that disagree): dead-lettered at once.
    Poison,
    /// Put back in the queue because a dependency is unavailable; the consumer parks.
    Returned,
}

impl Fate {
    pub const ALL: [Fate; 5] = [
        Fate::Acknowledged,
        Fate::Retried,
        Fate::DeadLettered,
        Fate::Poison,
        Fate::Returned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Acknowledged => "acknowledged",
            Fate::Retried => "retried",
            Fate::DeadLettered => "dead_lettered",
            Fate::Poison => "poison",
            Fate::Returned => "returned",
        }
    }
}

/// The metrics of one consumer (of one queue).
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    deliveries: [Counter; 5],
    handling: Histogram,
    /// 1 while the consumer consumes, 0 while it reconnects or parks.
    pub consuming: Gauge,
}

impl ConsumerMetrics {
    pub fn new(meter: &Meter, queue: &str) -> Self {
        let queue = ("queue", queue.to_owned());
        Self {
            deliveries: Fate::ALL.map(|fate| {
                meter.counter(
                    "consumer_deliveries_total",
                    "Deliveries a consumer finished with, by queue and outcome.",
                    &[queue.clone(), ("outcome", fate.as_str().to_owned())],
                )
            }),
            handling: meter.histogram(
                "consumer_handling_duration_seconds",
                "Time from a delivery's arrival to its outcome, by queue.",
                std::slice::from_ref(&queue),
            ),
            consuming: meter.gauge(
                "consumer_consuming",
                "1 while the consumer of a queue consumes; 0 while it reconnects, or parks because a dependency is unavailable.",
                std::slice::from_ref(&queue),
            ),
        }
    }

    pub fn disabled() -> Self {
        Self::new(&Meter::disabled(), "")
    }

    /// A delivery finished with `fate` after `elapsed`.
    pub fn finished(&self, fate: Fate, elapsed: Duration) {
        self.deliveries[fate as usize].increment(1);
        observe(&self.handling, elapsed);
    }
}

/// The counter of a handler's in-process retries, for the consumer of `queue`.
pub fn in_process_retries(meter: &Meter, queue: &str) -> Counter {
    meter.counter(
        "consumer_in_process_retries_total",
        "Attempts a handler repeated in process after a transient failure, by queue.",
        &[("queue", queue.to_owned())],
    )
}

/// The metrics of an outbox relay.
#[derive(Clone, Debug)]
pub struct OutboxMetrics {
    pub published: Counter,
    pub publish_failures: Counter,
    pub batch_size: Histogram,
}

impl OutboxMetrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            published: meter.counter(
                "outbox_published_total",
                "Outbox events the broker confirmed.",
                &[],
            ),
            publish_failures: meter.counter(
                "outbox_publish_failures_total",
                "Outbox events whose publication failed (not confirmed, returned or refused); they are published again.",
                &[],
            ),
            batch_size: meter.histogram(
                "outbox_relay_batch_size",
                "Events the relay published together (one claim, or one commit's events).",
                &[],
            ),
        }
    }

    pub fn disabled() -> Self {
        Self::new(&Meter::disabled())
    }
}
