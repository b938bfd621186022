//! HTTP plumbing both services share: RFC 9457 problem details, reading a JSON body with the path
//! of the offending field, and the health/readiness report.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::configuration::HttpSettings;
use messaging::broker::Broker;
use messaging::failure::{Classify, FailureClass};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The URIs in a problem's `type`, one per kind of problem.
pub mod problem_type {
    pub const VALIDATION: &str = "urn:order-pipeline:problem:validation";
    pub const BAD_REQUEST: &str = "urn:order-pipeline:problem:bad-request";
    pub const CONTENT_TYPE: &str = "urn:order-pipeline:problem:content-type";
    pub const MALFORMED_JSON: &str = "urn:order-pipeline:problem:malformed-json";
    pub const BODY: &str = "urn:order-pipeline:problem:unreadable-body";
    pub const TOO_LARGE: &str = "urn:order-pipeline:problem:too-large";
    pub const HEADERS_TOO_LARGE: &str = "urn:order-pipeline:problem:headers-too-large";
    pub const TIMEOUT: &str = "urn:order-pipeline:problem:timeout";
    pub const TOO_MANY_REQUESTS: &str = "urn:order-pipeline:problem:too-many-requests";
    pub const METHOD_NOT_ALLOWED: &str = "urn:order-pipeline:problem:method-not-allowed";
    pub const CONFLICT: &str = "urn:order-pipeline:problem:conflict";
    pub const NOT_FOUND: &str = "urn:order-pipeline:problem:not-found";
    pub const UNAUTHORIZED: &str = "urn:order-pipeline:problem:unauthorized";
    pub const FORBIDDEN: &str = "urn:order-pipeline:problem:forbidden";
    pub const UNAVAILABLE: &str = "urn:order-pipeline:problem:unavailable";
    pub const OVERLOADED: &str = "urn:order-pipeline:problem:overloaded";
    pub const INTERNAL: &str = "urn:order-pipeline:problem:internal";
}

/// What a 503 answers in `Retry-After`.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One offending field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `items[0].price`.
    #[schema(example = "items[0].price")]
    pub field: String,
    #[schema(example = "must have at most 2 decimal places")]
    pub message: String,
}

/// An error response (RFC 9457, `application/problem+json`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "urn:order-pipeline:problem:validation")]
    pub kind: &'static str,
    #[schema(example = "Validation failed")]
    pub title: &'static str,
    #[schema(example = 422)]
    pub status: u16,
    #[schema(example = "items[0].price: must have at most 2 decimal places")]
    pub detail: String,
    /// The first offending field, when the problem is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "items[0].price")]
    pub field: Option<String>,
    /// Every offending field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The `WWW-Authenticate` challenge of a 401 or 403 (RFC 6750).
    #[serde(skip)]
    pub challenge: Option<Challenge>,
}

/// A `WWW-Authenticate: Bearer` challenge (RFC 6750); the description is the problem's detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// No credentials were given: the scheme alone.
    Bearer,
    /// The token is not accepted.
    InvalidToken,
    /// The token is valid but does not allow this.
    InsufficientScope,
}

impl Challenge {
    fn header(self, detail: &str) -> String {
        let error = match self {
            Self::Bearer => return "Bearer".into(),
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        };
        // A quoted-string: no quotes or backslashes inside, and only visible ASCII and spaces.
        let description: String = detail
            .chars()
            .map(|c| match c {
                '"' | '\\' => '\'',
                ' '..='~' => c,
                _ => '?',
            })
            .collect();
        format!("Bearer error=\"{error}\", error_description=\"{description}\"")
    }
}

