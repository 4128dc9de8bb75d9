//! The signed voter cookie: who the voter is, and what and when they last
//! voted, so that any capture node can stamp the next vote correctly without
//! asking anyone.
//!
//! Value (before signing): `v1.<voter:32 hex>.<last_ts>.<option>`; `last_ts`
//! is `0` and option `-` before the first accepted vote. The value is signed
//! with HMAC-SHA256 (the `cookie` crate's signed jar, key derived from
//! `COOKIE_KEY`, shared by all capture nodes). A missing, forged, truncated
//! or otherwise unreadable cookie is never an error: the request is simply
//! from a new voter.

use std::borrow::Cow;

use actix_web::cookie::{Cookie, Key, SameSite};
use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};

use crate::vote::{Id128, VoteOption};

pub const COOKIE_NAME: &str = "voter";

/// A base64 HMAC-SHA256 tag: 32 bytes, 44 characters with padding.
const MAC_B64_LEN: usize = 44;

/// The cookie key, keyed into HMAC-SHA256 once. Keying hashes the key's
/// inner and outer pad blocks: two SHA-256 blocks, half of a cookie's HMAC
/// cost, that a clone of this ready state skips. Build one per key (the
/// capture node builds it with its settings) and share it.
#[derive(Clone)]
pub struct CookieSigner {
    keyed: Hmac<sha2::Sha256>,
}

impl CookieSigner {
    pub fn new(key: &Key) -> Self {
        CookieSigner {
            keyed: Hmac::<sha2::Sha256>::new_from_slice(key.signing())
                .expect("HMAC takes a key of any length"),
        }
    }

    fn mac(&self, value: &[u8]) -> Hmac<sha2::Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(value);
        mac
    }

    /// See [`derive_id`].
    pub fn derive_id(&self, label: &str, request_id: &str) -> Id128 {
        let mut mac = self.keyed.clone();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(request_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Id128(u128::from_be_bytes(first))
    }
}

impl std::fmt::Debug for CookieSigner {
    // The keyed state is as good as the key: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSigner(..)")
    }
}

impl From<&Key> for CookieSigner {
    fn from(key: &Key) -> Self {
        CookieSigner::new(key)
    }
}

/// Anything longer than this cannot be one of ours; refuse it before doing
/// any cryptography on it.
const MAX_COOKIE_VALUE: usize = 256;

/// The poll lasts a night; a month is long enough for a voter to come back
/// and change their mind, short enough not to linger.
const COOKIE_MAX_AGE_DAYS: i64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoterCookie {
    pub voter: Id128,
    /// Timestamp and option of the voter's last accepted vote, if any.
    pub last: Option<(i64, VoteOption)>,
}

impl VoterCookie {
    pub fn new_voter() -> Self {
        VoterCookie {
            voter: Id128::random(),
            last: None,
        }
    }

    /// `v1.<voter>.<last_ts>.<option>`, on the stack: a `format!` here was
    /// an allocation and a trip through `core::fmt` per vote.
    fn plain(&self) -> Plain {
        let (ts, opt) = match self.last {
            Some((ts, o)) => (ts, o.as_str()),
            None => (0, "-"),
        };
        let mut p = Plain {
            buf: [0; MAX_PLAIN_LEN],
            len: 0,
        };
        p.push(b"v1.");
        p.push(&self.voter.hex());
        p.push(b".");
        let mut digits = [0u8; 20];
        let n = write_i64(ts, &mut digits);
        p.push(&digits[..n]);
        p.push(b".");
        p.push(opt.as_bytes());
        p
    }

    fn parse_plain(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        if parts.next()? != "v1" {
            return None;
        }
        let voter = Id128::parse(parts.next()?)?;
        let ts: i64 = parts.next()?.parse().ok()?;
        let opt = parts.next()?;
        if parts.next().is_some() || ts < 0 {
            return None;
        }
        let last = match (ts, opt) {
            (0, "-") => None,
            (ts, o) if ts > 0 => Some((ts, VoteOption::parse(o)?)),
            _ => return None,
        };
        Some(VoterCookie { voter, last })
    }

    /// Reads a signed cookie value; `None` when it is absent, forged,
    /// signed with another key, or not in our format.
    pub fn decode(key: &Key, raw_value: &str) -> Option<Self> {
        Self::decode_with(&CookieSigner::new(key), raw_value)
    }

    /// [`VoterCookie::decode`] with a signer built once per key.
    pub fn decode_with(signer: &CookieSigner, raw_value: &str) -> Option<Self> {
        if raw_value.len() > MAX_COOKIE_VALUE || !raw_value.is_char_boundary(MAC_B64_LEN) {
            return None;
        }
        let (tag, plain) = raw_value.split_at(MAC_B64_LEN);
        // 44 base64 characters decode to at most 33 bytes.
        let mut tag_bytes = [0u8; 33];
        let n = STANDARD.decode_slice(tag, &mut tag_bytes).ok()?;
        signer
            .mac(plain.as_bytes())
            .verify_slice(&tag_bytes[..n])
            .ok()?;
        Self::parse_plain(plain)
    }

