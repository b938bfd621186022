//! The order page at `/`: HTML, script and style embedded in the binary, nothing loaded from
//! elsewhere (the Content-Security-Policy says so), calling this service's API with the same
//! authentication. The operator view reaches the processor's dead letters through
//! [`processor_dead_letters`]: one origin for the browser (no CORS to configure, the token never
//! sent to a second origin, the processor's port never published to browsers).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use service_kit::auth::Identity;
use service_kit::http::Problem;

const INDEX: &str = include_str!("../page/index.html");
const SCRIPT: &str = include_str!("../page/app.js");
const STYLE: &str = include_str!("../page/style.css");

/// Scripts and styles from this origin only, and the API: nothing inline, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// Where the processor's HTTP API is, and a client for it.
#[derive(Clone)]
pub struct Processor {
    pub url: String,
    pub client: processor_client::Client,
}

/// The processor's operator endpoints for its dead letters (`GET /dead-letters`, `POST
/// /dead-letters/replay`) under `/processor/...`: for an operator here, the request goes on with
/// its `Authorization`, and the processor's answer comes back as it is.
pub async fn processor_dead_letters(
    request: HttpRequest,
    caller: Identity,
    body: web::Bytes,
    processor: web::Data<Processor>,
) -> Result<HttpResponse, Problem> {
    caller.operator()?;
    let path = request
        .path()
        .strip_prefix("/processor")
        .unwrap_or("/dead-letters");
    let mut url = format!("{}{path}", processor.url.trim_end_matches('/'));
    if !request.query_string().is_empty() {
        url = format!("{url}?{}", request.query_string());
    }
    let method = if request.method() == actix_web::http::Method::POST {
        processor_client::Method::POST
    } else {
        processor_client::Method::GET
    };
    let mut forwarded = processor.client.request(method, &url);
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        forwarded = forwarded.header(processor_client::header::AUTHORIZATION, value.as_bytes());
    }
    if let Some(value) = request.headers().get(header::CONTENT_TYPE) {
        forwarded = forwarded.header(processor_client::header::CONTENT_TYPE, value.as_bytes());
    }
    let unavailable = |error: processor_client::Error| {
        tracing::warn!(%error, "the processor's dead-letter endpoints do not answer");
        Problem::unavailable("the processor does not answer; retry later")
    };
    let answer = forwarded
        .body(body.to_vec())
        .send()
        .await
        .map_err(unavailable)?;
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16())
        .map_err(|_| Problem::internal())?;
    let content_type = answer
        .headers()
        .get(processor_client::header::CONTENT_TYPE)
        .and_then(|value| HeaderValue::from_bytes(value.as_bytes()).ok());
    let bytes = answer.bytes().await.map_err(unavailable)?;
    let mut response = HttpResponse::build(status);
    if let Some(content_type) = content_type {
        response.insert_header((header::CONTENT_TYPE, content_type));
    }
    Ok(response.body(bytes))
}
