//! Orders as the service understands them: input is parsed once into these types, and a value of
//! them is valid everywhere.

mod idempotency_key;
mod new_order;
mod status;

pub use idempotency_key::IdempotencyKey;
pub use new_order::{
    CustomerId, NewOrder, NewOrderLine, Price, ProductId, Quantity, identifier_pattern,
    significant_digits,
};
pub use status::OrderStatus;
