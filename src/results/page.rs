//! The results page: server-rendered numbers and charts (it works without
//! JavaScript: a `<noscript>` refresh reloads it every 5 s), kept live by
//! the node's own script file, `/results.js` (`assets/results.js`), reading
//! `/events`. The refresh sits in `<noscript>` so that a browser running
//! the script never schedules it: a script removing a
//! `<meta http-equiv=refresh>` runs after Chromium has already scheduled
//! the reload, and every viewer then reloaded the page (and reopened the
//! stream) every 5 s. No CDN; readable on a phone at 12 options. Its
//! Content-Security-Policy allows exactly its inline stylesheet (by hash),
//! its own script file and `/events`; the bars' widths are classes of the
//! stylesheet, as an inline `style` attribute would need `'unsafe-inline'`.
//!
//! The server and the script write the same words and numbers (commas
//! between thousands, one decimal for percents) and draw the same charts
//! (`chart_points` and the script's `draw`), so a reload changes nothing a
//! viewer sees; the script shows the time in the viewer's own time zone,
//! the server in UTC. Every label, the question and node names are
//! escaped: they are the operator's text, and a node name is whatever a
//! capture node called itself.

use crate::actors::tally::{Point, Snapshot};
use crate::capture::page::escape;
use crate::poll::Poll;

/// The live script, served as `/results.js`.
pub const SCRIPT: &str = include_str!("assets/results.js");

const BASE_STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f1ea;color:#222;
 min-height:100vh;display:flex;flex-direction:column;align-items:center;justify-content:center;padding:1rem}
