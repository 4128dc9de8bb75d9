//! What a vote request carries, taken out of it before the handler runs:
//! the [`Voter`] (the signed cookie, if it is ours) and the [`Ballot`] (the
//! option, from a form or a JSON body). A body that cannot be a vote is
//! refused here, before anything else about the request is looked at.

use std::future::{ready, Ready};
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::error::{CaptureError, Channel, VoteRefused};
use super::{State, MAX_BODY_BYTES};
use crate::clock;
use crate::cookie::{self, VoterCookie, COOKIE_NAME};
use crate::vote::VoteOption;

/// The request's voter as far as its cookie tells: `known` when the
/// cookie is ours and its time is no further ahead of `now` than
/// [`cookie::MAX_CLOCK_SKEW_MICROS`], else a new voter. `now` is the clock
/// reading the skew was judged by, and the vote is stamped from.
pub struct Voter {
    pub known: Option<VoterCookie>,
    pub now: i64,
}

impl Voter {
    pub(super) fn of(req: &HttpRequest, state: &State) -> Voter {
        let now = clock::now_micros();
        // Not `req.cookie`: that parses every cookie of the request into a
        // jar kept in its extensions, to read one.
        let known = cookie::find_cookie(
            req.headers()
                .get_all(header::COOKIE)
                .map(HeaderValue::as_bytes),
            COOKIE_NAME,
        )
        .and_then(|value| VoterCookie::decode_with(&state.sealer, &value))
        .filter(|c| c.within_skew(now));
        Voter { known, now }
    }
}

impl FromRequest for Voter {
    /// No cookie, or one that is not ours, is a new voter: never an error.
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Voter, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<State>>()
            .expect("capture's routes have its state");
        ready(Ok(Voter::of(req, state)))
    }
}

/// How a vote's body is written: the page's form or the API's JSON.
pub trait VoteFormat: 'static {
    /// Whose conventions the answer follows.
    const CHANNEL: Channel;
    /// The one media type taken (parameters such as `charset` aside).
    const CONTENT_TYPE: &'static str;
    fn parse(body: &[u8]) -> Result<VoteOption, CaptureError>;
}

/// `POST /`: `application/x-www-form-urlencoded`, `vote=a`.
pub struct Form;
/// `POST /api/vote`: `application/json`, `{"vote":"a"}`.
pub struct Json;

impl VoteFormat for Form {
    const CHANNEL: Channel = Channel::Form;
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";
    fn parse(body: &[u8]) -> Result<VoteOption, CaptureError> {
        parse_form(body)
    }
}

impl VoteFormat for Json {
    const CHANNEL: Channel = Channel::Api;
    const CONTENT_TYPE: &'static str = "application/json";
    fn parse(body: &[u8]) -> Result<VoteOption, CaptureError> {
        parse_json(body)
    }
}

/// The option voted for, read from a body in format `F`.
pub struct Ballot<F> {
    pub option: VoteOption,
    format: PhantomData<F>,
}

impl<F: VoteFormat> FromRequest for Ballot<F> {
    type Error = VoteRefused;
    type Future = LocalBoxFuture<'static, Result<Self, VoteRefused>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let parsed = match read_body(&req, payload, F::CONTENT_TYPE).await {
                Ok(body) => F::parse(&body),
                Err(e) => Err(e),
            };
            parsed
                .map(|option| Ballot {
                    option,
                    format: PhantomData,
                })
                .map_err(|e| {
                    let state = req
                        .app_data::<web::Data<State>>()
                        .expect("capture's routes have its state");
                    state.refuse(e.into(), F::CHANNEL, &req)
                })
        })
    }
}

/// Checks the content type, then reads at most [`MAX_BODY_BYTES`].
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: impl Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
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
            PayloadError::Overflow => CaptureError::TooLarge(MAX_BODY_BYTES),
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
