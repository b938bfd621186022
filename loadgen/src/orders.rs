//! The orders loadgen posts: varied customers, 1 to 5 lines, totals below the rejection limit
//! unless asked otherwise.

use rust_decimal::Decimal;
use serde_json::{Value, json};

/// Customers `customer-1` to `customer-{CUSTOMERS}`: the orders posted and the history seeded
/// belong to the same ones.
pub const CUSTOMERS: u32 = 1000;

pub struct OrderMaker {
    rng: fastrand::Rng,
    max_total: Decimal,
    reject_ratio: f64,
}

impl OrderMaker {
    pub fn new(seed: u64, max_total: Decimal, reject_ratio: f64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            max_total,
            reject_ratio,
        }
    }

    /// The next order body, and whether its total exceeds the limit.
    pub fn next_order(&mut self) -> (Value, bool) {
        let over = self.rng.f64() < self.reject_ratio;
        let lines = self.rng.usize(1..=5);
        // Each line stays below max_total / 5 unless the order must go over the limit, when one
        // line alone exceeds it.
        let cap_cents = (self.max_total * Decimal::from(100) / Decimal::from(5))
            .trunc()
            .try_into()
            .unwrap_or(1_000_000i64)
            .max(2);
        let items: Vec<Value> = (0..lines)
            .map(|line| {
                let (quantity, price) = if over && line == 0 {
                    (
                        1,
                        self.max_total + Decimal::new(self.rng.i64(1..=10_000), 2),
                    )
                } else {
                    let quantity = self.rng.i64(1..=3);
                    let price_cents = self.rng.i64(1..cap_cents / quantity);
                    (quantity, Decimal::new(price_cents, 2))
                };
                json!({
                    "product_id": format!("product-{}", self.rng.u32(1..=500)),
                    "quantity": quantity,
                    "price": price.to_string(),
                })
            })
            .collect();
        let body = json!({
            "customer_id": format!("customer-{}", self.rng.u32(1..=CUSTOMERS)),
            "items": items,
        });
        (body, over)
    }
}

/// The exact total of an order body (for tests and checks).
pub fn total(body: &Value) -> Decimal {
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    let price: Decimal = item["price"]
                        .as_str()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or_default();
                    price * Decimal::from(item["quantity"].as_i64().unwrap_or(0))
                })
                .sum()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_respect_the_limit_and_the_reject_ratio() {
        let max: Decimal = "10000.00".parse().unwrap();
        let mut maker = OrderMaker::new(7, max, 0.0);
        for _ in 0..1000 {
            let (body, over) = maker.next_order();
            assert!(!over);
            assert!(total(&body) <= max, "{body}");
            let lines = body["items"].as_array().unwrap().len();
            assert!((1..=5).contains(&lines));
        }
        let mut maker = OrderMaker::new(7, max, 1.0);
        for _ in 0..100 {
            let (body, over) = maker.next_order();
            assert!(over);
            assert!(total(&body) > max);
        }
    }
}
