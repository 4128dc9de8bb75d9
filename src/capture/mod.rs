//! The `capture` node: HTTP in, Redis Stream out.
//!
//! Handlers parse and check the vote, stamp it (voter id from the signed
//! cookie, hybrid-logical-clock timestamp, a fresh vote id, this node's id),
//! hand it to the [`QueueWriter`] and answer only once Redis has stored it.
//! [`Capture::build`] binds the listener (port 0 works, for tests) and
//! starts the writer; [`Capture::run_until_stopped`] serves until SIGTERM or
//! Ctrl-C, then stops accepting, answers every vote already taken, and
//! returns.

pub mod error;
pub mod page;
pub mod pow;
pub mod recent;
pub mod settings;

use std::net::TcpListener;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::actors::queue_writer::{Enqueue, EnqueueError, Ping, QueueWriter};
use crate::clock;
use crate::config::VoteChanges;
use crate::cookie::{
    self, CookieSealer, VoterCookie, COOKIE_NAME, IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER,
};
use crate::metrics::{self, CaptureMetrics};
use crate::vote::{Id128, Vote, VoteOption};
use error::CaptureError;
use pow::Pow;
use recent::Recent;
pub use settings::{CaptureArgs, CaptureSettings};

/// Largest vote body accepted. A vote is a dozen bytes; 4 KiB leaves room
/// for clients that add fields, and nothing for abuse.
pub const MAX_BODY_BYTES: usize = 4096;

/// How long graceful shutdown waits for in-flight requests. Each is bounded
/// by `ENQUEUE_TIMEOUT_MS` already; this is the backstop.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// A client has this long to send its request head (slow-loris defence).
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

// Header names and values built at compile time: looking a header up by
// `&str` parses the name on every call, and a `&str` value is copied into
// a new buffer per response.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(IDEMPOTENCY_KEY_HEADER);
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
/// Set by the edge (never by a client: HAProxy deletes it from requests)
/// when this client address has made its share of new voters
/// (`NEW_VOTER_LIMIT` in `swarm/haproxy.cfg`). A vote whose cookie does not
/// verify would make one more, so it is refused; returning voters pass.
/// The edge can refuse cookieless votes itself, but not one carrying a
/// garbage cookie: only capture can tell that it is not a voter's.
pub const NEW_VOTERS_SPENT: HeaderName = HeaderName::from_static("x-voteswarm-new-voters-spent");
/// On an accepted vote that made a new voter: the edge counts these per
/// address (and removes the header before the client sees it).
pub const NEW_VOTER: HeaderName = HeaderName::from_static("x-voteswarm-new-voter");
const TEXT_HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Stands for the proof-of-work challenge in the prerendered vote page.
const POW_PLACEHOLDER: &str = "@@pow-challenge@@";

/// The vote page's five variants (nothing chosen, `a` or `b` chosen, and
/// the two "thanks" pages), rendered once at start: the vote path then
/// only clones a reference-counted buffer.
struct Pages {
    /// Indexed by `None`, `Some(A)`, `Some(B)`.
    view: [web::Bytes; 3],
    /// Indexed by the option just voted for.
    voted: [web::Bytes; 2],
    /// With a proof of work on: the page for a voter who has not voted,
    /// before and after its challenge (which changes every window).
    view_pow: Option<(String, String)>,
    /// The pages' Content-Security-Policy.
    policy: HeaderValue,
}

impl Pages {
    fn new(settings: &CaptureSettings) -> Pages {
        let render = |chosen: Option<VoteOption>, flash: Option<&str>| {
            web::Bytes::from(page::render(
                &settings.option_labels,
                &settings.node_id,
                chosen,
                flash,
                None,
            ))
        };
        let pow_on = settings.pow_bits > 0;
        let view_pow = pow_on.then(|| {
            let page = page::render(
                &settings.option_labels,
                &settings.node_id,
                None,
                None,
                Some((POW_PLACEHOLDER, settings.pow_bits)),
            );
            let (before, after) = page
                .split_once(POW_PLACEHOLDER)
                .expect("the page holds the placeholder");
            (before.to_owned(), after.to_owned())
        });
        let thanks = |o: VoteOption| {
            let flash = format!(
                "Thanks! Your vote for {} is in.",
                settings.option_labels[o as usize]
            );
            render(Some(o), Some(&flash))
        };
        Pages {
            view: [
                render(None, None),
                render(Some(VoteOption::A), None),
                render(Some(VoteOption::B), None),
            ],
            voted: [thanks(VoteOption::A), thanks(VoteOption::B)],
            view_pow,
            policy: page::policy(pow_on),
        }
    }
}

