use sea_orm::entity::prelude::*;

/// One row per order: claimed by the first delivery of its `order.created`, decided once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "processing")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub attempts: i32,
    pub first_seen_at: DateTimeUtc,
    pub decided_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
