//! The vote page: plain HTML with inline CSS, served by the node itself (no
//! CDN, no JavaScript needed), readable on a phone. With a proof of work on
//! (`POW_BITS`), the form names its challenge and `/pow.js` solves it; the
//! page still votes without JavaScript.
//!
//! The colours pass WCAG AA with room (white on the buttons 5.7:1 and
//! 5.0:1, the footer 5.9:1); the voter's choice is a solid ring with a
//! "your vote" line, keyboard focus a dashed outline further out, so a
//! focused button never looks chosen; forced-colours mode gets borders of
//! the system's colours instead of the backgrounds it drops.

use crate::vote::VoteOption;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f1ea;color:#222;
 min-height:100vh;display:flex;flex-direction:column;align-items:center;justify-content:center;padding:1rem}
main{width:100%;max-width:36rem;text-align:center}
h1{font-size:clamp(1.8rem,6vw,2.6rem);margin:.2em 0 .6em}
form{display:flex;gap:1rem;flex-wrap:wrap}
button{flex:1 1 12rem;min-height:9rem;font-size:clamp(1.6rem,7vw,2.2rem);font-weight:700;border:.25rem solid transparent;
 border-radius:1.2rem;color:#fff;cursor:pointer;box-shadow:0 .3rem 0 rgba(0,0,0,.25);position:relative}
button:active{transform:translateY(.2rem);box-shadow:0 .1rem 0 rgba(0,0,0,.25)}
button:focus-visible{outline:.2rem dashed #111;outline-offset:.5rem}
.a{background:#1f6aa5}.b{background:#b45309}
.chosen{border-color:#fff;box-shadow:0 0 0 .3rem #1c1c1c,0 .45rem 0 .3rem rgba(0,0,0,.25)}
.chosen::after{content:"\2713  your vote";display:block;font-size:1rem;font-weight:600;margin-top:.4rem}
.note{margin:1.4rem 0 .3rem;font-size:1.05rem}
.tip{color:#555;font-size:.95rem}
footer{margin-top:2rem;color:#5c5c5c;font-size:.8rem}
@media (forced-colors:active){
 button{border:.2rem solid ButtonText}
 .chosen{border:.6rem double Highlight}
 button:focus-visible{outline:.2rem dashed Highlight}
}
@media (prefers-reduced-motion:reduce){button:active{transform:none}}
"#;

/// The page's Content-Security-Policy: its own stylesheet by hash, its own
/// script file when it has one, forms posted only to itself.
pub fn policy(with_script: bool) -> actix_web::http::header::HeaderValue {
    let mut extra = vec![
        format!("style-src {}", crate::headers::csp_hash(STYLE)),
        "img-src 'self'".to_owned(),
        "form-action 'self'".to_owned(),
    ];
    if with_script {
        extra.push("script-src 'self'".to_owned());
    }
    crate::headers::policy(&extra)
}

/// Renders the page. `chosen` marks the voter's current choice; `flash` is
/// a one-line message after a vote; `pow`, the challenge for a new voter
/// and its difficulty (the challenge is copied in as it is: the caller
/// passes only our own challenges or a placeholder, never client text).
pub fn render(
    labels: &[String; 2],
    node: &str,
    chosen: Option<VoteOption>,
    flash: Option<&str>,
    pow: Option<(&str, u8)>,
) -> String {
    let a = escape(&labels[0]);
    let b = escape(&labels[1]);
    let class = |o: VoteOption| if chosen == Some(o) { " chosen" } else { "" };
    let pressed = |o: VoteOption| if chosen == Some(o) { "true" } else { "false" };
    let note = match (flash, chosen) {
        (Some(f), _) => format!(r#"<p class="note" role="status">{}</p>"#, escape(f)),
        (None, Some(o)) => format!(
            r#"<p class="note">You voted for <strong>{}</strong>.</p>"#,
            escape(&labels[o as usize])
        ),
        (None, None) => r#"<p class="note">Choose one to vote.</p>"#.to_owned(),
    };
    let (pow_attrs, pow_script) = match pow {
        Some((challenge, bits)) => (
            format!(
                r#" data-pow="{}" data-pow-bits="{bits}""#,
                escape(challenge)
            ),
            r#"<p class="tip" id="pow" role="status"></p><script src="/pow.js"></script>"#,
        ),
        None => (String::new(), ""),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<title>{a} or {b}?</title><style>{STYLE}</style></head>
<body><main>
<h1>{a} or {b}?</h1>
<form method="post" action="/"{pow_attrs}>
<button class="a{ca}" name="vote" value="a" aria-pressed="{pa}">{a}</button>
<button class="b{cb}" name="vote" value="b" aria-pressed="{pb}">{b}</button>
</form>
{note}
<p class="tip">You can change your vote: your latest choice is the one that counts.</p>
</main>
<footer>Served by node <strong>{node}</strong></footer>{pow_script}</body></html>
"#,
        ca = class(VoteOption::A),
        cb = class(VoteOption::B),
        pa = pressed(VoteOption::A),
        pb = pressed(VoteOption::B),
        node = escape(node),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_node_names_are_escaped() {
        let page = render(
            &["<script>".into(), "Dogs".into()],
            "n\"1",
            Some(VoteOption::B),
            None,
            None,
        );
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("n&quot;1"));
        assert!(page.contains(r#"class="b chosen""#));
        assert!(page.contains("You voted for <strong>Dogs</strong>"));
    }
}
