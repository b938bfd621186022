use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use contracts::events::OrderLine;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use service_kit::auth::Identity;
use service_kit::http::{FieldError, Object, Problem, read_json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::{
    CustomerId, IdempotencyKey, NewOrder, NewOrderLine, OrderStatus, Price, ProductId, Quantity,
};
use crate::entities::{order, order_status_history};
use crate::store::{Cancelled, Cursor, ListFilter, OrderStore, Placed, StoreError};

/// Answered `true` on a `POST /orders` that found the order its `Idempotency-Key` placed before.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 500;

/// A new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"customer_id": "customer-123", "items": [{"product_id": "product-1", "quantity": 2, "price": 10.50}]}))]
pub struct CreateOrderRequest {
    /// Whose order: with a customer's token, that customer (taken from the token when absent;
    /// another is a 403); an operator names the customer here.
    #[schema(schema_with = super::schemas::identifier)]
    pub customer_id: Option<String>,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    #[schema(value_type = Vec<OrderItemRequest>)]
    pub items: Vec<Object<OrderItemRequest>>,
}

/// One line of a new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItemRequest {
    #[schema(schema_with = super::schemas::identifier)]
    pub product_id: String,
    /// 1 to 10,000: an integer, in any JSON form (`2`, `2.0`, `2e0`).
    #[schema(example = 2, minimum = 1, maximum = 10000)]
    #[serde(deserialize_with = "integer")]
    pub quantity: i64,
    #[schema(schema_with = super::schemas::price)]
    pub price: Box<RawValue>,
}

/// A JSON number whose value is an integer, whatever its form (`2`, `2.0`, `2e0`: JSON Schema's
/// `integer`), read exactly; anything else is a wrong type (400).
fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::{Error, Unexpected};
    let raw = <Box<RawValue> as Deserialize>::deserialize(deserializer)?;
    let text = raw.get();
    let expected = &"an integer";
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(D::Error::invalid_type(Unexpected::Other(text), expected));
    }
    let value = if text.contains(['e', 'E']) {
        rust_decimal::Decimal::from_scientific(text)
    } else {
        text.parse::<rust_decimal::Decimal>()
    }
    .map_err(|_| D::Error::invalid_value(Unexpected::Other(text), expected))?
    .normalize();
    // Digits past what the decimal type holds would have been rounded: not taken.
    if value.scale() != 0 || crate::domain::significant_digits(text) > 28 {
        return Err(D::Error::invalid_type(Unexpected::Other(text), expected));
    }
    i64::try_from(value).map_err(|_| D::Error::invalid_value(Unexpected::Other(text), expected))
}

impl CreateOrderRequest {
    /// Parses every field for `scope`, reporting every offending one with its path; a customer
    /// placing an order for another is a 403.
    pub fn parse(&self, scope: &Scope) -> Result<NewOrder, Problem> {
        let customer_id = match (&self.customer_id, scope) {
            (None, Scope::Customer(own)) => Ok(own.clone()),
            // Schema-valid (a customer's token leaves it out), but an operator must name one.
            (None, Scope::Everyone) => {
                return Err(forbidden_customer(
                    "an operator places orders naming their customer",
                ));
            }
            (Some(text), _) => CustomerId::parse(text),
        };
        if let (Ok(named), Scope::Customer(own)) = (&customer_id, scope)
            && named != own
        {
            return Err(forbidden_customer(
                "a customer places orders only as itself (the token's `sub`)",
            ));
        }
        self.parse_lines(customer_id).map_err(Problem::validation)
    }

    fn parse_lines(
        &self,
        customer_id: Result<CustomerId, String>,
    ) -> Result<NewOrder, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut error = |field: String, message: String| errors.push(FieldError { field, message });
        let customer_id = customer_id.map_err(|m| error("customer_id".into(), m)).ok();
        let mut lines = Vec::with_capacity(self.items.len());
        if self.items.is_empty() || self.items.len() > NewOrder::MAX_LINES {
            error(
                "items".into(),
                format!(
                    "must hold 1 to {} items, got {}",
                    NewOrder::MAX_LINES,
                    self.items.len()
                ),
            );
        } else {
            for (index, Object(item)) in self.items.iter().enumerate() {
                let product_id = ProductId::parse(&item.product_id)
                    .map_err(|m| error(format!("items[{index}].product_id"), m));
                let quantity = Quantity::parse(item.quantity)
                    .map_err(|m| error(format!("items[{index}].quantity"), m));
                let price = Price::parse_json(item.price.get())
                    .map_err(|m| error(format!("items[{index}].price"), m));
                if let (Ok(product_id), Ok(quantity), Ok(price)) = (product_id, quantity, price) {
                    lines.push(NewOrderLine {
                        product_id,
                        quantity,
                        price,
                    });
                }
            }
        }
        match customer_id {
            Some(customer_id) if errors.is_empty() => {
                NewOrder::new(customer_id, lines).map_err(|message| {
                    vec![FieldError {
                        field: "items".into(),
                        message,
                    }]
                })
            }
            _ => Err(errors),
        }
    }
}

