//! The sealed voter cookie: who the voter is, and what and when they last
//! voted, so that any capture node can stamp the next vote correctly without
//! asking anyone, and nobody who sees the cookie learns any of it.
//!
//! Value (before sealing): `v1.<voter:32 hex>.<last_ts>.<option>`; `last_ts`
//! is `0` and option `-` before the first accepted vote. The value is sealed
//! with AES-256-GCM in the cookie crate's private-cookie format
//! (`base64(nonce || ciphertext || tag)`, the cookie's name as associated
//! data, the key derived from `COOKIE_KEY`, shared by all capture nodes): it
//! is encrypted and authenticated, so the voter id, the time and the choice
//! are unreadable and unforgeable without the key. Cookies sealed with one of
//! `COOKIE_KEYS_PREVIOUS` still open, so rotating the key keeps the voters;
//! every answer seals with the current key. A missing, forged, truncated,
//! far-future or otherwise unreadable cookie is never an error: the request
//! is simply from a new voter.

use std::borrow::Cow;

use actix_web::cookie::{Cookie, Key, SameSite};
use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};

use crate::vote::{Id128, VoteOption};

pub const COOKIE_NAME: &str = "voter";

/// AES-GCM's nonce and tag, as the cookie crate's private jar lays them out.
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The most a cookie's `last_ts` may run ahead of this node's clock. Hosts
/// keep their clocks within milliseconds (chrony); a minute covers a node
/// whose sync is failing, and bounds what a cookie can claim: a timestamp
/// far in the future would win the ordering for ever and skip the change
/// interval. A cookie beyond it is refused (a new voter).
pub const MAX_CLOCK_SKEW_MICROS: i64 = 60_000_000;

/// The cookie keys, ready: AES-256-GCM with the current key (sealing and
/// opening) and with each previous one (opening only), and the current
/// key's HMAC-SHA256 state for [`CookieSealer::derive_id`]. Keying costs
/// more than a cookie; build one per node with its settings and share it.
#[derive(Clone)]
pub struct CookieSealer {
    keyed: Hmac<sha2::Sha256>,
    current: Aes256Gcm,
    previous: Vec<Aes256Gcm>,
}

impl CookieSealer {
    pub fn new(key: &Key) -> Self {
        Self::with_previous(key, &[])
    }

    /// Seals with `key`; opens cookies sealed with `key` or any of
    /// `previous` (tried in order, after `key`).
    pub fn with_previous(key: &Key, previous: &[Key]) -> Self {
        let cipher = |k: &Key| Aes256Gcm::new_from_slice(k.encryption()).expect("a 32-byte key");
        CookieSealer {
            keyed: <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.signing())
                .expect("HMAC takes a key of any length"),
            current: cipher(key),
            previous: previous.iter().map(cipher).collect(),
        }
    }

    /// A 128-bit id derived from `parts` with the cookie key
    /// (HMAC-SHA256), so that every capture node that sees the same request
    /// makes the same id, while nobody without the key can aim at a chosen
    /// id. Each part is length-prefixed: no two lists of parts collide.
    pub fn derive_id(&self, label: &str, parts: &[&[u8]]) -> Id128 {
        let mut mac = self.keyed.clone();
        mac.update(label.as_bytes());
        for p in parts {
            mac.update(&(p.len() as u32).to_be_bytes());
            mac.update(p);
        }
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Id128(u128::from_be_bytes(first))
    }

    /// An HMAC-SHA256 tag of `data` with the current key, for what else
    /// the node must recognise as its own (proof-of-work challenges).
    pub fn tag(&self, label: &str, data: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// `nonce || ciphertext || tag` of `plain`, with a fresh random nonce.
    fn seal(&self, plain: &Plain) -> Sealed {
        let mut s = Sealed {
            buf: [0; MAX_SEALED_LEN],
            len: NONCE_LEN + plain.len + TAG_LEN,
        };
        let nonce: [u8; NONCE_LEN] = rand::random();
        let (n, rest) = s.buf.split_at_mut(NONCE_LEN);
        n.copy_from_slice(&nonce);
        let (msg, tag) = rest.split_at_mut(plain.len);
        msg.copy_from_slice(plain.as_bytes());
        let t = self
            .current
            .encrypt_in_place_detached(&nonce.into(), COOKIE_NAME.as_bytes(), msg)
            .expect("a cookie is far below AES-GCM's message limit");
        tag[..TAG_LEN].copy_from_slice(&t);
        s
    }

    /// The plain value of a sealed cookie value, if one of our keys sealed
    /// it.
    fn open(&self, raw_value: &str) -> Option<Plain> {
        if raw_value.len() > MAX_COOKIE_VALUE {
            return None;
        }
        let mut data = [0u8; MAX_COOKIE_VALUE / 4 * 3 + 3];
        let n = STANDARD.decode_slice(raw_value, &mut data).ok()?;
        if n < NONCE_LEN + TAG_LEN || n - NONCE_LEN - TAG_LEN > MAX_PLAIN_LEN {
            return None;
        }
        let (nonce, rest) = data[..n].split_at(NONCE_LEN);
        let (msg, tag) = rest.split_at(n - NONCE_LEN - TAG_LEN);
        let nonce = aes_gcm::Nonce::from_slice(nonce);
        let tag = aes_gcm::Tag::from_slice(tag);
        for cipher in std::iter::once(&self.current).chain(&self.previous) {
            let mut p = Plain {
                buf: [0; MAX_PLAIN_LEN],
                len: msg.len(),
            };
            p.buf[..msg.len()].copy_from_slice(msg);
            if cipher
                .decrypt_in_place_detached(
                    nonce,
                    COOKIE_NAME.as_bytes(),
                    &mut p.buf[..msg.len()],
                    tag,
                )
                .is_ok()
            {
                return Some(p);
            }
        }
        None
    }
}

