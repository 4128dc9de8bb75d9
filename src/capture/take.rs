//! Taking a vote, once its body has parsed: [`take_vote`] and its steps,
//! in the order they run. Each step either passes or refuses the vote
//! with a [`CaptureError`]; only the hand-over to Redis can fail after the
//! vote may have been stored, and only that refusal keeps the new voter's
//! identity ([`Refusal::identity`]).

use std::sync::atomic::Ordering;

use actix_web::http::header::{self, HeaderName};
use actix_web::HttpRequest;
use tokio::sync::oneshot;

use super::edge_id::EDGE_ID_COOKIE;
use super::error::{CaptureError, Refusal};
use super::extract::Voter;
use super::{now_secs, pow, State, NEW_VOTERS_SPENT};
use crate::actors::queue_writer::{Enqueue, EnqueueError};
use crate::clock;
use crate::config::VoteChanges;
use crate::cookie::{VoterCookie, IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER};
use crate::poll::Phase;
use crate::vote::{Id128, Vote, VoteOption};

// Header names built at compile time: looking a header up by `&str`
// parses the name on every call.
pub(super) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(IDEMPOTENCY_KEY_HEADER);
pub(super) const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Longest `Idempotency-Key` (and edge request id) taken.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Random bits an `Idempotency-Key` must carry, at least.
const MIN_IDEMPOTENCY_KEY_BITS: usize = 128;
/// As for cookie keys: 32 random hex digits show about 14 distinct ones,
/// fewer than 8 almost never.
const MIN_IDEMPOTENCY_KEY_DISTINCT: usize = 8;

/// What a handler needs of a vote Redis has stored (the vote itself has
/// moved to the writer rather than be cloned per vote), and the cookie
/// that now names its voter.
#[derive(Clone, Copy)]
pub struct Accepted {
    pub vote_id: Id128,
    pub voter: Id128,
    pub option: VoteOption,
    pub ts: i64,
    /// No cookie verified: this vote made a voter (the edge counts them).
    pub new_voter: bool,
}

/// Everything a vote goes through after parsing: cross-site check, queue
/// limit, idempotency (a retry of a vote already taken gets its answer,
/// even after the close), the poll's window, identity, change policy,
/// proof of work, stamp, enqueue. Returns what was stored and the cookie to set.
pub(super) async fn take_vote(
    req: &HttpRequest,
    state: &State,
    voter: Voter,
    option: VoteOption,
) -> Result<(Accepted, VoterCookie), Refusal> {
    check_same_site(req)?;
    check_queue_limit(state)?;
    let key = idempotency_key(req)?;
    if let Some(answered) = key.and_then(|k| replay(state, k, option, voter.known)) {
        return Ok(answered?);
    }
    // The window is judged by the time this vote is stamped with (the
    // hybrid clock, as the worker judges it too): the same `ts` that
    // `stamp` writes, since a voter without a cookie has no last vote.
    let ts = clock::next_ts(voter.now, voter.known.and_then(|c| c.last).map(|(t, _)| t));
    check_window(state, ts)?;
    let retry = retry_name(req, key);
    let fresh = voter.known.is_none();
    // A first-time voter the edge answered itself comes back as the voter
    // that request named (`edge_id.rs`); a client key names its own.
    let edge = (fresh && key.is_none())
        .then(|| edge_identity(req, state))
        .flatten();
    let (named, named_option) = match &edge {
        Some((id, o)) => (Some([&b"edge"[..], id.as_bytes()]), *o),
        None => (retry, option),
    };
    let cookie = identify(req, state, voter.known, named, named_option)?;
    check_change_policy(state, &cookie, option, voter.now)?;
    let claimed = if fresh { claim_pow(req, state)? } else { None };
    let vote = stamp(state, &cookie, retry, option, ts, fresh);
    if let Err(e) = enqueue(state, vote, fresh.then_some(cookie)).await {
        if let Some(s) = claimed {
            // Not stored (as far as we know): the voter may retry with it.
            state.spent.remove(s);
        }
        return Err(e);
    }
    if let Some(k) = key {
        state.answered.insert_new(k, vote);
    }
    state.metrics.count_accepted(option);
    if fresh && state.pow.is_some() {
        state.metrics.pow_vote(claimed.is_some()).inc();
    }
    let next = VoterCookie {
        voter: cookie.voter,
        last: Some((vote.ts, option)),
    };
    Ok((vote, next))
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

/// Votes stamped before `POLL_OPENS` or at and after `POLL_CLOSES` are
/// refused (`403`): the worker counts none stamped after the close, so a
/// `2xx` for one would be a promise broken.
fn check_window(state: &State, ts: i64) -> Result<(), CaptureError> {
    let poll = &state.settings.poll;
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(crate::poll::Poll::format_time).unwrap_or_default()
    };
    match poll.phase_at(ts) {
        Phase::Open => Ok(()),
        Phase::NotOpen => Err(CaptureError::NotOpen(at(poll.opens))),
        Phase::Closed => Err(CaptureError::Closed(at(poll.closes))),
    }
}