/// 403 about `customer_id`: who is asking may not place this order.
fn forbidden_customer(message: &str) -> Problem {
    Problem {
        field: Some("customer_id".into()),
        ..Problem::new(
            actix_web::http::StatusCode::FORBIDDEN,
            service_kit::http::problem_type::FORBIDDEN,
            "Forbidden",
            format!("customer_id: {message}"),
        )
    }
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItemResponse {
    #[schema(example = "product-1")]
    pub product_id: String,
    #[schema(example = 2)]
    pub quantity: u32,
    /// Exact decimal, as a string.
    #[schema(value_type = String, example = "10.50")]
    pub price: Decimal,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    #[schema(example = "0b4f3b8e-6f0a-4a43-9d55-2f4a3f5a9c1e")]
    pub id: Uuid,
    #[schema(example = "customer-123")]
    pub customer_id: String,
    pub items: Vec<OrderItemResponse>,
    /// Sum of quantity x price, exact decimal as a string.
    #[schema(value_type = String, example = "21.00")]
    pub total_amount: Decimal,
    pub status: OrderStatus,
    /// Why the order was rejected or failed; null otherwise.
    #[schema(example = json!(null))]
    pub error_message: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: DateTime<Utc>,
    /// RFC 3339, UTC.
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<order::Model> for OrderResponse {
    type Error = Problem;

    fn try_from(model: order::Model) -> Result<Self, Problem> {
        let lines: Vec<OrderLine> = serde_json::from_value(model.items).map_err(|error| {
            tracing::error!(order_id = %model.id, %error, "stored items do not parse");
            Problem::internal()
        })?;
        let status = model.status;
        Ok(Self {
            id: model.id,
            customer_id: model.customer_id,
            items: lines
                .into_iter()
                .map(|line| OrderItemResponse {
                    product_id: line.product_id,
                    quantity: line.quantity,
                    price: line.price,
                })
                .collect(),
            total_amount: model.total_amount,
            status,
            error_message: model.error_message,
            created_at: model.created_at,
            updated_at: model.updated_at,
        })
    }
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderResponse>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One step of an order's life.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    /// RFC 3339, UTC.
    pub at: DateTime<Utc>,
    /// Why, for `rejected` and `failed`.
    pub reason: Option<String>,
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        if let StoreError::KeyReused(id) = error {
            // 409: the request is fine; the key already names another order.
            let message =
                format!("was used for order {id}, with other items; use a new key for a new order");
            return Problem {
                field: Some(IdempotencyKey::HEADER.into()),
                errors: vec![FieldError {
                    field: IdempotencyKey::HEADER.into(),
                    message: message.clone(),
                }],
                ..Problem::new(
                    actix_web::http::StatusCode::CONFLICT,
                    service_kit::http::problem_type::CONFLICT,
                    "Conflict",
                    format!("{}: {message}", IdempotencyKey::HEADER),
                )
            };
        }
        if let StoreError::Overloaded = error {
            // One line per refusal would flood the log exactly when the service is busiest.
            tracing::debug!("order refused: too many orders waiting to be stored");
            return Problem::overloaded("too many orders are waiting to be stored; retry later");
        }
        Problem::from_failure(&error, "the database")
    }
}

/// Whose orders a request may see and place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A customer's token: its own orders only; another customer's order is not found (404).
    Customer(CustomerId),
    /// An operator: every order.
    Everyone,
}

impl Scope {
    /// The scope of `identity`: a customer's `sub` must be a customer id (else 401).
    pub fn of(identity: Identity) -> Result<Self, Problem> {
        if identity.is_operator() {
            return Ok(Self::Everyone);
        }
        CustomerId::parse(&identity.subject)
            .map(Self::Customer)
            .map_err(|message| {
                service_kit::auth::invalid_token(format!(
                    "the token's `sub` is not a customer id: {message}"
                ))
            })
    }

    /// The customer this scope is kept to; `None`: everyone's.
    pub fn customer(&self) -> Option<&str> {
        match self {
            Self::Customer(own) => Some(own.as_str()),
            Self::Everyone => None,
        }
    }

    /// Whether `order` is in this scope.
    pub fn sees(&self, order: &order::Model) -> bool {
        match self {
            Self::Customer(own) => order.customer_id == own.as_str(),
            Self::Everyone => true,
        }
    }
}

pub(crate) fn not_found(id: Uuid) -> Problem {
    Problem::not_found(format!("order {id} does not exist"))
}

pub(crate) fn parse_order_id(id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id).map_err(|_| Problem::bad_field("id", format!("must be a UUID, got {id:?}")))
}