struct State {
    settings: CaptureSettings,
    /// The cookie keys, ready once for the node.
    sealer: CookieSealer,
    /// Answers to `Idempotency-Key`s, for their retries (the node's HTTP
    /// workers share it).
    answered: Arc<Recent<Stored>>,
    /// Proof-of-work solutions already taken.
    spent: Arc<Recent<()>>,
    pow: Option<Pow>,
    pages: Arc<Pages>,
    /// The queue's last known length, kept by the writers.
    depth: Arc<AtomicI64>,
    writer: Addr<QueueWriter>,
    metrics: CaptureMetrics,
}

/// A capture node, bound and ready to serve.
pub struct Capture {
    server: Server,
    port: u16,
}

impl Capture {
    /// Binds `settings.listen` and starts the queue writer. Must run inside
    /// an actix system (`#[actix_web::main]`, `#[actix_web::test]`).
    pub fn build(settings: CaptureSettings) -> std::io::Result<Capture> {
        let listener = crate::listen(&settings.listen)?;
        Self::build_with_listener(settings, listener)
    }

    pub fn build_with_listener(
        settings: CaptureSettings,
        listener: TcpListener,
    ) -> std::io::Result<Capture> {
        let port = listener.local_addr()?.port();
        let metrics = CaptureMetrics::new();
        let pages = Arc::new(Pages::new(&settings));
        let depth = Arc::new(AtomicI64::new(0));
        let client = redis::Client::open(settings.redis_url.expose().as_str())
            .map_err(|e| std::io::Error::other(format!("REDIS_URL: {e}")))?;
        let http_workers = settings.http_workers;
        let sealer = CookieSealer::with_previous(
            settings.cookie_key.expose(),
            settings.cookie_keys_previous.expose(),
        );
        let answered = Arc::new(Recent::new(
            settings.idempotency_ttl,
            settings.idempotency_max_keys,
        ));
        let pow = (settings.pow_bits > 0).then_some(Pow {
            bits: settings.pow_bits,
            window_secs: settings.pow_window.as_secs().max(1),
        });
        // A solution is good for two windows; a node that takes more new
        // voters than this in that time forgets the oldest spent ones.
        let spent = Arc::new(Recent::new(settings.pow_window * 2, MAX_SPENT_SOLUTIONS));
        let server = HttpServer::new(move || {
            // Runs once per HTTP worker thread: each gets its own writer on
            // its own arbiter (see `QueueWriter`).
            let writer = QueueWriter::new(
                client.clone(),
                settings.stream_key.clone(),
                settings.max_batch,
                settings.writer_capacity,
                settings.enqueue_timeout,
                metrics.clone(),
                depth.clone(),
            )
            .start();
            let state = web::Data::new(State {
                settings: settings.clone(),
                sealer: sealer.clone(),
                answered: answered.clone(),
                spent: spent.clone(),
                pow,
                pages: pages.clone(),
                depth: depth.clone(),
                writer,
                metrics: metrics.clone(),
            });
            App::new()
                .app_data(state)
                .service(
                    // POST first: the vote path then fails no method guard
                    // (actix records each failure in the request's
                    // extensions).
                    web::resource("/")
                        .route(web::post().to(post_form))
                        .route(web::get().to(vote_page)),
                )
                .route("/api/vote", web::post().to(post_api))
                .route("/api/pow", web::get().to(pow_challenge))
                .route("/pow.js", web::get().to(pow_script))
                .route("/healthz", web::get().to(metrics::healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_page))
        })
        .workers(http_workers)
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .listen(listener)?
        .run();
        Ok(Capture { server, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from outside (tests); `graceful` as on SIGTERM.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Spent proof-of-work solutions remembered per node, at most: some 100
/// bytes each, so a few tens of MB at worst.
const MAX_SPENT_SOLUTIONS: usize = 200_000;

/// The voter's cookie, if it is ours and its time is no further ahead of
/// `now` than [`cookie::MAX_CLOCK_SKEW_MICROS`].
fn voter_cookie(req: &HttpRequest, state: &State, now: i64) -> Option<VoterCookie> {
    // Not `req.cookie`: that parses every cookie of the request into a jar
    // kept in its extensions, to read one.
    let value = cookie::find_cookie(
        req.headers()
            .get_all(header::COOKIE)
            .map(HeaderValue::as_bytes),
        COOKIE_NAME,
    )?;
    VoterCookie::decode_with(&state.sealer, &value).filter(|c| c.within_skew(now))
}

fn now_secs() -> u64 {
    (clock::now_micros() / 1_000_000).max(0) as u64
}

async fn vote_page(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let chosen =
        voter_cookie(&req, &state, clock::now_micros()).and_then(|c| c.last.map(|(_, o)| o));
    let i = chosen.map_or(0, |o| o as usize + 1);
    if let (0, Some((before, after)), Some(pow)) = (i, &state.pages.view_pow, &state.pow) {
        let challenge = pow.challenge(&state.sealer, now_secs());
        return page_response(
            &state,
            web::Bytes::from(format!("{before}{challenge}{after}")),
        );
    }
    page_response(&state, state.pages.view[i].clone())
}

fn page_response(state: &State, body: web::Bytes) -> HttpResponse {
    let mut resp = HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, TEXT_HTML))
        .insert_header((header::CACHE_CONTROL, NO_STORE))
        .body(body);
    crate::headers::apply(resp.headers_mut(), &state.pages.policy);
    resp
}

/// `GET /api/pow`: the current challenge for clients other than the page
/// (loadgen); `bits` 0 when no proof of work is asked.
async fn pow_challenge(state: web::Data<State>) -> HttpResponse {
    let body = match &state.pow {
        Some(p) => serde_json::json!({
            "challenge": p.challenge(&state.sealer, now_secs()),
            "bits": p.bits,
            "window_secs": p.window_secs,
        }),
        None => serde_json::json!({ "challenge": null, "bits": 0 }),
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, NO_STORE))
        .json(body)
}

async fn pow_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(pow::SCRIPT)
}

