use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use service_kit::http::Problem;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::entities::processing::{self, DecisionStatus};
use crate::store::{ProcessingStore, StoreError};

/// The processor's record of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessedResponse {
    pub order_id: Uuid,
    /// `completed`, `rejected`, `failed` or `cancelled` (the order service cancelled the
    /// order); null while the order is being processed.
    #[schema(value_type = Option<String>, example = "completed")]
    pub decision: Option<&'static str>,
    /// Why, for `rejected` and `failed`.
    pub reason: Option<String>,
    /// Deliveries of the order's `order.created` that reached the processor (0: it was
    /// cancelled before any did).
    #[schema(example = 1)]
    pub attempts: i32,
    /// RFC 3339, UTC.
    pub first_seen_at: DateTime<Utc>,
    /// RFC 3339, UTC; null while undecided.
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<processing::Model> for ProcessedResponse {
    fn from(model: processing::Model) -> Self {
        Self {
            order_id: model.order_id,
            decision: model.decision.map(DecisionStatus::as_str),
            reason: model.reason,
            attempts: model.attempts,
            first_seen_at: model.first_seen_at,
            decided_at: model.decided_at,
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        Problem::from_failure(&error, "the database")
    }
}

/// The processing record of an order (operators).
#[utoipa::path(
    get,
    path = "/processed/{order_id}",
    tag = "processing",
    params(("order_id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The record", body = ProcessedResponse),
        (status = 400, description = "`order_id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A customer's token: operators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The processor has not seen this order", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "get processing record", skip(store, caller), fields(order_id = %order_id))]
pub async fn get_processed(
    order_id: web::Path<String>,
    caller: service_kit::auth::Identity,
    store: web::Data<ProcessingStore>,
) -> Result<HttpResponse, Problem> {
    caller.operator()?;
    let order_id = Uuid::parse_str(&order_id).map_err(|_| {
        Problem::bad_field(
            "order_id",
            format!("must be a UUID, got {:?}", order_id.as_str()),
        )
    })?;
    match store.get(order_id).await? {
        Some(record) => Ok(HttpResponse::Ok().json(ProcessedResponse::from(record))),
        None => Err(Problem::not_found(format!(
            "no processing record for order {order_id}"
        ))),
    }
}
