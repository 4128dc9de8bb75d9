//! What the pages share that never changes while a node runs: the icon
//! and the nodes' script files.
//! Served by capture and results themselves (no CDN) with a day's caching,
//! so a browser asks once, not with every page, and `/favicon.ico` is no
//! longer a 404 in every log.

use actix_web::http::header;
use actix_web::HttpResponse;

/// A ballot tick in the vote page's blue: a few hundred bytes, sharp at any
/// size. Browsers that ask for `/favicon.ico` by habit get it too (they
/// read the type, not the name).
pub const FAVICON_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1f6aa5"/><path d="M4 8.5l2.6 2.6L12 5.4" stroke="#fff" stroke-width="2" fill="none" stroke-linecap="round"/></svg>"##;

/// For assets that do not change while the node runs: a day in any cache.
pub const CACHE_A_DAY: &str = "public, max-age=86400";

/// A script file of the node's own (`/pow.js`, `/retry.js`): the same
/// bytes for the node's whole life, so cached for a day.
pub fn script(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, CACHE_A_DAY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

pub async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::CACHE_CONTROL, CACHE_A_DAY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(FAVICON_SVG)
}