impl std::fmt::Debug for CookieSealer {
    // The keyed state is as good as the key: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSealer(..)")
    }
}

impl From<&Key> for CookieSealer {
    fn from(key: &Key) -> Self {
        CookieSealer::new(key)
    }
}

/// Anything longer than this cannot be one of ours (a sealed value is
/// [`MAX_SEALED_B64`] at most); refuse it before doing any cryptography.
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

    /// Whether the cookie's timestamp is at most [`MAX_CLOCK_SKEW_MICROS`]
    /// ahead of `now`.
    pub fn within_skew(&self, now: i64) -> bool {
        self.last
            .is_none_or(|(ts, _)| ts <= now.saturating_add(MAX_CLOCK_SKEW_MICROS))
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
        p.push(itoa::Buffer::new().format(ts).as_bytes());
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

    /// Reads a sealed cookie value; `None` when it is absent, forged,
    /// sealed with another key, or not in our format.
    pub fn decode(key: &Key, raw_value: &str) -> Option<Self> {
        Self::decode_with(&CookieSealer::new(key), raw_value)
    }

    /// [`VoterCookie::decode`] with the node's keys, ready.
    pub fn decode_with(sealer: &CookieSealer, raw_value: &str) -> Option<Self> {
        let plain = sealer.open(raw_value)?;
        Self::parse_plain(std::str::from_utf8(plain.as_bytes()).ok()?)
    }

    /// The sealed value, as it would appear in a `Cookie:` header: the
    /// cookie crate's private format, computed without building a cookie
    /// jar per vote.
    pub fn encode(&self, key: &Key) -> String {
        self.encode_with(&CookieSealer::new(key))
    }

    /// [`VoterCookie::encode`] with the node's keys, ready.
    pub fn encode_with(&self, sealer: &CookieSealer) -> String {
        let sealed = sealer.seal(&self.plain());
        let mut out = String::with_capacity(b64_len(sealed.len));
        STANDARD.encode_string(sealed.as_bytes(), &mut out);
        out
    }

    /// The plain value, for tests that show what the seal hides.
    pub fn plain_text(&self) -> String {
        self.plain().as_str().to_owned()
    }

    /// The `Set-Cookie` to send with an accepted vote.
    pub fn to_cookie(&self, key: &Key) -> Cookie<'static> {
        Self::cookie_with_value(self.encode(key))
    }

    fn cookie_with_value(value: String) -> Cookie<'static> {
        Cookie::build(COOKIE_NAME, value)
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .max_age(actix_web::cookie::time::Duration::days(COOKIE_MAX_AGE_DAYS))
            .finish()
    }

    /// The same `Set-Cookie` as [`VoterCookie::to_cookie`], byte for byte,
    /// written straight into one buffer of the exact size: no `Cookie`, no
    /// `to_string`, and the buffer becomes the header value without a copy.
    pub fn set_cookie_header(&self, sealer: &CookieSealer) -> HeaderValue {
        let sealed = sealer.seal(&self.plain());
        let len = COOKIE_NAME.len() + 1 + b64_len(sealed.len) + SET_COOKIE_ATTRIBUTES.len();
        let mut v = String::with_capacity(len);
        v.push_str(COOKIE_NAME);
        v.push('=');
        STANDARD.encode_string(sealed.as_bytes(), &mut v);
        v.push_str(SET_COOKIE_ATTRIBUTES);
        HeaderValue::from_maybe_shared(Bytes::from(v.into_bytes()))
            .expect("a cookie of base64 and ASCII is a valid header value")
    }
}