/// Checks the content type, then reads at most [`MAX_BODY_BYTES`].
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    expected: &'static str,
) -> Result<web::Bytes, CaptureError> {
    let mime_ok = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected));
    if !mime_ok {
        return Err(CaptureError::ContentType(expected));
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > MAX_BODY_BYTES as u64 {
            return Err(CaptureError::TooLarge(MAX_BODY_BYTES));
        }
    }
    // A vote's body nearly always arrives as one chunk: keep that chunk,
    // and copy only when a second one comes.
    let mut body = web::Bytes::new();
    let mut joined: Option<web::BytesMut> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => CaptureError::TooLarge(MAX_BODY_BYTES),
            e => CaptureError::Malformed(e.to_string()),
        })?;
        let so_far = joined.as_ref().map_or(body.len(), |j| j.len());
        if so_far + chunk.len() > MAX_BODY_BYTES {
            return Err(CaptureError::TooLarge(MAX_BODY_BYTES));
        }
        if let Some(j) = joined.as_mut() {
            j.extend_from_slice(&chunk);
        } else if body.is_empty() {
            body = chunk;
        } else {
            let mut j = web::BytesMut::with_capacity(body.len() + chunk.len());
            j.extend_from_slice(&body);
            j.extend_from_slice(&chunk);
            joined = Some(j);
        }
    }
    Ok(joined.map_or(body, web::BytesMut::freeze))
}

#[derive(Deserialize)]
struct FormVote {
    vote: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiVote {
    vote: String,
}

/// Parses a form body (`vote=a`); other fields are ignored, as browsers and
/// proxies add their own.
pub fn parse_form(body: &[u8]) -> Result<VoteOption, CaptureError> {
    let f: FormVote = serde_urlencoded::from_bytes(body)
        .map_err(|e| CaptureError::Malformed(format!("form: {e}")))?;
    VoteOption::parse(&f.vote).ok_or(CaptureError::BadOption)
}

/// Parses a JSON body (`{"vote":"a"}`), strictly: unknown fields are an
/// error, so a client's typo is not silently a different request.
pub fn parse_json(body: &[u8]) -> Result<VoteOption, CaptureError> {
    // serde reads a struct from a JSON array too (`["a"]`); the API is an
    // object, and nothing else may pass for one.
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(CaptureError::Malformed("json: expected an object".into()));
    }
    let v: ApiVote =
        serde_json::from_slice(body).map_err(|e| CaptureError::Malformed(format!("json: {e}")))?;
    VoteOption::parse(&v.vote).ok_or(CaptureError::BadOption)
}

