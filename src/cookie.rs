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

use actix_web::cookie::{Cookie, Key, SameSite};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};

use crate::vote::{Id128, VoteOption};

pub const COOKIE_NAME: &str = "voter";

/// A base64 HMAC-SHA256 tag: 32 bytes, 44 characters with padding.
const MAC_B64_LEN: usize = 44;

fn mac(key: &Key, value: &str) -> Hmac<sha2::Sha256> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.signing())
        .expect("HMAC takes a key of any length");
    mac.update(value.as_bytes());
    mac
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

    fn plain_value(&self) -> String {
        let (ts, opt) = match self.last {
            Some((ts, o)) => (ts, o.as_str()),
            None => (0, "-"),
        };
        format!("v1.{}.{}.{}", self.voter, ts, opt)
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
        if raw_value.len() > MAX_COOKIE_VALUE || !raw_value.is_char_boundary(MAC_B64_LEN) {
            return None;
        }
        let (tag, plain) = raw_value.split_at(MAC_B64_LEN);
        let tag = STANDARD.decode(tag).ok()?;
        mac(key, plain).verify_slice(&tag).ok()?;
        Self::parse_plain(plain)
    }

    /// The signed value, as it would appear in a `Cookie:` header: the
    /// cookie crate's signed format, `base64(HMAC-SHA256(value)) || value`,
    /// computed without building a cookie jar per vote.
    pub fn encode(&self, key: &Key) -> String {
        let plain = self.plain_value();
        let tag = mac(key, &plain).finalize().into_bytes();
        let mut out = String::with_capacity(MAC_B64_LEN + plain.len());
        STANDARD.encode_string(tag, &mut out);
        out.push_str(&plain);
        out
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
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.signing())
        .expect("HMAC takes a key of any length");
    mac.update(label.as_bytes());
    mac.update(&[0]);
    mac.update(request_id.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    Id128(u128::from_be_bytes(first))
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
            .add(Cookie::new(COOKIE_NAME, c.plain_value()));
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
        assert_eq!(VoterCookie::decode(&key(1), &c.plain_value()), None);
        assert_eq!(VoterCookie::decode(&key(1), ""), None);
        assert_eq!(VoterCookie::decode(&key(1), &"x".repeat(10_000)), None);
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
