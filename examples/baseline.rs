//! The capture benchmark's baseline: the least an actix-web node can do for
//! a vote. It parses the same form with the same parser as `capture`, and
//! answers at once, without a cookie, a clock, a page or Redis. `capture`'s
//! throughput is reported as a ratio to this one's, measured in the same run.
//!
//! `LISTEN=127.0.0.1:18080 cargo run --release --example baseline`

use actix_web::{web, App, HttpResponse, HttpServer};

async fn vote(body: web::Bytes) -> HttpResponse {
    match voteswarm::capture::parse_form(&body) {
        Ok(option) => HttpResponse::Ok().body(option.as_str()),
        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:18080".into());
    HttpServer::new(|| App::new().route("/", web::post().to(vote)))
        .bind(&listen)?
        .run()
        .await
}

// The same allocator as the nodes, so the comparison is of the code alone.
voteswarm::use_mimalloc!();