#[derive(Serialize)]
struct Receipt<'a> {
    vote_id: &'a str,
    /// The voter's own id, so a client (loadgen) can check its vote in the
    /// count; it is no secret to the voter holding the cookie.
    voter: &'a str,
    ts: i64,
    node: &'a str,
    option: &'static str,
}

/// What a handler needs of a stored vote: the vote itself has moved to
/// the writer rather than be cloned per vote.
#[derive(Clone, Copy)]
struct Stored {
    vote_id: Id128,
    voter: Id128,
    option: VoteOption,
    ts: i64,
    /// No cookie verified: this vote made a voter (the edge counts them).
    new_voter: bool,
}

/// Everything a vote goes through after parsing: cookie, idempotency,
/// policy, proof of work, stamp, enqueue. Returns what was stored and the
/// cookie to set; a refusal carries the new voter's cookie when the vote
/// may have reached Redis (a 503), so the voter's retry is the same voter.
async fn take_vote(
    req: &HttpRequest,
    state: &State,
    option: VoteOption,
) -> Result<(Stored, VoterCookie), (CaptureError, Option<VoterCookie>)> {
    check_same_site(req).map_err(|e| (e, None))?;
    if state.depth.load(Ordering::Relaxed) as u64 > state.settings.queue_limit {
        return Err((CaptureError::QueueFull, None));
    }
    let sealer = &state.sealer;
    let key = idempotency_key(req).map_err(|e| (e, None))?;
    let now = clock::now_micros();
    let known = voter_cookie(req, state, now);
    if let Some(k) = key {
        if let Some(done) = state.answered.get(k) {
            // The same key is the same request: the same answer, stored
            // once. The same key with another vote, or for another voter,
            // is a client's mistake (or someone else's key): refused, and
            // nothing changes.
            if done.option == option && known.is_none_or(|c| c.voter == done.voter) {
                let cookie = VoterCookie {
                    voter: done.voter,
                    last: Some((done.ts, option)),
                };
                // A replay makes no voter the edge has not counted already.
                let done = Stored {
                    new_voter: false,
                    ..done
                };
                return Ok((done, cookie));
            }
            return Err((CaptureError::KeyReused, None));
        }
    }
    // What names this request on every retry: the client's key (the same
    // on its retries), else the edge's request id (the same on HAProxy's
    // retries of one request). The retry on another node, which has no
    // record of the key, then makes the same ids.
    let retry: Option<[&[u8]; 2]> = key
        .map(|k| [&b"key"[..], k.as_bytes()])
        .or_else(|| edge_request_id(req).map(|r| [&b"edge"[..], r.as_bytes()]));
    let fresh = known.is_none();
    if fresh && req.headers().contains_key(NEW_VOTERS_SPENT) {
        return Err((CaptureError::NewVoterLimit, None));
    }
    let opt = option.as_str().as_bytes();
    let cookie = known.unwrap_or_else(|| match retry {
        // The vote is part of a new voter's id: a key (or edge id) reused
        // with another vote reaches another new voter, never the first one.
        Some([src, r]) => VoterCookie {
            voter: sealer.derive_id("voter", &[src, r, opt]),
            last: None,
        },
        None => VoterCookie::new_voter(),
    });
    // The change policy holds for every request, whatever it carries.
    if let Some((last_ts, last_option)) = cookie.last {
        if last_option != option {
            if state.settings.vote_changes == VoteChanges::Deny {
                return Err((CaptureError::ChangesDenied, None));
            }
            // Negative elapsed time means the cookie came from a node whose
            // clock runs ahead of ours (by at most the skew a cookie may
            // carry): we cannot tell how long ago that was, and ordering
            // does not depend on it, so let it through.
            let elapsed = now - last_ts;
            let min = state.settings.min_change_interval.as_micros() as i64;
            if (0..min).contains(&elapsed) {
                let wait_secs = ((min - elapsed) as u64).div_ceil(1_000_000).max(1);
                return Err((CaptureError::TooSoon(wait_secs), None));
            }
        }
    }
    let claimed = if fresh {
        claim_pow(req, state).map_err(|e| (e, None))?
    } else {
        None
    };
    let voter_bytes = cookie.voter.0.to_be_bytes();
    let stored = Stored {
        vote_id: retry.map_or_else(Id128::random, |[src, r]| {
            sealer.derive_id("vote", &[src, r, &voter_bytes, opt])
        }),
        voter: cookie.voter,
        option,
        ts: clock::next_ts(now, cookie.last.map(|(ts, _)| ts)),
        new_voter: fresh,
    };
    let result = enqueue(state, stored, fresh.then_some(cookie)).await;
    if let Err(e) = result {
        if let Some(s) = claimed {
            // Not stored (as far as we know): the voter may retry with it.
            state.spent.remove(s);
        }
        return Err(e);
    }
    if let Some(k) = key {
        state.answered.insert_new(k, stored);
    }
    state.metrics.accepted_by(option).inc();
    if fresh && state.pow.is_some() {
        state.metrics.pow_vote(claimed.is_some()).inc();
    }
    let next = VoterCookie {
        voter: cookie.voter,
        last: Some((stored.ts, option)),
    };
    Ok((stored, next))
}