main{width:100%;max-width:40rem}
h1{font-size:clamp(1.6rem,6vw,2.4rem);margin:.2em 0 .4em;text-align:center;overflow-wrap:anywhere}
h2{font-size:1.05rem;margin:1.6rem 0 .4rem}
.window,.hidden-note{text-align:center;margin:.2rem 0 .8rem}
.hidden-note{background:#fff3cd;border-radius:.6rem;padding:.6rem}
.row{margin:1.1rem 0}
.label{display:flex;justify-content:space-between;gap:.6rem;font-weight:700;font-size:1.25rem;margin-bottom:.35rem}
.label span:first-child{overflow-wrap:anywhere}
.count{white-space:nowrap}
.track{display:block;background:#e2ddd2;border-radius:.8rem;height:2.6rem;overflow:hidden}
.track.small{height:.7rem;border-radius:.35rem;margin-top:.2rem}
.bar{display:block;height:100%;border-radius:inherit;transition:width .6s ease;min-width:.2rem;background:#1f6aa5}
.a .bar{background:#1f6aa5}.b .bar{background:#b45309}.c .bar{background:#2e7d32}.d .bar{background:#7b1fa2}
.e .bar{background:#c2185b}.f .bar{background:#00838f}.g .bar{background:#5d4037}.h .bar{background:#455a64}
.i .bar{background:#ad1457}.j .bar{background:#283593}.k .bar{background:#827717}.l .bar{background:#6d4c41}
.status{display:flex;flex-wrap:wrap;gap:.6rem;justify-content:center;margin-top:1.6rem;font-size:1rem}
.pill{background:#fff;border-radius:2rem;padding:.4rem .9rem;box-shadow:0 .1rem .3rem rgba(0,0,0,.1)}
.final{background:#2e7d32;color:#fff;font-weight:700}
.counting{background:#fff3cd}
.error{color:#b00020;text-align:center}
.stale{color:#b00020;font-weight:700}
.chart{display:block;width:100%;height:6rem;background:#fff;border-radius:.5rem}
.line{fill:none;stroke:#1f6aa5;stroke-width:2;vector-effect:non-scaling-stroke}
#queued-line{stroke:#b45309}
.axis{display:flex;justify-content:space-between;font-size:.8rem;color:#5c5c5c;margin:.2rem 0 0}
.nodes{list-style:none;padding:0;margin:0}
.nodes li{margin:.5rem 0}
.node-name{font-weight:700;overflow-wrap:anywhere}
.sr{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
footer{margin-top:1.6rem;color:#5c5c5c;font-size:.8rem;text-align:center}
@media (forced-colors:active){
 .track{border:.1rem solid CanvasText}
 .bar{forced-color-adjust:none;background:Highlight}
 .pill{border:.1rem solid CanvasText}
 .line{stroke:CanvasText}
}
@media (prefers-reduced-motion:reduce){.bar{transition:none}}
"#;

/// The stylesheet: the base rules and one width class per whole percent
/// (`.w0` to `.w100`), for the bars as the server renders them.
static STYLE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut s = BASE_STYLE.to_owned();
    for p in 0..=100 {
        s.push_str(&format!(".w{p}{{width:{p}%}}"));
    }
    s.push('\n');
    s
});

/// The page's Content-Security-Policy.
pub fn policy() -> actix_web::http::header::HeaderValue {
    crate::headers::policy(&[
        format!("style-src {}", crate::headers::csp_hash(&STYLE)),
        "script-src 'self'".to_owned(),
        "connect-src 'self'".to_owned(),
        "img-src 'self'".to_owned(),
        "form-action 'none'".to_owned(),
    ])
}

/// `1234567` as `1,234,567`, as the script's `toLocaleString('en-US')`.
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn votes(n: i64) -> String {
    format!("{} {}", grouped(n), if n == 1 { "vote" } else { "votes" })
}

/// The sentence for queues that did not answer, as the script writes it.
fn unreachable(n: usize) -> String {
    if n == 1 {
        "1 vote queue cannot be reached right now; its votes are counted when it is back.".into()
    } else {
        format!("{n} vote queues cannot be reached right now; their votes are counted when they are back.")
    }
}

/// The backlog as a viewer can trust it: with a queue unreachable, what
/// the others hold is only a lower bound, and nothing known is "unknown",
/// never a false 0.
fn backlog(snap: &Snapshot) -> String {
    match (snap.unreachable_queues, snap.backlog) {
        (0, n) => grouped(n),
        (_, 0) => "unknown".into(),
        (_, n) => format!("at least {}", grouped(n)),
    }
}

/// The state pill, as the script's `stateText` words it.
fn state_text(snap: &Snapshot) -> &'static str {
    if snap.is_final {
        "final: all queued votes counted"
    } else if snap.window.phase == "closed" {
        "voting closed; counting queued votes…"
    } else if snap.window.phase == "not_open" {
        "voting has not opened"
    } else if snap.window.closes.is_some() {
        "voting open; final after the close"
    } else {
        "counting queued votes…"
    }
}

/// `2026-12-02T00:50:01.123Z` as `00:50:01 UTC`; the script rewrites it in
/// the viewer's own time zone.
fn utc_time(as_of: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(as_of)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| as_of.to_owned())
}

/// A window time for a sentence: `2027-02-07 23:45 UTC`.
fn window_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The sentence under the question about the voting window.
fn window_text(poll: &Poll, snap: &Snapshot) -> String {
    match (snap.window.phase, poll.opens, poll.closes) {
        ("not_open", Some(o), _) => format!("voting opens at {}", window_time(o)),
        ("closed", _, Some(c)) => format!("voting closed at {}", window_time(c)),
        (_, _, Some(c)) => format!("voting closes at {}", window_time(c)),
        _ => String::new(),
    }
}

/// Width and height of the charts' `viewBox`; the script uses the same.
const CHART_W: f64 = 600.0;
const CHART_H: f64 = 100.0;
const HOUR: i64 = 3600;

/// A polyline's `points` for `value` of each point over the hour ending at
/// the newest one, and the largest value, as the script's `draw` computes
/// them.
fn chart_points(series: &[Point], value: impl Fn(&Point) -> Option<i64>) -> (String, i64) {
    let pts: Vec<(i64, i64)> = series
        .iter()
        .filter_map(|p| value(p).map(|v| (p.t, v)))
        .collect();
    let Some(&(end, _)) = pts.last() else {
        return (String::new(), 0);
    };
    let max = pts.iter().map(|&(_, v)| v).max().unwrap_or(0);
    let round = |f: f64| (f * 10.0).round() / 10.0;
    let out: Vec<String> = pts
        .iter()
        .map(|&(t, v)| {
            let x = CHART_W * (t - end + HOUR) as f64 / HOUR as f64;
            let y = if max > 0 {
                CHART_H - CHART_H * v as f64 / max as f64
            } else {
                CHART_H
            };
            format!("{},{}", round(x), round(y))
        })
        .collect();
    (out.join(" "), max)
}

fn chart(id: &str, title: &str, unit: &str, points: (String, i64)) -> String {
    format!(
        r#"<h2 id="{id}-title">{title}</h2>
<svg class="chart" id="{id}" viewBox="0 0 600 100" preserveAspectRatio="none" role="img" aria-labelledby="{id}-title"><polyline class="line" id="{id}-line" points="{pts}"/></svg>
<p class="axis"><span>an hour ago</span><span>peak <span id="{id}-max">{max}</span>{unit}</span><span>now</span></p>
"#,
        pts = points.0,
        max = grouped(points.1),
    )
}

pub fn render(poll: &Poll, snap: &Snapshot, series: &[Point]) -> String {
    let style: &str = &STYLE;
    let question = escape(&snap.question);
    let hidden = snap.hidden;
    let mut rows = String::new();
    for o in &snap.options {
        let (count, pct, meter) = if hidden {
            ("hidden".to_owned(), String::new(), String::new())
        } else {
            (
                votes(o.count),
                format!("{:.1}%", o.percent),
                format!(
                    r#" role="meter" aria-labelledby="label-{opt}" aria-valuemin="0" aria-valuemax="100" aria-valuenow="{pct:.1}" aria-valuetext="{pct:.1}%""#,
                    opt = o.option,
                    pct = o.percent
                ),
            )
        };
        rows.push_str(&format!(
            r#"<div class="row {opt}" id="opt-{opt}"><div class="label"><span id="label-{opt}">{label}</span><span class="count"><span class="n">{count}</span> <span aria-hidden="true">·</span> <span class="p">{pct}</span></span></div>
<div class="track"{meter}><div class="bar w{width}"></div></div></div>
"#,
            opt = o.option,
            label = escape(&o.label),
            width = if hidden {
                0
            } else {
                o.percent.round().clamp(0.0, 100.0) as u32
            },
        ));
    }
    let note = match (hidden, poll.closes) {
        (true, Some(c)) => format!(
            r#"<p class="hidden-note" id="hidden-note">The count is hidden until voting closes at {}.</p>
"#,
            window_time(c)
        ),
        _ => String::new(),
    };
    let state = state_text(snap);
    let class = if snap.is_final { "final" } else { "counting" };
    let err = snap
        .error
        .clone()
        .or_else(|| (snap.unreachable_queues > 0).then(|| unreachable(snap.unreachable_queues)))
        .unwrap_or_default();
    let mut nodes = String::new();
    for n in &snap.nodes {
        nodes.push_str(&format!(
            r#"<li><span class="node-name">{name}</span> <span class="node-count">{votes} · {pct:.1}%</span><span class="track small"><span class="bar w{width}"></span></span></li>
"#,
            name = escape(&n.node),
            votes = votes(n.count),
            pct = n.percent,
            width = n.percent.round().clamp(0.0, 100.0) as u32,
        ));
    }
    if nodes.is_empty() && !hidden {
        nodes.push_str("<li>no votes counted yet</li>\n");
    }
    let rate = chart(
        "rate",
        "Votes counted per second, the last hour",
        "/s",
        chart_points(series, |p| p.counted),
    );
    let queued = chart(
        "queued",
        "Votes still queued, the last hour",
        "",
        chart_points(series, |p| Some(p.backlog)),
    );
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<noscript><meta http-equiv="refresh" content="5"></noscript>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<title>Results: {question}</title><style>{style}</style></head>
<body><main>
<h1>{question}</h1>
<p class="window" id="window">{window}</p>
{note}{rows}<div class="status">
<span class="pill">total <strong id="total">{total}</strong></span>
<span class="pill">still queued <strong id="backlog">{backlog}</strong></span>
<span class="pill {class}" id="state">{state}</span>
</div>
<p class="error" id="err">{err}</p>
<p class="sr" id="announce" role="status" aria-live="polite"></p>
<section aria-label="the night in pictures">
{rate}{queued}<h2>Share per capture node</h2>
<ul class="nodes" id="nodes">
{nodes}</ul>
</section>
</main>
<footer>as of <time id="asof" datetime="{as_of}">{time}</time> · <span id="live">refreshes every 5 s</span></footer>
<script src="/results.js"></script></body></html>
"#,
        window = escape(&window_text(poll, snap)),
        total = if hidden {
            "hidden".to_owned()
        } else {
            grouped(snap.total)
        },
        backlog = backlog(snap),
        err = escape(&err),
        as_of = escape(&snap.as_of),
        time = escape(&utc_time(&snap.as_of)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::empty(&Poll::default());
        s.error = None;
        s
    }

    #[test]
    fn numbers_are_grouped_as_the_script_groups_them() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1234567, "1,234,567"),
            (-1000, "-1,000"),
        ] {
            assert_eq!(grouped(n), s);
        }
        assert_eq!(votes(1), "1 vote");
        assert_eq!(votes(1000), "1,000 votes");
    }

    #[test]
    fn an_unreachable_queue_makes_the_backlog_a_bound_not_a_false_zero() {
        let poll = Poll::default();
        let mut snap = snapshot();
        snap.unreachable_queues = 2;
        let page = render(&poll, &snap, &[]);
        assert!(
            page.contains(r#"<strong id="backlog">unknown</strong>"#),
            "{page}"
        );
        assert!(
            page.contains("2 vote queues cannot be reached right now"),
            "{page}"
        );
        assert!(!page.contains("queue(s)"));
        snap.backlog = 1500;
        assert!(
            render(&poll, &snap, &[]).contains(r#"<strong id="backlog">at least 1,500</strong>"#)
        );
        snap.unreachable_queues = 0;
        assert!(render(&poll, &snap, &[]).contains(r#"<strong id="backlog">1,500</strong>"#));
    }

    #[test]
    fn the_refresh_is_only_for_browsers_without_script() {
        let page = render(&Poll::default(), &snapshot(), &[]);
        let refresh = page
            .find(r#"<meta http-equiv="refresh""#)
            .expect("a refresh");
        let noscript = page.find("<noscript>").expect("a noscript");
        assert!(noscript < refresh && page[refresh..].find("</noscript>").is_some());
        assert_eq!(page.matches("http-equiv").count(), 1);
        assert!(page.contains(r#"<script src="/results.js"></script>"#));
        assert!(
            !page.contains("<script>"),
            "no inline script: the policy allows none"
        );
    }

    #[test]
    fn the_time_is_utc_without_milliseconds() {
        assert_eq!(utc_time("2026-12-02T00:50:01.123Z"), "00:50:01 UTC");
        assert_eq!(utc_time("nonsense"), "nonsense");
    }

    #[test]
    fn the_charts_span_the_hour_ending_at_the_newest_point() {
        let p = |t, counted, backlog| Point {
            t,
            counted: Some(counted),
            backlog,
        };
        let series = [p(1000, 0, 10), p(1000 + 1800, 5, 0), p(1000 + 3600, 10, 5)];
        assert_eq!(
            chart_points(&series, |p| p.counted),
            ("0,100 300,50 600,0".to_owned(), 10)
        );
        assert_eq!(
            chart_points(&series, |p| Some(p.backlog)),
            ("0,0 300,100 600,50".to_owned(), 10)
        );
        assert_eq!(chart_points(&[], |p| p.counted), (String::new(), 0));
    }
}
