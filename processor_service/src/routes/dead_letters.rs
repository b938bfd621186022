//! Operator endpoints: listing and replaying dead letters. They require
//! `Authorization: Bearer <PROCESSOR_SERVICE__ADMIN__TOKEN>`; without the setting they are disabled.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use shared::broker::Broker;
use shared::configuration::Secret;
use shared::http::{Problem, problem_type};
use subtle::ConstantTimeEq;
use utoipa::IntoParams;

use crate::dead_letters::{self, DeadLetter, ReplayRequest, ReplayResult};

/// What the admin endpoints need.
#[derive(Clone)]
pub struct DeadLetterAdmin {
    pub token: Option<Secret>,
    pub broker: Arc<Broker>,
    pub dead_letter_queue: String,
    pub work_queue: String,
}

impl DeadLetterAdmin {
    fn authorize(&self, request: &HttpRequest) -> Result<(), Problem> {
        let Some(token) = &self.token else {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                problem_type::FORBIDDEN,
                "Forbidden",
                "operator endpoints are disabled: set PROCESSOR_SERVICE__ADMIN__TOKEN",
            ));
        };
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                problem_type::UNAUTHORIZED,
                "Unauthorized",
                "a valid `Authorization: Bearer <token>` header is required",
            ))
        }
    }
}

fn broker_problem(error: lapin::Error) -> Problem {
    tracing::warn!(%error, "broker unavailable for a dead-letter operation");
    Problem::unavailable("the broker is unavailable; retry later")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many (default 1000).
    pub limit: Option<usize>,
}

/// List dead-lettered messages without consuming them.
#[utoipa::path(
    get,
    path = "/dead-letters",
    tag = "operations",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The dead letters, oldest first", body = [DeadLetter]),
        (status = 401, description = "Missing or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Operator endpoints disabled (no token configured)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "list dead letters", skip_all)]
pub async fn list_dead_letters(
    request: HttpRequest,
    query: web::Query<ListQuery>,
    admin: web::Data<DeadLetterAdmin>,
) -> Result<HttpResponse, Problem> {
    admin.authorize(&request)?;
    let letters = dead_letters::list(
        &admin.broker,
        &admin.dead_letter_queue,
        query.limit.unwrap_or(1000),
    )
    .await
    .map_err(broker_problem)?;
    Ok(HttpResponse::Ok().json(letters))
}

/// Move dead letters back to the work queue with a fresh attempt count.
///
/// An empty body or `{}` replays all but poison messages; `{"order_ids": [...]}` only those orders;
/// `{"include_poison": true}` poison messages too.
#[utoipa::path(
    post,
    path = "/dead-letters/replay",
    tag = "operations",
    request_body(content = Option<ReplayRequest>, description = "Which dead letters; all when empty"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were replayed", body = ReplayResult),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Operator endpoints disabled (no token configured)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "replay dead letters", skip_all)]
pub async fn replay_dead_letters(
    request: HttpRequest,
    body: web::Bytes,
    admin: web::Data<DeadLetterAdmin>,
) -> Result<HttpResponse, Problem> {
    admin.authorize(&request)?;
    let selection: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| Problem::bad_field("body", error.to_string()))?
    };
    let replayed = dead_letters::replay(
        &admin.broker,
        &admin.dead_letter_queue,
        &admin.work_queue,
        &selection,
    )
    .await
    .map_err(broker_problem)?;
    Ok(HttpResponse::Ok().json(ReplayResult { replayed }))
}