/// Hands the vote to this thread's writer and waits for Redis.
async fn enqueue(
    state: &State,
    stored: Stored,
    identity: Option<VoterCookie>,
) -> Result<(), (CaptureError, Option<VoterCookie>)> {
    let vote = Vote {
        vote_id: stored.vote_id,
        voter: stored.voter,
        option: stored.option,
        ts: stored.ts,
        node: state.settings.node_id.clone(),
    };
    let (tx, rx) = oneshot::channel();
    state
        .writer
        .try_send(Enqueue { vote, reply: tx })
        .map_err(|_| (CaptureError::Enqueue(EnqueueError::Full), None))?;
    // From here the vote may reach Redis even if we answer 503: give a new
    // voter their identity anyway, so their retry is the same voter.
    match tokio::time::timeout(state.settings.enqueue_timeout, rx).await {
        Ok(Ok(Ok(_entry_id))) => Ok(()),
        Ok(Ok(Err(e))) => Err((e.into(), identity)),
        Ok(Err(_)) => Err((
            EnqueueError::Unavailable("writer stopped".into()).into(),
            identity,
        )),
        Err(_) => Err((CaptureError::Timeout, identity)),
    }
}

/// The edge's id of this request, if it names one.
fn edge_request_id(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty() && r.len() <= MAX_IDEMPOTENCY_KEY_LEN)
}

/// Longest `Idempotency-Key` (and edge request id) taken.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Random bits an `Idempotency-Key` must carry, at least.
const MIN_IDEMPOTENCY_KEY_BITS: usize = 128;
/// As for cookie keys: 32 random hex digits show about 14 distinct ones,
/// fewer than 8 almost never.
const MIN_IDEMPOTENCY_KEY_DISTINCT: usize = 8;

/// The request's `Idempotency-Key`, if it sends one; a key in another
/// format, or too weak to be unguessable, is a 400.
fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, CaptureError> {
    let Some(v) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| CaptureError::BadIdempotencyKey)?;
    // The draft's examples write the key as a structured-field string, in
    // double quotes; either way is taken.
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    check_idempotency_key(v)?;
    Ok(Some(v))
}

/// The documented format: 32 to 128 characters of hex digits (UUIDs'
/// hyphens allowed) or 22 to 128 of base64url, so at least 128 bits as
/// written, and not visibly repetitive.
pub fn check_idempotency_key(k: &str) -> Result<(), CaptureError> {
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if k.len() > MAX_IDEMPOTENCY_KEY_LEN || !k.bytes().all(base64url) {
        return Err(CaptureError::BadIdempotencyKey);
    }
    let hex_only = k.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let bits = if hex_only {
        4 * k.bytes().filter(u8::is_ascii_hexdigit).count()
    } else {
        6 * k.len()
    };
    let mut seen = [false; 256];
    k.bytes().for_each(|b| seen[b as usize] = true);
    let distinct = seen.iter().filter(|&&s| s).count();
    if bits < MIN_IDEMPOTENCY_KEY_BITS || distinct < MIN_IDEMPOTENCY_KEY_DISTINCT {
        return Err(CaptureError::BadIdempotencyKey);
    }
    Ok(())
}

