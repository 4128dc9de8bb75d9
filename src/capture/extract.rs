//! What a vote request carries, taken out of it before the handler runs:
//! the [`Voter`] (the signed cookie, if it is ours) and the [`Ballot`] (the
//! option, from a form or a JSON body). A body that cannot be a vote is
//! refused here, before anything else about the request is looked at.

use std::future::{ready, Future, Ready};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::error::{CaptureError, Channel, VoteRefused};
use super::{State, MAX_BODY_BYTES};
use crate::clock;
use crate::cookie::{self, VoterCookie, COOKIE_NAME};
use crate::poll::MAX_OPTIONS;
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
    format: PhantomData<fn() -> F>,
}

impl<F: VoteFormat> FromRequest for Ballot<F> {
    type Error = VoteRefused;
    type Future = ReadBallot<F>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ReadBallot {
            body: read_body(req, payload.take(), F::CONTENT_TYPE),
            req: req.clone(),
            format: PhantomData,
        }
    }
}

/// [`Ballot`]'s future: the body read, then parsed; a refusal is counted
/// as every other refused vote is.
pub struct ReadBallot<F> {
    body: ReadBody<Payload>,
    req: HttpRequest,
    format: PhantomData<fn() -> F>,
}

impl<F: VoteFormat> Future for ReadBallot<F> {
    type Output = Result<Ballot<F>, VoteRefused>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let body = ready!(Pin::new(&mut this.body).poll(cx));
        let state = this
            .req
            .app_data::<web::Data<State>>()
            .expect("capture's routes have its state");
        let poll = &state.settings.poll;
        // A letter this poll does not have (`f` of five options) is as
        // unknown as a word: the same 400, naming this poll's letters.
        let bad_option = CaptureError::BadOption(poll.options.len());
        Poll::Ready(
            body.and_then(|b| F::parse(&b))
                .and_then(|option| {
                    if poll.has(option) {
                        Ok(option)
                    } else {
                        Err(CaptureError::BadOption(0))
                    }
                })
                .map(|option| Ballot {
                    option,
                    format: PhantomData,
                })
                .map_err(|e| {
                    let e = match e {
                        CaptureError::BadOption(_) => bad_option,
                        e => e,
                    };
                    state.refuse(e.into(), F::CHANNEL, None, &this.req)
                }),
        )
    }
}

/// Checks the content type, then reads at most [`MAX_BODY_BYTES`] of
/// `payload`.
pub(super) fn read_body<S>(req: &HttpRequest, payload: S, expected: &'static str) -> ReadBody<S> {
    ReadBody {
        payload,
        body: web::Bytes::new(),
        joined: None,
        refused: check_head(req, expected).err(),
    }
}

/// The content type, and the length when the client declares it.
fn check_head(req: &HttpRequest, expected: &'static str) -> Result<(), CaptureError> {
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
    Ok(())
}

/// [`read_body`]'s future, written out rather than an `async` block so
/// that [`Ballot`]'s future needs no box: one allocation fewer per vote.
pub(super) struct ReadBody<S> {
    payload: S,
    /// A vote's body nearly always arrives as one chunk: that chunk is
    /// kept, and copied into `joined` only when a second one comes.
    body: web::Bytes,
    joined: Option<web::BytesMut>,
    /// Refused before a byte was read.
    refused: Option<CaptureError>,
}

impl<S> Future for ReadBody<S>
where
    S: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    type Output = Result<web::Bytes, CaptureError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(e) = this.refused.take() {
            return Poll::Ready(Err(e));
        }
        while let Some(chunk) = ready!(this.payload.poll_next_unpin(cx)) {
            let chunk = match chunk {
                Ok(c) => c,
                Err(PayloadError::Overflow) => {
                    return Poll::Ready(Err(CaptureError::TooLarge(MAX_BODY_BYTES)))
                }
                Err(e) => return Poll::Ready(Err(CaptureError::Malformed(e.to_string()))),
            };
            let so_far = this.joined.as_ref().map_or(this.body.len(), |j| j.len());
            if so_far + chunk.len() > MAX_BODY_BYTES {
                return Poll::Ready(Err(CaptureError::TooLarge(MAX_BODY_BYTES)));
            }
            if let Some(j) = this.joined.as_mut() {
                j.extend_from_slice(&chunk);
            } else if this.body.is_empty() {
                this.body = chunk;
            } else {
                let mut j = web::BytesMut::with_capacity(this.body.len() + chunk.len());
                j.extend_from_slice(&this.body);
                j.extend_from_slice(&chunk);
                this.joined = Some(j);
            }
        }
        let body = std::mem::take(&mut this.body);
        Poll::Ready(Ok(this.joined.take().map_or(body, web::BytesMut::freeze)))
    }
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
/// proxies add their own. Any letter `a` to `l` parses: whether the poll
/// has it is the [`Ballot`]'s check.
pub fn parse_form(body: &[u8]) -> Result<VoteOption, CaptureError> {
    let f: FormVote = serde_urlencoded::from_bytes(body)
        .map_err(|e| CaptureError::Malformed(format!("form: {e}")))?;
    VoteOption::parse(&f.vote).ok_or(CaptureError::BadOption(MAX_OPTIONS))
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
    VoteOption::parse(&v.vote).ok_or(CaptureError::BadOption(MAX_OPTIONS))
}
