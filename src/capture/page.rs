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
.again button{flex:0 1 auto;min-height:4rem;padding:0 1.5rem;font-size:1.3rem;margin:1rem auto 0}
a{color:#174e7a}
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

/// The script of the error pages that ask to come back later (`429`,
/// `503`): with JavaScript on, the vote is sent again by itself once
/// `Retry-After` has passed (the form works without it, as a button).
/// Served as `/retry.js`, a file the pages' policy allows (`'self'`).
/// One line: the edge (`swarm/haproxy.cfg`) answers the same bytes while no
/// capture node is up, and a test holds the two equal.
pub const RETRY_SCRIPT: &str = r#"(function(){var f=document.querySelector('form[data-retry-after]');if(!f)return;var s=Math.max(1,+f.dataset.retryAfter||1),p=document.getElementById('retry');if(p)p.hidden=false;setTimeout(function(){f.submit();},s*1000);})();"#;

/// What an error page says: its title, what happened, what to do, and
/// when the voter may come back (`Retry-After`, seconds).
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub what: &'a str,
    pub todo: &'a str,
    pub retry_after: Option<u64>,
    /// The option the refused vote was for, when it may be sent again.
    pub again: Option<VoteOption>,
}

/// Renders an error page in the vote page's look: where the vote may be
/// sent again, a button that sends it (and `/retry.js`, which presses it
/// after `retry_after`), and always a link back to the poll.
pub fn render_error(labels: &[String; 2], node: &str, e: &ErrorPage) -> String {
    let (a, b) = (escape(&labels[0]), escape(&labels[1]));
    let wait = e.retry_after.map(|s| {
        let unit = if s == 1 { "second" } else { "seconds" };
        format!("{s} {unit}")
    });
    let mut again = String::new();
    if let (Some(o), Some(secs)) = (e.again, e.retry_after) {
        let (class, label) = (o.as_str(), escape(&labels[o as usize]));
        again = format!(
            r#"<form class="again" method="post" action="/" data-retry-after="{secs}">
<input type="hidden" name="vote" value="{class}">
<button class="{class}">Vote {label} again</button>
</form>
<p class="tip" id="retry" role="status" hidden>This page sends your vote again by itself in {w}.</p>
<script src="/retry.js"></script>
"#,
            w = wait.as_deref().unwrap_or_default(),
        );
    }
    let when = match &wait {
        Some(w) => format!(r#"<p class="note">Try again in <strong>{w}</strong>.</p>"#),
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<title>{title} - {a} or {b}?</title><style>{STYLE}</style></head>
<body><main>
<h1>{title}</h1>
<p class="note">{what}</p>
<p class="note">{todo}</p>
{when}{again}<p class="note"><a href="/">Back to the poll: {a} or {b}?</a></p>
</main>
<footer>Served by node <strong>{node}</strong></footer></body></html>
"#,
        title = escape(e.title),
        what = escape(e.what),
        todo = escape(e.todo),
        node = escape(node),
    )
}

/// Renders the page. `chosen` marks the voter's current choice; `flash` is
/// a one-line message after a vote; `pow`, the challenge for a new voter
/// and its difficulty (the challenge is copied in as it is: the caller
/// passes only our own challenges or a placeholder, never client text);
/// `results`, where "See the results" links to (`RESULTS_URL`), if
/// anywhere.
pub fn render(
    labels: &[String; 2],
    node: &str,
    chosen: Option<VoteOption>,
    flash: Option<&str>,
    pow: Option<(&str, u8)>,
    results: Option<&str>,
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
    let results = results.map_or_else(String::new, |u| {
        format!(
            r#"<p class="tip"><a href="{}">See the results</a></p>
"#,
            escape(u)
        )
    });
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
{results}</main>
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
            Some("/r?a=1&b=\"2"),
        );
        assert!(page.contains(r#"<a href="/r?a=1&amp;b=&quot;2">See the results</a>"#));
        assert!(
            !render(&["a".into(), "b".into()], "n", None, None, None, None)
                .contains("See the results")
        );
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("n&quot;1"));
        assert!(page.contains(r#"class="b chosen""#));
        assert!(page.contains("You voted for <strong>Dogs</strong>"));
    }

    #[test]
    fn an_error_page_offers_the_vote_again_only_when_it_names_a_wait() {
        let labels = ["Cats".to_owned(), "Dogs".to_owned()];
        let mut e = ErrorPage {
            title: "Not so fast",
            what: "w",
            todo: "t",
            retry_after: Some(1),
            again: Some(VoteOption::B),
        };
        let page = render_error(&labels, "n1", &e);
        assert!(page.contains(r#"<html lang="en">"#) && page.contains(r#"href="/""#));
        assert!(page.contains(r#"data-retry-after="1""#) && page.contains("1 second"));
        assert!(page.contains(r#"name="vote" value="b""#));
        e.retry_after = None;
        let page = render_error(&labels, "n1", &e);
        assert!(!page.contains("<form") && !page.contains("retry.js"));
    }
}
