//! Cancellation racing processing: whichever wins, both services end at the same status and
//! the order's history has exactly one final entry.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{order, spawn_pipeline_with};

/// Orders raced, each cancelled after a random delay while the processor works on it.
const RACES: usize = 200;
/// At most this many races run at once.
const CONCURRENCY: usize = 8;

#[tokio::test]
async fn cancelling_while_the_processor_decides_ends_with_both_services_agreeing() {
    let pipeline = spawn_pipeline_with(|_, processor| {
        // Long enough that some cancellations land while the order is being worked on.
        processor.work.delay = Duration::from_millis(5);
    })
    .await;
    let pipeline = &pipeline;
    let outcomes: Vec<(String, u16)> =
        futures_util::future::join_all((0..CONCURRENCY).map(|lane| async move {
            let mut outcomes = Vec::new();
            for race in (lane..RACES).step_by(CONCURRENCY) {
                let placed = pipeline.place(&order("racer", 1, "5.00")).await;
                let id = placed["id"].as_str().unwrap().to_owned();
                // 0 to 40 ms: before the processor sees it, while it works, after it decided.
                let delay = (race * 7919 % 41) as u64;
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let response = pipeline
                    .client
                    .post(pipeline.orders_url(&format!("/orders/{id}/cancel")))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                match status {
                    200 => assert_eq!(body["status"], "cancelled", "{body}"),
                    409 => assert_eq!(body["field"], "status", "{body}"),
                    other => panic!("cancel answered {other}: {body}"),
                }
                // Agreement, each time: the order service's status is the processor's
                // decision, and the history is pending then exactly one final entry.
                pipeline.assert_agreement(std::slice::from_ref(&id)).await;
                let history = pipeline.history(&id).await;
                let order = pipeline
                    .get(pipeline.orders_url(&format!("/orders/{id}")))
                    .await;
                let expected = if status == 200 {
                    "cancelled"
                } else {
                    "completed"
                };
                assert_eq!(order["status"], expected, "{id}");
                assert_eq!(history, ["pending", expected], "{id}");
                outcomes.push((id, status));
            }
            outcomes
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(outcomes.len(), RACES);
    let cancelled = outcomes.iter().filter(|(_, status)| *status == 200).count();
    println!(
        "{cancelled} of {RACES} cancelled, {} decided first",
        RACES - cancelled
    );
    // Both sides of the race were run.
    assert!(cancelled > 0 && cancelled < RACES, "{cancelled} of {RACES}");
}