impl Problem {
    /// `kind` is the URI naming the problem (see [`problem_type`]).
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            challenge: None,
        }
    }

    /// 422: the request is well-formed but these fields are invalid.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            field: errors.first().map(|e| e.field.clone()),
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                problem_type::VALIDATION,
                "Validation failed",
                detail,
            )
        }
    }

    /// 400 about one field (a wrong type, a malformed value).
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            detail: format!("{field}: {message}"),
            field: Some(field.clone()),
            errors: vec![FieldError { field, message }],
            ..Self::new(
                StatusCode::BAD_REQUEST,
                problem_type::BAD_REQUEST,
                "Bad request",
                "",
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            problem_type::NOT_FOUND,
            "Not found",
            detail,
        )
    }

    /// 503: a dependency (the database) is unavailable; the client may retry.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            problem_type::UNAVAILABLE,
            "Service unavailable",
            detail,
        )
    }

    /// 503: too much work waiting; refused at once so that the client retries later (load
    /// shedding) instead of waiting in a queue that only grows.
    pub fn overloaded(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            problem_type::OVERLOADED,
            "Overloaded",
            detail,
        )
    }

    /// The problem for a failure of `dependency` (say, "the database"), classified once
    /// ([`messaging::failure`]): unavailable or transient is a 503 with `Retry-After`, never a 500;
    /// a real error is a 500 and is logged with its cause.
    pub fn from_failure<E: Classify + std::fmt::Display>(error: &E, dependency: &str) -> Self {
        match error.class() {
            FailureClass::Unavailable => {
                tracing::warn!(%error, "{dependency} is unavailable");
                Self::unavailable(format!("{dependency} is unavailable; retry later"))
            }
            FailureClass::Transient => {
                tracing::warn!(%error, "{dependency} failed transiently");
                Self::unavailable(format!("{dependency} failed transiently; retry"))
            }
            FailureClass::Error => {
                tracing::error!(%error, "{dependency} failed");
                Self::internal()
            }
        }
    }

    /// 429: this client asked too often; `Retry-After` says when it may ask again.
    pub fn too_many_requests(wait: Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            problem_type::TOO_MANY_REQUESTS,
            "Too many requests",
            format!("retry in {} ms", wait.as_millis().max(1)),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            problem_type::INTERNAL,
            "Internal server error",
            "the error was logged",
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem as a response; a 503 says when to retry (`Retry-After`, seconds).
    pub fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type(PROBLEM_JSON);
        if let Some(challenge) = self.challenge {
            response.insert_header((
                actix_web::http::header::WWW_AUTHENTICATE,
                challenge.header(&self.detail),
            ));
        }
        if matches!(
            self.status_code(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response.insert_header((actix_web::http::header::RETRY_AFTER, RETRY_AFTER_SECONDS));
        }
        // The rest of the body was not read: the connection cannot carry another request.
        if matches!(
            self.status_code(),
            StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
        ) {
            response.force_close();
        }
        response.json(self)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        Problem::status_code(self)
    }

    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`]: 415-style content-type errors and malformed
/// JSON are 400, an oversized body 413, and a wrong type names the field's path.
pub async fn read_json<T: DeserializeOwned>(
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<T, Problem> {
    let content_type = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let is_json = content_type
        .split(';')
        .next()
        .map(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false);
    if !is_json {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            problem_type::CONTENT_TYPE,
            "Unsupported content type",
            format!("expected Content-Type: application/json, got {content_type:?}"),
        ));
    }
    let body = read_body(request, payload).await?;
    let deserializer = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(deserializer)
        .map(|Object(value)| value)
        .map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    problem_type::MALFORMED_JSON,
                    "Malformed JSON",
                    inner.to_string(),
                );
            }
            let message = strip_position(&inner.to_string());
            Problem::bad_field(field_of(&path, &message), message)
        })
}

/// The longest wait for a request's whole body ([`serve`] puts it in the app data).
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeout(pub Duration);

/// Reads a body of at most [`MAX_BODY_BYTES`] within the [`BodyTimeout`]: a larger body is 413,
/// a slower client 408 (the connection is closed either way: the rest of the body is not read).
pub async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
) -> Result<web::BytesMut, Problem> {
    let deadline = request
        .app_data::<BodyTimeout>()
        .map_or(Duration::from_secs(10), |timeout| timeout.0);
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    problem_type::BODY,
                    "Unreadable body",
                    e.to_string(),
                )
            })?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    problem_type::TOO_LARGE,
                    "Payload too large",
                    format!("the body must be at most {MAX_BODY_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(deadline, read).await.map_err(|_| {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            problem_type::TIMEOUT,
            "Request timeout",
            format!("the body did not arrive within {} ms", deadline.as_millis()),
        )
    })?
}

/// At most this many request headers...
pub const MAX_HEADERS: usize = 64;
/// ...and this many bytes of header names and values together; more is 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses a request with too many or too large headers (431) before any handler runs. (actix
/// itself refuses a head over 128 KiB or with more than 96 headers, without a body.)
pub async fn limit_headers<B: actix_web::body::MessageBody + 'static>(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error> {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let problem = Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            problem_type::HEADERS_TOO_LARGE,
            "Request header fields too large",
            format!(
                "at most {MAX_HEADERS} headers of at most {MAX_HEADER_BYTES} bytes together are accepted"
            ),
        );
        return Ok(request
            .into_response(problem.response())
            .map_into_right_body());
    }
    next.call(request)
        .await
        .map(actix_web::dev::ServiceResponse::map_into_left_body)
}

/// A `T` read from a JSON object only: serde also builds a struct from an array of its fields in
/// order (`["customer-1", [...]]`), which no document of this API describes.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(Object)
    }
}

/// The offending field. serde_path_to_error's path ends at the field for a wrong type or an
/// unknown field, but at the parent for a missing one, which only the message names.
fn field_of(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_owned(),
    }
}

/// serde_json appends " at line 1 column 42"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// A resource at `path` whose methods are `allow` (`"GET, POST"`): any other method is 405
/// problem+json with `Allow`. Add its methods with `.route(...)`.
pub fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut response = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            problem_type::METHOD_NOT_ALLOWED,
            "Method not allowed",
            format!("this resource answers {allow}"),
        )
        .response();
        response.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    }))
}

/// Answer for unknown routes.
pub async fn not_found() -> HttpResponse {
    Problem::not_found("no such resource").response()
}

/// State of each dependency: `"ok"` or what went wrong.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Checks {
    #[schema(example = "ok")]
    pub database: String,
    #[schema(example = "ok")]
    pub broker: String,
}

/// The body of `/health` and `/ready`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `ready` when every check is `ok`, otherwise `not_ready`.
    #[schema(example = "ready")]
    pub status: String,
    pub checks: Checks,
}

impl HealthReport {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

/// Pings the database and the broker (each bounded by a timeout): both must answer, and the
/// broker must not block publishing. A check that fails says why without credentials, user or
/// host names ([`messaging::disclose`]); the log has the whole error.
pub async fn check_dependencies(db: &DatabaseConnection, broker: &Broker) -> HealthReport {
    let database = match tokio::time::timeout(Duration::from_secs(2), db.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "the database does not answer the readiness ping");
            format!("error: {}", messaging::disclose::database(&error))
        }
        Err(_) => "error: no answer within 2 s".to_owned(),
    };
    let broker = match broker.probe(Duration::from_secs(2)).await {
        Ok(()) => "ok".to_owned(),
        Err(error) => format!("error: {error}"),
    };
    let ready = database == "ok" && broker == "ok";
    HealthReport {
        status: if ready { "ready" } else { "not_ready" }.to_owned(),
        checks: Checks { database, broker },
    }
}

/// `GET /health`: liveness. 200 while the process runs, with the same report as `/ready`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "The process runs; the checks say how its dependencies are", body = HealthReport))
)]
pub async fn health(
    db: web::Data<DatabaseConnection>,
    broker: web::Data<std::sync::Arc<Broker>>,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .json(check_dependencies(&db, &broker).await)
}

/// `GET /ready`: readiness. 200 when PostgreSQL and RabbitMQ are reachable, otherwise 503.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready: database and broker reachable", body = HealthReport),
        (status = 503, description = "Not ready: a check says what is wrong", body = HealthReport),
    )
)]
pub async fn ready(
    db: web::Data<DatabaseConnection>,
    broker: web::Data<std::sync::Arc<Broker>>,
) -> HttpResponse {
    let report = check_dependencies(&db, &broker).await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(report)
}

/// Error handlers that turn actix's own extractor errors into problem details.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|error, _| Problem::bad_field("query", error.to_string()).into())
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|error, _| Problem::bad_field("path", error.to_string()).into())
}

/// The span of a request: the server span of its trace, a child of the caller's span when the
/// request carries a valid W3C `traceparent` (and `tracestate`), the root of a new trace
/// otherwise. Its attributes are the OpenTelemetry HTTP server conventions' required ones
/// (method, route template, status) and, for an error, its message: each attribute is paid for
/// on every request, and the path, peer and user agent are in the access path of any proxy.
/// It writes no log line of its own; what happens to an order is logged once, with its ids,
/// where it happens. Errors still are.
pub struct TracedRootSpan;

impl tracing_actix_web::RootSpanBuilder for TracedRootSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        let method = request.method().as_str();
        let route = request.match_pattern();
        let route = route.as_deref().unwrap_or("default");
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
        );
        if span.is_disabled() {
            return span;
        }
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let parent = messaging::trace::TraceContext::parse(
            header(messaging::trace::TRACEPARENT),
            header(messaging::trace::TRACESTATE),
        );
        messaging::trace::continue_from(&span, parent.as_ref());
        span
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        let (status, error) = match outcome {
            Ok(response) => (
                response.status(),
                response
                    .response()
                    .error()
                    .map(|error| error.as_response_error().to_string()),
            ),
            Err(error) => (
                error.as_response_error().status_code(),
                Some(error.as_response_error().to_string()),
            ),
        };
        span.record("http.response.status_code", status.as_u16());
        // A client's mistake is not the server's error (the conventions' rule for server spans).
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        if let Some(message) = error {
            span.record("exception.message", message);
        }
    }
}

/// The operations routes every service has: `/health`, `/ready`, `/metrics` and the dead-letter
/// endpoints. The database pool, the broker, the
/// [`DeadLetterAdmin`](crate::dead_letters::http::DeadLetterAdmin) and the
/// [`Scrape`](crate::prometheus::Scrape) must be in the app data.
pub fn operations(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health", "GET").route(web::get().to(health)))
        .service(resource("/ready", "GET").route(web::get().to(ready)))
        .service(resource("/metrics", "GET").route(web::get().to(crate::prometheus::metrics)))
        .configure(crate::dead_letters::http::configure);
}

/// The HTTP server both services run: request tracing, problem-details errors for extractors and
/// unknown routes, Swagger UI at `/docs/` and the OpenAPI document at `/api-docs/openapi.json`.
/// `configure` adds the service's routes and state.
pub fn serve<F>(
    listener: std::net::TcpListener,
    http: &HttpSettings,
    grace: Duration,
    openapi: utoipa::openapi::OpenApi,
    metrics: crate::prometheus::HttpMetrics,
    configure: F,
) -> std::io::Result<actix_web::dev::Server>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    use actix_web::{App, HttpServer};
    let body_timeout = BodyTimeout(http.body_timeout);
    let metrics = web::Data::new(metrics);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(limit_headers))
            .wrap(tracing_actix_web::TracingLogger::<TracedRootSpan>::new())
            // Outermost: every answer is counted, those of the layers above included.
            .wrap(actix_web::middleware::from_fn(
                crate::prometheus::record_requests,
            ))
            .app_data(metrics.clone())
            .app_data(body_timeout)
            .app_data(query_config())
            .app_data(path_config())
            .configure(configure.clone())
            .route(
                "/docs",
                web::get().to(|| async {
                    HttpResponse::PermanentRedirect()
                        .insert_header(("Location", "/docs/"))
                        .finish()
                }),
            )
            .service(
                utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
                    .url("/api-docs/openapi.json", openapi.clone()),
            )
            .default_service(web::to(not_found))
    });
    let server = if http.workers == 0 {
        server
    } else {
        server.workers(http.workers)
    };
    Ok(server
        .keep_alive(http.keep_alive)
        .client_request_timeout(http.head_timeout)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(grace.as_secs())
        .run())
}

/// Paths open to anyone: monitoring, with no order data.
pub const OPEN_PATHS: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Declares the `bearer` security scheme in an OpenAPI document (`modifiers(&BearerAuth)`) and
/// requires it, with its 401 answer, on every operation but those of [`OPEN_PATHS`], so that
/// Swagger UI's "Authorize" works with them.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            utoipa::openapi::security::SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT from the configured identity provider (a customer's, or an \
                         operator's with the operator role), or the static operator token",
                    ))
                    .build(),
            ),
        );
        let unauthorized = ResponseBuilder::new()
            .description(
                "No token, or one this service does not accept; `WWW-Authenticate` says why",
            )
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if OPEN_PATHS.contains(&path.as_str()) {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                operation
                    .responses
                    .responses
                    .entry("401".into())
                    .or_insert_with(|| RefOr::T(unauthorized.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_fields_are_named_with_their_path() {
        assert_eq!(field_of(".", "missing field `customer_id`"), "customer_id");
        assert_eq!(
            field_of("items[0]", "missing field `price`"),
            "items[0].price"
        );
        assert_eq!(
            field_of("items[0].quantity", "invalid type: string"),
            "items[0].quantity"
        );
        assert_eq!(
            field_of("colour", "unknown field `colour`, expected"),
            "colour"
        );
        assert_eq!(field_of(".", "invalid type: sequence"), "body");
    }
}
