//! Hostile and broken requests against a running capture node and results
//! node: each gets its documented 4xx or a closed connection, never a 2xx
//! or a 5xx, nothing is stored, and the node keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::http::head_status as raw;
use common::{capture_node, results_node, spawn_capture, spawn_results, PgServer, RedisServer};

fn post(path: &str, content_type: Option<&str>, body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        r.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n{extra}\r\n", body.len()));
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn acceptable(got: Option<u16>, want: &[u16]) -> bool {
    match got {
        None => true, // a closed connection is an answer too
        Some(s) => want.contains(&s),
    }
}

/// A vote from a new voter, by hand: the status.
fn vote(port: u16) -> Option<u16> {
    raw(
        port,
        &post(
            "/api/vote",
            Some("application/json"),
            br#"{"vote":"a"}"#,
            "",
        ),
        false,
    )
}

#[test]
fn hostile_requests_to_capture_get_4xx_or_a_closed_connection_and_store_nothing() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let port = node.port;
    let form = Some("application/x-www-form-urlencoded");
    let json = Some("application/json");
    let mib = vec![b'a'; 1 << 20];
    let many_headers: String = (0..5000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(64 * 1024));
    let big_cookie = format!("Cookie: voter={}\r\n", "c".repeat(16 * 1024));
    let mut chunked_mib = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..64 {
        chunked_mib.extend_from_slice(format!("{:x}\r\n", 16 * 1024).as_bytes());
        chunked_mib.extend_from_slice(&vec![b'v'; 16 * 1024]);
        chunked_mib.extend_from_slice(b"\r\n");
    }
    chunked_mib.extend_from_slice(b"0\r\n\r\n");

    let mut cases: Vec<(&str, Vec<u8>, bool, &[u16])> = Vec::new();
    // Form bodies that are not a vote.
    for (name, body) in [
        ("empty form body", &b""[..]),
        ("malformed form", b"vote"),
        ("form with a bad escape", b"vote=%zz"),
        ("invalid UTF-8 in the form", b"vote=\xff\xfe"),
        ("unknown option", b"vote=cats"),
    ] {
        cases.push((name, post("/", form, body, ""), false, &[400]));
    }
    let mut truncated = post("/", form, b"vote=a&x=0123456789", "");
    truncated.truncate(truncated.len() - 10);
    cases.extend([
        (
            "1 MiB form body",
            post("/", form, &mib, ""),
            false,
            &[413][..],
        ),
        ("1 MiB chunked body", chunked_mib, false, &[413]),
        (
            "1 MiB JSON body",
            post("/api/vote", json, &mib, ""),
            false,
            &[413],
        ),
        ("truncated body", truncated, true, &[400]),
    ]);
    // Not a form at all.
    for (name, content_type, body) in [
        ("missing content type", None, &b"vote=a"[..]),
        ("wrong content type", Some("text/plain"), b"vote=a"),
        (
            "multipart",
            Some("multipart/form-data; boundary=x"),
            b"--x--",
        ),
    ] {
        cases.push((name, post("/", content_type, body, ""), false, &[415]));
    }
    // JSON that is not a vote.
    for (name, body) in [
        (
            "JSON with an extra field",
            &br#"{"vote":"a","again":true}"#[..],
        ),
        ("JSON without the field", br#"{"choice":"a"}"#),
        ("JSON with a number", br#"{"vote":1}"#),
        ("JSON array", br#"["a"]"#),
        ("JSON null", b"null"),
        ("invalid UTF-8 JSON", b"{\"vote\":\"\xff\"}"),
    ] {
        cases.push((name, post("/api/vote", json, body, ""), false, &[400]));
    }
    cases.extend([
        (
            "thousands of headers",
            post("/", form, b"vote=a", &many_headers),
            false,
            &[400, 413, 431][..],
        ),
        (
            "a 64 KiB request line",
            long_line.into_bytes(),
            false,
            &[400, 414, 431],
        ),
        (
            "a 16 KiB cookie",
            post("/", form, b"vote=c", &big_cookie),
            false,
            &[400, 431],
        ),
        (
            "not HTTP",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
            false,
            &[400],
        ),
    ]);
    for (name, request, half_close, want) in cases {
        let got = raw(port, &request, half_close);
        assert!(
            acceptable(got, want),
            "{name}: got {got:?}, want one of {want:?} or a closed connection"
        );
    }
    let stored = redis.xlen();
    assert_eq!(stored, 0, "no hostile request stored a vote");
    assert_eq!(vote(port), Some(202), "still serving");
}

#[test]
fn a_client_sending_a_byte_a_second_is_cut_off_and_others_are_served_meanwhile() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let port = node.port;
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let started = Instant::now();
        for b in
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                .iter()
        {
            if s.write_all(&[*b]).is_err() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_secs(1)); // the slow client's pace
                                                        // The server closing shows as a read of 0 or an error.
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            let closed = s.read(&mut buf).is_ok();
            s.set_nonblocking(false).unwrap();
            if closed {
                return Some(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return None;
            }
        }
        None
    });
    // Meanwhile the node serves other voters.
    for _ in 0..20 {
        assert_eq!(vote(port), Some(202));
    }
    let cut = slow.join().unwrap();
    let cut = cut.expect("the slow client was never cut off");
    assert!(cut < Duration::from_secs(30), "cut off after {cut:?}");
}

#[test]
fn many_idle_connections_do_not_stop_a_node_from_serving() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let port = node.port;
    let idle: Vec<TcpStream> = (0..500)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() >= 450, "opened {} idle connections", idle.len());
    for _ in 0..20 {
        assert_eq!(vote(port), Some(202));
    }
    drop(idle);
}

#[test]
fn hostile_requests_to_results_get_4xx_or_a_closed_connection() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    pg.migrated_url();
    let node = spawn_results(results_node::settings(
        pg.url_as(voteswarm::cluster::postgres::PgRole::Results),
        &redis.results_url(),
    ));
    let port = node.port;
    let many_headers: String = (0..5000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "POST to the results",
            post("/api/results", Some("application/json"), b"{}", ""),
            &[404, 405],
        ),
        (
            "an unknown path",
            b"GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[404],
        ),
        (
            "a 64 KiB request line",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(65536)).into_bytes(),
            &[400, 414, 431],
        ),
        (
            "thousands of headers",
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            &[400, 431],
        ),
        ("not HTTP", b"\x00\x01\x02garbage\r\n\r\n".to_vec(), &[400]),
    ];
    for (name, request, want) in cases {
        let got = raw(port, &request, false);
        assert!(
            acceptable(got, want),
            "{name}: got {got:?}, want one of {want:?}"
        );
    }
    let ok = common::wait_until(Duration::from_secs(20), || {
        raw(
            port,
            b"GET /api/results HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        ) == Some(200)
    });
    assert!(ok, "results still serves");
}
