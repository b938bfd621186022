//! Whatever the broker loses, every order ends final, once: the order service publishes
//! `order.created` again for an order still pending after `RECONCILE__PENDING_AFTER_SECONDS`, and
//! the processor decides it, or announces its decision again if it had decided it already.

use futures_util::future::join_all;

use crate::helpers::{DEADLINE, Pipeline, order, spawn_pipeline_with};

const ORDERS: usize = 10;

async fn spawn() -> Pipeline {
    spawn_pipeline_with(|orders, _| {
        orders.reconcile.pending_after = std::time::Duration::from_secs(1);
        orders.reconcile.max_backoff = std::time::Duration::from_secs(2);
        orders.reconcile.interval = std::time::Duration::from_millis(200);
    })
    .await
}

/// Places orders (half of them over the limit) while the processor is stopped.
async fn place_while_the_processor_is_stopped(pipeline: &mut Pipeline) -> Vec<String> {
    pipeline.stop_processor().await;
    let bodies: Vec<_> = (0..ORDERS)
        .map(|i| {
            order(
                &format!("r{i}"),
                1,
                if i % 2 == 0 { "5.00" } else { "50000.00" },
            )
        })
        .collect();
    let placed = join_all(bodies.iter().map(|body| pipeline.place(body))).await;
    let ids: Vec<String> = placed
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    let queue = pipeline
        .processor_settings
        .amqp
        .topology
        .order_created_queue
        .clone();
    test_support::wait_until(
        "every order.created in the work queue",
        DEADLINE,
        || async { (pipeline.probe.message_count(&queue).await == ORDERS as u32).then_some(()) },
    )
    .await;
    ids
}

async fn assert_each_final_with_its_rule(pipeline: &Pipeline, ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        let expected = if i % 2 == 0 { "completed" } else { "rejected" };
        pipeline
            .wait_for_order(id, expected, |status| status == expected)
            .await;
    }
    pipeline.assert_agreement(ids).await;
}

#[tokio::test]
async fn orders_whose_order_created_was_purged_end_final_once() {
    let mut pipeline = spawn().await;
    let ids = place_while_the_processor_is_stopped(&mut pipeline).await;
    let queue = pipeline
        .processor_settings
        .amqp
        .topology
        .order_created_queue
        .clone();
    assert_eq!(pipeline.probe.purge(&queue).await, ORDERS as u32);
    pipeline.start_processor().await;
    assert_each_final_with_its_rule(&pipeline, &ids).await;
}

#[tokio::test]
async fn orders_whose_work_queue_was_deleted_and_declared_again_end_final_once() {
    let mut pipeline = spawn().await;
    let ids = place_while_the_processor_is_stopped(&mut pipeline).await;
    let queue = pipeline
        .processor_settings
        .amqp
        .topology
        .order_created_queue
        .clone();
    assert_eq!(pipeline.probe.delete_queue(&queue).await, ORDERS as u32);
    // The processor declares its topology again when it connects.
    pipeline.start_processor().await;
    assert_each_final_with_its_rule(&pipeline, &ids).await;
}

#[tokio::test]
async fn orders_whose_order_processed_was_purged_end_final_once() {
    let mut pipeline = spawn().await;
    let ids = place_while_the_processor_is_stopped(&mut pipeline).await;
    // The processor decides while the order service is stopped: the verdicts wait in the order
    // service's queue, and are purged.
    pipeline.stop_orders().await;
    pipeline.start_processor().await;
    let queue = pipeline
        .order_settings
        .amqp
        .topology
        .order_processed_queue
        .clone();
    test_support::wait_until("every verdict in the queue", DEADLINE, || async {
        (pipeline.probe.message_count(&queue).await == ORDERS as u32).then_some(())
    })
    .await;
    assert_eq!(pipeline.probe.purge(&queue).await, ORDERS as u32);
    pipeline.start_orders().await;
    assert_each_final_with_its_rule(&pipeline, &ids).await;
}
