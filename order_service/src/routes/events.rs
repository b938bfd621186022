//! Live status over Server-Sent Events (`crate::live`).

use actix_web::{HttpRequest, HttpResponse, web};
use service_kit::auth::Identity;
use service_kit::http::Problem;

use super::orders::{Scope, not_found, parse_order_id};
use crate::live::snapshot::Cursor;
use crate::live::{Follow, Live, LiveError};
use crate::store::OrderStore;

/// The header an `EventSource` sends when it reconnects.
const LAST_EVENT_ID: &str = "Last-Event-ID";

impl From<LiveError> for Problem {
    fn from(error: LiveError) -> Self {
        match error {
            LiveError::Full => Problem::overloaded(
                "too many live status streams are open on this instance; retry later",
            ),
            LiveError::Db(error) => {
                Problem::from_failure(&messaging::database::from_sqlx(error), "the database")
            }
        }
    }
}

/// The request's `Last-Event-ID`, if it has one.
fn last_event_id(request: &HttpRequest) -> Result<Option<Cursor>, Problem> {
    let Some(value) = request.headers().get(LAST_EVENT_ID) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|text| !text.is_empty())
        .map(Cursor::parse)
        .map(|cursor| {
            cursor.ok_or_else(|| {
                Problem::bad_field(LAST_EVENT_ID, "must be the id of an event of this stream")
            })
        })
        .transpose()
}

async fn stream(
    request: &HttpRequest,
    live: &Live,
    follow: Follow,
) -> Result<HttpResponse, Problem> {
    let cursor = last_event_id(request)?;
    let mut events = live.open(follow, cursor).await?;
    let body = futures_util::stream::poll_fn(move |context| {
        events
            .poll_recv(context)
            .map(|event| event.map(Ok::<_, std::convert::Infallible>))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Proxies that buffer responses (nginx) pass this one on as it comes.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Follow an order's status live.
///
/// A Server-Sent Events stream: first the order's history, then each change of its status as
/// it commits, whichever instance wrote it, as `event: status` with a `StatusChange` as `data`.
/// Every event has an `id`; a client that reconnects with it as `Last-Event-ID` (an
/// `EventSource` does so by itself) gets every change it has not seen, and none twice, even
/// when changes committed out of their `seq` order. Idle streams get a comment every 15 s.
#[utoipa::path(
    get,
    path = "/orders/{id}/events",
    tag = "orders",
    params(
        ("id" = Uuid, Path, description = "Order id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: resume after it"),
    ),
    responses(
        (status = 200, description = "The stream (`text/event-stream`) of `StatusChange` events", body = crate::live::StatusChange, content_type = "text/event-stream"),
        (status = 400, description = "`id` is not a UUID, or `Last-Event-ID` is not an event id of this API", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another customer's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or too many streams open (`LIVE__MAX_CONNECTIONS`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "follow order", skip_all, fields(order_id = %id))]
pub async fn order_events(
    request: HttpRequest,
    id: web::Path<String>,
    caller: Identity,
    store: web::Data<OrderStore>,
    live: web::Data<Live>,
) -> Result<HttpResponse, Problem> {
    let scope = Scope::of(caller)?;
    let id = parse_order_id(&id)?;
    match store.get(id).await? {
        Some(order) if scope.sees(&order) => {}
        _ => return Err(not_found(id)),
    }
    stream(&request, &live, Follow::Order(id)).await
}

/// Follow the status of every order of the caller (an operator: of every order) live.
///
/// The stream of `GET /orders/{id}/events` for all of the caller's orders, from the moment it
/// opens (or from `Last-Event-ID`).
#[utoipa::path(
    get,
    path = "/orders/events",
    tag = "orders",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: resume after it"),
    ),
    responses(
        (status = 200, description = "The stream (`text/event-stream`) of `StatusChange` events", body = crate::live::StatusChange, content_type = "text/event-stream"),
        (status = 400, description = "`Last-Event-ID` is not an event id of this API", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or too many streams open (`LIVE__MAX_CONNECTIONS`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "follow orders", skip_all)]
pub async fn all_events(
    request: HttpRequest,
    caller: Identity,
    live: web::Data<Live>,
) -> Result<HttpResponse, Problem> {
    let follow = match Scope::of(caller)?.customer() {
        Some(own) => Follow::Customer(own.to_owned()),
        None => Follow::Everyone,
    };
    stream(&request, &live, follow).await
}
