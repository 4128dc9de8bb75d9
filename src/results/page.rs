//! The results page: server-rendered numbers (it works without JavaScript:
//! a `<noscript>` refresh reloads it every 5 s), kept live by a few lines of
//! inline JavaScript reading `/events`. The refresh sits in `<noscript>` so
//! that a browser running the script never schedules it: a script removing
//! a `<meta http-equiv=refresh>` runs after Chromium has already scheduled
//! the reload, and every viewer then reloaded the page (and reopened the
//! stream) every 5 s. No CDN; readable on a phone. Its
//! Content-Security-Policy allows exactly its inline stylesheet and script
//! (by hash) and `/events`; the bars' widths are classes of the stylesheet,
//! as an inline `style` attribute would need `'unsafe-inline'`.
//!
//! The server and the script write the same words and numbers (commas
//! between thousands, one decimal for percents), so a reload changes
//! nothing a viewer sees; the script shows the time in the viewer's own
//! time zone, the server in UTC.

use crate::actors::tally::Snapshot;
use crate::capture::page::escape;

const BASE_STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f1ea;color:#222;
 min-height:100vh;display:flex;flex-direction:column;align-items:center;justify-content:center;padding:1rem}
main{width:100%;max-width:40rem}
h1{font-size:clamp(1.6rem,6vw,2.4rem);margin:.2em 0 .8em;text-align:center}
.row{margin:1.1rem 0}
.label{display:flex;justify-content:space-between;font-weight:700;font-size:1.25rem;margin-bottom:.35rem}
.track{background:#e2ddd2;border-radius:.8rem;height:2.6rem;overflow:hidden}
.bar{height:100%;border-radius:.8rem;transition:width .6s ease;min-width:.2rem}
.a .bar{background:#1f6aa5}.b .bar{background:#b45309}
.status{display:flex;flex-wrap:wrap;gap:.6rem;justify-content:center;margin-top:1.6rem;font-size:1rem}
.pill{background:#fff;border-radius:2rem;padding:.4rem .9rem;box-shadow:0 .1rem .3rem rgba(0,0,0,.1)}
.final{background:#2e7d32;color:#fff;font-weight:700}
.counting{background:#fff3cd}
.error{color:#b00020;text-align:center}
.stale{color:#b00020;font-weight:700}
.sr{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
footer{margin-top:1.6rem;color:#5c5c5c;font-size:.8rem;text-align:center}
@media (forced-colors:active){
 .track{border:.1rem solid CanvasText}
 .bar{forced-color-adjust:none;background:Highlight}
 .pill{border:.1rem solid CanvasText}
}
@media (prefers-reduced-motion:reduce){.bar{transition:none}}
"#;

const SCRIPT: &str = r#"
(function(){
  if(!window.EventSource) return;
  var $=function(id){return document.getElementById(id);};
  var num=function(n){return n.toLocaleString('en-US');};
  var votes=function(n){return num(n)+(n===1?' vote':' votes');};
  var time=function(t){var d=new Date(t);return isNaN(d)?t:d.toLocaleTimeString();};
  var live=$('live'), asof=$('asof');
  asof.textContent=time(asof.getAttribute('datetime'));
  // Stale: the node publishes a tally every second; five without one
  // means the stream stalled (or the link to the node dropped).
  var STALE_MS=5000, stale=null;
  var setLive=function(ok){
    live.textContent=ok?'updates live':'updates paused: reconnecting\u2026';
    live.className=ok?'':'stale';
  };
  var arm=function(){clearTimeout(stale);stale=setTimeout(function(){setLive(false);},STALE_MS);};
  // The live region speaks politely, at most every 10 s, and only when a
  // count changed: not a word a second for a screen-reader user.
  var SPEAK_MS=10000, spoken='', lastSpoke=0, pending=null;
  var speak=function(text){
    if(text===spoken) return;
    clearTimeout(pending);
    var wait=Math.max(0,lastSpoke+SPEAK_MS-Date.now());
    pending=setTimeout(function(){spoken=text;lastSpoke=Date.now();$('announce').textContent=text;},wait);
  };
  var first=true;
  var es=new EventSource('/events');
  es.onerror=function(){setLive(false);};
  es.onmessage=function(ev){
    var s=JSON.parse(ev.data);
    setLive(true); arm();
    var said=[];
    s.options.forEach(function(o){
      var row=$('opt-'+o.option); if(!row) return;
      var pct=o.percent.toFixed(1)+'%';
      row.querySelector('.n').textContent=votes(o.count);
      row.querySelector('.p').textContent=pct;
      var track=row.querySelector('.track');
      track.setAttribute('aria-valuenow',o.percent.toFixed(1));
      track.setAttribute('aria-valuetext',pct);
      row.querySelector('.bar').style.width=o.percent+'%';
      said.push(o.label+' '+votes(o.count)+', '+pct);
    });
    $('total').textContent=num(s.total);
    $('backlog').textContent=s.unreachable_queues?(s.backlog?'at least '+num(s.backlog):'unknown'):num(s.backlog);
    var st=$('state');
    st.textContent=s.final?'all queued votes counted':'counting queued votes\u2026';
    st.className='pill '+(s.final?'final':'counting');
    asof.setAttribute('datetime',s.as_of); asof.textContent=time(s.as_of);
    $('err').textContent=s.error||(s.unreachable_queues?unreachable(s.unreachable_queues):'');
    var text=said.join('. ')+'. Total '+num(s.total)+'.';
    if(first){first=false;spoken=text;} else speak(text);
  };
  function unreachable(n){
    return n===1?'1 vote queue cannot be reached right now; its votes are counted when it is back.'
      :n+' vote queues cannot be reached right now; their votes are counted when they are back.';
  }
})();
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
        format!("script-src {}", crate::headers::csp_hash(SCRIPT)),
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

pub fn render(snap: &Snapshot) -> String {
    let style: &str = &STYLE;
    let title = format!(
        "{} or {}?",
        escape(&snap.options[0].label),
        escape(&snap.options[1].label)
    );
    let mut rows = String::new();
    for o in &snap.options {
        rows.push_str(&format!(
            r#"<div class="row {opt}" id="opt-{opt}"><div class="label"><span id="label-{opt}">{label}</span><span class="count"><span class="n">{votes}</span> <span aria-hidden="true">·</span> <span class="p">{pct:.1}%</span></span></div>
<div class="track" role="meter" aria-labelledby="label-{opt}" aria-valuemin="0" aria-valuemax="100" aria-valuenow="{pct:.1}" aria-valuetext="{pct:.1}%"><div class="bar w{width}"></div></div></div>
"#,
            opt = o.option,
            label = escape(&o.label),
            votes = votes(o.count),
            pct = o.percent,
            width = o.percent.round().clamp(0.0, 100.0) as u32,
        ));
    }
    let (state, class) = if snap.is_final {
        ("all queued votes counted", "final")
    } else {
        ("counting queued votes…", "counting")
    };
    let err = snap
        .error
        .clone()
        .or_else(|| (snap.unreachable_queues > 0).then(|| unreachable(snap.unreachable_queues)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<noscript><meta http-equiv="refresh" content="5"></noscript>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<title>Results: {title}</title><style>{style}</style></head>
<body><main>
<h1>{title}</h1>
{rows}<div class="status">
<span class="pill">total <strong id="total">{total}</strong></span>
<span class="pill">still queued <strong id="backlog">{backlog}</strong></span>
<span class="pill {class}" id="state">{state}</span>
</div>
<p class="error" id="err">{err}</p>
<p class="sr" id="announce" role="status" aria-live="polite"></p>
</main>
<footer>as of <time id="asof" datetime="{as_of}">{time}</time> · <span id="live">refreshes every 5 s</span></footer>
<script>{SCRIPT}</script></body></html>
"#,
        total = grouped(snap.total),
        backlog = backlog(snap),
        err = escape(&err),
        as_of = escape(&snap.as_of),
        time = escape(&utc_time(&snap.as_of)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut snap = Snapshot::empty(&["Cats".into(), "Dogs".into()]);
        snap.error = None;
        snap.unreachable_queues = 2;
        let page = render(&snap);
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
        assert!(render(&snap).contains(r#"<strong id="backlog">at least 1,500</strong>"#));
        snap.unreachable_queues = 0;
        assert!(render(&snap).contains(r#"<strong id="backlog">1,500</strong>"#));
    }

    #[test]
    fn the_refresh_is_only_for_browsers_without_script() {
        let page = render(&Snapshot::empty(&["Cats".into(), "Dogs".into()]));
        let refresh = page
            .find(r#"<meta http-equiv="refresh""#)
            .expect("a refresh");
        let noscript = page.find("<noscript>").expect("a noscript");
        assert!(noscript < refresh && page[refresh..].find("</noscript>").is_some());
        assert_eq!(page.matches("http-equiv").count(), 1);
    }

    #[test]
    fn the_time_is_utc_without_milliseconds() {
        assert_eq!(utc_time("2026-12-02T00:50:01.123Z"), "00:50:01 UTC");
        assert_eq!(utc_time("nonsense"), "nonsense");
    }
}
