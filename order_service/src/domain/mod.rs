//! Orders as the service understands them: input is parsed once into these types, and a value of
//! them is valid everywhere.

mod new_order;
mod status;

pub use new_order::{CustomerId, NewOrder, NewOrderLine, Price, ProductId, Quantity};
pub use status::OrderStatus;
