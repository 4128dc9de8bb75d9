//! The one plain HTTP client of the suites: a fresh connection to a port on
//! loopback per request, the bytes the test chose, the whole answer read.
//! Blocking on purpose: the in-process nodes run on threads of their own, so
//! a test may poke them from anywhere; [`get_async`] is for tests that have
//! requests of their own in flight on the test's runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// How long an answer may take: longer than any node's own check (the
/// worker's database check waits 3 s, an edge may queue a request), short
/// enough that a hung server fails a poll rather than the whole test.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// 0 when the answer has no status line.
    pub status: u16,
    /// The whole answer: status line, headers and body.
    pub text: String,
    /// The body's length in bytes (a gzip body is not text).
    pub body_len: usize,
}

impl Reply {
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.body()).ok()
    }

    /// A header's value (the first of that name, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `raw` as is and reads until the server closes; `None` when
/// nothing accepts the connection.
pub fn exchange(port: u16, raw: &[u8]) -> Option<Reply> {
    exchange_at("127.0.0.1", port, raw)
}

/// [`exchange`] with a server on `host` (another network namespace's
/// address, see `netns`).
pub fn exchange_at(host: &str, port: u16, raw: &[u8]) -> Option<Reply> {
    let mut s = TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    s.write_all(raw).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let body_len = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |head| out.len() - head - 4);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Some(Reply {
        status,
        text,
        body_len,
    })
}

/// An open stream (`GET path` over HTTP/1.1 with `headers`, each ending in
/// CRLF): its status, its head, and the connection to read on for as long
/// as the test needs.
pub fn open_stream(
    port: u16,
    path: &str,
    headers: &str,
) -> (u16, String, std::io::BufReader<TcpStream>) {
    use std::io::BufRead;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect for a stream");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        head.push_str(&h);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, r)
}

/// An HTTP/1.0 `GET path`.
pub fn get(port: u16, path: &str) -> Option<Reply> {
    exchange(
        port,
        format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

/// The status of `GET path`, if anything answers.
pub fn status(port: u16, path: &str) -> Option<u16> {
    get(port, path).map(|r| r.status)
}

/// The body of `GET /metrics`: the Prometheus text.
pub fn metrics(port: u16) -> String {
    get(port, "/metrics")
        .unwrap_or_else(|| panic!("nothing answers /metrics on {port}"))
        .body()
        .to_owned()
}

/// A sample's value in Prometheus text (`name` with its labels, as
/// written), 0 when absent.
pub fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).filter(|r| r.starts_with(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as i64
}

/// A request written by hand (an edge test's exact bytes): the status and
/// the whole answer. The server must be there.
pub fn request(port: u16, raw: &str) -> (u16, String) {
    let r = exchange(port, raw.as_bytes()).unwrap_or_else(|| panic!("connect to :{port}"));
    (r.status, r.text)
}

/// [`get`] off the test's runtime, so that its own tasks go on meanwhile.
pub async fn get_async(port: u16, path: &str) -> Option<Reply> {
    let path = path.to_owned();
    actix_web::rt::task::spawn_blocking(move || get(port, &path))
        .await
        .expect("the GET did not panic")
}

/// A hostile or broken request: the status of the answer's head, or `None`
/// for a connection closed without one. Reads only the head: a node that
/// refuses early may keep the connection open. `half_close` ends the
/// request side after `raw` (a truncated body).
pub fn head_status(port: u16, raw: &[u8], half_close: bool) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // A node that answers early (413) stops reading: do not block on it.
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before reading everything we send.
    let _ = s.write_all(raw);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&buf);
    head.strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}
