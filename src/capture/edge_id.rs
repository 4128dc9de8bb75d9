//! The identity the edge gives a first-time voter when it answers a vote
//! itself (`502`/`503`/`504`: no capture node in rotation, or none that
//! answered within HAProxy's retries; `swarm/haproxy.cfg`, "The edge's
//! identity").
//!
//! Such a vote may still be stored: its pipeline can sit in a stopped
//! Redis's socket buffer and be written when Redis resumes
//! (`docs/RELIABILITY.md`). Its node named the new voter after the edge's
//! request id (`X-Voteswarm-Request`, see `take::retry_name`), but the
//! edge's own answer carries no voter cookie, so the retry would name a
//! second voter. The edge therefore sets `edge_id=<request id>.<vote>.<tag>`
//! on its answer to a vote POST without a voter cookie, where `tag` is
//! HMAC-SHA256 of `<request id>.<vote>` with `EDGE_ID_KEY` (the bytes its
//! base64 stands for, as HAProxy's `hmac` converter takes the key), in
//! hex. A retry carrying it and no voter cookie is the voter that request
//! named: the same id as the late-stored vote's, so the two are one voter.
//! The tag makes the id the edge's: a client can keep the one it was
//! given, never choose another.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::vote::VoteOption;

/// The cookie's name, as the edge writes it.
pub const EDGE_ID_COOKIE: &str = "edge_id";

/// The least key HAProxy and capture take: HMAC-SHA256's own block of
/// security, as for the cookie key.
pub const MIN_EDGE_ID_KEY_BYTES: usize = 32;

/// Longest request id taken, as for `X-Voteswarm-Request`.
const MAX_ID_LEN: usize = 128;

/// `EDGE_ID_KEY`, keyed once per node.
#[derive(Clone)]
pub struct EdgeIdKey(Hmac<Sha256>);

impl std::fmt::Debug for EdgeIdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeIdKey([REDACTED])")
    }
}

impl EdgeIdKey {
    /// From the base64 the edge's configuration holds (standard alphabet,
    /// padding optional, surrounding whitespace ignored).
    pub fn from_base64(material: &str) -> Result<EdgeIdKey, String> {
        let material = material.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(material)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(material))
            .map_err(|e| format!("is not base64 (standard alphabet, as HAProxy reads it): {e}"))?;
        if bytes.len() < MIN_EDGE_ID_KEY_BYTES {
            return Err(format!(
                "is too short: {} bytes, at least {MIN_EDGE_ID_KEY_BYTES} needed (`openssl rand -base64 48`)",
                bytes.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(EdgeIdKey(mac))
    }

    /// The request id and vote of a cookie value this key tagged; `None`
    /// for anything else (another key's, altered, malformed).
    pub fn open<'v>(&self, value: &'v str) -> Option<(&'v str, VoteOption)> {
        let (signed, tag) = value.rsplit_once('.')?;
        let (id, vote) = signed.rsplit_once('.')?;
        if id.is_empty() || id.len() > MAX_ID_LEN || tag.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (b, pair) in bytes.iter_mut().zip(tag.as_bytes().chunks(2)) {
            let digits = std::str::from_utf8(pair).ok()?;
            *b = u8::from_str_radix(digits, 16).ok()?;
        }
        let mut mac = self.0.clone();
        mac.update(signed.as_bytes());
        // Constant time: a client learns nothing from how long a wrong
        // tag takes to refuse.
        mac.verify_slice(&bytes).ok()?;
        Some((id, VoteOption::parse(vote)?))
    }

    /// A cookie value as the edge writes it (tests, and the docs' example).
    pub fn seal(&self, id: &str, vote: VoteOption) -> String {
        let signed = format!("{id}.{}", vote.as_str());
        let mut mac = self.0.clone();
        mac.update(signed.as_bytes());
        let tag: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        format!("{signed}.{tag}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "cmZVM0JcXcBaeAWbXVtsWGXeELQRxrPG9Kg1hO051omKE09ST/NGgE5PvCfSwoEQ";

    #[test]
    fn a_value_haproxy_tagged_opens_and_nothing_else_does() {
        let key = EdgeIdKey::from_base64(KEY).unwrap();
        // Written by haproxy 2.6 with this key (`hmac(sha256,KEY),hex`).
        let edge = "e8687955-ffb0-493d-b814-2a82d4fc9d8e.a.1DA790676FF9B92E4009FE8FC7EDCD67E6DDF17F601DA14055BB4CF74CD2F379";
        assert_eq!(
            key.open(edge),
            Some(("e8687955-ffb0-493d-b814-2a82d4fc9d8e", VoteOption::A))
        );
        assert_eq!(
            key.seal("e8687955-ffb0-493d-b814-2a82d4fc9d8e", VoteOption::A),
            edge
        );
        assert_eq!(key.open(&edge.to_ascii_lowercase()), key.open(edge));
        let chosen = edge.replacen("e8687955", "e8687956", 1);
        let other_vote = edge.replacen(".a.", ".b.", 1);
        let other_key = EdgeIdKey::from_base64(&KEY.replacen('c', "d", 1)).unwrap();
        for bad in [
            &chosen[..],
            &other_vote,
            "",
            "x",
            "a.b.c",
            &edge[..edge.len() - 1],
        ] {
            assert_eq!(key.open(bad), None, "{bad}");
        }
        assert_eq!(other_key.open(edge), None);
    }

    #[test]
    fn a_key_must_be_base64_of_at_least_32_bytes() {
        assert!(EdgeIdKey::from_base64("not base64!").is_err());
        assert!(EdgeIdKey::from_base64("c2hvcnQ=").is_err());
        assert!(EdgeIdKey::from_base64(&format!("{KEY}\n")).is_ok());
    }
}