/// A new voter's proof of work, when one is asked and the request carries
/// one: checked and marked spent (returned, to be released if the vote is
/// not stored). No solution at all is the no-JavaScript fallback: taken,
/// and left to the edge's new-voter limit.
fn claim_pow<'r>(req: &'r HttpRequest, state: &State) -> Result<Option<&'r str>, CaptureError> {
    let Some(pow) = &state.pow else {
        return Ok(None);
    };
    let Some(solution) = pow::from_query(req.query_string()) else {
        return Ok(None);
    };
    pow.check(&state.sealer, solution, now_secs())
        .map_err(CaptureError::Pow)?;
    if !state.spent.insert_new(solution, ()) {
        return Err(CaptureError::Pow(pow::PowError::Spent));
    }
    Ok(Some(solution))
}

/// Cross-site request forgery: a page elsewhere must not cast votes with
/// our voters' cookies. `SameSite=Lax` already keeps the cookie off
/// cross-site POSTs; this refuses them outright. Browsers say where a
/// request comes from in `Sec-Fetch-Site` (and `Origin`); clients that send
/// neither (curl, scripts) are not browsers and cannot be forged into
/// voting, so they pass.
fn check_same_site(req: &HttpRequest) -> Result<(), CaptureError> {
    let headers = req.headers();
    if let Some(site) = headers.get(SEC_FETCH_SITE).and_then(|v| v.to_str().ok()) {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err(CaptureError::CrossSite),
        };
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| CaptureError::CrossSite)?;
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .ok_or(CaptureError::CrossSite)?;
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or(CaptureError::CrossSite)?;
        if !origin_host.eq_ignore_ascii_case(host) {
            return Err(CaptureError::CrossSite);
        }
    }
    Ok(())
}

/// Whether the voter reached the edge over HTTPS: HAProxy sets
/// X-Forwarded-Proto on every request, over whatever a client sent, and
/// capture is reached only through it.
fn over_https(req: &HttpRequest) -> bool {
    req.headers()
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The voter's `Set-Cookie`, with `Secure` over HTTPS: a browser then never
/// sends the cookie over plain HTTP, where anyone on the same network could
/// copy it and vote as that voter.
fn set_cookie(cookie: &VoterCookie, state: &State, https: bool) -> HeaderValue {
    let plain = cookie.set_cookie_header(&state.sealer);
    if !https {
        return plain;
    }
    let mut v = Vec::with_capacity(plain.len() + SECURE.len());
    v.extend_from_slice(plain.as_bytes());
    v.extend_from_slice(SECURE);
    HeaderValue::from_maybe_shared(actix_web::web::Bytes::from(v))
        .expect("a valid header value and ASCII")
}

const SECURE: &[u8] = b"; Secure";

fn refused(
    state: &State,
    (e, identity): (CaptureError, Option<VoterCookie>),
    api: bool,
    https: bool,
) -> HttpResponse {
    state
        .metrics
        .rejected
        .with_label_values(&[e.reason()])
        .inc();
    if e.status().is_server_error() {
        // The detail (which the voter is not shown) is for the log.
        log::warn!("vote refused: {}", e.detail());
    }
    let mut resp = e.response(api);
    if let Some(c) = identity {
        resp.headers_mut()
            .append(header::SET_COOKIE, set_cookie(&c, state, https));
    }
    resp
}

async fn post_form(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let result = async {
        let body = read_body(&req, payload, "application/x-www-form-urlencoded")
            .await
            .map_err(|e| (e, None))?;
        let option = parse_form(&body).map_err(|e| (e, None))?;
        take_vote(&req, &state, option).await
    }
    .await;
    match result {
        Ok((vote, cookie)) => {
            let mut resp = page_response(&state, state.pages.voted[vote.option as usize].clone());
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(&cookie, &state, over_https(&req)),
            );
            if vote.new_voter {
                resp.headers_mut()
                    .insert(NEW_VOTER, HeaderValue::from_static("1"));
            }
            resp
        }
        Err(e) => refused(&state, e, false, over_https(&req)),
    }
}

