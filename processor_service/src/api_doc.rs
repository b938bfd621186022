//! The OpenAPI document, served at `/api-docs/openapi.json` and browsable at `/docs/`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{dead_letters, processed};

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
        shared::http::health,
        shared::http::ready,
    ),
    modifiers(&BearerAuth),
    components(schemas(shared::http::Problem, shared::http::FieldError)),
    tags(
        (name = "processing", description = "The processor's records"),
        (name = "operations", description = "Operator endpoints: dead letters (bearer token)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// The operator endpoints' bearer token.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