/// Place an order.
///
/// Stores the order and its `order.created` event in one transaction; the event is published to
/// RabbitMQ right after the commit. The order starts `pending`.
///
/// With an `Idempotency-Key`, retrying is safe: a request whose customer already placed an order
/// under that key, with the same items, stores and publishes nothing and answers that order as it
/// is now, with `Idempotent-Replayed: true`. The same key with other items is refused (409).
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    request_body = CreateOrderRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "1 to 255 printable ASCII characters but quotes and backslashes, spaces only inside, naming this order for its customer (a UUID is a good key), bare or as a quoted string. Send the same key when you retry a request whose answer you did not get.",
            pattern = r#"^([!#-\[\]-~]([ !#-\[\]-~]{0,253}[!#-\[\]-~])?|"[!#-\[\]-~]([ !#-\[\]-~]{0,253}[!#-\[\]-~])?")$"#,
            example = "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ),
    responses(
        (status = 201, description = "Order accepted, or found under its `Idempotency-Key`", body = OrderResponse,
            headers(
                ("Location" = String, description = "/orders/{id}"),
                ("Idempotent-Replayed" = bool, description = "`true` when the order was placed before under this `Idempotency-Key`; absent otherwise"),
            )),
        (status = 400, description = "Malformed JSON, a wrong type or content type, or a malformed `Idempotency-Key`", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within `HTTP__BODY_TIMEOUT_MS`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A customer's token naming another customer in `customer_id`, or an operator naming none", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The `Idempotency-Key` was used for an order with other items; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks a rule; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or too many orders waiting to be stored (load shedding); `Retry-After` says when to retry", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "create order", skip_all, fields(order_id = tracing::field::Empty))]
pub async fn create_order(
    request: HttpRequest,
    caller: Identity,
    payload: web::Payload,
    store: web::Data<OrderStore>,
) -> Result<HttpResponse, Problem> {
    let scope = Scope::of(caller)?;
    let idempotency_key = idempotency_key(&request)?;
    let body: CreateOrderRequest = read_json(&request, payload).await?;
    let new_order = body.parse(&scope)?;
    let (order, replayed) = match store.create(&new_order, idempotency_key.as_ref()).await? {
        Placed::New(order) => (order, false),
        Placed::Existing(order) => (order, true),
    };
    tracing::Span::current().record("order_id", tracing::field::display(order.id));
    let location = format!("/orders/{}", order.id);
    let mut response = HttpResponse::Created();
    response.insert_header((LOCATION, location));
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(OrderResponse::try_from(order)?))
}

/// The request's `Idempotency-Key`, if it has one.
fn idempotency_key(request: &HttpRequest) -> Result<Option<IdempotencyKey>, Problem> {
    let mut values = request.headers().get_all(IdempotencyKey::HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::bad_field(
            IdempotencyKey::HEADER,
            "must be given once",
        ));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|message| Problem::bad_field(IdempotencyKey::HEADER, message))
}

/// Get an order.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderResponse),
        (status = 400, description = "`id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another customer's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "get order", skip(store, caller), fields(order_id = %id))]
pub async fn get_order(
    id: web::Path<String>,
    caller: Identity,
    store: web::Data<OrderStore>,
) -> Result<HttpResponse, Problem> {
    let scope = Scope::of(caller)?;
    let id = parse_order_id(&id)?;
    match store.get(id).await? {
        Some(order) if scope.sees(&order) => {
            Ok(HttpResponse::Ok().json(OrderResponse::try_from(order)?))
        }
        _ => Err(not_found(id)),
    }
}

/// Filters and page of `GET /orders`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this customer's orders. A customer's token sees its own orders only, with or
    /// without this filter.
    #[param(schema_with = super::schemas::identifier)]
    pub customer_id: Option<String>,
    /// Only orders in this status.
    #[param(value_type = Option<OrderStatus>)]
    pub status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    #[param(schema_with = super::schemas::cursor)]
    pub after: Option<String>,
}

impl ListQuery {
    fn parse(&self) -> Result<ListFilter, Problem> {
        let mut errors = Vec::new();
        // Under the rules of a stored one (NFC), so that it finds what was stored.
        let customer_id = match self.customer_id.as_deref() {
            None => None,
            Some(text) => match CustomerId::parse(text) {
                Ok(id) => Some(id.as_str().to_owned()),
                Err(message) => {
                    errors.push(FieldError {
                        field: "customer_id".into(),
                        message,
                    });
                    None
                }
            },
        };
        let status = match self.status.as_deref() {
            None => None,
            Some(text) => {
                let status = OrderStatus::parse(text);
                if status.is_none() {
                    errors.push(FieldError {
                        field: "status".into(),
                        message: "must be one of pending, completed, rejected, failed, cancelled"
                            .into(),
                    });
                }
                status
            }
        };
        let limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => match text.parse::<u64>() {
                Ok(limit) if (1..=MAX_PAGE_SIZE).contains(&limit) => limit,
                _ => {
                    errors.push(FieldError {
                        field: "limit".into(),
                        message: format!("must be an integer from 1 to {MAX_PAGE_SIZE}"),
                    });
                    DEFAULT_PAGE_SIZE
                }
            },
        };
        let after = match self.after.as_deref() {
            None | Some("") => None,
            Some(text) => {
                let cursor = Cursor::decode(text);
                if cursor.is_none() {
                    errors.push(FieldError {
                        field: "after".into(),
                        message: "must be a next_cursor returned by this API".into(),
                    });
                }
                cursor
            }
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        Ok(ListFilter {
            customer_id,
            status,
            limit,
            after,
        })
    }
}

