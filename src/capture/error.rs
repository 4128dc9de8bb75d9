//! `CaptureError`: every way a vote can be refused, with its status code,
//! its `Retry-After`, its metric label and a short body; [`Refusal`], the
//! error of taking a vote (the cause, and the identity the voter keeps);
//! [`VoteRefused`], the answer (`ResponseError`) in the form's or the
//! API's conventions.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::actors::queue_writer::EnqueueError;
use crate::cookie::VoterCookie;

/// How long a voter refused for a Redis problem should wait. Short: HAProxy
/// or the voter's retry will most likely land on a healthy node.
const RETRY_AFTER_UNAVAILABLE_SECS: u64 = 1;
/// The edge's new-voter window (10 minutes, `swarm/haproxy.cfg`): by then
/// the address's count has decayed.
const RETRY_AFTER_NEW_VOTER_SECS: u64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The number of the poll's options, for the message.
    #[error("unknown option: vote must be {}", crate::poll::choices(*.0))]
    BadOption(usize),
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("unsupported content type: expected {0}")]
    ContentType(&'static str),
    #[error("vote changes are not allowed in this poll")]
    ChangesDenied,
    #[error("vote changed too soon; try again in {0} s")]
    TooSoon(u64),
    /// The public text says "unavailable" only: the cause (a Redis
    /// address, an error text) goes to the log, through [`Self::detail`].
    #[error("vote not stored: the queue is unavailable; try again")]
    Enqueue(#[from] EnqueueError),
    #[error("vote not stored: the queue did not answer in time; try again")]
    Timeout,
    #[error("vote not stored: this node's queue is full; try again")]
    QueueFull,
    #[error("cross-site vote refused: vote from the poll's own page")]
    CrossSite,
    #[error("too many new voters from this address; returning voters can still vote")]
    NewVoterLimit,
    #[error("Idempotency-Key must be 32 to 128 hex digits or 22 to 128 base64url characters, random (at least 128 bits)")]
    BadIdempotencyKey,
    #[error("this Idempotency-Key was used for a different vote; use a new key for a new vote")]
    KeyReused,
    #[error("proof of work refused ({0}): reload the page and vote again")]
    Pow(crate::capture::pow::PowError),
    /// Stamped before `POLL_OPENS` (shown as [`crate::poll::Poll::format_time`]).
    #[error("voting has not opened yet: it opens at {0}")]
    NotOpen(String),
    /// Stamped at or after `POLL_CLOSES`.
    #[error("voting has closed: it closed at {0}")]
    Closed(String),
}

impl CaptureError {
    /// The full story, for the log (never for the voter).
    pub fn detail(&self) -> String {
        match self {
            CaptureError::Enqueue(e) => format!("vote not stored: {e}"),
            e => e.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            CaptureError::BadOption(_)
            | CaptureError::Malformed(_)
            | CaptureError::BadIdempotencyKey => StatusCode::BAD_REQUEST,
            CaptureError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            CaptureError::Pow(_) => StatusCode::FORBIDDEN,
            CaptureError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            CaptureError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            CaptureError::ChangesDenied => StatusCode::CONFLICT,
            CaptureError::TooSoon(_) | CaptureError::NewVoterLimit => StatusCode::TOO_MANY_REQUESTS,
            CaptureError::Enqueue(_) | CaptureError::Timeout | CaptureError::QueueFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CaptureError::CrossSite | CaptureError::NotOpen(_) | CaptureError::Closed(_) => {
                StatusCode::FORBIDDEN
            }
        }
    }

    /// The `reason` label of `voteswarm_votes_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            CaptureError::BadOption(_) => "bad_option",
            CaptureError::Malformed(_) => "malformed",
            CaptureError::TooLarge(_) => "too_large",
            CaptureError::ContentType(_) => "content_type",
            CaptureError::ChangesDenied => "changes_denied",
            CaptureError::TooSoon(_) => "too_soon",
            CaptureError::Enqueue(EnqueueError::Unavailable(_)) => "unavailable",
            CaptureError::Enqueue(EnqueueError::Full) => "full",
            CaptureError::Enqueue(EnqueueError::Replicas { .. }) => "replicas",
            CaptureError::Enqueue(EnqueueError::Timeout) | CaptureError::Timeout => "timeout",
            CaptureError::QueueFull => "queue_full",
            CaptureError::CrossSite => "cross_site",
            CaptureError::NewVoterLimit => "new_voter_limit",
            CaptureError::BadIdempotencyKey => "bad_idempotency_key",
            CaptureError::KeyReused => "idempotency_key_reused",
            CaptureError::Pow(_) => "pow_refused",
            CaptureError::NotOpen(_) => "poll_not_open",
            CaptureError::Closed(_) => "poll_closed",
        }
    }

    /// The form's error page in words: a title, what happened, what to do.
    pub fn page_words(&self) -> (&'static str, String, &'static str) {
        let what = self.to_string();
        let what = {
            let mut w = what;
            if let Some(first) = w.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            w.push('.');
            w
        };
        let (title, todo) = match self {
            CaptureError::BadOption(_)
            | CaptureError::Malformed(_)
            | CaptureError::BadIdempotencyKey
            | CaptureError::KeyReused => (
                "That vote could not be read",
                "Go back to the poll and press one of its buttons.",
            ),
            CaptureError::TooLarge(_) => (
                "That request was too large",
                "Go back to the poll and press one of its buttons.",
            ),
            CaptureError::ContentType(_) => (
                "That request was not the poll's form",
                "Go back to the poll and press one of its buttons.",
            ),
            CaptureError::NotOpen(_) => (
                "Voting has not opened yet",
                "Your vote was not counted. Come back once voting opens, and vote then.",
            ),
            CaptureError::Closed(_) => (
                "Voting has closed",
                "Your vote was not counted: it came after the close. Thank you for taking part.",
            ),
            CaptureError::CrossSite => (
                "Vote on the poll's own page",
                "Your vote was not counted: it came from another site. Open the poll and vote there.",
            ),
            CaptureError::Pow(_) => (
                "Your vote was not counted",
                "Go back to the poll, reload it, and vote again.",
            ),
            CaptureError::ChangesDenied => (
                "Your first vote stands",
                "Nothing changed: this poll keeps each voter's first vote.",
            ),
            CaptureError::TooSoon(_) => (
                "Not so fast",
                "Your earlier vote still counts. Wait a moment, then vote again to change it.",
            ),
            CaptureError::NewVoterLimit => (
                "Too many new voters from your network",
                "Your vote was not counted. Try again later, or vote from another connection.",
            ),
            CaptureError::Enqueue(_) | CaptureError::Timeout | CaptureError::QueueFull => (
                "Your vote was not stored yet",
                "The poll is very busy. Send your vote again in a moment.",
            ),
        };
        (title, what, todo)
    }

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            CaptureError::TooSoon(s) => Some(*s),
            CaptureError::NewVoterLimit => Some(RETRY_AFTER_NEW_VOTER_SECS),
            CaptureError::Enqueue(_) | CaptureError::Timeout | CaptureError::QueueFull => {
                Some(RETRY_AFTER_UNAVAILABLE_SECS)
            }
            _ => None,
        }
    }
}

