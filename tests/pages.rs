//! What the pages send beside their HTML, through the edge of a real
//! `cluster`: the icon both nodes serve (no 404 in every browser's log),
//! caching for what never changes and none for what does, gzip for the
//! vote and results pages (never for a vote's answer), the vote page's
//! link to the results, and an event stream that is never compressed (gzip would
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

    // The vote page: gzipped when asked, with its link to the results
    // (the cluster's RESULTS_URL: its own results port).
    let page = get(vote_port, "/", "");
    assert!(
        page.body().contains(&format!(
            r#"<a href="http://127.0.0.1:{results_port}">See the results</a>"#
        )),
        "{}",
        page.text
    );
    let zipped = get(vote_port, "/", GZIP);
    assert_eq!(zipped.status, 200, "{}", zipped.text);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("cache-control"), Some("no-store"));
    // Measured: 1,219 bytes against 2,245 (the style is most of it).
    assert!(
        zipped.body_len * 4 < page.body_len * 3,
        "gzip: {} bytes against {} plain",
        zipped.body_len,
        page.body_len
    );
    // The vote's own answers are never compressed, whatever is asked: the
    // form's 303 and the API's receipt.
    let form = format!("POST / HTTP/1.0\r\nHost: x\r\n{GZIP}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\nvote=a");
    let r = http::exchange(vote_port, form.as_bytes()).unwrap();
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.header("content-encoding"), None, "{}", r.text);
    let api = format!("POST /api/vote HTTP/1.0\r\nHost: x\r\n{GZIP}Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"vote\":\"b\"}}");
    let r = http::exchange(vote_port, api.as_bytes()).unwrap();
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.header("content-encoding"), None, "{}", r.text);
    assert_eq!(r.json().unwrap()["option"], "b", "{}", r.text);

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