/// A queue over `QUEUE_LIMIT` takes no more votes (and `/readyz` fails,
/// so the edge sends them elsewhere).
pub(super) fn check_queue_limit(state: &State) -> Result<(), CaptureError> {
    if state.depth.load(Ordering::Relaxed) as u64 > state.settings.queue_limit {
        return Err(CaptureError::QueueFull);
    }
    Ok(())
}

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

/// The answer already given to this key, if this node gave one. The same
/// key is the same request: the same answer, stored once. The same key
/// with another vote, or for another voter, is a client's mistake (or
/// someone else's key): refused, and nothing changes.
fn replay(
    state: &State,
    key: &str,
    option: VoteOption,
    known: Option<VoterCookie>,
) -> Option<Result<(Accepted, VoterCookie), CaptureError>> {
    let done = state.answered.get(key)?;
    if done.option != option || known.is_some_and(|c| c.voter != done.voter) {
        return Some(Err(CaptureError::KeyReused));
    }
    let cookie = VoterCookie {
        voter: done.voter,
        last: Some((done.ts, option)),
    };
    // A replay makes no voter the edge has not counted already.
    let done = Accepted {
        new_voter: false,
        ..done
    };
    Some(Ok((done, cookie)))
}

/// What names this request on every retry: the client's key (the same on
/// its retries), else the edge's request id (the same on HAProxy's retries
/// of one request). The retry on another node, which has no record of the
/// key, then makes the same ids.
fn retry_name<'r>(req: &'r HttpRequest, key: Option<&'r str>) -> Option<[&'r [u8]; 2]> {
    key.map(|k| [&b"key"[..], k.as_bytes()])
        .or_else(|| edge_request_id(req).map(|r| [&b"edge"[..], r.as_bytes()]))
}

/// The edge's id of this request, if it names one.
fn edge_request_id(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty() && r.len() <= MAX_IDEMPOTENCY_KEY_LEN)
}

/// The request id and vote of the edge's `edge_id` cookie, when this node
/// has the edge's key and the cookie's tag is the edge's.
fn edge_identity(req: &HttpRequest, state: &State) -> Option<(String, VoteOption)> {
    let key = state.settings.edge_id_key.as_ref()?;
    let value = crate::cookie::find_cookie(
        req.headers().get_all(header::COOKIE).map(|v| v.as_bytes()),
        EDGE_ID_COOKIE,
    )?;
    key.open(&value).map(|(id, o)| (id.to_owned(), o))
}

