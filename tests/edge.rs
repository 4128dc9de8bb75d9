//! The public edge as shipped (`swarm/haproxy.cfg`), as real haproxy
//! processes on 127.0.0.1: what it refuses to pass on (internal paths), how
//! many live-update streams it lets one address and one results server
//! hold, and the new-voter limit that edges share through `peers`.

mod common;

use std::io::BufRead;
use std::time::Duration;

use common::edge::{open_events, Edge, Stub, STUB_METRICS};
use common::http::request;
use common::{free_port, results_node, spawn_results, wait_until, PgServer, RedisServer};

const VOTE: &str = "POST /api/vote HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"vote\":\"a\"}";

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")
}

/// Where an edge keeps its configuration, socket and logs.
fn edge_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vs-edge-")
        .tempdir()
        .unwrap()
}

/// One edge in front of stub capture and results servers.
fn stub_edge(env: &[(&str, String)]) -> (tempfile::TempDir, Stub, Stub, Edge) {
    let dir = edge_dir();
    let (capture, results) = (Stub::start(), Stub::start());
    let edge = Edge::start(dir.path(), "edge", &capture.addr(), &results.addr(), env);
    (dir, capture, results, edge)
}

fn vote_with(cookie: Option<&str>) -> String {
    match cookie {
        None => VOTE.to_owned(),
        Some(c) => VOTE.replacen(
            "Host: x\r\n",
            &format!("Host: x\r\nCookie: voter={c}\r\n"),
            1,
        ),
    }
}

#[test]
fn internal_paths_are_403_at_the_edge_and_public_ones_pass() {
    let (_dir, capture, _results, edge) = stub_edge(&[]);

    for port in [edge.vote_port, edge.results_port] {
        for path in [
            "/metrics",
            "/metrics?x=1",
            "/metrics/",
            "//metrics",
            "/./metrics",
            "/x/../metrics",
            "/%6detrics",
            "/%6Detrics",
            "/METRICS",
            "/readyz",
            "/healthz/",
        ] {
            let (status, text) = request(port, &get(path));
            assert_eq!(status, 403, "GET {path} on :{port}: {text}");
            assert!(!text.contains("voteswarm_"), "{path} leaked: {text}");
        }
        // The edge's own liveness, answered by the edge.
        assert_eq!(request(port, &get("/healthz")).0, 200);
    }
    assert!(
        !capture
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.contains("etrics")),
        "no internal path reached capture: {:?}",
        capture.seen.lock().unwrap()
    );
    // What voters and viewers need still passes.
    assert_eq!(request(edge.vote_port, &get("/")).0, 200);
    assert_eq!(request(edge.vote_port, VOTE).0, 202);
    assert_eq!(request(edge.results_port, &get("/")).0, 200);
    assert_eq!(request(edge.results_port, &get("/api/results")).0, 200);
    // The stub does answer /metrics, so the 403s above are the edge's.
    let direct = request(capture.port, &get("/metrics")).1;
    assert!(direct.contains(STUB_METRICS), "{direct}");
}

#[test]
fn one_address_holds_at_most_streams_per_address_event_streams() {
    let (_dir, _capture, results, edge) = stub_edge(&[("STREAMS_PER_ADDRESS", "3".into())]);
    let mut open: Vec<_> = (0..3).map(|_| open_events(edge.results_port)).collect();
    assert!(open.iter().all(|(s, _)| *s == 200), "within the limit");
    let (status, _) = open_events(edge.results_port);
    assert_eq!(status, 429, "a fourth stream from one address is refused");
    // Page loads from that address still pass: the limit is on streams.
    assert_eq!(request(edge.results_port, &get("/")).0, 200);
    // A viewer that leaves frees its slot.
    drop(open.pop());
    let freed = wait_until(Duration::from_secs(10), || {
        let (status, conn) = open_events(edge.results_port);
        if status == 200 {
            open.push((status, conn));
        }
        status == 200
    });
    assert!(freed, "a slot freed by a closed stream is reused");
    // The refused ones never reached the results server.
    let reached = results.seen_count("/events");
    assert_eq!(reached, 4, "three, then one in the freed slot");
}

