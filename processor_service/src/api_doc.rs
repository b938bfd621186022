//! The OpenAPI document, served at `/api-docs/openapi.json` and browsable at `/docs/`.

use utoipa::OpenApi;

use crate::routes::processed;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "processor_service",
        description = "Decides each order once, from its `order.created` event, and publishes `order.processed`. Errors are `application/problem+json` (RFC 9457).",
    ),
    paths(processed::get_processed, shared::http::health, shared::http::ready),
    components(schemas(shared::http::Problem, shared::http::FieldError)),
    tags(
        (name = "processing", description = "The processor's records"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;
