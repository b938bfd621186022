//! HTTP routes of the processor.

pub mod processed;

use actix_web::web;
use shared::http::resource;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health", "GET").route(web::get().to(shared::http::health)))
        .service(resource("/ready", "GET").route(web::get().to(shared::http::ready)))
        .service(
            resource("/processed/{order_id}", "GET").route(web::get().to(processed::get_processed)),
        )
        .configure(shared::dead_letters::http::configure);
}
