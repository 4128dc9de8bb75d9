//! What the pages send beside their HTML, through the edge of a real
//! `cluster`: the icon both nodes serve (no 404 in every browser's log),
//! caching for what never changes and none for what does, gzip for the
//! results page, and an event stream that is never compressed (gzip would
//! hold each small event back until its buffer filled).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster_proc::Up;
use common::edge::request;

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The length of a response's body in bytes (gzip is not text).
fn body_bytes(port: u16, raw: &str) -> usize {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let head = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    out.len() - head - 4
}

#[test]
fn icons_caching_and_compression_are_what_each_answer_needs() {
    let dir = tempfile::Builder::new()
        .prefix("vs-pages-")
        .tempdir()
        .unwrap();
    let up = Up::start(&dir.path().join("data"), 1, 1);
    let (vote_port, results_port) = up.ports;

    for port in [vote_port, results_port] {
        for path in ["/favicon.ico", "/favicon.svg"] {
            let (status, resp) = request(port, &format!("GET {path} HTTP/1.0\r\n\r\n"));
            assert_eq!(status, 200, "{path} on {port}: {resp}");
            assert_eq!(
                header(&resp, "content-type"),
                Some("image/svg+xml"),
                "{resp}"
            );
            assert_eq!(
                header(&resp, "cache-control"),
                Some("public, max-age=86400"),
                "{resp}"
            );
            assert!(resp.contains("<svg"), "{resp}");
        }
    }
    let (status, resp) = request(vote_port, "GET /pow.js HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        header(&resp, "cache-control"),
        Some("public, max-age=86400")
    );
    // The pages themselves change with every vote: never cached.
    let (_, resp) = request(vote_port, "GET / HTTP/1.0\r\n\r\n");
    assert_eq!(header(&resp, "cache-control"), Some("no-store"), "{resp}");

    let gzip = "Accept-Encoding: gzip\r\n";
    let (status, resp) = request(results_port, &format!("GET / HTTP/1.0\r\n{gzip}\r\n"));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(header(&resp, "content-encoding"), Some("gzip"), "{resp}");
    assert_eq!(header(&resp, "cache-control"), Some("no-store"));
    let (_, plain) = request(results_port, "GET / HTTP/1.0\r\n\r\n");
    assert_eq!(header(&plain, "content-encoding"), None, "{plain}");
    let (zipped, unzipped) = (
        body_bytes(results_port, &format!("GET / HTTP/1.0\r\n{gzip}\r\n")),
        body_bytes(results_port, "GET / HTTP/1.0\r\n\r\n"),
    );
    assert!(
        zipped * 2 < unzipped,
        "gzip: {zipped} bytes against {unzipped} plain"
    );

    // The stream: asked with gzip, answered without it, and its first
    // event arrives as plain text.
    let mut s = TcpStream::connect(("127.0.0.1", results_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(format!("GET /events HTTP/1.1\r\nHost: x\r\n{gzip}\r\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("gzip"), "{head}");
    let mut first = String::new();
    for _ in 0..4 {
        reader.read_line(&mut first).unwrap();
        if first.contains("data: {") {
            break;
        }
    }
    assert!(first.contains("data: {"), "{first}");
    drop(reader);
    assert_eq!(up.stop(), 0);
}
