//! The `capture` node: HTTP in, Redis Stream out.
//!
//! Handlers parse and check the vote, stamp it (voter id from the signed
//! cookie, hybrid-logical-clock timestamp, a fresh vote id, this node's id),
//! hand it to the [`QueueWriter`] and answer only once Redis has stored it.
//! [`Capture::build`] binds the listener (port 0 works, for tests) and
//! starts the writer; [`Capture::run_until_stopped`] serves until SIGTERM or
//! Ctrl-C, then stops accepting, answers every vote already taken, and
//! returns.
//!
//! The route table below reads as the node does: `POST /` and
//! `POST /api/vote` are one handler, `post_vote`, for two formats. Its
//! extractors (`extract.rs`: the `Voter` from the cookie, the `Ballot`
//! from the body) run first; `take_vote` (`take.rs`) is then the vote's
//! steps in order; a refusal is a [`error::CaptureError`], answered by
//! [`error::VoteRefused`] in the form's or the API's conventions.

pub mod edge_id;
pub mod error;
mod extract;
pub mod page;
pub mod pow;
pub mod recent;
pub mod settings;
mod take;

use std::net::TcpListener;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Serialize;

use crate::actors::queue_writer::{EnqueueError, Ping, QueueWriter};
use crate::clock;
use crate::config::ExposeSecret;
use crate::cookie::{CookieSealer, VoterCookie};
use crate::metrics::{self, CaptureMetrics};
use crate::poll::Phase;
use crate::vote::VoteOption;
use error::{Channel, Refusal, VoteRefused};
pub use extract::{parse_form, parse_json};
use extract::{Ballot, Form, Json, VoteFormat, Voter};
use pow::Pow;
use recent::Recent;
pub use settings::{CaptureArgs, CaptureSettings};
pub use take::check_idempotency_key;
use take::{take_vote, Accepted};

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

/// The vote page's variants, rendered once at start for each phase of the
/// poll's window (nothing chosen, each option chosen, and each option's
/// "thanks" page): the vote path then only clones a reference-counted
/// buffer. The phase is read per request, as the window passes.
struct Pages {
    /// Indexed by [`phase_index`].
    phases: [PhasePages; 3],
    /// With a proof of work on: the page for a voter who has not voted,
    /// while the poll is open, before and after its challenge (which
    /// changes every window).
    view_pow: Option<(String, String)>,
    /// The pages' Content-Security-Policy.
    policy: HeaderValue,
    /// The error pages': the same style, and `/retry.js`.
    error_policy: HeaderValue,
}

/// One phase's pages.
struct PhasePages {
    /// Indexed by `None`, then each option's index plus one.
    view: Vec<web::Bytes>,
    /// Indexed by the option just voted for.
    voted: Vec<web::Bytes>,
}

fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::NotOpen => 0,
        Phase::Open => 1,
        Phase::Closed => 2,
    }
}

impl Pages {
    fn new(settings: &CaptureSettings) -> Pages {
        let poll = &settings.poll;
        let render = |phase: Phase, chosen: Option<VoteOption>, flash: Option<&str>| {
            web::Bytes::from(page::render(
                poll,
                phase,
                &settings.node_id,
                chosen,
                flash,
                None,
                settings.results_url.as_deref(),
            ))
        };
        let pow_on = settings.pow_bits > 0;
        let view_pow = pow_on.then(|| {
            let page = page::render(
                poll,
                Phase::Open,
                &settings.node_id,
                None,
                None,
                Some((POW_PLACEHOLDER, settings.pow_bits)),
                settings.results_url.as_deref(),
            );
            let (before, after) = page
                .split_once(POW_PLACEHOLDER)
                .expect("the page holds the placeholder");
            (before.to_owned(), after.to_owned())
        });
        let phase_pages = |phase: Phase| PhasePages {
            view: std::iter::once(None)
                .chain(poll.vote_options().iter().map(|&o| Some(o)))
                .map(|chosen| render(phase, chosen, None))
                .collect(),
            voted: poll
                .vote_options()
                .iter()
                .map(|&o| {
                    let label = poll.label(o).unwrap_or_default();
                    render(
                        phase,
                        Some(o),
                        Some(&format!("Thanks! Your vote for {label} is in.")),
                    )
                })
                .collect(),
        };
        Pages {
            phases: [Phase::NotOpen, Phase::Open, Phase::Closed].map(phase_pages),
            view_pow,
            policy: page::policy(pow_on),
            error_policy: page::policy(true),
        }
    }
}

