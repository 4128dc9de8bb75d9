//! The vote page: plain HTML with inline CSS, served by the node itself (no
//! CDN, no JavaScript needed), readable on a phone. It asks the poll's
//! question with one big button per option; past four options the buttons
//! are smaller and two to a row on a phone, so twelve still fit on about
//! two screens. It says when voting closes, or that it has not opened or
//! has closed (the buttons are then disabled). With a proof of work on
//! (`POW_BITS`), the form names its challenge and `/pow.js` solves it; the
//! page still votes without JavaScript.
//!
//! The colours pass WCAG AA with room (white on every option's colour at
//! least 5.0:1, [`OPTION_COLOURS`]; the footer 5.9:1); the voter's choice
//! is a solid ring with a "your vote" line, keyboard focus a dashed
//! outline further out, so a focused button never looks chosen;
//! forced-colours mode gets borders of the system's colours instead of the
//! backgrounds it drops.

use std::sync::LazyLock;

use crate::poll::{Phase, Poll, MAX_OPTIONS};
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

/// Each option's colour, in letter order: distinct hues, each dark enough
/// for white text at 5.0:1 or more (the first two are the two-option
/// poll's blue and orange, as before). The results page can use the same.
pub const OPTION_COLOURS: [&str; MAX_OPTIONS] = [
    "#1f6aa5", "#b45309", "#15803d", "#7e22ce", "#be123c", "#0f766e", "#854d0e", "#4338ca",
    "#86198f", "#374151", "#3f6212", "#9d174d",
];

/// More options than this and the buttons get the compact layout.
const ROOMY_OPTIONS: usize = 4;

const BASE_STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f1ea;color:#222;
 min-height:100vh;display:flex;flex-direction:column;align-items:center;justify-content:center;padding:1rem}
