//! HTTP routes of the order service (besides `/health`, `/ready` and the dead-letter endpoints
//! every service has).

pub mod events;
pub mod orders;
pub mod page;
mod schemas;
pub mod stats;

use actix_web::web;
use service_kit::http::resource;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/orders", "GET, POST")
            .route(web::post().to(orders::create_order))
            .route(web::get().to(orders::list_orders)),
    )
    // Before `/orders/{id}`, which would take `events` for an id.
    .service(resource("/orders/events", "GET").route(web::get().to(events::all_events)))
    .service(resource("/orders/{id}", "GET").route(web::get().to(orders::get_order)))
    .service(resource("/orders/{id}/events", "GET").route(web::get().to(events::order_events)))
    .service(resource("/orders/{id}/history", "GET").route(web::get().to(orders::order_history)))
    .service(resource("/orders/{id}/cancel", "POST").route(web::post().to(orders::cancel_order)))
    .service(resource("/stats", "GET").route(web::get().to(stats::stats)))
    .service(resource("/", "GET").route(web::get().to(page::index)))
    .service(resource("/page/app.js", "GET").route(web::get().to(page::script)))
    .service(resource("/page/style.css", "GET").route(web::get().to(page::style)))
    .service(
        resource("/processor/dead-letters", "GET")
            .route(web::get().to(page::processor_dead_letters)),
    )
    .service(
        resource("/processor/dead-letters/replay", "POST")
            .route(web::post().to(page::processor_dead_letters)),
    );
}