#[test]
fn a_results_server_gets_at_most_results_maxconn_connections() {
    let (_dir, _capture, results, edge) = stub_edge(&[
        ("STREAMS_PER_ADDRESS", "100".into()),
        ("RESULTS_MAXCONN", "2".into()),
    ]);
    let open: Vec<_> = (0..2).map(|_| open_events(edge.results_port)).collect();
    assert!(open.iter().all(|(s, _)| *s == 200));
    // The third waits in HAProxy's queue (timeout queue) and is refused;
    // it never reaches the server.
    let (status, _) = open_events(edge.results_port);
    assert_eq!(status, 503, "beyond maxconn the edge refuses");
    assert_eq!(
        results.events_max.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

/// How long a stream may take to show an expected line: keep-alives every
/// 15 s would otherwise keep a failing test reading for ever.
const LINE_DEADLINE: Duration = Duration::from_secs(60);

/// Reads event-stream lines until one starts with `prefix`; `None` at the
/// end of the stream or after [`LINE_DEADLINE`].
fn until_line(r: &mut impl BufRead, prefix: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + LINE_DEADLINE;
    while std::time::Instant::now() < deadline {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line.starts_with(prefix) => return Some(line),
            Ok(_) => {}
        }
    }
    None
}

#[test]
fn a_full_results_node_sheds_its_oldest_stream_to_admit_a_new_viewer() {
    let dir = edge_dir();
    let (pg, redis) = (PgServer::start(), RedisServer::start());
    pg.migrated_url();
    let mut settings = results_node::settings(
        pg.url_as(voteswarm::cluster::postgres::PgRole::Results),
        &redis.results_url(),
    );
    settings.max_streams = 2;
    let node = spawn_results(settings);
    let capture = Stub::start();
    let edge = Edge::start(
        dir.path(),
        "edge",
        &capture.addr(),
        &format!("127.0.0.1:{}", node.port),
        &[("STREAMS_PER_ADDRESS", "100".into())],
    );
    let mut streams = Vec::new();
    for _ in 0..3 {
        let (status, mut r) = open_events(edge.results_port);
        assert_eq!(status, 200, "every viewer is admitted");
        // Admitted by the node: its first snapshot arrived.
        assert!(until_line(&mut r, "data: ").is_some());
        streams.push(r);
    }
    // The oldest is told when to come back, then ended.
    let retry = until_line(&mut streams[0], "retry: ").expect("the oldest is shed");
    assert_eq!(retry.trim(), "retry: 30000");
    assert!(
        until_line(&mut streams[0], "data: ").is_none(),
        "and closed"
    );
    // The other two stay: each still gets updates (a keep-alive or data).
    for r in &mut streams[1..] {
        let mut line = String::new();
        r.get_mut()
            .set_read_timeout(Some(Duration::from_secs(40)))
            .unwrap();
        assert!(r.read_line(&mut line).unwrap() > 0, "still open");
    }
}

/// New voters counted for 127.0.0.1 in an edge's shared table, if any.
fn new_voter_count(edge: &Edge) -> Option<u64> {
    let table = edge.admin("show table edges/new_voters");
    table
        .lines()
        .find(|l| l.contains("key=::ffff:127.0.0.1"))
        .and_then(|l| l.split("gpc0_rate(600000)=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_new_voter_limit_holds_across_two_edges_sharing_a_peers_table() {
    let dir = edge_dir();
    let (capture, results) = (Stub::start(), Stub::start());
    let (peer_a, peer_b) = (free_port(), free_port());
    let env = |me: &str, bind: u16, other: &str, other_port: u16| {
        vec![
            ("NEW_VOTER_LIMIT", "3".to_owned()),
            ("EDGE_NAME", me.to_owned()),
            ("PEERS_BIND", format!("127.0.0.1:{bind}")),
            ("EDGE_PEER1_NAME", other.to_owned()),
            ("EDGE_PEER1_ADDR", format!("127.0.0.1:{other_port}")),
        ]
    };
    let edge = |me: &str, bind: u16, other: &str, other_port: u16| {
        let env = env(me, bind, other, other_port);
        Edge::start(dir.path(), me, &capture.addr(), &results.addr(), &env)
    };
    let a = edge("edge-a", peer_a, "edge-b", peer_b);
    let b = edge("edge-b", peer_b, "edge-a", peer_a);
    // Three new voters through edge A: within the limit. A client cannot
    // claim the edge's verdict itself: the header is removed on the way in.
    for i in 0..3 {
        let claimed = VOTE.replacen(
            "Host: x\r\n",
            "Host: x\r\nX-Voteswarm-New-Voters-Spent: 0\r\n",
            1,
        );
        let (status, text) = request(a.vote_port, &claimed);
        assert_eq!(status, 202, "new voter {i} via A: {text}");
        assert!(
            !text.to_ascii_lowercase().contains("x-voteswarm-new-voter"),
            "capture's report stays between capture and the edge: {text}"
        );
    }
    assert_eq!(
        capture.spent_seen.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Edge B learns A's count from the peers protocol.
    let learnt = wait_until(Duration::from_secs(15), || new_voter_count(&b) == Some(3));
    assert!(
        learnt,
        "edge B has A's count: {}\n{}",
        b.admin("show table edges/new_voters"),
        b.log()
    );
    // A fourth new voter from that address is refused by the OTHER edge,
    let (status, text) = request(b.vote_port, VOTE);
    assert_eq!(status, 429, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    // and one with a garbage cookie (which the edge cannot tell from a
    // voter's) is passed on marked spent, and refused by capture.
    assert_eq!(request(b.vote_port, &vote_with(Some("forged"))).0, 429);
    assert_eq!(request(a.vote_port, &vote_with(Some("forged"))).0, 429);
    assert_eq!(request(a.vote_port, VOTE).0, 429);
    assert_eq!(
        capture.spent_seen.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    // Returning voters (with their cookie) still vote, on either edge,
    assert_eq!(request(b.vote_port, &vote_with(Some("x"))).0, 202);
    assert_eq!(request(a.vote_port, &vote_with(Some("x"))).0, 202);
    // and page loads pass.
    assert_eq!(request(b.vote_port, &get("/")).0, 200);
    let posts = capture.seen_count("/api/vote");
    assert_eq!(
        posts, 7,
        "3 new voters, 2 forged (refused there), 2 returning"
    );
}

#[test]
fn the_request_limit_applies_to_ipv6_clients_too() {
    // Skipped (and said so) where the machine has no IPv6 loopback.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let port = free_port();
    let (_dir, _capture, _results, edge) = stub_edge(&[
        ("VOTE_BIND", format!("127.0.0.1:{port},[::1]:{port}")),
        ("VOTE_RATE_LIMIT", "3".into()),
    ]);
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("::1", edge.vote_port)).unwrap();
            s.write_all(get("/").as_bytes()).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429, 429],
        "an IPv6 client is limited too"
    );
}

/// What the edge answers a voter when no capture node can take the vote:
/// the form path's page (lang, a link back, the wait, the vote to send
/// again and the retry script, its style allowed by its hash) or the API's
/// JSON, both with `Retry-After`. Asserted alike for HAProxy's own error
/// after its retries (`statuses`: what it may answer then) and for the
/// 503 when no node is in rotation.
fn assert_edge_unavailable(edge: &Edge, when: &str, statuses: &[u16]) {
    let form = "POST / HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\nvote=b";
    let r = common::http::exchange(edge.vote_port, form.as_bytes()).unwrap();
    assert!(statuses.contains(&r.status), "{when}: {}", r.text);
    assert_eq!(r.header("retry-after"), Some("5"), "{when}: {}", r.text);
    assert_eq!(r.header("cache-control"), Some("no-store"), "{when}");
    assert_eq!(
        r.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{when}"
    );
    let page = r.body();
    assert!(
        page.starts_with("<!doctype html><html lang='en'>"),
        "{when}: {page}"
    );
    assert!(page.contains("<title>Your vote was not stored yet</title>"));
    assert!(page.contains("Try again in <strong>5 seconds</strong>"));
    assert!(page.contains("<a href='/'>"), "a link back: {page}");
    assert!(
        page.contains("data-retry-after='5'") && page.contains("name='vote' value='b'"),
        "{when}: the same vote, sent again: {page}"
    );
    assert!(page.contains("<script src='/retry.js'></script>"));
    let style = &page[page.find("<style>").unwrap() + 7..page.find("</style>").unwrap()];
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&voteswarm::headers::csp_hash(style)),
        "{when}: the style's hash: {csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));

    // Any of a poll's twelve letters is sent again; nothing past them.
    for (vote, echoed) in [("l", true), ("m", false)] {
        let r = common::http::exchange(
            edge.vote_port,
            form.replace("vote=b", &format!("vote={vote}")).as_bytes(),
        )
        .unwrap();
        assert!(statuses.contains(&r.status), "{when}: {}", r.text);
        let carried = r.body().contains(&format!("name='vote' value='{vote}'"));
        assert_eq!(carried, echoed, "{when}, vote={vote}: {}", r.text);
    }

    // Client text never reaches the page: only a letter is echoed.
    let evil = "vote=%3Cscript%3E";
    let forged = form
        .replace(
            "Content-Length: 6",
            &format!("Content-Length: {}", evil.len()),
        )
        .replace("vote=b", evil);
    let r = common::http::exchange(edge.vote_port, forged.as_bytes()).unwrap();
    assert!(statuses.contains(&r.status), "{when}: {}", r.text);
    assert!(!r.body().contains("script%3E") && !r.body().contains("<script>"));
    assert!(r.body().contains("<title>The poll is busy</title>"));

    // The page itself, asked for.
    let r = common::http::exchange(edge.vote_port, get("/").as_bytes()).unwrap();
    assert!(statuses.contains(&r.status), "{when}: {}", r.text);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(r.body().contains("<title>The poll is busy</title>"));
    assert!(r
        .body()
        .contains("<form method='get' action='/' data-retry-after='5'>"));

    let r = common::http::exchange(edge.vote_port, VOTE.as_bytes()).unwrap();
    assert!(statuses.contains(&r.status), "{when}: {}", r.text);
    assert_eq!(r.header("retry-after"), Some("5"), "{when}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{when}");
    let json = r
        .json()
        .unwrap_or_else(|| panic!("{when}: not JSON: {}", r.text));
    assert_eq!(json["reason"], "unavailable");
    assert!(json["error"]
        .as_str()
        .unwrap()
        .starts_with("vote not stored"));
}

#[test]
fn with_no_capture_node_the_edge_answers_a_styled_page_or_json_with_retry_after() {
    let dir = edge_dir();
    let results = Stub::start();
    // Nothing listens where the capture node should be.
    let capture = format!("127.0.0.1:{}", free_port());
    let edge = Edge::start(dir.path(), "edge", &capture, &results.addr(), &[]);

    // Held in rotation by hand: every connection fails, HAProxy retries,
    // then answers 503 itself (http-error).
    edge.admin("disable health capture/capture01");
    edge.admin("set server capture/capture01 health up");
    // `show stat`'s row of the node: status (field 17), connection errors
    // (13).
    let node = || {
        let stat = edge.admin("show stat");
        let row = stat
            .lines()
            .find(|l| l.starts_with("capture,capture01,"))
            .unwrap_or_else(|| panic!("{stat}"))
            .split(',')
            .map(str::to_owned)
            .collect::<Vec<_>>();
        (row[17].clone(), row[13].parse::<u64>().unwrap_or(0))
    };
    assert_eq!(node(), ("no check".to_owned(), 0), "in rotation, unchecked");
    assert_edge_unavailable(&edge, "after HAProxy's retries", &[502, 503, 504]);
    assert!(node().1 > 0, "the answers came after failed connections");

    // Out of rotation: no node at all (nbsrv), answered before any retry.
    edge.admin("set server capture/capture01 health down");
    let failed = node().1;
    assert_edge_unavailable(&edge, "with no node in rotation", &[503]);
    // The page's script comes from the edge while capture cannot serve it,
    // byte for byte what capture serves.
    let r = common::http::exchange(edge.vote_port, get("/retry.js").as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(r.body(), voteswarm::capture::page::RETRY_SCRIPT);
    assert_eq!(node().1, failed, "answered without trying the node");
}

/// `show stat`'s status of the one capture node (field 17).
fn capture_status(edge: &Edge) -> String {
    let stat = edge.admin("show stat");
    stat.lines()
        .find(|l| l.starts_with("capture,capture01,"))
        .and_then(|l| l.split(',').nth(17).map(str::to_owned))
        .unwrap_or_else(|| panic!("{stat}"))
}

/// The value of the `Set-Cookie` named `name` in a reply, if any.
fn set_cookie<'r>(r: &'r common::http::Reply, name: &str) -> Option<&'r str> {
    let head = r.text.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let v = v.trim().strip_prefix(name)?.strip_prefix('=')?;
        n.eq_ignore_ascii_case("set-cookie")
            .then(|| v.split(';').next().unwrap_or(v))
    })
}

