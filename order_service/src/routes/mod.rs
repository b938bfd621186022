//! HTTP routes of the order service.

pub mod orders;
mod schemas;

use actix_web::web;
use shared::http::resource;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health", "GET").route(web::get().to(shared::http::health)))
        .service(resource("/ready", "GET").route(web::get().to(shared::http::ready)))
        .service(
            resource("/orders", "GET, POST")
                .route(web::post().to(orders::create_order))
                .route(web::get().to(orders::list_orders)),
        )
        .service(resource("/orders/{id}", "GET").route(web::get().to(orders::get_order)))
        .service(
            resource("/orders/{id}/history", "GET").route(web::get().to(orders::order_history)),
        )
        .configure(shared::dead_letters::http::configure);
}
