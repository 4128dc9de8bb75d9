//! The security headers of every HTML page (capture's vote page, results'
//! page): a Content-Security-Policy that allows only what the page itself
//! carries (its inline style and script by hash, or its own files), never
//! a frame around it (clickjacked votes), and nothing sniffed or referred.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

pub const CONTENT_SECURITY_POLICY: HeaderName = HeaderName::from_static("content-security-policy");
const NOSNIFF: (HeaderName, HeaderValue) = (
    HeaderName::from_static("x-content-type-options"),
    HeaderValue::from_static("nosniff"),
);
/// The pages link nowhere, and a voter's vote page is nobody's business.
const REFERRER_POLICY: (HeaderName, HeaderValue) = (
    HeaderName::from_static("referrer-policy"),
    HeaderValue::from_static("no-referrer"),
);
/// `frame-ancestors 'none'` for browsers too old for it.
const X_FRAME_OPTIONS: (HeaderName, HeaderValue) = (
    HeaderName::from_static("x-frame-options"),
    HeaderValue::from_static("DENY"),
);

/// `'sha256-...'`: the CSP source that allows exactly this inline text.
pub fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// The policy: nothing by default, no frames, no `<base>`, plus what the
/// page needs (`extra`, e.g. `style-src 'sha256-...'`).
pub fn policy(extra: &[String]) -> HeaderValue {
    let mut p = String::from("default-src 'none'; frame-ancestors 'none'; base-uri 'none'");
    for e in extra {
        p.push_str("; ");
        p.push_str(e);
    }
    HeaderValue::try_from(p).expect("a policy of ASCII is a header value")
}

/// Adds the policy and the fixed headers to a page's answer.
pub fn apply(headers: &mut HeaderMap, policy: &HeaderValue) {
    headers.insert(CONTENT_SECURITY_POLICY, policy.clone());
    for (name, value) in [NOSNIFF, REFERRER_POLICY, X_FRAME_OPTIONS] {
        headers.insert(name, value);
    }
}
