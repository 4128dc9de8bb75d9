//! The shipped edge (`swarm/haproxy.cfg`, rendered by the local cluster's
//! own `cluster::haproxy::render`) as a real `haproxy` process on loopback,
//! and a stub HTTP server to stand behind it where the test is about the
//! edge, not about what capture or results answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use voteswarm::cluster::procs::{Proc, Spec};
use voteswarm::cluster::{haproxy, HAPROXY_CFG};

use super::{free_port, http, require_program, wait_until};

/// The edge's `EDGE_ID_KEY` in every test edge (a test capture node that
/// honours the edge's cookie is given the same).
pub const TEST_EDGE_ID_KEY: &str =
    "cmZVM0JcXcBaeAWbXVtsWGXeELQRxrPG9Kg1hO051omKE09ST/NGgE5PvCfSwoEQ";

/// How long a fresh haproxy may take to answer on its ports.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the stub writes a comment on an open event stream: that is
/// how it notices (a failed write) that the edge closed it.
const STUB_TICK: Duration = Duration::from_millis(100);

/// What the stub answers `/metrics` with: a line of the real exposition,
/// so a test can see whether it leaked.
pub const STUB_METRICS: &str = "voteswarm_votes_accepted_total{option=\"a\"} 1\n";

/// A minimal HTTP server: `/events` is an endless event stream, `/metrics`
/// answers [`STUB_METRICS`], anything else but a POST 200. A POST is a vote
/// as capture answers it: without a `voter` cookie, or with `voter=forged`,
/// it makes a new voter (`X-Voteswarm-New-Voter` on the 202), or is refused
/// with 429 when the edge says new voters are spent. It counts the event
/// streams open on it.
pub struct Stub {
    pub port: u16,
    pub events_open: Arc<AtomicUsize>,
    pub events_max: Arc<AtomicUsize>,
    /// Paths of the requests it received, health checks excepted.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// Requests that arrived with X-Voteswarm-New-Voters-Spent.
    pub spent_seen: Arc<AtomicUsize>,
    /// The X-Forwarded-Proto of each request (health checks excepted).
    pub protos: Arc<Mutex<Vec<String>>>,
}

impl Stub {
    pub fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub");
        let port = listener.local_addr().unwrap().port();
        let stub = Stub {
            port,
            events_open: Arc::default(),
            events_max: Arc::default(),
            seen: Arc::default(),
            spent_seen: Arc::default(),
            protos: Arc::default(),
        };
        let (open, max, seen, spent, protos) = (
            stub.events_open.clone(),
            stub.events_max.clone(),
            stub.seen.clone(),
            stub.spent_seen.clone(),
            stub.protos.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (open, max, seen, spent, protos) = (
                    open.clone(),
                    max.clone(),
                    seen.clone(),
                    spent.clone(),
                    protos.clone(),
                );
                std::thread::spawn(move || serve(conn, &open, &max, &seen, &spent, &protos));
            }
        });
        stub
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many requests for `path` reached it.
    pub fn seen_count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn serve(
    conn: TcpStream,
    open: &AtomicUsize,
    max: &AtomicUsize,
    seen: &Mutex<Vec<String>>,
    spent_seen: &AtomicUsize,
    protos: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut conn = conn;
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut length = 0usize;
    let (mut voter, mut spent, mut proto) = (None, false, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = lower.strip_prefix("cookie:") {
            voter = v
                .split(';')
                .find_map(|c| c.trim().strip_prefix("voter=").map(str::to_owned));
        }
        spent |= lower.starts_with("x-voteswarm-new-voters-spent:");
        if let Some(v) = lower.strip_prefix("x-forwarded-proto:") {
            proto = v.trim().to_owned();
        }
    }
    if spent {
        spent_seen.fetch_add(1, Ordering::SeqCst);
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    if path != "/readyz" {
        seen.lock().unwrap().push(path.clone());
        protos.lock().unwrap().push(proto);
    }
    if path == "/events" {
        let now = open.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        );
        while conn.write_all(b": tick\n\n").is_ok() {
            std::thread::sleep(STUB_TICK);
        }
        open.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let new_voter = voter.is_none() || voter.as_deref() == Some("forged");
    let (status, extra, text) = match (method.as_str(), path.as_str()) {
        (_, "/metrics") => ("200 OK", "", STUB_METRICS.to_owned()),
        ("POST", _) if new_voter && spent => ("429 Too Many Requests", "", "{}".to_owned()),
        ("POST", _) if new_voter => (
            "202 Accepted",
            "X-Voteswarm-New-Voter: 1\r\n",
            "{}".to_owned(),
        ),
        ("POST", _) => ("202 Accepted", "", "{}".to_owned()),
        _ => ("200 OK", "", format!("stub {path}\n")),
    };
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
        .as_bytes(),
    );
}

