//! Schemas of the OpenAPI document for the fields whose rules a derived schema cannot state: each
//! says exactly what the parser of its field takes, so that a client (or a fuzzer) generating
//! values from the document gets them accepted.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

use crate::domain::{Price, identifier_pattern};
use crate::store::Cursor;

/// `customer_id` and `product_id`: 1 to 64 characters once NFC-normalised, not blank, no
/// control or format (Cf) character.
pub fn identifier() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(identifier_pattern()))
        .description(Some(
            "1 to 64 characters once NFC-normalised, not blank, without control characters or \
             invisible and direction-changing ones (Unicode category Cf)",
        ))
        .examples(["customer-123"])
        .into()
}

/// A price: a JSON number or a string of plain digits, 0 to 1,000,000 with at most 2 decimal
/// places once trailing zeros are dropped.
pub fn price() -> RefOr<Schema> {
    let number = ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(0))
        .maximum(Some(1_000_000))
        .multiple_of(Some(0.01));
    let string = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(Price::STRING_PATTERN));
    OneOfBuilder::new()
        .item(number)
        .item(string)
        .description(Some(
            "Unit price, read exactly (never as a float): a JSON number or a string of plain \
             digits, 0 to 1,000,000 with at most 2 decimal places once trailing zeros are dropped",
        ))
        .examples([serde_json::json!("10.50")])
        .into()
}

/// `after`: a `next_cursor`; empty is the first page.
pub fn cursor() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(Cursor::PATTERN))
        .description(Some(
            "`next_cursor` of the previous page; empty or absent: the first page",
        ))
        .into()
}
