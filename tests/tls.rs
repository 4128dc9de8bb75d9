//! HTTPS at the edge (issue 15): the shipped `swarm/haproxy.cfg` as a real
//! haproxy on loopback with a certificate of the local CA, then a whole
//! `cluster` over HTTPS. Clients are curl and `openssl s_client`, which
//! offer exactly what a test asks for (a TLS version, ALPN h2).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::cluster_proc::{rehearse, sql_counts};
use common::edge::{Edge, Stub};
use common::http::request;
use common::{spawn_cluster, wait_until};

fn require_tools() {
    common::require_program("haproxy", "haproxy");
    common::require_program("curl", "curl");
    common::require_program("openssl", "openssl");
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `openssl s_client` to 127.0.0.1:`port` with `args`: whether the
/// handshake completed, and all it printed.
fn s_client(port: u16, ca: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    (out.status.success(), text(&out))
}

#[test]
fn the_shipped_edge_serves_tls_1_2_and_1_3_only_h2_hsts_and_redirects_with_308() {
    require_tools();
    let dir = tempfile::Builder::new()
        .prefix("vs-tls-")
        .tempdir()
        .unwrap();
    let stub = Stub::start();
    let edge = Edge::start(
        dir.path(),
        "edge1",
        &stub.addr(),
        &stub.addr(),
        &[("HTTPS_REDIRECT", "1".into())],
    );
    let ca = edge.tls.ca.to_str().unwrap().to_owned();
    let https = format!("https://localhost:{}", edge.tls_port);

    // Plain HTTP: a 308 to the same URL over HTTPS, for a POST too (a 308
    // keeps method and body), and nothing reaches the servers.
    let (status, answer) = request(
        edge.vote_port,
        "POST /api/vote?x=1 HTTP/1.1\r\nHost: 127.0.0.1:1234\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"vote\":\"a\"}",
    );
    assert_eq!(status, 308, "{answer}");
    let location = format!(
        "location: https://127.0.0.1:{}/api/vote?x=1\r\n",
        edge.tls_port
    );
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    let (status, answer) = request(
        edge.results_port,
        "GET /events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 308, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains(&format!(
            "location: https://localhost:{}/events\r\n",
            edge.results_tls_port
        )),
        "{answer}"
    );
    assert!(
        stub.seen.lock().unwrap().is_empty(),
        "a redirected request reached a server"
    );
    // The health path a cloud load balancer checks stays on plain HTTP.
    assert_eq!(
        request(edge.vote_port, "GET /healthz HTTP/1.0\r\n\r\n").0,
        200
    );

    // HTTPS: HSTS on every answer, the edge's own too; HTTP/2 to a client
    // that offers it; X-Forwarded-Proto set by the edge, whatever the
    // client claims.
    for path in ["/", "/healthz", "/metrics"] {
        let out = curl(&[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--http2",
            "--cacert",
            &ca,
            &format!("{https}{path}"),
        ]);
        let head = text(&out).to_ascii_lowercase();
        assert!(head.starts_with("http/2 "), "{path}: {head}");
        assert!(
            head.contains("strict-transport-security: max-age=31536000\r\n"),
            "{path}: {head}"
        );
    }
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "--http2",
        "--cacert",
        &ca,
        &format!("{https}/"),
    ]);
    assert_eq!(text(&out), "2");
    let (ok, said) = s_client(edge.tls_port, &edge.tls.ca, &["-alpn", "h2,http/1.1"]);
    assert!(ok && said.contains("ALPN protocol: h2"), "{said}");
    assert!(said.contains("Verify return code: 0 (ok)"), "{said}");
    // ECDSA P-256, as the local CA issues it.
    assert!(said.contains("Server public key is 256 bit"), "{said}");

    stub.protos.lock().unwrap().clear();
    let out = curl(&[
        "-o",
        "/dev/null",
        "-H",
        "X-Forwarded-Proto: http",
        "--cacert",
        &ca,
        &format!("{https}/x"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let redirect_off = Edge::start(dir.path(), "edge2", &stub.addr(), &stub.addr(), &[]);
    let (status, _) = request(
        redirect_off.vote_port,
        "GET /y HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(
        *stub.protos.lock().unwrap(),
        ["https", "http"],
        "the edge's X-Forwarded-Proto, not the client's"
    );

    // TLS 1.0 and 1.1 are refused by the edge (the client is allowed
    // every cipher, so the refusal is the server's); 1.2 and 1.3 pass.
    for old in ["-tls1", "-tls1_1"] {
        let (ok, said) = s_client(
            edge.tls_port,
            &edge.tls.ca,
            &[old, "-cipher", "DEFAULT:@SECLEVEL=0"],
        );
        assert!(!ok, "{old} was accepted:\n{said}");
        assert!(said.contains("alert protocol version"), "{old}: {said}");
    }
    for (new, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, said) = s_client(edge.tls_port, &edge.tls.ca, &[new]);
        // The handshake's own summary line: the session block that also
        // names the protocol follows TLS 1.3's ticket, which s_client may
        // exit before reading (stdin is closed at once).
        assert!(
            ok && said.contains(&format!("New, {name}, Cipher is ")),
            "{new}: {said}"
        );
    }
    // No CBC suite and no RSA key exchange over TLS 1.2.
    let (ok, said) = s_client(
        edge.tls_port,
        &edge.tls.ca,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0",
        ],
    );
    assert!(!ok, "a CBC suite was accepted:\n{said}");
}

