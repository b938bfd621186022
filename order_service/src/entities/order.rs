use sea_orm::entity::prelude::*;

use crate::domain::OrderStatus;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub customer_id: String,
    /// `[{"product_id", "quantity", "price"}]`, prices as decimal strings.
    pub items: Json,
    #[sea_orm(column_type = "Decimal(Some((20, 2)))")]
    pub total_amount: Decimal,
    pub status: OrderStatus,
    pub error_message: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The `Idempotency-Key` the order was placed with, unique per customer; NULL without one.
    pub idempotency_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
