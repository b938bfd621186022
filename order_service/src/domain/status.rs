use contracts::events::ProcessingStatus;
use sea_orm::entity::prelude::StringLen;
use sea_orm::{DeriveActiveEnum, EnumIter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an order stands. `pending` until the processor decides; then `completed`, `rejected` or
/// `failed`, or `cancelled` when its customer (or an operator) cancelled it while pending. The
/// only moves out of a final status are `failed` -> `completed` and `failed` -> `rejected`: an
/// operator replayed the failed order and the processor, which allows the same moves on a
/// replayed delivery, decided it this time. A cancelled order never moves again.
///
/// Stored as its name (`orders.status`, `order_status_history.status`, `VARCHAR(16)` with a check).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    EnumIter,
    DeriveActiveEnum,
)]
#[serde(rename_all = "snake_case")]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum OrderStatus {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "completed")]
    Completed,
    #[sea_orm(string_value = "rejected")]
    Rejected,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Completed,
        Self::Rejected,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// Whether the order is decided (or cancelled): every status but `pending`.
    pub fn is_final(self) -> bool {
        self != Self::Pending
    }

    /// The statuses an order may move to `self` from. Anything else is a duplicate or a late
    /// event, and is ignored.
    pub fn allowed_predecessors(self) -> &'static [Self] {
        match self {
            Self::Pending => &[],
            Self::Completed | Self::Rejected => &[Self::Pending, Self::Failed],
            Self::Failed | Self::Cancelled => &[Self::Pending],
        }
    }
}

impl From<ProcessingStatus> for OrderStatus {
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

    #[test]
    fn a_final_status_never_moves_back_to_pending_or_sideways() {
        for target in OrderStatus::ALL {
            assert!(
                !target
                    .allowed_predecessors()
                    .contains(&OrderStatus::Completed)
            );
            assert!(
                !target
                    .allowed_predecessors()
                    .contains(&OrderStatus::Rejected)
            );
            assert!(
                !target
                    .allowed_predecessors()
                    .contains(&OrderStatus::Cancelled)
            );
        }
        assert!(OrderStatus::Pending.allowed_predecessors().is_empty());
        assert!(
            !OrderStatus::Failed
                .allowed_predecessors()
                .contains(&OrderStatus::Failed)
        );
    }

    #[test]
    fn a_failed_order_may_end_completed_or_rejected_and_nothing_else_moves() {
        let moves: Vec<(OrderStatus, OrderStatus)> = OrderStatus::ALL
            .into_iter()
            .flat_map(|to| {
                to.allowed_predecessors()
                    .iter()
                    .map(move |&from| (from, to))
            })
            .collect();
        use OrderStatus::*;
        assert_eq!(
            moves,
            [
                (Pending, Completed),
                (Failed, Completed),
                (Pending, Rejected),
                (Failed, Rejected),
                (Pending, Failed),
                (Pending, Cancelled),
            ]
        );
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("PENDING"), None);
    }
}
