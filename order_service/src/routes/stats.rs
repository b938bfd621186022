//! `GET /stats`: the figures of a window (`crate::figures`).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Deserialize;
use service_kit::auth::Identity;
use service_kit::http::{FieldError, Problem};
use utoipa::IntoParams;

use super::orders::Scope;
use crate::domain::CustomerId;
use crate::figures::{self, Window};
use crate::store::OrderStore;

/// The longest window.
const MAX_DAYS: i64 = 31;

/// The window of `GET /stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// RFC 3339; default `until` minus 24 hours. Counted from the start of its minute.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-12-07T00:00:00Z")]
    pub since: Option<String>,
    /// RFC 3339; default now. A window longer than 31 days starts 31 days before `until`; one
    /// where `since` is not before `until` holds nothing. The answer says the window used.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-12-08T00:00:00Z")]
    pub until: Option<String>,
    /// Only this customer's orders (an operator; a customer's token sees its own figures only).
    #[param(schema_with = super::schemas::identifier)]
    pub customer_id: Option<String>,
}

fn time(field: &str, text: Option<&str>, errors: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    let text = text?;
    match DateTime::parse_from_rfc3339(text) {
        Ok(time) => Some(time.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError {
                field: field.into(),
                message: format!("must be an RFC 3339 time, got {text:?}"),
            });
            None
        }
    }
}

impl StatsQuery {
    fn parse(&self, now: DateTime<Utc>) -> Result<Window, Problem> {
        let mut errors = Vec::new();
        let until = time("until", self.until.as_deref(), &mut errors).unwrap_or(now);
        let since = time("since", self.since.as_deref(), &mut errors)
            .unwrap_or(until - Duration::hours(24));
        let customer_id = match self.customer_id.as_deref().map(CustomerId::parse) {
            None => None,
            Some(Ok(id)) => Some(id.as_str().to_owned()),
            Some(Err(message)) => {
                errors.push(FieldError {
                    field: "customer_id".into(),
                    message,
                });
                None
            }
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        // A window the wrong way round holds nothing; one longer than the longest starts later.
        let since = since.min(until).max(until - Duration::days(MAX_DAYS));
        Ok(Window {
            since: since.duration_trunc(Duration::minutes(1)).unwrap_or(since),
            until,
            customer_id,
        })
    }
}

/// The figures of a window.
///
/// For the orders created in the minutes starting in `[since, until)`: how many, by their status
/// now, the revenue of the completed ones, orders placed per minute, and create→decision
/// percentiles (estimated from √2-wide buckets: within a factor √2 of the true value). A
/// customer's token sees its own orders' figures; an operator's everyone's, or one customer's.
/// Read from a rollup kept by the statements that change orders: one row per minute and customer.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "orders",
    params(StatsQuery),
    responses(
        (status = 200, description = "The figures", body = crate::figures::Figures),
        (status = 400, description = "A malformed query string (a parameter given twice); `field` is `query`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A time that is not RFC 3339, or a bad `customer_id`; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "figures", skip_all)]
pub async fn stats(
    query: web::Query<StatsQuery>,
    caller: Identity,
    store: web::Data<OrderStore>,
) -> Result<HttpResponse, Problem> {
    let scope = Scope::of(caller)?;
    let mut window = query.parse(Utc::now())?;
    if let Scope::Customer(own) = &scope {
        match &window.customer_id {
            // Another customer's orders are none of this one's: the figures of nothing.
            Some(asked) if asked != own.as_str() => {
                window.until = window.since;
            }
            _ => window.customer_id = Some(own.as_str().to_owned()),
        }
    }
    let figures = figures::read(store.reads_pool(), &window)
        .await
        .map_err(|error| {
            Problem::from_failure(&messaging::database::from_sqlx(error), "the database")
        })?;
    Ok(HttpResponse::Ok().json(figures))
}