    /// The signed value, as it would appear in a `Cookie:` header: the
    /// cookie crate's signed format, `base64(HMAC-SHA256(value)) || value`,
    /// computed without building a cookie jar per vote.
    pub fn encode(&self, key: &Key) -> String {
        self.encode_with(&CookieSigner::new(key))
    }

    /// [`VoterCookie::encode`] with a signer built once per key.
    pub fn encode_with(&self, signer: &CookieSigner) -> String {
        let plain = self.plain();
        let mut out = String::with_capacity(MAC_B64_LEN + plain.len);
        Self::sign_into(signer, &plain, &mut out);
        out
    }

    fn sign_into(signer: &CookieSigner, plain: &Plain, out: &mut String) {
        let tag = signer.mac(plain.as_bytes()).finalize().into_bytes();
        STANDARD.encode_string(tag, out);
        out.push_str(plain.as_str());
    }

    /// The `Set-Cookie` to send with an accepted vote.
    pub fn to_cookie(&self, key: &Key) -> Cookie<'static> {
        Cookie::build(COOKIE_NAME, self.encode(key))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .max_age(actix_web::cookie::time::Duration::days(COOKIE_MAX_AGE_DAYS))
            .finish()
    }

    /// The same `Set-Cookie` as [`VoterCookie::to_cookie`], byte for byte,
    /// written straight into one buffer of the exact size: no `Cookie`, no
    /// `to_string`, and the buffer becomes the header value without a copy.
    pub fn set_cookie_header(&self, signer: &CookieSigner) -> HeaderValue {
        let plain = self.plain();
        let len = COOKIE_NAME.len() + 1 + MAC_B64_LEN + plain.len + SET_COOKIE_ATTRIBUTES.len();
        let mut v = String::with_capacity(len);
        v.push_str(COOKIE_NAME);
        v.push('=');
        Self::sign_into(signer, &plain, &mut v);
        v.push_str(SET_COOKIE_ATTRIBUTES);
        HeaderValue::from_maybe_shared(Bytes::from(v.into_bytes()))
            .expect("a cookie of base64 and ASCII is a valid header value")
    }
}

/// What [`VoterCookie::to_cookie`] sets after the value, in the order the
/// cookie crate writes its attributes (HttpOnly, SameSite, Path, Max-Age).
const SET_COOKIE_ATTRIBUTES: &str = "; HttpOnly; SameSite=Lax; Path=/; Max-Age=2592000";
const _: () = assert!(COOKIE_MAX_AGE_DAYS * 86_400 == 2_592_000);

/// `v1.` + 32 hex digits + `.` + an `i64` (at most 20 characters) + `.` + an
/// option.
const MAX_PLAIN_LEN: usize = 3 + 32 + 1 + 20 + 1 + 1;

/// An unsigned cookie value, built without allocating.
struct Plain {
    buf: [u8; MAX_PLAIN_LEN],
    len: usize,
}

impl Plain {
    fn push(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("ASCII only")
    }
}

/// Writes `n` in decimal into `out`, as `n.to_string()` would; returns the
/// length.
fn write_i64(n: i64, out: &mut [u8; 20]) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut len = 0;
    if n < 0 {
        out[0] = b'-';
        len = 1;
    }
    let d = &digits[i..];
    out[len..len + d.len()].copy_from_slice(d);
    len + d.len()
}

/// The value of the first cookie called `name` in a request's `Cookie`
/// header values, found as actix-web's `HttpRequest::cookie` finds it
/// (the cookie crate's `parse_encoded` per `;`-separated piece) but without
/// building and storing a jar of every cookie on the request: pieces are
/// trimmed, a piece without `=` or with an empty name is skipped, the value
/// loses one pair of surrounding double quotes, names and values are
/// percent-decoded (a piece that does not decode to UTF-8 is skipped), and
/// a header that is not UTF-8 hides every cookie of the request.
pub fn find_cookie<'a, I>(header_values: I, name: &str) -> Option<Cow<'a, str>>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut found = None;
    for value in header_values {
        let value = std::str::from_utf8(value).ok()?;
        if found.is_some() {
            continue;
        }
        for piece in value.split(';') {
            let Some((n, v)) = piece.trim().split_once('=') else {
                continue;
            };
            let n = n.trim();
            if n.is_empty() {
                continue;
            }
            let v = trim_quotes(v.trim()).trim();
            let (n, v) = if n.contains('%') || v.contains('%') {
                match (percent_decode(n), percent_decode(v)) {
                    (Some(n), Some(v)) => (n, v),
                    _ => continue,
                }
            } else {
                (Cow::Borrowed(n), Cow::Borrowed(v))
            };
            if n == name {
                found = Some(v);
                break;
            }
        }
    }
    found
}

