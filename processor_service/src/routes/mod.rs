//! HTTP routes of the processor.

pub mod processed;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(shared::http::health))
        .route("/ready", web::get().to(shared::http::ready))
        .route(
            "/processed/{order_id}",
            web::get().to(processed::get_processed),
        )
        .configure(shared::dead_letters::http::configure);
}