/// Issue 18: every Redis is paused (SIGSTOP) while a first-time voter's
/// vote is in flight, so the edge answers 503 itself; the vote's pipeline
/// waits in the stopped Redis's socket buffer and is stored when Redis
/// resumes. The voter's retry, carrying the edge's `edge_id`, is that same
/// voter: one voter stored, not two.
#[test]
fn a_vote_stored_late_behind_the_edges_503_and_its_retry_are_one_voter() {
    use voteswarm::capture::edge_id::EdgeIdKey;
    let redis = RedisServer::start();
    let capture = common::capture_node::spawn_on(&redis, |s| {
        // One writer, so the connection /readyz opens below is the one the
        // vote goes out on. A writer without one would connect first, and
        // a stopped Redis never finishes the handshake: nothing would be
        // sent, and nothing stored late.
        s.http_workers = 1;
        s.enqueue_timeout = Duration::from_millis(1500);
        s.edge_id_key = Some(EdgeIdKey::from_base64(common::edge::TEST_EDGE_ID_KEY).unwrap());
    });
    let dir = edge_dir();
    let results = Stub::start();
    let node = format!("127.0.0.1:{}", capture.port);
    let edge = Edge::start(dir.path(), "edge", &node, &results.addr(), &[]);
    assert!(
        wait_until(Duration::from_secs(20), || capture_status(&edge) == "UP"),
        "capture in rotation: {}",
        capture_status(&edge)
    );
    assert_eq!(common::http::status(capture.port, "/readyz"), Some(200));
    // The node stays in rotation by hand while Redis is stopped: a failing
    // health check would drop the writer's connection before the vote.
    edge.admin("disable health capture/capture01");

    redis.pause();
    let port = edge.vote_port;
    let form = "POST / HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\nvote=a";
    let voting = std::thread::spawn(move || common::http::exchange(port, form.as_bytes()).unwrap());
    let in_flight = || {
        common::http::metrics(capture.port)
            .lines()
            .any(|l| l.starts_with("voteswarm_writer_in_flight ") && !l.ends_with(" 0"))
    };
    assert!(
        wait_until(Duration::from_secs(10), in_flight),
        "the vote's pipeline went out to the stopped Redis"
    );
    // Now every node is out: HAProxy's retry of capture's 503 finds none,
    // and the edge answers itself.
    edge.admin("set server capture/capture01 health down");
    let refused = voting.join().unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.body().contains("Your vote was not stored yet"));
    assert_eq!(set_cookie(&refused, "voter"), None, "the edge's own answer");
    let edge_id = set_cookie(&refused, "edge_id")
        .unwrap_or_else(|| panic!("the edge's identity: {}", refused.text))
        .to_owned();
    assert!(edge_id.contains(".a."), "{edge_id}");
    // (A stopped Redis cannot be asked: nothing can have been stored yet.)

    redis.resume();
    assert!(
        wait_until(Duration::from_secs(10), || redis.xlen() == 1),
        "the pipeline in the socket buffer is stored late"
    );
    let late = redis.votes()[0].clone();

    edge.admin("set server capture/capture01 health up");
    edge.admin("enable health capture/capture01");
    // The voter presses "Send my vote again" (the page's form, its cookie).
    let retry = form.replacen(
        "Host: x\r\n",
        &format!(
            "Host: x\r\nCookie: {}\r\n",
            format_args!("edge_id={edge_id}")
        ),
        1,
    );
    let mut answer = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let r = common::http::exchange(port, retry.as_bytes()).unwrap();
            let done = r.status == 303;
            answer = Some(r);
            done
        }),
        "the retry is taken: {:?}",
        answer.map(|r| r.text)
    );
    let votes = redis.votes();
    assert_eq!(votes.len(), 2, "{votes:?}");
    assert!(
        votes.iter().all(|v| v.voter == late.voter),
        "one voter: {votes:?}"
    );

    // A forged or altered identity is nobody's: a new voter.
    let forged = edge_id.replacen(".a.", ".b.", 1);
    let other = form.replacen(
        "Host: x\r\n",
        &format!("Host: x\r\nCookie: edge_id={forged}\r\n"),
        1,
    );
    let r = common::http::exchange(port, other.as_bytes()).unwrap();
    assert_eq!(r.status, 303, "{}", r.text);
    let votes = redis.votes();
    assert_eq!(votes.len(), 3);
    assert_ne!(votes[2].voter, late.voter, "{votes:?}");
}

