//! A capture node started in-process on port 0 against a test Redis, with
//! typed helpers for voting.

use std::time::Duration;

use actix_web::cookie::Key;
use voteswarm::capture::settings::{cookie_key_from, CaptureSettings};
use voteswarm::capture::Capture;
use voteswarm::config::{ExposeSecret, SecretString, VoteChanges};

use super::node_thread::NodeThread;
use super::RedisServer;

pub const TEST_COOKIE_KEY: &str = "test-cookie-key-that-is-at-least-32-bytes-long";

pub fn settings(redis_url: &str) -> CaptureSettings {
    CaptureSettings {
        listen: "127.0.0.1:0".into(),
        redis_url: SecretString::from(redis_url.to_owned()),
        node_id: "capture-test".into(),
        poll: voteswarm::poll::Poll::default(),
        cookie_key: cookie_key_from(TEST_COOKIE_KEY).unwrap(),
        cookie_keys_previous: Vec::new(),
        edge_id_key: None,
        results_url: None,
        stream_key: "votes".into(),
        min_change_interval: Duration::from_millis(1000),
        idempotency_ttl: Duration::from_secs(3600),
        idempotency_max_keys: 100_000,
        pow_bits: 0,
        pow_window: Duration::from_secs(300),
        vote_changes: VoteChanges::Allow,
        enqueue_timeout: Duration::from_millis(2000),
        ack_replicas: 0,
        max_batch: 256,
        writer_capacity: 10_000,
        queue_limit: voteswarm::capture::settings::DEFAULT_QUEUE_LIMIT,
        http_workers: 2,
    }
}

pub fn test_key() -> Key {
    cookie_key_from(TEST_COOKIE_KEY).unwrap().key()
}

/// A running node; it stops when dropped.
pub struct TestCapture {
    pub port: u16,
    pub base: String,
    /// For the typed helpers below; an actix test's own client.
    pub client: awc::Client,
    node: NodeThread,
}

/// Starts a node on a thread of its own (see `node_thread`).
pub fn spawn_capture(settings: CaptureSettings) -> TestCapture {
    let (node, port) = NodeThread::start_server("capture", move || {
        let app = Capture::build(settings).expect("build capture");
        (app.port(), app.handle(), app.run_until_stopped())
    });
    TestCapture {
        port,
        base: format!("http://127.0.0.1:{port}"),
        client: client(64),
        node,
    }
}

/// A node on `redis` from the settings a test starts from, as `change`
/// makes them.
pub fn spawn_on(redis: &RedisServer, change: impl FnOnce(&mut CaptureSettings)) -> TestCapture {
    let mut s = settings(&redis.capture_url());
    change(&mut s);
    spawn_capture(s)
}

/// The node's proof-of-work counters: `solved` new voters paid, `none`
/// took the fallback.
pub fn assert_pow_votes(metrics: &str, solved: usize, none: usize) {
    for (proof, n) in [("solved", solved), ("none", none)] {
        let line = format!(r#"voteswarm_pow_votes_total{{proof="{proof}"}} {n}"#);
        assert!(metrics.contains(&line), "{metrics}");
    }
}

/// An HTTP client that opens up to `connections` connections and never
/// follows redirects or keeps cookies on its own: tests pass cookies
/// explicitly, as distinct voters.
pub fn client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(connections))
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish()
}

/// What a vote request came back with.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The signed `voter` cookie value set by the node, if any.
    pub cookie: Option<String>,
    pub headers: awc::http::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The value of the cookie `name` that the answer sets, if it sets one.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                let (n, rest) = c.split_once('=')?;
                (n == name).then(|| rest.split(';').next().unwrap_or("").to_owned())
            })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl TestCapture {
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
        cookie: Option<&str>,
    ) -> Answer {
        post_with(
            &self.client,
            &self.base,
            path,
            content_type,
            body,
            cookie,
            &[],
        )
        .await
    }

    /// `POST /api/vote` with `{"vote": option}` and extra headers.
    pub async fn vote_api_with(
        &self,
        option: &str,
        cookie: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let body = serde_json::json!({ "vote": option }).to_string();
        post_with(
            &self.client,
            &self.base,
            "/api/vote",
            "application/json",
            body,
            cookie,
            headers,
        )
        .await
    }

    /// `POST /api/vote` with `{"vote": option}`.
    pub async fn vote_api(&self, option: &str, cookie: Option<&str>) -> Answer {
        self.vote_api_with(option, cookie, &[]).await
    }

    /// `POST /` with the form `vote=option`.
    pub async fn vote_form(&self, option: &str, cookie: Option<&str>) -> Answer {
        self.post(
            "/",
            "application/x-www-form-urlencoded",
            format!("vote={option}"),
            cookie,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.get_with_headers(path).await;
        (status, body)
    }

    /// `GET path`: the status, the response headers, the body.
    pub async fn get_with_headers(
        &self,
        path: &str,
    ) -> (u16, awc::http::header::HeaderMap, String) {
        let mut resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let body = resp.body().limit(1 << 20).await.expect("body");
        (
            resp.status().as_u16(),
            resp.headers().clone(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// `POST path` with `body` to the node at `base`, as the voter whose
/// cookie is `cookie`, with extra request headers.
pub async fn post_with(
    client: &awc::Client,
    base: &str,
    path: &str,
    content_type: &str,
    body: impl Into<Vec<u8>>,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = client
        .post(format!("{base}{path}"))
        .insert_header(("Content-Type", content_type));
    for &(name, value) in headers {
        req = req.insert_header((name, value));
    }
    if let Some(c) = cookie {
        req = req.insert_header(("Cookie", format!("voter={c}")));
    }
    let mut resp = req.send_body(body.into()).await.expect("POST");
    let retry_after = resp
        .headers()
        .get("Retry-After")
        .map(|v| v.to_str().unwrap().to_owned());
    let cookie = resp.cookie("voter").map(|c| c.value().to_owned());
    let body = resp.body().limit(1 << 20).await.expect("body");
    Answer {
        status: resp.status().as_u16(),
        retry_after,
        cookie,
        headers: resp.headers().clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// libfaketime, as Debian's `faketime` package installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The capture binary on `redis`, as `node_id`, with the test cookie key;
/// with `clock` (libfaketime's offset, such as `+30s`) its wall clock runs
/// that far from the host's. Killed on drop.
pub struct CaptureProcess {
    pub proc: super::Proc,
    pub port: u16,
}

impl CaptureProcess {
    pub fn start(redis: &RedisServer, node_id: &str, clock: Option<&str>) -> CaptureProcess {
        let port = super::free_port();
        let mut cmd = super::process::clean_command(super::bin::CAPTURE);
        cmd.env("LISTEN", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis.capture_url())
            .env("NODE_ID", node_id)
            .env("COOKIE_KEY", TEST_COOKIE_KEY)
            .env("HTTP_WORKERS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(offset) = clock {
            assert!(
                std::path::Path::new(LIBFAKETIME).exists(),
                "{LIBFAKETIME} not found: run `make test` (it installs it) or `apt-get install faketime`"
            );
            // Only the wall clock: timeouts and intervals (the monotonic
            // clock) stay true, as on a host whose clock is merely set wrong.
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let mut proc = super::Proc::spawn(&mut cmd);
        let ready = super::wait_until(Duration::from_secs(30), || {
            super::http::status(port, "/readyz") == Some(200)
        });
        assert!(ready && proc.running(), "capture {node_id} did not start");
        CaptureProcess { proc, port }
    }
}