async fn post_api(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let result = async {
        let body = read_body(&req, payload, "application/json")
            .await
            .map_err(|e| (e, None))?;
        let option = parse_json(&body).map_err(|e| (e, None))?;
        take_vote(&req, &state, option).await
    }
    .await;
    match result {
        Ok((vote, cookie)) => {
            let (vote_id, voter) = (vote.vote_id.hex(), vote.voter.hex());
            let mut resp = HttpResponse::Accepted();
            if vote.new_voter {
                resp.insert_header((NEW_VOTER, "1"));
            }
            resp.append_header((
                header::SET_COOKIE,
                set_cookie(&cookie, &state, over_https(&req)),
            ))
            .insert_header((header::CACHE_CONTROL, NO_STORE))
            .json(Receipt {
                vote_id: std::str::from_utf8(&vote_id).expect("hex digits"),
                voter: std::str::from_utf8(&voter).expect("hex digits"),
                ts: vote.ts,
                node: &state.settings.node_id,
                option: vote.option.as_str(),
            })
        }
        Err(e) => refused(&state, e, true, over_https(&req)),
    }
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    if state.depth.load(Ordering::Relaxed) as u64 > state.settings.queue_limit {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("not ready: queue over QUEUE_LIMIT\n");
    }
    // `send` waits while the writer's mailbox is full; a full writer is not
    // ready either, so the same timeout as a vote bounds the wait.
    let answer =
        match tokio::time::timeout(state.settings.enqueue_timeout, state.writer.send(Ping)).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(EnqueueError::Unavailable("writer stopped".into())),
            Err(_) => Err(EnqueueError::Timeout),
        };
    match answer {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {e}\n")),
    }
}

async fn metrics_page(state: web::Data<State>) -> HttpResponse {
    metrics::metrics_response(&state.metrics.registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_body_is_read_whole_in_one_chunk_or_several() {
        use actix_web::error::PayloadError;
        use actix_web::FromRequest;
        let (req, _) = actix_web::test::TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "Application/JSON ; charset=utf-8"))
            .to_http_parts();
        let read = |parts: Vec<Vec<u8>>| {
            let req = req.clone();
            async move {
                let stream = futures_util::stream::iter(
                    parts
                        .into_iter()
                        .map(|p| Ok::<_, PayloadError>(web::Bytes::from(p))),
                );
                let mut pl = actix_web::dev::Payload::from(
                    Box::pin(stream) as std::pin::Pin<Box<dyn futures_util::Stream<Item = _>>>
                );
                let payload = web::Payload::from_request(&req, &mut pl).await.unwrap();
                read_body(&req, payload, "application/json").await
            }
        };
        let cases: [&[&[u8]]; 5] = [
            &[],
            &[b"{}"],
            &[b"", b"{\"vote\":", b"\"a\"}"],
            &[b"{\"vote\"", b":\"b\"}"],
            &[&[b'x'; MAX_BODY_BYTES]],
        ];
        for parts in cases {
            let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
            let body = read(parts.clone()).await.unwrap();
            assert_eq!(&body[..], &parts.concat()[..]);
        }
        let too_large = read(vec![vec![b'x'; 3000], vec![b'x'; 3000]]).await;
        assert!(matches!(too_large, Err(CaptureError::TooLarge(_))));
        let (text, _) = actix_web::test::TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .to_http_parts();
        let mut pl = actix_web::dev::Payload::None;
        let payload = web::Payload::from_request(&text, &mut pl).await.unwrap();
        assert!(matches!(
            read_body(&text, payload, "application/json").await,
            Err(CaptureError::ContentType(_))
        ));
    }

    #[test]
    fn the_constant_headers_are_the_ones_built_before() {
        let html = header::ContentType::html();
        assert_eq!(TEXT_HTML.to_str().unwrap(), html.to_string());
        assert_eq!(IDEMPOTENCY_KEY.as_str(), "idempotency-key");
        assert_eq!(REQUEST_ID.as_str(), "x-voteswarm-request");
    }

    #[test]
    fn only_a_json_object_with_exactly_the_vote_field_is_a_vote() {
        assert_eq!(parse_json(br#" {"vote":"b"}"#).unwrap(), VoteOption::B);
        for bad in [
            &br#"["a"]"#[..],
            b"\"a\"",
            b"null",
            br#"{"vote":"a","x":1}"#,
            br#"{"vote":["a"]}"#,
            b"",
        ] {
            assert!(parse_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_form(b"vote=a&lang=en").unwrap(), VoteOption::A);
        assert!(parse_form(b"vote=a&vote=a").is_err());
    }
}