/// List orders, newest first, with keyset pagination.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "A malformed query string (a parameter given twice); `field` is `query`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter or limit; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "list orders", skip_all)]
pub async fn list_orders(
    query: web::Query<ListQuery>,
    caller: Identity,
    store: web::Data<OrderStore>,
) -> Result<HttpResponse, Problem> {
    let scope = Scope::of(caller)?;
    let mut filter = query.parse()?;
    if let Scope::Customer(own) = &scope {
        match &filter.customer_id {
            // Another customer's orders are none of this one's.
            Some(asked) if asked != own.as_str() => {
                return Ok(HttpResponse::Ok().json(OrderPage {
                    items: Vec::new(),
                    next_cursor: None,
                }));
            }
            _ => filter.customer_id = Some(own.as_str().to_owned()),
        }
    }
    let (orders, next) = store.list(&filter).await?;
    let items = orders
        .into_iter()
        .map(OrderResponse::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(OrderPage {
        items,
        next_cursor: next.map(|cursor| cursor.encode()),
    }))
}

/// An order's status history, oldest first, starting with `pending`.
#[utoipa::path(
    get,
    path = "/orders/{id}/history",
    tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The history", body = [HistoryEntry]),
        (status = 400, description = "`id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another customer's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "get order history", skip(store, caller), fields(order_id = %id))]
pub async fn order_history(
    id: web::Path<String>,
    caller: Identity,
    store: web::Data<OrderStore>,
) -> Result<HttpResponse, Problem> {
    let scope = Scope::of(caller)?;
    let id = parse_order_id(&id)?;
    if scope != Scope::Everyone {
        match store.get(id).await? {
            Some(order) if scope.sees(&order) => {}
            _ => return Err(not_found(id)),
        }
    }
    let Some(rows) = store.history(id).await? else {
        return Err(not_found(id));
    };
    let entries: Vec<HistoryEntry> = rows
        .into_iter()
        .map(|row: order_status_history::Model| HistoryEntry {
            status: row.status,
            at: row.at,
            reason: row.reason,
        })
        .collect();
    Ok(HttpResponse::Ok().json(entries))
}

/// Cancel a pending order.
///
/// The order becomes `cancelled`, with a history entry, and `order.cancelled` is published
/// through the outbox in the same transaction; the processor then never decides it, or its
/// verdict, if it raced the cancellation, is superseded. Cancelling a cancelled order again
/// answers it as it is.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order, cancelled (now or before)", body = OrderResponse),
        (status = 400, description = "`id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order, or another customer's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is `completed`, `rejected` or `failed`: too late to cancel; `field` is `status`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(level = "debug", name = "cancel order", skip(store, caller), fields(order_id = %id))]
pub async fn cancel_order(
    id: web::Path<String>,
    caller: Identity,
    store: web::Data<OrderStore>,
) -> Result<HttpResponse, Problem> {
    let operator = caller.is_operator().then(|| caller.subject.clone());
    let scope = Scope::of(caller)?;
    let id = parse_order_id(&id)?;
    match store.cancel(id, scope.customer()).await? {
        Cancelled::Now(order) => {
            // A customer's own cancellation is in the order's history; an operator's is audited.
            if let Some(operator) = operator {
                service_kit::audit::order_action(&operator, service_kit::audit::CANCEL_ORDER, id);
            }
            Ok(HttpResponse::Ok().json(OrderResponse::try_from(order)?))
        }
        Cancelled::Before(order) => Ok(HttpResponse::Ok().json(OrderResponse::try_from(order)?)),
        Cancelled::Decided(order) => {
            let message = format!(
                "order {id} is {}: only a pending order can be cancelled",
                order.status.as_str()
            );
            Err(Problem {
                field: Some("status".into()),
                ..Problem::new(
                    actix_web::http::StatusCode::CONFLICT,
                    service_kit::http::problem_type::CONFLICT,
                    "Conflict",
                    message,
                )
            })
        }
        Cancelled::NotFound => Err(not_found(id)),
    }
}
