//! sea-orm entities of the order service's tables.

pub mod order;
pub mod order_status_history;