struct State {
    settings: CaptureSettings,
    /// The cookie keys, ready once for the node.
    sealer: CookieSealer,
    /// Answers to `Idempotency-Key`s, for their retries (the node's HTTP
    /// workers share it).
    answered: Arc<Recent<Accepted>>,
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
pub type Capture = crate::Node<CaptureRole>;
/// What marks a [`crate::Node`] as a capture node.
pub enum CaptureRole {}

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
        let metrics = CaptureMetrics::new(settings.poll.vote_options());
        let pages = Arc::new(Pages::new(&settings));
        let depth = Arc::new(AtomicI64::new(0));
        let client = redis::Client::open(settings.redis_url.expose_secret())
            .map_err(|e| std::io::Error::other(format!("REDIS_URL: {e}")))?;
        let http_workers = settings.http_workers;
        let previous: Vec<_> = settings
            .cookie_keys_previous
            .iter()
            .map(|k| k.key())
            .collect();
        let sealer = CookieSealer::with_previous(&settings.cookie_key.key(), &previous);
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
            let writer =
                QueueWriter::new(client.clone(), &settings, metrics.clone(), depth.clone()).start();
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
                        .route(web::post().to(post_vote::<Form>))
                        // The page shrinks to about a third with gzip. Not
                        // the vote's answers: a 303 has no body, a receipt
                        // or a refusal is a few hundred bytes, and the vote
                        // path's CPU is the node's capacity.
                        .route(
                            web::get()
                                .to(vote_page)
                                .wrap(actix_web::middleware::Compress::default()),
                        ),
                )
                .route("/api/vote", web::post().to(post_vote::<Json>))
                .route("/api/pow", web::get().to(pow_challenge))
                .route("/pow.js", web::get().to(pow_script))
                .route("/retry.js", web::get().to(retry_script))
                .route("/favicon.svg", web::get().to(crate::assets::favicon))
                .route("/favicon.ico", web::get().to(crate::assets::favicon))
                .route("/healthz", web::get().to(metrics::healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_page))
        })
        .workers(http_workers)
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .listen(listener)?
        .run();
        Ok(Capture::new(server, port))
    }
}

/// Spent proof-of-work solutions remembered per node, at most: some 100
/// bytes each, so a few tens of MB at worst.
const MAX_SPENT_SOLUTIONS: usize = 200_000;

fn now_secs() -> u64 {
    (clock::now_micros() / 1_000_000).max(0) as u64
}

