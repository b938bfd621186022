//! The business rules: deterministic, so a redelivered order always gets the same verdict.

use contracts::events::{OrderCreated, ProcessingStatus};
use rust_decimal::Decimal;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub status: ProcessingStatus,
    pub reason: Option<String>,
}

/// Rejects an order whose total exceeds `max_total`; completes any other.
pub fn decide(order: &OrderCreated, max_total: Decimal) -> Decision {
    if order.total_amount > max_total {
        Decision {
            status: ProcessingStatus::Rejected,
            reason: Some(format!(
                "order total {} exceeds the maximum of {max_total}",
                order.total_amount
            )),
        }
    } else {
        Decision {
            status: ProcessingStatus::Completed,
            reason: None,
        }
    }
}

/// A message whose total disagrees with its lines is not one we can trust to decide on. The sum is
/// checked: lines whose product or sum leaves the range of a decimal are refused, not a panic.
pub fn check_total(order: &OrderCreated) -> Result<(), String> {
    let sum = order.items.iter().try_fold(Decimal::ZERO, |sum, line| {
        Decimal::from(line.quantity)
            .checked_mul(line.price)
            .and_then(|amount| sum.checked_add(amount))
    });
    let Some(sum) = sum else {
        return Err("the sum of the items overflows a decimal".into());
    };
    if sum == order.total_amount {
        Ok(())
    } else {
        Err(format!(
            "total_amount {} differs from the sum of its items {sum}",
            order.total_amount
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use contracts::events::OrderLine;
    use uuid::Uuid;

    fn order(total: i64) -> OrderCreated {
        OrderCreated {
            order_id: Uuid::new_v4(),
            customer_id: "c".into(),
            items: vec![OrderLine {
                product_id: "p".into(),
                quantity: 1,
                price: Decimal::new(total, 2),
            }],
            total_amount: Decimal::new(total, 2),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn the_limit_itself_is_allowed_and_a_cent_more_is_rejected() {
        let max = Decimal::new(1_000_000, 2);
        assert_eq!(
            decide(&order(1_000_000), max).status,
            ProcessingStatus::Completed
        );
        let rejected = decide(&order(1_000_001), max);
        assert_eq!(rejected.status, ProcessingStatus::Rejected);
        assert!(
            rejected
                .reason
                .unwrap()
                .contains("exceeds the maximum of 10000.00")
        );
    }

    #[test]
    fn a_total_that_disagrees_with_its_lines_is_refused() {
        let mut bad = order(100);
        bad.total_amount = Decimal::new(99, 2);
        assert!(check_total(&bad).is_err());
        assert!(check_total(&order(100)).is_ok());
    }

    #[test]
    fn lines_that_overflow_a_decimal_are_refused_not_a_panic() {
        let mut huge = order(100);
        huge.items[0].quantity = u32::MAX;
        huge.items[0].price = "79228162514264337593543950".parse().unwrap();
        huge.total_amount = Decimal::ONE;
        let refused = check_total(&huge).unwrap_err();
        assert!(refused.contains("overflows"), "{refused}");
    }
}