/// Length of `n` bytes in padded base64.
const fn b64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The longest sealed value, and its base64.
const MAX_SEALED_LEN: usize = NONCE_LEN + MAX_PLAIN_LEN + TAG_LEN;
pub const MAX_SEALED_B64: usize = b64_len(MAX_SEALED_LEN);
const _: () = assert!(MAX_SEALED_B64 <= MAX_COOKIE_VALUE);

/// A sealed cookie value, built without allocating.
struct Sealed {
    buf: [u8; MAX_SEALED_LEN],
    len: usize,
}

impl Sealed {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What [`VoterCookie::to_cookie`] sets after the value, in the order the
/// cookie crate writes its attributes (HttpOnly, SameSite, Path, Max-Age).
const SET_COOKIE_ATTRIBUTES: &str = "; HttpOnly; SameSite=Lax; Path=/; Max-Age=2592000";
const _: () = assert!(COOKIE_MAX_AGE_DAYS * 86_400 == 2_592_000);

/// `v1.` + 32 hex digits + `.` + an `i64` (at most 20 characters) + `.` + an
/// option.
const MAX_PLAIN_LEN: usize = 3 + 32 + 1 + 20 + 1 + 1;

/// A plain cookie value, built without allocating.
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

/// `%XX` to its byte (a `%` not followed by two hex digits stays), as the
/// cookie crate decodes, with the crate it uses; `None` when the result is
/// not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok()
}

/// The header HAProxy sets to one id per client request, the same on each
/// of its retries (`swarm/haproxy.cfg`).
pub const REQUEST_ID_HEADER: &str = "x-voteswarm-request";

