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

/// A decision as `processing.decision` stores it: its name (`VARCHAR(16)` with a check). The
/// three verdicts of the contract's [`ProcessingStatus`] (which stays free of database types),
/// and `cancelled`: the order service cancelled the order, which is never announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum DecisionStatus {
    #[sea_orm(string_value = "completed")]
    Completed,
    #[sea_orm(string_value = "rejected")]
    Rejected,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl DecisionStatus {
    pub const ALL: [Self; 4] = [
        Self::Completed,
        Self::Rejected,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self.verdict() {
            Some(verdict) => verdict.as_str(),
            None => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// The verdict `order.processed` announces; `None` for a cancellation.
    pub fn verdict(self) -> Option<ProcessingStatus> {
        match self {
            Self::Completed => Some(ProcessingStatus::Completed),
            Self::Rejected => Some(ProcessingStatus::Rejected),
            Self::Failed => Some(ProcessingStatus::Failed),
            Self::Cancelled => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveEnum, Iterable};

    #[test]
    fn each_stored_decision_is_its_name_and_each_verdict_one_of_them() {
        for stored in DecisionStatus::iter() {
            assert_eq!(stored.to_value(), stored.as_str());
            assert_eq!(DecisionStatus::parse(stored.as_str()), Some(stored));
            assert_eq!(
                DecisionStatus::try_from_value(&stored.to_value()),
                Ok(stored)
            );
            if let Some(verdict) = stored.verdict() {
                assert_eq!(verdict.as_str(), stored.as_str());
                assert_eq!(DecisionStatus::from(verdict), stored);
            }
        }
        assert_eq!(DecisionStatus::Cancelled.verdict(), None);
        assert!(DecisionStatus::try_from_value(&"decided".to_owned()).is_err());
    }
}
