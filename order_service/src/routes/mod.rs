//! HTTP routes of the order service.

pub mod orders;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(shared::http::health))
        .route("/ready", web::get().to(shared::http::ready))
        .route("/orders", web::post().to(orders::create_order))
        .route("/orders", web::get().to(orders::list_orders))
        .route("/orders/{id}", web::get().to(orders::get_order))
        .route("/orders/{id}/history", web::get().to(orders::order_history))
        .configure(shared::dead_letters::http::configure);
}