/// As the cookie crate: one pair of surrounding double quotes goes.
fn trim_quotes(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// `%XX` to its byte, as the `percent-encoding` crate decodes (a `%` not
/// followed by two hex digits stays); `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The header HAProxy sets to one id per client request, the same on each
/// of its retries (`swarm/haproxy.cfg`).
pub const REQUEST_ID_HEADER: &str = "x-voteswarm-request";

/// A client's own retry key: a client that sends the same value on every
/// retry of one vote (loadgen does) is one voter's one vote even when an
/// answer was lost after the vote was stored (the edge went down
/// mid-request), and before the client ever held a cookie.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// A 128-bit id derived from the edge's request id with the cookie key
/// (HMAC-SHA256), so that every capture node that sees the same request
/// (HAProxy retries it after a 503) makes the same voter and vote ids,
/// while nobody without the key can aim at a chosen id.
pub fn derive_id(key: &Key, label: &str, request_id: &str) -> Id128 {
    CookieSigner::new(key).derive_id(label, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_per_request_and_differ_per_label_and_key() {
        let id = derive_id(&key(1), "voter", "req-1");
        assert_eq!(id, derive_id(&key(1), "voter", "req-1"));
        assert_ne!(id, derive_id(&key(1), "vote", "req-1"));
        assert_ne!(id, derive_id(&key(1), "voter", "req-2"));
        assert_ne!(id, derive_id(&key(2), "voter", "req-1"));
    }

    fn key(b: u8) -> Key {
        Key::derive_from(&[b; 32])
    }

    #[test]
    fn a_cookie_reads_back_with_the_same_key_only() {
        let c = VoterCookie {
            voter: Id128(42),
            last: Some((1_700_000_000_000_000, VoteOption::A)),
        };
        let v = c.encode(&key(1));
        assert_eq!(VoterCookie::decode(&key(1), &v), Some(c));
        assert_eq!(VoterCookie::decode(&key(2), &v), None);
        let fresh = VoterCookie::new_voter();
        assert_eq!(
            VoterCookie::decode(&key(1), &fresh.encode(&key(1))),
            Some(fresh)
        );
    }

    #[test]
    fn our_signature_is_the_cookie_crates_signed_format() {
        use actix_web::cookie::CookieJar;
        let c = VoterCookie {
            voter: Id128(9),
            last: Some((77, VoteOption::B)),
        };
        let mut jar = CookieJar::new();
        jar.signed_mut(&key(3))
            .add(Cookie::new(COOKIE_NAME, c.plain().as_str().to_owned()));
        let theirs = jar.get(COOKIE_NAME).unwrap().value().to_owned();
        assert_eq!(c.encode(&key(3)), theirs);
        assert_eq!(VoterCookie::decode(&key(3), &theirs), Some(c));
    }

    #[test]
    fn tampered_truncated_and_unsigned_cookies_are_refused() {
        let c = VoterCookie {
            voter: Id128(7),
            last: Some((5, VoteOption::B)),
        };
        let v = c.encode(&key(1));
        let tampered = v.replace(".b", ".a");
        assert_ne!(tampered, v);
        assert_eq!(VoterCookie::decode(&key(1), &tampered), None);
        assert_eq!(VoterCookie::decode(&key(1), &v[..v.len() - 1]), None);
        assert_eq!(VoterCookie::decode(&key(1), c.plain().as_str()), None);
        assert_eq!(VoterCookie::decode(&key(1), ""), None);
        assert_eq!(VoterCookie::decode(&key(1), &"x".repeat(10_000)), None);
    }

    #[test]
    fn a_signer_built_once_signs_as_a_freshly_keyed_hmac() {
        let signer = CookieSigner::new(&key(4));
        for plain in ["", "v1.x", &"y".repeat(300)] {
            let mut fresh = Hmac::<sha2::Sha256>::new_from_slice(key(4).signing()).unwrap();
            fresh.update(plain.as_bytes());
            // Twice: using the cached state must not change it.
            for _ in 0..2 {
                assert_eq!(
                    signer.mac(plain.as_bytes()).finalize().into_bytes(),
                    fresh.clone().finalize().into_bytes()
                );
            }
        }
        let c = VoterCookie {
            voter: Id128(3),
            last: Some((12, VoteOption::A)),
        };
        assert_eq!(c.encode_with(&signer), c.encode(&key(4)));
        assert_eq!(
            VoterCookie::decode_with(&signer, &c.encode(&key(4))),
            Some(c)
        );
        assert_eq!(VoterCookie::decode_with(&signer, &c.encode(&key(5))), None);
        assert_eq!(
            signer.derive_id("voter", "r"),
            derive_id(&key(4), "voter", "r")
        );
    }

    #[test]
    fn the_set_cookie_header_is_what_the_cookie_crate_writes() {
        let signer = CookieSigner::new(&key(6));
        for c in [
            VoterCookie::new_voter(),
            VoterCookie {
                voter: Id128(u128::MAX),
                last: Some((i64::MAX, VoteOption::B)),
            },
            VoterCookie {
                voter: Id128(0),
                last: Some((1_790_000_000_123_456, VoteOption::A)),
            },
        ] {
            let ours = c.set_cookie_header(&signer);
            assert_eq!(ours.to_str().unwrap(), c.to_cookie(&key(6)).to_string());
            assert_eq!(ours.len(), ours.as_bytes().len());
        }
    }

    #[test]
    fn the_plain_value_formats_timestamps_as_to_string_does() {
        for ts in [
            0,
            1,
            9,
            10,
            77,
            1_790_000_000_000_000,
            i64::MAX,
            -1,
            i64::MIN,
        ] {
            let c = VoterCookie {
                voter: Id128(0xabc),
                last: Some((ts, VoteOption::B)),
            };
            assert_eq!(
                c.plain().as_str(),
                format!("v1.{}.{}.b", Id128(0xabc), ts),
                "{ts}"
            );
        }
        assert_eq!(
            VoterCookie {
                voter: Id128(1),
                last: None
            }
            .plain()
            .as_str(),
            "v1.00000000000000000000000000000001.0.-"
        );
    }

    #[test]
    fn find_cookie_finds_what_actix_web_finds() {
        use actix_web::http::header::{HeaderValue, COOKIE};
        let cases: &[&[&[u8]]] = &[
            &[],
            &[b"voter=abc"],
            &[b"a=1; voter=abc; b=2"],
            &[b"a=1;voter=abc;b=2"],
            &[b"  a=1 ;  voter = abc  ; b=2 "],
            &[b"voter=first; voter=second"],
            &[b"a=1", b"voter=second-header"],
            &[b"voter=one", b"voter=two"],
            &[b"voters=x; xvoter=y"],
            &[b"voter"],
            &[b"voter; voter=after-a-bare-name"],
            &[b"=x; voter=after-an-empty-name"],
            &[b";;; ; voter=v;;"],
            &[b"voter="],
            &[b"voter=\"quoted\""],
            &[b"voter=\" spaced \""],
            &[b"voter=\""],
            &[b"voter=a=b==; x=1"],
            &[b"vot%65r=encoded-name"],
            &[b"voter=a%2Bb%3D"],
            &[b"voter=100%; voter=ok"],
            &[b"voter=%ff%fe; voter=after-bad-utf8"],
            &[b"voter=ok", b"x=\xff"],
            &[b"x=\xff", b"voter=ok"],
            &[b"voter=caf\xc3\xa9"],
        ];
        for headers in cases {
            let mut req = actix_web::test::TestRequest::default();
            for h in *headers {
                req = req.append_header((COOKIE, HeaderValue::from_bytes(h).unwrap()));
            }
            let req = req.to_http_request();
            let theirs = req.cookie(COOKIE_NAME).map(|c| c.value().to_owned());
            let ours = find_cookie(
                req.headers().get_all(COOKIE).map(|v| v.as_bytes()),
                COOKIE_NAME,
            );
            assert_eq!(ours.as_deref(), theirs.as_deref(), "{headers:?}");
        }
        let find = |hs: &[&'static [u8]]| find_cookie(hs.iter().copied(), COOKIE_NAME);
        assert_eq!(find(&[b"a=1 ; voter = abc ;b=2"]).as_deref(), Some("abc"));
        assert_eq!(find(&[b"a=1", b"voter=x"]).as_deref(), Some("x"));
        assert_eq!(find(&[b"voter=a%2Bb"]).as_deref(), Some("a+b"));
        assert_eq!(find(&[b"voter=ok", b"x=\xff"]), None);
    }

    #[test]
    fn only_our_plain_format_parses() {
        for bad in [
            "v2.00000000000000000000000000000001.0.-",
            "v1.00000000000000000000000000000001.0.a",
            "v1.00000000000000000000000000000001.5.-",
            "v1.00000000000000000000000000000001.-5.a",
            "v1.00000000000000000000000000000001.5.a.x",
            "v1.1.5.a",
        ] {
            assert_eq!(VoterCookie::parse_plain(bad), None, "{bad}");
        }
    }
}
