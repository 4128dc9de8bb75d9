//! What the pages send beside their HTML, through the edge of a real
//! `cluster`: the icon both nodes serve (no 404 in every browser's log),
//! caching for what never changes and none for what does, gzip for the
//! results page, and an event stream that is never compressed (gzip would
//! hold each small event back until its buffer filled).

mod common;

use std::io::BufRead;

use common::{http, spawn_cluster};

const GZIP: &str = "Accept-Encoding: gzip\r\n";

fn get(port: u16, path: &str, headers: &str) -> http::Reply {
    http::exchange(
        port,
        format!("GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n").as_bytes(),
    )
    .unwrap_or_else(|| panic!("nothing answers on {port}"))
}

#[test]
fn icons_caching_and_compression_are_what_each_answer_needs() {
    let run = spawn_cluster("vs-pages-", 1, 1, &[]);
    let (vote_port, results_port) = run.up.ports;

    for port in [vote_port, results_port] {
        for path in ["/favicon.ico", "/favicon.svg"] {
            let r = get(port, path, "");
            assert_eq!(r.status, 200, "{path} on {port}: {}", r.text);
            assert_eq!(
                r.header("content-type"),
                Some("image/svg+xml"),
                "{}",
                r.text
            );
            assert_eq!(r.header("cache-control"), Some("public, max-age=86400"));
            assert!(r.body().starts_with("<svg"), "{}", r.text);
        }
    }
    let r = get(vote_port, "/pow.js", "");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("cache-control"), Some("public, max-age=86400"));
    // The pages themselves change with every vote: never cached.
    let r = get(vote_port, "/", "");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.text);

    let zipped = get(results_port, "/", GZIP);
    assert_eq!(zipped.status, 200, "{}", zipped.text);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("cache-control"), Some("no-store"));
    let plain = get(results_port, "/", "");
    assert_eq!(plain.header("content-encoding"), None, "{}", plain.text);
    assert!(
        zipped.body_len * 2 < plain.body_len,
        "gzip: {} bytes against {} plain",
        zipped.body_len,
        plain.body_len
    );

    // The stream: asked with gzip, answered without it, and its first
    // event arrives as plain text.
    let (status, head, mut reader) = http::open_stream(results_port, "/events", GZIP);
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(!head.contains("gzip"), "{head}");
    let mut first = String::new();
    for _ in 0..4 {
        reader.read_line(&mut first).unwrap();
        if first.contains("data: {") {
            break;
        }
    }
    assert!(first.contains("data: {"), "{first}");
}
