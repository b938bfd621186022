use contracts::events::ProcessingStatus;
use sea_orm::entity::prelude::StringLen;
use sea_orm::entity::prelude::*;

/// One row per order: claimed by the first delivery of its `order.created`, decided once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "processing")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: Uuid,
    pub event_id: Uuid,
    /// Null while the order is undecided.
    pub decision: Option<DecisionStatus>,
    pub reason: Option<String>,
    pub attempts: i32,
    pub first_seen_at: DateTimeUtc,
    pub decided_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A decision as `processing.decision` stores it: its name (`VARCHAR(16)` with a check). The same three as the contract's
/// [`ProcessingStatus`], which stays free of database types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum DecisionStatus {
    #[sea_orm(string_value = "completed")]
    Completed,
    #[sea_orm(string_value = "rejected")]
    Rejected,
    #[sea_orm(string_value = "failed")]
    Failed,
}

impl From<ProcessingStatus> for DecisionStatus {
    fn from(status: ProcessingStatus) -> Self {
        match status {
            ProcessingStatus::Completed => Self::Completed,
            ProcessingStatus::Rejected => Self::Rejected,
            ProcessingStatus::Failed => Self::Failed,
        }
    }
}

impl From<DecisionStatus> for ProcessingStatus {
    fn from(status: DecisionStatus) -> Self {
        match status {
            DecisionStatus::Completed => Self::Completed,
            DecisionStatus::Rejected => Self::Rejected,
            DecisionStatus::Failed => Self::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveEnum, Iterable};

    #[test]
    fn each_stored_decision_is_the_name_of_the_status_it_stands_for() {
        for stored in DecisionStatus::iter() {
            let status = ProcessingStatus::from(stored);
            assert_eq!(stored.to_value(), status.as_str());
            assert_eq!(DecisionStatus::from(status), stored);
            assert_eq!(
                DecisionStatus::try_from_value(&stored.to_value()),
                Ok(stored)
            );
        }
        assert!(DecisionStatus::try_from_value(&"decided".to_owned()).is_err());
    }
}