/// Runs `curl` for one form vote on `url` (following redirects), with the
/// cluster's CA; returns every response head it saw.
fn vote(url: &str, ca: &Path, option: &str) -> String {
    let out = curl(&[
        "-L",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "--cacert",
        ca.to_str().unwrap(),
        "-d",
        &format!("vote={option}"),
        url,
    ]);
    assert!(out.status.success(), "curl {url}: {}", text(&out));
    text(&out).to_ascii_lowercase()
}

#[test]
fn a_vote_posted_to_http_follows_the_308_is_counted_once_and_its_cookie_is_secure() {
    require_tools();
    common::require_program("redis-server", "redis-server");
    // One capture node, one Redis stream: a later vote is counted after an
    // earlier one, so once the second is in, the first is final.
    let run = spawn_cluster("vs-tls-cluster-", 1, 1, &[("HTTPS_REDIRECT", "1")]);
    let up = &run.up;
    assert!(up.table.contains(up.ca.to_str().unwrap()), "{}", up.table);
    let heads = vote(&format!("http://127.0.0.1:{}/", up.ports.0), &up.ca, "a");
    assert!(heads.starts_with("http/1.1 308"), "{heads}");
    assert!(
        heads.contains(&format!(
            "location: https://127.0.0.1:{}/\r\n",
            up.tls_ports.0
        )),
        "{heads}"
    );
    let cookie = heads
        .lines()
        .find(|l| l.starts_with("set-cookie: voter="))
        .unwrap_or_else(|| panic!("no voter cookie over https: {heads}"));
    assert!(cookie.trim_end().ends_with("; secure"), "{cookie}");

    // A sentinel vote of another voter, straight over HTTPS.
    let heads = vote(
        &format!("https://localhost:{}/", up.tls_ports.0),
        &up.ca,
        "b",
    );
    // POST/redirect/GET: the vote's 303, then the page it names.
    assert!(heads.starts_with("http/2 303"), "{heads}");
    assert!(heads.contains("\r\nhttp/2 200"), "{heads}");
    let db = up.database_url();
    assert!(
        wait_until(Duration::from_secs(30), || sql_counts(&db).1 == 1),
        "the sentinel vote was not counted"
    );
    assert_eq!(sql_counts(&db), (1, 1), "the redirected vote counted once");

    // The results page over HTTPS (its own port), events included; it
    // reads the database on its own schedule.
    let results = format!("https://localhost:{}/api/results", up.tls_ports.1);
    let ca = up.ca.to_str().unwrap().to_owned();
    let mut last = String::new();
    let counted = wait_until(Duration::from_secs(30), || {
        last = text(&curl(&["--cacert", &ca, "--http2", &results]));
        last.contains("\"total\":2")
    });
    assert!(counted, "{last}");
    let out = curl(&[
        "-N",
        "--max-time",
        "3",
        "--http2",
        "--cacert",
        up.ca.to_str().unwrap(),
        &format!("https://localhost:{}/events", up.tls_ports.1),
    ]);
    assert!(
        text(&out).contains("data:"),
        "no event over HTTP/2: {}",
        text(&out)
    );
    drop(run);
}

#[test]
fn a_rehearsal_over_https_with_a_new_tls_connection_per_voter_is_exact() {
    require_tools();
    common::require_program("redis-server", "redis-server");
    let (_dir, report) = rehearse(
        "vs-tls-rehearse-",
        &[
            "--capture",
            "2",
            "--workers",
            "1",
            "--voters",
            "3000",
            "--concurrency",
            "32",
            "--final-timeout-secs",
            "120",
            "--https",
            "--new-connection-per-voter",
        ],
    );
    assert!(report.contains("against https://localhost:"), "{report}");
    // Every vote (3000 first votes, 300 changes) on a connection of its
    // own: a handshake each at least (a retry after a dropped connection
    // makes another), and none failed.
    let line = report
        .lines()
        .find(|l| l.starts_with("| TLS handshakes full / resumed / failed |"))
        .unwrap_or_else(|| panic!("no handshakes in the report:\n{report}"));
    let n: Vec<u64> = line
        .split('|')
        .nth(2)
        .unwrap()
        .split('/')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert!(n[0] + n[1] >= 3300, "{line}");
    assert_eq!(n[2], 0, "{line}");
    assert!(n[1] > 0, "no session was resumed: {line}");
}