/// What every page the edge answers itself has: its status, HTML with
/// `lang`, a title, a link back, the style its policy allows by hash, and
/// `Retry-After` when it names a wait.
fn assert_edge_page(r: &common::http::Reply, status: u16, title: &str, retry_after: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{}",
        r.text
    );
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.text);
    assert_eq!(r.header("retry-after"), retry_after, "{}", r.text);
    let page = r.body();
    assert!(
        page.starts_with("<!doctype html><html lang='en'>"),
        "{page}"
    );
    assert!(
        page.contains(&format!("<title>{title}</title>"))
            && page.contains(&format!("<h1>{title}</h1>")),
        "{page}"
    );
    assert!(page.contains("<a href='/'>Back to the poll</a>"), "{page}");
    let style = &page[page.find("<style>").unwrap() + 7..page.find("</style>").unwrap()];
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains(&voteswarm::headers::csp_hash(style)), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

fn form_vote(vote: &str) -> String {
    format!("POST / HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nvote={vote}", vote.len() + 5)
}

#[test]
fn the_edges_own_429_and_403_are_styled_pages_that_retry_or_json_for_the_api() {
    let (_dir, _capture, _results, edge) = stub_edge(&[("VOTE_RATE_LIMIT", "3".into())]);
    let port = edge.vote_port;
    let exchange = |raw: &str| common::http::exchange(port, raw.as_bytes()).unwrap();
    // Internal paths: refused before any limit, as a page or as JSON.
    let r = exchange(&get("/metrics"));
    assert_edge_page(&r, 403, "Not available here", None);
    assert!(
        !r.body().contains("retry.js"),
        "nothing to retry: {}",
        r.text
    );
    let r = exchange(&get("/api/metrics"));
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json().unwrap()["reason"], "forbidden", "{}", r.text);

    // Past the request limit (3 per 10 s, these included).
    assert!(wait_until(Duration::from_secs(5), || exchange(&get("/"))
        .status
        == 429));
    let r = exchange(&get("/"));
    assert_edge_page(&r, 429, "Too many requests", Some("10"));
    assert!(r
        .body()
        .contains("<form method='get' action='/' data-retry-after='10'>"));
    assert!(r.body().contains("<script src='/retry.js'></script>"));
    let r = exchange(&form_vote("b"));
    assert_edge_page(&r, 429, "Too many requests", Some("10"));
    assert!(
        r.body().contains("data-retry-after='10'") && r.body().contains("name='vote' value='b'"),
        "the same vote, sent again: {}",
        r.text
    );
    // Client text never reaches the page.
    let r = exchange(&form_vote("%3Cscript%3E"));
    assert_edge_page(&r, 429, "Too many requests", Some("10"));
    assert!(!r.body().contains("name='vote'") && !r.body().contains("script%3E"));
    let r = exchange(VOTE);
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("10"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json().unwrap()["reason"], "rate_limited", "{}", r.text);
    // The page's script is the edge's own, limit or not.
    let r = exchange(&get("/retry.js"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body(), voteswarm::capture::page::RETRY_SCRIPT);

    // The new-voter limit (none left at all here).
    let (_dir, _capture, _results, edge) = stub_edge(&[("NEW_VOTER_LIMIT", "0".into())]);
    let port = edge.vote_port;
    let exchange = |raw: &str| common::http::exchange(port, raw.as_bytes()).unwrap();
    let r = exchange(&form_vote("a"));
    let title = "Too many new voters from your network";
    assert_edge_page(&r, 429, title, Some("600"));
    assert!(
        r.body().contains("data-retry-after='600'") && r.body().contains("name='vote' value='a'"),
        "{}",
        r.text
    );
    let r = exchange(&form_vote("x"));
    assert_edge_page(&r, 429, title, Some("600"));
    assert!(!r.body().contains("<form"), "{}", r.text);
    let r = exchange(VOTE);
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json().unwrap()["reason"], "new_voter_limit", "{}", r.text);
    // A returning voter passes.
    assert_eq!(exchange(&vote_with(Some("v"))).status, 202);
}
