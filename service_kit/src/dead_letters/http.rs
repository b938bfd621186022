//! Operator endpoints of a service's dead-letter queue: `GET /dead-letters` and
//! `POST /dead-letters/replay`. They require an operator ([`crate::auth`]: an operator's JWT, the
//! static `{PREFIX}__ADMIN__TOKEN`, or a loopback client while nothing is configured). Each client
//! address may make `ADMIN__REQUESTS_PER_SECOND` requests a second (`ADMIN__BURST` at once);
//! beyond, 429. A request is refused before its body is read: first by the rate, then by its
//! credentials.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{DeadLetter, ReplayRequest, ReplayResult};
use crate::auth::Authenticator;
use crate::configuration::AdminSettings;
use crate::http::Problem;
use messaging::broker::Broker;
use messaging::meter::{Counter, Meter};

/// Client addresses remembered by the rate limit before the idle ones are forgotten.
const REMEMBERED_CLIENTS: usize = 10_000;

/// What the admin endpoints need.
#[derive(Clone)]
pub struct DeadLetterAdmin {
    authenticator: Authenticator,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    broker: Arc<Broker>,
    dead_letter_queue: String,
    work_queue: String,
    replays: Counter,
}

/// Adds the two routes; `admin` must be in the app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::http::resource;
    cfg.service(resource("/dead-letters", "GET").route(web::get().to(list_dead_letters)))
        .service(
            resource("/dead-letters/replay", "POST").route(web::post().to(replay_dead_letters)),
        );
}

impl DeadLetterAdmin {
    pub fn new(
        settings: &AdminSettings,
        authenticator: Authenticator,
        broker: Arc<Broker>,
        dead_letter_queue: String,
        work_queue: String,
    ) -> Self {
        let quota = Quota::per_second(
            NonZeroU32::new(settings.requests_per_second).unwrap_or(NonZeroU32::MIN),
        )
        .allow_burst(NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN));
        Self {
            authenticator,
            limiter: Arc::new(RateLimiter::keyed(quota)),
            broker,
            dead_letter_queue,
            work_queue,
            replays: Meter::disabled().counter("dead_letter_replays_total", "", &[]),
        }
    }

    /// Counts the messages replayed through these endpoints in `meter`.
    pub fn counting_replays(mut self, meter: &Meter) -> Self {
        self.replays = meter.counter(
            "dead_letter_replays_total",
            "Dead letters replayed to their work queue through POST /dead-letters/replay, by queue.",
            &[("queue", self.dead_letter_queue.clone())],
        );
        self
    }

    /// The rate limit, then the credentials, both from the request's head alone; answers who
    /// made the request for `action` (its audit subject). A refusal for the credentials is
    /// audited; one for the rate is not (it would log as fast as a client can send).
    async fn admit(&self, request: &HttpRequest, action: &str) -> Result<String, Problem> {
        self.limit(request)?;
        let identity = self
            .authenticator
            .identify(request)
            .await
            .and_then(crate::auth::Identity::operator)
            .inspect_err(|problem| {
                let client = request.peer_addr().map(|address| address.ip());
                crate::audit::refused(action, client, problem.title);
            })?;
        Ok(identity.subject)
    }

    fn limit(&self, request: &HttpRequest) -> Result<(), Problem> {
        let Some(client) = request.peer_addr().map(|address| address.ip()) else {
            return Ok(());
        };
        if self.limiter.len() > REMEMBERED_CLIENTS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            Problem::too_many_requests(wait)
        })
    }
}

fn broker_problem(error: super::DeadLetterError) -> Problem {
    match error {
        super::DeadLetterError::Broker(error) => Problem::from_failure(&error, "the broker"),
        busy @ super::DeadLetterError::Busy(_) => {
            tracing::warn!(error = %busy, "dead letters busy");
            Problem::unavailable(format!("{busy}; retry later"))
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many, 1 to 10,000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
}

/// Most dead letters listed by one request.
pub const MAX_LIST: usize = 10_000;

impl ListQuery {
    fn limit(&self) -> Result<usize, Problem> {
        match self.limit.as_deref() {
            None => Ok(1000),
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_LIST).contains(&limit) => Ok(limit),
                _ => Err(Problem::validation(vec![crate::http::FieldError {
                    field: "limit".into(),
                    message: format!("must be an integer from 1 to {MAX_LIST}"),
                }])),
            },
        }
    }
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
        (status = 400, description = "A malformed query string (a parameter given twice); `field` is `query`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit` out of range", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or a wrong token; `WWW-Authenticate` says why", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A customer's token: operators only", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; `Retry-After` says when to try again", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker unavailable, or another listing or replay of the queue held it for 30 s", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "list dead letters", skip_all)]
pub async fn list_dead_letters(
    request: HttpRequest,
    query: web::Query<ListQuery>,
    admin: web::Data<DeadLetterAdmin>,
) -> Result<HttpResponse, Problem> {
    const ACTION: &str = crate::audit::LIST_DEAD_LETTERS;
    let subject = admin.admit(&request, ACTION).await?;
    let letters = super::list(&admin.broker, &admin.dead_letter_queue, query.limit()?)
        .await
        .map_err(broker_problem)?;
    crate::audit::operator_action(&subject, ACTION, &admin.dead_letter_queue, letters.len());
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
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or a wrong token; `WWW-Authenticate` says why", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A customer's token: operators only", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests from this address; `Retry-After` says when to try again", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker unavailable, or another listing or replay of the queue held it for 30 s", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(name = "replay dead letters", skip_all)]
pub async fn replay_dead_letters(
    request: HttpRequest,
    payload: web::Payload,
    admin: web::Data<DeadLetterAdmin>,
) -> Result<HttpResponse, Problem> {
    const ACTION: &str = crate::audit::REPLAY_DEAD_LETTERS;
    let subject = admin.admit(&request, ACTION).await?;
    let body = crate::http::read_body(&request, payload).await?;
    // An empty body, `null` and `{}` all select every dead letter but poison messages; anything
    // else must be JSON (white space alone is not).
    let selection: ReplayRequest = if body.is_empty() {
        ReplayRequest::default()
    } else {
        // An object or null, never the array form serde would also take for a struct.
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| Problem::bad_field("body", error.to_string()))?;
        match value {
            serde_json::Value::Null => ReplayRequest::default(),
            serde_json::Value::Object(_) => serde_json::from_value(value)
                .map_err(|error| Problem::bad_field("body", error.to_string()))?,
            _ => return Err(Problem::bad_field("body", "must be a JSON object or null")),
        }
    };
    let replayed = super::replay(
        &admin.broker,
        &admin.dead_letter_queue,
        &admin.work_queue,
        &selection,
    )
    .await
    .map_err(broker_problem)?;
    admin.replays.increment(replayed as u64);
    crate::audit::operator_action(&subject, ACTION, &admin.dead_letter_queue, replayed);
    Ok(HttpResponse::Ok().json(ReplayResult { replayed }))
}
