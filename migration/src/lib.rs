//! Database migrations of both services.
//!
//! Each service owns one database: [`OrdersMigrator`] builds the order service's (`orders`,
//! `order_status_history`, `outbox`, `reconciliation`, the figures), [`ProcessorMigrator`] the
//! processor's (`processing`, `outbox`). Both outbox tables have the same shape, so one relay (in `messaging`) serves both.
//!
//! [`migrate`] runs a migrator inside one transaction holding a PostgreSQL advisory lock, so several
//! instances starting at once apply each migration exactly once.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DatabaseConnection, TransactionTrait};

mod m20261122_000001_outbox;
mod m20261122_000002_orders;
mod m20261122_000003_processing;
mod m20261123_000004_outbox_lean;
mod m20261123_000005_orders_lean;
mod m20261123_000006_processing_lean;
mod m20261124_000007_outbox_lease;
mod m20261202_000008_orders_idempotency_key;
mod m20261202_000009_reconciliation;
mod m20261205_000010_outbox_trace;
mod m20261207_000011_cancellation;
mod m20261207_000012_processing_cancellation;
mod m20261207_000013_order_figures;
mod m20261207_000014_orders_key_expiry;

/// Migrations of the order service's database.
pub struct OrdersMigrator;

#[async_trait::async_trait]
impl MigratorTrait for OrdersMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_outbox::Migration),
            Box::new(m20261122_000002_orders::Migration),
            Box::new(m20261123_000004_outbox_lean::Migration),
            Box::new(m20261123_000005_orders_lean::Migration),
            Box::new(m20261124_000007_outbox_lease::Migration),
            Box::new(m20261202_000008_orders_idempotency_key::Migration),
            Box::new(m20261202_000009_reconciliation::Migration),
            Box::new(m20261205_000010_outbox_trace::Migration),
            Box::new(m20261207_000011_cancellation::Migration),
            Box::new(m20261207_000013_order_figures::Migration),
            Box::new(m20261207_000014_orders_key_expiry::Migration),
        ]
    }
}

/// Migrations of the processor service's database.
pub struct ProcessorMigrator;

#[async_trait::async_trait]
impl MigratorTrait for ProcessorMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_outbox::Migration),
            Box::new(m20261122_000003_processing::Migration),
            Box::new(m20261123_000004_outbox_lean::Migration),
            Box::new(m20261123_000006_processing_lean::Migration),
            Box::new(m20261124_000007_outbox_lease::Migration),
            Box::new(m20261205_000010_outbox_trace::Migration),
            Box::new(m20261207_000012_processing_cancellation::Migration),
        ]
    }
}

/// Applies every pending migration of `M` in one transaction, serialised across instances by a
/// transaction-scoped advisory lock.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    // Any constant works as long as every instance uses the same one.
    txn.execute_unprepared("SELECT pg_advisory_xact_lock(7234011)")
        .await?;
    M::up(&txn, None).await?;
    txn.commit().await
}