/// A vote not taken: why, and the new voter's cookie when the vote may
/// have reached Redis all the same (a `503` after the hand-over), so that
/// the voter's retry is the same voter.
#[derive(Debug)]
pub struct Refusal {
    pub error: CaptureError,
    pub identity: Option<VoterCookie>,
}

impl From<CaptureError> for Refusal {
    fn from(error: CaptureError) -> Self {
        Refusal {
            error,
            identity: None,
        }
    }
}

/// Whose conventions an answer follows: the page's form reads an HTML
/// page in the vote page's look, the API's clients a JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Form,
    Api,
}

/// A refused vote, ready to answer: the error, the channel it came by,
/// the `Set-Cookie` of the identity it keeps (already sealed, as the
/// answer cannot reach the node's keys), and for the form its page
/// (rendered with the node's labels, for the same reason).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct VoteRefused {
    pub error: CaptureError,
    pub channel: Channel,
    pub set_cookie: Option<HeaderValue>,
    /// The form's HTML page and its Content-Security-Policy.
    pub page: Option<(String, HeaderValue)>,
}

impl ResponseError for VoteRefused {
    fn status_code(&self) -> StatusCode {
        self.error.status()
    }

    /// JSON `{"error", "reason"}` for the API, an HTML page for the form.
    fn error_response(&self) -> HttpResponse {
        let e = &self.error;
        let mut r = HttpResponse::build(e.status());
        if let Some(s) = e.retry_after() {
            r.insert_header(("Retry-After", s.to_string()));
        }
        // A refused vote must not be cached by anything in between.
        r.insert_header(("Cache-Control", "no-store"));
        let mut resp = match self.channel {
            Channel::Api => {
                r.json(serde_json::json!({ "error": e.to_string(), "reason": e.reason() }))
            }
            Channel::Form => match &self.page {
                Some((page, policy)) => {
                    let mut resp = r
                        .content_type("text/html; charset=utf-8")
                        .body(page.clone());
                    crate::headers::apply(resp.headers_mut(), policy);
                    resp
                }
                None => r
                    .content_type("text/plain; charset=utf-8")
                    .body(format!("{e}\n")),
            },
        };
        if let Some(c) = &self.set_cookie {
            resp.headers_mut().append(header::SET_COOKIE, c.clone());
        }
        resp
    }
}
