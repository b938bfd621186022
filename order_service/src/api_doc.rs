//! The OpenAPI document, served at `/api-docs/openapi.json` and browsable at `/docs/`.

use service_kit::http::BearerAuth;
use utoipa::OpenApi;

use crate::routes::{events, orders, stats};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order_service",
        description = "Takes orders, stores each with its `order.created` event in one transaction, and reports the processor's verdict. Errors are `application/problem+json` (RFC 9457) naming the offending field.",
    ),
    paths(
        orders::create_order,
        orders::get_order,
        orders::list_orders,
        orders::order_history,
        orders::cancel_order,
        events::order_events,
        events::all_events,
        stats::stats,
        service_kit::dead_letters::http::list_dead_letters,
        service_kit::dead_letters::http::replay_dead_letters,
        service_kit::http::health,
        service_kit::http::ready,
    ),
    modifiers(&BearerAuth),
    components(schemas(service_kit::http::Problem, service_kit::http::FieldError)),
    tags(
        (name = "orders", description = "Placing and following orders"),
        (name = "operations", description = "Operator endpoints: dead letters of `order.processed` (bearer token)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;
