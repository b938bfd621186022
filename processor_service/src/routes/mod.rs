//! HTTP routes of the processor.

pub mod dead_letters;
pub mod processed;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(shared::http::health))
        .route("/ready", web::get().to(shared::http::ready))
        .route(
            "/processed/{order_id}",
            web::get().to(processed::get_processed),
        )
        .route(
            "/dead-letters",
            web::get().to(dead_letters::list_dead_letters),
        )
        .route(
            "/dead-letters/replay",
            web::post().to(dead_letters::replay_dead_letters),
        );
}
