//! HTTP routes of the processor (besides `/health`, `/ready` and the dead-letter endpoints every
//! service has).

pub mod processed;

use actix_web::web;
use service_kit::http::resource;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/processed/{order_id}", "GET").route(web::get().to(processed::get_processed)),
    );
}
