//! The OpenAPI document, served at `/api-docs/openapi.json` and browsable at `/docs/`.

use service_kit::http::BearerAuth;
use utoipa::OpenApi;

use crate::routes::processed;
use service_kit::dead_letters::http as dead_letters;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "processor_service",
        description = "Decides each order once, from its `order.created` event, and publishes `order.processed`. Errors are `application/problem+json` (RFC 9457).",
    ),
    paths(
        processed::get_processed,
        dead_letters::list_dead_letters,
        dead_letters::replay_dead_letters,
        service_kit::http::health,
        service_kit::http::ready,
    ),
    modifiers(&BearerAuth),
    components(schemas(service_kit::http::Problem, service_kit::http::FieldError)),
    tags(
        (name = "processing", description = "The processor's records"),
        (name = "operations", description = "Operator endpoints: dead letters (bearer token)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;