/// The voter's cookie: the one it sent, or a new voter's, unless the edge
/// says this address has made its share of new voters.
fn identify(
    req: &HttpRequest,
    state: &State,
    known: Option<VoterCookie>,
    retry: Option<[&[u8]; 2]>,
    option: VoteOption,
) -> Result<VoterCookie, CaptureError> {
    if let Some(c) = known {
        return Ok(c);
    }
    if req.headers().contains_key(NEW_VOTERS_SPENT) {
        return Err(CaptureError::NewVoterLimit);
    }
    Ok(match retry {
        // The vote is part of a new voter's id: a key (or edge id) reused
        // with another vote reaches another new voter, never the first one.
        Some([src, r]) => VoterCookie {
            voter: state
                .sealer
                .derive_id("voter", &[src, r, option.as_str().as_bytes()]),
            last: None,
        },
        None => VoterCookie::new_voter(),
    })
}

/// The change policy holds for every request, whatever it carries: a
/// changed vote is refused under `VOTE_CHANGES=deny`, and one that comes
/// sooner than `MIN_CHANGE_INTERVAL_MS` after the last is told when to
/// come back.
fn check_change_policy(
    state: &State,
    cookie: &VoterCookie,
    option: VoteOption,
    now: i64,
) -> Result<(), CaptureError> {
    let Some((last_ts, last_option)) = cookie.last else {
        return Ok(());
    };
    if last_option == option {
        return Ok(());
    }
    if state.settings.vote_changes == VoteChanges::Deny {
        return Err(CaptureError::ChangesDenied);
    }
    // Measured by this node's clock. A negative interval means the last
    // vote was stamped by a node whose clock runs ahead of ours (by at most
    // the skew a cookie may carry): the change waits until our clock has
    // passed that stamp by the interval too. Letting it through instead let
    // a voter whose cookie carried a fast node's time change as often as
    // they liked on every slower node, each change stamped `last_ts + 1`
    // and so still ahead (tests/chaos.rs, skewed clocks). Now a change comes
    // late by the skew at worst, and early only on a move to a faster
    // node's clock, once per faster clock.
    let elapsed = now - last_ts;
    let min = state.settings.min_change_interval.as_micros() as i64;
    if elapsed < min {
        let wait_secs = ((min - elapsed) as u64).div_ceil(1_000_000).max(1);
        return Err(CaptureError::TooSoon(wait_secs));
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

/// The vote's ids and time: the vote id derived from the retry's name
/// (so a retry elsewhere stores the same vote) or random, and `ts`, the
/// hybrid logical clock (later than the voter's last vote whatever the
/// clocks), which the window was judged by.
fn stamp(
    state: &State,
    cookie: &VoterCookie,
    retry: Option<[&[u8]; 2]>,
    option: VoteOption,
    ts: i64,
    new_voter: bool,
) -> Accepted {
    let voter_bytes = cookie.voter.0.to_be_bytes();
    let opt = option.as_str().as_bytes();
    Accepted {
        vote_id: retry.map_or_else(Id128::random, |[src, r]| {
            state.sealer.derive_id("vote", &[src, r, &voter_bytes, opt])
        }),
        voter: cookie.voter,
        option,
        ts,
        new_voter,
    }
}

/// Hands the vote to this thread's writer and waits for Redis.
async fn enqueue(
    state: &State,
    vote: Accepted,
    identity: Option<VoterCookie>,
) -> Result<(), Refusal> {
    let (tx, rx) = oneshot::channel();
    state
        .writer
        .try_send(Enqueue {
            vote: Vote {
                vote_id: vote.vote_id,
                voter: vote.voter,
                option: vote.option,
                ts: vote.ts,
                node: state.settings.node_id.clone(),
            },
            reply: tx,
        })
        .map_err(|_| CaptureError::Enqueue(EnqueueError::Full))?;
    // From here the vote may reach Redis even if we answer 503: give a new
    // voter their identity anyway, so their retry is the same voter.
    let error = match tokio::time::timeout(state.settings.enqueue_timeout, rx).await {
        Ok(Ok(Ok(_entry_id))) => return Ok(()),
        Ok(Ok(Err(e))) => e.into(),
        Ok(Err(_)) => EnqueueError::Unavailable("writer stopped".into()).into(),
        Err(_) => CaptureError::Timeout,
    };
    Err(Refusal { error, identity })
}