/// One edge: the shipped haproxy.cfg with its capture and results servers
/// pointed at given addresses, and an admin socket to read its tables.
pub struct Edge {
    pub vote_port: u16,
    pub results_port: u16,
    /// HTTPS for votes and results, with a certificate of the local CA
    /// (`voteswarm::cluster::tls`, as the cluster makes it) for localhost
    /// and 127.0.0.1.
    pub tls_port: u16,
    pub results_tls_port: u16,
    pub tls: voteswarm::cluster::tls::Files,
    pub socket: PathBuf,
    proc: Proc,
}

impl Edge {
    /// `env` sets HAProxy's environment (VOTE_RATE_LIMIT, NEW_VOTER_LIMIT,
    /// EDGE_NAME, PEERS_BIND ...) over the shipped defaults.
    pub fn start(
        dir: &Path,
        name: &str,
        capture: &str,
        results: &str,
        env: &[(&str, String)],
    ) -> Edge {
        Edge::start_many(dir, name, &[capture.to_owned()], results, env)
    }

    /// As [`Edge::start`], in front of several capture nodes.
    pub fn start_many(
        dir: &Path,
        name: &str,
        capture: &[String],
        results: &str,
        env: &[(&str, String)],
    ) -> Edge {
        require_program("haproxy", "haproxy");
        let cfg = haproxy::render(
            HAPROXY_CFG,
            &haproxy::Local {
                capture: capture.to_vec(),
                results: results.to_owned(),
            },
        )
        .expect("render haproxy.cfg");
        let socket = dir.join(format!("{name}.sock"));
        // The test's own window on the tables; the shipped file has none.
        let cfg = cfg.replacen(
            "global\n",
            &format!(
                "global\n    stats socket {} mode 600 level admin\n",
                socket.display()
            ),
            1,
        );
        let path = dir.join(format!("{name}.cfg"));
        std::fs::write(&path, cfg).unwrap();
        // A test may bind the vote frontend itself (say, on IPv6 too); the
        // port is then the last one its VOTE_BIND names.
        let vote_port = env
            .iter()
            .find(|(k, _)| *k == "VOTE_BIND")
            .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
            .unwrap_or_else(free_port);
        let results_port = free_port();
        let (tls_port, results_tls_port) = (free_port(), free_port());
        let tls = voteswarm::cluster::tls::ensure(dir).expect("local CA");
        let mut spec = Spec::new(super::require_program_opt("haproxy").unwrap())
            .env("VOTE_BIND", format!("127.0.0.1:{vote_port}"))
            .env("RESULTS_BIND", format!("127.0.0.1:{results_port}"))
            .env("TLS_BIND", format!("127.0.0.1:{tls_port}"))
            .env("RESULTS_TLS_BIND", format!("127.0.0.1:{results_tls_port}"))
            .env("TLS_CERT", tls.edge_pem.display().to_string())
            .env("HTTPS_REDIRECT_PORT", format!(":{tls_port}"))
            .env(
                "RESULTS_HTTPS_REDIRECT_PORT",
                format!(":{results_tls_port}"),
            )
            // Most tests are about what the edge does with a request, on
            // the plain port; the TLS tests set "1".
            .env("HTTPS_REDIRECT", "0")
            .env("PEERS_BIND", format!("127.0.0.1:{}", free_port()))
            .env("VOTE_RATE_LIMIT", "1000000")
            .env("EDGE_ID_KEY", TEST_EDGE_ID_KEY);
        for (k, v) in env {
            spec = spec.env(k, v.clone());
        }
        let spec = spec.arg("-db").arg("-f").arg(path.display().to_string());
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut proc = Proc::new("haproxy", name.to_owned(), String::new(), spec, &logs);
        proc.start().expect("start haproxy");
        let edge = Edge {
            vote_port,
            results_port,
            tls_port,
            results_tls_port,
            tls,
            socket,
            proc,
        };
        let up = wait_until(START_TIMEOUT, || {
            http::status(vote_port, "/healthz") == Some(200)
                && http::status(results_port, "/healthz") == Some(200)
        });
        assert!(
            up,
            "haproxy {name} did not start: {}",
            std::fs::read_to_string(&edge.proc.log).unwrap_or_default()
        );
        edge
    }

    /// One command on the admin socket, its whole answer.
    pub fn admin(&self, command: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).expect("admin socket");
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.proc.log).unwrap_or_default()
    }
}

/// An open `GET /events` through the edge: its status, and the connection
/// to keep it open (or read it) for as long as the test needs.
pub fn open_events(port: u16) -> (u16, BufReader<TcpStream>) {
    let (status, _, r) = super::http::open_stream(port, "/events", "");
    (status, r)
}