/// A client's own retry key: a client that sends the same value on every
/// retry of one vote (loadgen does) is one voter's one vote even when an
/// answer was lost after the vote was stored (the edge went down
/// mid-request), and before the client ever held a cookie.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_per_request_and_differ_per_label_parts_and_key() {
        let id = |k: u8, label: &str, parts: &[&[u8]]| {
            CookieSealer::new(&key(k)).derive_id(label, parts)
        };
        let base = id(1, "voter", &[b"req-1"]);
        assert_eq!(base, id(1, "voter", &[b"req-1"]));
        assert_ne!(base, id(1, "vote", &[b"req-1"]));
        assert_ne!(base, id(1, "voter", &[b"req-2"]));
        assert_ne!(base, id(2, "voter", &[b"req-1"]));
        assert_ne!(
            id(1, "voter", &[b"ab", b"c"]),
            id(1, "voter", &[b"a", b"bc"])
        );
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
        assert!(v.len() <= MAX_SEALED_B64);
        assert_eq!(VoterCookie::decode(&key(1), &v), Some(c));
        assert_eq!(VoterCookie::decode(&key(2), &v), None);
        let fresh = VoterCookie::new_voter();
        assert_eq!(
            VoterCookie::decode(&key(1), &fresh.encode(&key(1))),
            Some(fresh)
        );
    }

    #[test]
    fn the_cookie_hides_the_voter_the_time_and_the_choice() {
        let c = VoterCookie {
            voter: Id128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
            last: Some((1_790_000_000_123_456, VoteOption::B)),
        };
        let (one, two) = (c.encode(&key(1)), c.encode(&key(1)));
        assert_ne!(one, two, "a fresh nonce per cookie");
        for v in [&one, &two] {
            let raw = STANDARD.decode(v).unwrap();
            for secret in [
                c.voter.to_string(),
                "1790000000123456".to_owned(),
                ".b".to_owned(),
                c.plain_text(),
            ] {
                assert!(!v.contains(&secret), "{v} shows {secret}");
                assert!(
                    !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "the decoded bytes show {secret}"
                );
            }
        }
    }

    #[test]
    fn our_seal_is_the_cookie_crates_private_format() {
        use actix_web::cookie::CookieJar;
        let c = VoterCookie {
            voter: Id128(9),
            last: Some((77, VoteOption::B)),
        };
        let mut jar = CookieJar::new();
        jar.private_mut(&key(3))
            .add(Cookie::new(COOKIE_NAME, c.plain_text()));
        let theirs = jar.get(COOKIE_NAME).unwrap().value().to_owned();
        assert_eq!(VoterCookie::decode(&key(3), &theirs), Some(c));
        let mut ours = CookieJar::new();
        ours.add(Cookie::new(COOKIE_NAME, c.encode(&key(3))));
        let opened = ours.private(&key(3)).get(COOKIE_NAME).unwrap();
        assert_eq!(opened.value(), c.plain_text());
    }

    #[test]
    fn previous_keys_open_old_cookies_and_the_current_key_seals() {
        let c = VoterCookie {
            voter: Id128(5),
            last: Some((99, VoteOption::A)),
        };
        let old = c.encode(&key(1));
        let older = c.encode(&key(2));
        let rotated = CookieSealer::with_previous(&key(3), &[key(1), key(2)]);
        assert_eq!(VoterCookie::decode_with(&rotated, &old), Some(c));
        assert_eq!(VoterCookie::decode_with(&rotated, &older), Some(c));
        assert_eq!(VoterCookie::decode_with(&rotated, &c.encode(&key(4))), None);
        let resealed = c.encode_with(&rotated);
        assert_eq!(VoterCookie::decode(&key(3), &resealed), Some(c));
        assert_eq!(VoterCookie::decode(&key(1), &resealed), None);
    }

    #[test]
    fn a_cookie_far_ahead_of_the_clock_is_out_of_skew() {
        let now = 1_790_000_000_000_000;
        let at = |ts| VoterCookie {
            voter: Id128(1),
            last: Some((ts, VoteOption::A)),
        };
        assert!(VoterCookie::new_voter().within_skew(now));
        assert!(at(now).within_skew(now));
        assert!(at(now + MAX_CLOCK_SKEW_MICROS).within_skew(now));
        assert!(!at(now + MAX_CLOCK_SKEW_MICROS + 1).within_skew(now));
        assert!(!at(i64::MAX).within_skew(now));
        assert!(at(i64::MAX).within_skew(i64::MAX));
    }

    #[test]
    fn tampered_truncated_and_plain_cookies_are_refused() {
        let c = VoterCookie {
            voter: Id128(7),
            last: Some((5, VoteOption::B)),
        };
        let v = c.encode(&key(1));
        let mut raw = STANDARD.decode(&v).unwrap();
        raw[NONCE_LEN + 3] ^= 1;
        let tampered = STANDARD.encode(&raw);
        assert_eq!(VoterCookie::decode(&key(1), &tampered), None);
        assert_eq!(VoterCookie::decode(&key(1), &v[..v.len() - 4]), None);
        assert_eq!(VoterCookie::decode(&key(1), &c.plain_text()), None);
        assert_eq!(VoterCookie::decode(&key(1), ""), None);
        assert_eq!(VoterCookie::decode(&key(1), &"x".repeat(10_000)), None);
        assert_eq!(
            VoterCookie::decode(&key(1), &"A".repeat(MAX_COOKIE_VALUE)),
            None
        );
    }

    #[test]
    fn the_set_cookie_header_is_what_the_cookie_crate_writes() {
        let sealer = CookieSealer::new(&key(6));
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
            let ours = c.set_cookie_header(&sealer);
            let text = ours.to_str().unwrap();
            let parsed = Cookie::parse(text.to_owned()).unwrap();
            assert_eq!(VoterCookie::decode(&key(6), parsed.value()), Some(c));
            // The same header but for the value, which has a fresh nonce.
            let theirs = VoterCookie::cookie_with_value(parsed.value().to_owned());
            assert_eq!(text, theirs.to_string());
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