main{width:100%;max-width:36rem;text-align:center}
h1{font-size:clamp(1.8rem,6vw,2.6rem);margin:.2em 0 .6em;overflow-wrap:anywhere}
form,.options{display:flex;gap:1rem;flex-wrap:wrap}
button{flex:1 1 12rem;min-height:9rem;font-size:clamp(1.6rem,7vw,2.2rem);font-weight:700;border:.25rem solid transparent;
 border-radius:1.2rem;color:#fff;cursor:pointer;box-shadow:0 .3rem 0 rgba(0,0,0,.25);position:relative;overflow-wrap:anywhere;padding:.4rem .6rem}
button:active{transform:translateY(.2rem);box-shadow:0 .1rem 0 rgba(0,0,0,.25)}
button:focus-visible{outline:.2rem dashed #111;outline-offset:.5rem}
button:disabled{cursor:not-allowed;opacity:.6;transform:none;box-shadow:none}
.many{gap:.7rem}
.many button{flex:1 1 9rem;min-height:4.5rem;font-size:clamp(1.1rem,4.5vw,1.5rem);border-radius:.9rem}
.many .chosen::after{font-size:.85rem;margin-top:.2rem}
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

/// The stylesheet: the base rules and one background class per letter.
static STYLE: LazyLock<String> = LazyLock::new(|| {
    let mut s = BASE_STYLE.to_owned();
    for (o, colour) in VoteOption::ALL.iter().zip(OPTION_COLOURS) {
        s.push_str(&format!(".{o}{{background:{colour}}}"));
    }
    s.push('\n');
    s
});

/// The page's Content-Security-Policy: its own stylesheet by hash, its own
/// script file when it has one, forms posted only to itself.
pub fn policy(with_script: bool) -> actix_web::http::header::HeaderValue {
    let mut extra = vec![
        format!("style-src {}", crate::headers::csp_hash(&STYLE)),
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
pub fn render_error(poll: &Poll, node: &str, e: &ErrorPage) -> String {
    let question = escape(&poll.question);
    let wait = e.retry_after.map(|s| {
        let unit = if s == 1 { "second" } else { "seconds" };
        format!("{s} {unit}")
    });
    let mut again = String::new();
    if let (Some(o), Some(secs), Some(label)) =
        (e.again, e.retry_after, e.again.and_then(|o| poll.label(o)))
    {
        let (class, label) = (o.as_str(), escape(label));
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
<title>{title} - {question}</title><style>{style}</style></head>
<body><main>
<h1>{title}</h1>
<p class="note">{what}</p>
<p class="note">{todo}</p>
{when}{again}<p class="note"><a href="/">Back to the poll: {question}</a></p>
</main>
<footer>Served by node <strong>{node}</strong></footer></body></html>
"#,
        title = escape(e.title),
        what = escape(e.what),
        todo = escape(e.todo),
        node = escape(node),
        style = &*STYLE,
    )
}

/// A time of the poll's window for the page: readable, and exact in
/// `datetime` for whatever reads it.
fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        r#"<time datetime="{}">{}</time>"#,
        Poll::format_time(t),
        Poll::format_human(t)
    )
}

/// What the page says about the window, in `phase`.
fn window(poll: &Poll, phase: Phase) -> String {
    match (phase, poll.opens, poll.closes) {
        (Phase::NotOpen, Some(o), _) => {
            format!(
                r#"<p class="note"><strong>Voting opens at {}.</strong></p>"#,
                time(o)
            )
        }
        (Phase::Closed, _, Some(c)) => format!(
            r#"<p class="note"><strong>Voting has closed</strong> (at {}).</p>"#,
            time(c)
        ),
        (Phase::Open, _, Some(c)) => format!(r#"<p class="tip">Voting closes at {}.</p>"#, time(c)),
        _ => String::new(),
    }
}

/// Renders the page in `phase` of the poll's window. `chosen` marks the
/// voter's current choice; `flash` is a one-line message after a vote;
/// `pow`, the challenge for a new voter and its difficulty (the challenge
/// is copied in as it is: the caller passes only our own challenges or a
/// placeholder, never client text); `results`, where "See the results"
/// links to (`RESULTS_URL`), if anywhere. Outside the window the buttons
/// show the options, disabled, and no form is there to send.
pub fn render(
    poll: &Poll,
    phase: Phase,
    node: &str,
    chosen: Option<VoteOption>,
    flash: Option<&str>,
    pow: Option<(&str, u8)>,
    results: Option<&str>,
) -> String {
    let question = escape(&poll.question);
    let open = phase == Phase::Open;
    let chosen = chosen.filter(|o| poll.has(*o));
    let mut buttons = String::new();
    for (&o, label) in poll.vote_options().iter().zip(&poll.options) {
        let mine = chosen == Some(o);
        buttons.push_str(&format!(
            r#"<button class="{o}{c}" name="vote" value="{o}" aria-pressed="{mine}"{d}>{l}</button>
"#,
            c = if mine { " chosen" } else { "" },
            d = if open { "" } else { " disabled" },
            l = escape(label),
        ));
    }
    let layout = if poll.options.len() > ROOMY_OPTIONS {
        " class=\"many\""
    } else {
        ""
    };
    let note = match (flash, chosen) {
        (Some(f), _) => format!(r#"<p class="note" role="status">{}</p>"#, escape(f)),
        (None, Some(o)) => format!(
            r#"<p class="note">You voted for <strong>{}</strong>.</p>"#,
            escape(poll.label(o).unwrap_or_default())
        ),
        (None, None) if open => r#"<p class="note">Choose one to vote.</p>"#.to_owned(),
        (None, None) => String::new(),
    };
    let (pow_attrs, pow_script) = match pow.filter(|_| open) {
        Some((challenge, bits)) => (
            format!(
                r#" data-pow="{}" data-pow-bits="{bits}""#,
                escape(challenge)
            ),
            r#"<p class="tip" id="pow" role="status"></p><script src="/pow.js"></script>"#,
        ),
        None => (String::new(), ""),
    };
    let options = if open {
        format!(
            r#"<form method="post" action="/"{layout}{pow_attrs}>
{buttons}</form>"#
        )
    } else {
        let many = if layout.is_empty() { "" } else { " many" };
        format!(
            r#"<div class="options{many}">
{buttons}</div>"#
        )
    };
    let change = if open {
        r#"<p class="tip">You can change your vote: your latest choice is the one that counts.</p>
"#
    } else {
        ""
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
<title>{question}</title><style>{style}</style></head>
<body><main>
<h1>{question}</h1>
{options}
{note}
{window}{change}{results}</main>
<footer>Served by node <strong>{node}</strong></footer>{pow_script}</body></html>
"#,
        window = window(poll, phase),
        node = escape(node),
        style = &*STYLE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats_dogs() -> Poll {
        Poll::default()
    }

    #[test]
    fn labels_and_node_names_are_escaped() {
        let poll = Poll::with_options(&["<script>", "Dogs"]);
        let page = render(
            &poll,
            Phase::Open,
            "n\"1",
            Some(VoteOption::B),
            None,
            None,
            Some("/r?a=1&b=\"2"),
        );
        assert!(page.contains(r#"<a href="/r?a=1&amp;b=&quot;2">See the results</a>"#));
        assert!(
            !render(&cats_dogs(), Phase::Open, "n", None, None, None, None)
                .contains("See the results")
        );
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("n&quot;1"));
        assert!(page.contains(r#"class="b chosen""#));
        assert!(page.contains("You voted for <strong>Dogs</strong>"));
        let mut poll = Poll::with_options(&["a", "b"]);
        poll.question = "<b>Which?</b>".into();
        let page = render(&poll, Phase::Open, "n", None, None, None, None);
        assert!(
            page.contains("<h1>&lt;b&gt;Which?&lt;/b&gt;</h1>"),
            "{page}"
        );
    }

    #[test]
    fn the_default_poll_asks_cats_or_dogs_with_two_big_buttons() {
        let page = render(&cats_dogs(), Phase::Open, "n", None, None, None, None);
        assert!(page.contains("<title>Cats or Dogs?</title>"));
        assert!(page.contains("<h1>Cats or Dogs?</h1>"));
        assert!(
            page.contains(
                r#"<button class="a" name="vote" value="a" aria-pressed="false">Cats</button>"#
            ),
            "{page}"
        );
        assert!(page.contains(r#"value="b" aria-pressed="false">Dogs</button>"#));
        assert!(
            page.contains(r#"<form method="post" action="/">"#),
            "{page}"
        );
        assert!(
            !page.contains(r#"class="many""#)
                && !page.contains(" disabled>")
                && !page.contains("<time")
        );
    }

    #[test]
    fn twelve_options_get_a_button_each_in_the_compact_layout() {
        let labels: Vec<String> = (1..=12).map(|i| format!("Option {i}")).collect();
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let poll = Poll::with_options(&refs);
        let page = render(
            &poll,
            Phase::Open,
            "n",
            Some(VoteOption::L),
            None,
            None,
            None,
        );
        assert!(
            page.contains(r#"<form method="post" action="/" class="many">"#),
            "{page}"
        );
        assert_eq!(page.matches("<button ").count(), 12);
        assert!(page.contains(r#"<button class="l chosen" name="vote" value="l" aria-pressed="true">Option 12</button>"#));
        for (o, colour) in VoteOption::ALL.iter().zip(OPTION_COLOURS) {
            assert!(STYLE.contains(&format!(".{o}{{background:{colour}}}")));
        }
    }

    #[test]
    fn the_page_says_when_voting_closes_or_that_it_has_closed() {
        let mut poll = cats_dogs();
        poll.opens = Some("2027-02-07T23:00:00Z".parse().unwrap());
        poll.closes = Some("2027-02-07T23:45:00Z".parse().unwrap());
        let open = render(&poll, Phase::Open, "n", None, None, None, None);
        assert!(open.contains(r#"Voting closes at <time datetime="2027-02-07T23:45:00Z">7 February 2027, 23:45 UTC</time>."#), "{open}");
        let closed = render(
            &poll,
            Phase::Closed,
            "n",
            Some(VoteOption::A),
            None,
            Some(("x", 4)),
            None,
        );
        assert!(
            closed.contains("<strong>Voting has closed</strong>"),
            "{closed}"
        );
        assert!(closed.contains("You voted for <strong>Cats</strong>"));
        assert!(
            !closed.contains("<form") && !closed.contains("pow.js"),
            "{closed}"
        );
        assert_eq!(closed.matches(" disabled>").count(), 2);
        assert!(!closed.contains("change your vote"));
        let early = render(&poll, Phase::NotOpen, "n", None, None, None, None);
        assert!(
            early.contains("Voting opens at <time datetime=\"2027-02-07T23:00:00Z\">"),
            "{early}"
        );
        assert!(!early.contains("<form") && !early.contains("Choose one"));
    }

    #[test]
    fn an_error_page_offers_the_vote_again_only_when_it_names_a_wait() {
        let poll = cats_dogs();
        let mut e = ErrorPage {
            title: "Not so fast",
            what: "w",
            todo: "t",
            retry_after: Some(1),
            again: Some(VoteOption::B),
        };
        let page = render_error(&poll, "n1", &e);
        assert!(page.contains(r#"<html lang="en">"#) && page.contains(r#"href="/""#));
        assert!(page.contains(r#"data-retry-after="1""#) && page.contains("1 second"));
        assert!(page.contains(r#"name="vote" value="b""#));
        assert!(
            page.contains("Vote Dogs again") && page.contains("Back to the poll: Cats or Dogs?")
        );
        e.retry_after = None;
        let page = render_error(&poll, "n1", &e);
        assert!(!page.contains("<form") && !page.contains("retry.js"));
    }
}