async fn vote_page(req: HttpRequest, voter: Voter, state: web::Data<State>) -> HttpResponse {
    // A cookie from before the poll lost options (its settings changed)
    // shows no choice rather than one the page cannot draw.
    let chosen = voter
        .known
        .and_then(|c| c.last.map(|(_, o)| o))
        .filter(|o| state.settings.poll.has(*o));
    let phase = state.settings.poll.phase_at(voter.now);
    let pages = &state.pages.phases[phase_index(phase)];
    if let Some(o) = chosen.filter(|_| has_thanks_cookie(&req)) {
        // Once: the cookie goes with this page, so a reload shows the
        // choice without the thanks.
        let mut resp = page_response(&state, pages.voted[o.index()].clone());
        resp.headers_mut()
            .append(header::SET_COOKIE, HeaderValue::from_static(THANKS_CLEAR));
        return resp;
    }
    let i = chosen.map_or(0, |o| o.index() + 1);
    if let (0, Phase::Open, Some((before, after)), Some(pow)) =
        (i, phase, &state.pages.view_pow, &state.pow)
    {
        let challenge = pow.challenge(&state.sealer, now_secs());
        return page_response(
            &state,
            web::Bytes::from(format!("{before}{challenge}{after}")),
        );
    }
    page_response(&state, pages.view[i].clone())
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

/// The one-time note after a form vote: set on its `303`, read and
/// cleared by the page it leads to. It says only "thank the voter": the
/// choice shown is the signed voter cookie's, so a client that sets it
/// itself is thanked for its own vote, nothing more. A minute covers the
/// redirect; a voter who never follows it is not thanked later on.
const THANKS_COOKIE: &str = "thanks";
const THANKS_SET: &str = "thanks=1; Path=/; Max-Age=60; HttpOnly; SameSite=Lax";
const THANKS_SET_SECURE: &str = "thanks=1; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure";
const THANKS_CLEAR: &str = "thanks=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax";
const SEE_ROOT: HeaderValue = HeaderValue::from_static("/");

fn has_thanks_cookie(req: &HttpRequest) -> bool {
    crate::cookie::find_cookie(
        req.headers()
            .get_all(header::COOKIE)
            .map(HeaderValue::as_bytes),
        THANKS_COOKIE,
    )
    .is_some_and(|v| v == "1")
}

async fn retry_script() -> HttpResponse {
    crate::assets::script(page::RETRY_SCRIPT)
}

async fn pow_script() -> HttpResponse {
    crate::assets::script(pow::SCRIPT)
}

/// `POST /` and `POST /api/vote`: one path for both, `F` saying how the
/// body reads and whose conventions the answer follows. A body that is not
/// a vote never gets here (see [`Ballot`]).
async fn post_vote<F: VoteFormat>(
    req: HttpRequest,
    state: web::Data<State>,
    voter: Voter,
    ballot: Ballot<F>,
) -> Result<HttpResponse, VoteRefused> {
    let (vote, cookie) = take_vote(&req, &state, voter, ballot.option)
        .await
        .map_err(|r| state.refuse(r, F::CHANNEL, Some(ballot.option), &req))?;
    let https = over_https(&req);
    let cookie = set_cookie(&cookie, &state, https);
    Ok(match F::CHANNEL {
        Channel::Form => see_the_page(&state, vote, cookie, https),
        Channel::Api => receipt(&state, vote, cookie),
    })
}

/// The form's answer: `303 See Other` to the page, which shows the choice
/// from the cookie set here and thanks the voter once. A reload or Back
/// then repeats that `GET`, never the vote.
fn see_the_page(state: &State, vote: Accepted, cookie: HeaderValue, https: bool) -> HttpResponse {
    let thanks = if https { THANKS_SET_SECURE } else { THANKS_SET };
    let mut resp = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, SEE_ROOT))
        .insert_header((header::CACHE_CONTROL, NO_STORE))
        .finish();
    // The page's own headers, as on the page: whatever a browser shows for
    // this answer is not framed, sniffed or referred either.
    crate::headers::apply(resp.headers_mut(), &state.pages.policy);
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    resp.headers_mut()
        .append(header::SET_COOKIE, HeaderValue::from_static(thanks));
    if vote.new_voter {
        resp.headers_mut()
            .insert(NEW_VOTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The API's answer: `202` and the JSON receipt.
fn receipt(state: &State, vote: Accepted, cookie: HeaderValue) -> HttpResponse {
    let (vote_id, voter) = (vote.vote_id.hex(), vote.voter.hex());
    let mut resp = HttpResponse::Accepted();
    if vote.new_voter {
        resp.insert_header((NEW_VOTER, "1"));
    }
    resp.append_header((header::SET_COOKIE, cookie))
        .insert_header((header::CACHE_CONTROL, NO_STORE))
        .json(Receipt {
            vote_id: std::str::from_utf8(&vote_id).expect("hex digits"),
            voter: std::str::from_utf8(&voter).expect("hex digits"),
            ts: vote.ts,
            node: &state.settings.node_id,
            option: vote.option.as_str(),
        })
}

/// The `202` body of `POST /api/vote`.
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

impl State {
    /// Counts and logs a refused vote, seals the identity it keeps, and for
    /// the form renders its page (`option`: the vote, once it has parsed).
    fn refuse(
        &self,
        refusal: Refusal,
        channel: Channel,
        option: Option<VoteOption>,
        req: &HttpRequest,
    ) -> VoteRefused {
        let Refusal { error, identity } = refusal;
        self.metrics
            .rejected
            .with_label_values(&[error.reason()])
            .inc();
        if error.status().is_server_error() {
            // The detail (which the voter is not shown) is for the log.
            log::warn!("vote refused: {}", error.detail());
        }
        let page = (channel == Channel::Form).then(|| {
            let (title, what, todo) = error.page_words();
            let retry_after = error.retry_after();
            let page = page::render_error(
                &self.settings.poll,
                &self.settings.node_id,
                &page::ErrorPage {
                    title,
                    what: &what,
                    todo,
                    retry_after,
                    again: option,
                },
            );
            (page, self.pages.error_policy.clone())
        });
        VoteRefused {
            set_cookie: identity.map(|c| set_cookie(&c, self, over_https(req))),
            error,
            channel,
            page,
        }
    }
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

async fn readyz(state: web::Data<State>) -> HttpResponse {
    if take::check_queue_limit(&state).is_err() {
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
                extract::read_body(&req, payload, "application/json").await
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
        assert!(matches!(too_large, Err(error::CaptureError::TooLarge(_))));
        let (text, _) = actix_web::test::TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            .to_http_parts();
        let mut pl = actix_web::dev::Payload::None;
        let payload = web::Payload::from_request(&text, &mut pl).await.unwrap();
        assert!(matches!(
            extract::read_body(&text, payload, "application/json").await,
            Err(error::CaptureError::ContentType(_))
        ));
    }

    #[test]
    fn the_constant_headers_are_the_ones_built_before() {
        let html = header::ContentType::html();
        assert_eq!(TEXT_HTML.to_str().unwrap(), html.to_string());
        assert_eq!(take::IDEMPOTENCY_KEY.as_str(), "idempotency-key");
        assert_eq!(take::REQUEST_ID.as_str(), "x-voteswarm-request");
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
