//! The results page: server-rendered numbers (it works without JavaScript,
//! refreshing itself), kept live by a few lines of inline JavaScript reading
//! `/events`. No CDN; readable on a phone. Its Content-Security-Policy
//! allows exactly its inline stylesheet and script (by hash) and `/events`;
//! the bars' widths are classes of the stylesheet, as an inline `style`
//! attribute would need `'unsafe-inline'`.

use crate::actors::tally::Snapshot;
use crate::capture::page::escape;

const BASE_STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f1ea;color:#222;
 min-height:100vh;display:flex;align-items:center;justify-content:center;padding:1rem}
main{width:100%;max-width:40rem}
h1{font-size:clamp(1.6rem,6vw,2.4rem);margin:.2em 0 .8em;text-align:center}
.row{margin:1.1rem 0}
.label{display:flex;justify-content:space-between;font-weight:700;font-size:1.25rem;margin-bottom:.35rem}
.track{background:#e2ddd2;border-radius:.8rem;height:2.6rem;overflow:hidden}
.bar{height:100%;border-radius:.8rem;transition:width .6s ease;min-width:.2rem}
.a .bar{background:#2f7fc1}.b .bar{background:#e0803a}
.status{display:flex;flex-wrap:wrap;gap:.6rem;justify-content:center;margin-top:1.6rem;font-size:1rem}
.pill{background:#fff;border-radius:2rem;padding:.4rem .9rem;box-shadow:0 .1rem .3rem rgba(0,0,0,.1)}
.final{background:#2e7d32;color:#fff;font-weight:700}
.counting{background:#fff3cd}
.error{color:#b00020;text-align:center}
footer{margin-top:1.6rem;color:#777;font-size:.8rem;text-align:center}
"#;

const SCRIPT: &str = r#"
(function(){
  if(!window.EventSource) return;
  var m=document.querySelector('meta[http-equiv=refresh]'); if(m) m.remove();
  var es=new EventSource('/events');
  es.onmessage=function(ev){
    var s=JSON.parse(ev.data);
    s.options.forEach(function(o){
      var row=document.getElementById('opt-'+o.option); if(!row) return;
      row.querySelector('.count').textContent=o.count.toLocaleString()+' \u00b7 '+o.percent.toFixed(1)+'%';
      row.querySelector('.bar').style.width=o.percent+'%';
    });
    document.getElementById('total').textContent=s.total.toLocaleString();
    document.getElementById('backlog').textContent=s.backlog.toLocaleString();
    var st=document.getElementById('state');
    st.textContent=s.final?'final':'counting\u2026';
    st.className='pill '+(s.final?'final':'counting');
    document.getElementById('asof').textContent=s.as_of;
    document.getElementById('err').textContent=s.error||(s.unreachable_queues?s.unreachable_queues+' queue(s) unreachable':'');
  };
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
        "form-action 'none'".to_owned(),
    ])
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
            r#"<div class="row {opt}" id="opt-{opt}"><div class="label"><span>{label}</span><span class="count">{count} · {pct:.1}%</span></div>
<div class="track"><div class="bar w{width}"></div></div></div>
"#,
            opt = o.option,
            label = escape(&o.label),
            count = o.count,
            pct = o.percent,
            width = o.percent.round().clamp(0.0, 100.0) as u32,
        ));
    }
    let (state, class) = if snap.is_final {
        ("final", "final")
    } else {
        ("counting…", "counting")
    };
    let err = snap
        .error
        .clone()
        .or_else(|| {
            (snap.unreachable_queues > 0)
                .then(|| format!("{} queue(s) unreachable", snap.unreachable_queues))
        })
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>Results: {title}</title><style>{style}</style></head>
<body><main>
<h1>{title}</h1>
{rows}<div class="status">
<span class="pill">total <strong id="total">{total}</strong></span>
<span class="pill">still queued <strong id="backlog">{backlog}</strong></span>
<span class="pill {class}" id="state">{state}</span>
</div>
<p class="error" id="err">{err}</p>
<footer>as of <span id="asof">{as_of}</span> · updates live</footer>
</main><script>{SCRIPT}</script></body></html>
"#,
        total = snap.total,
        backlog = snap.backlog,
        err = escape(&err),
        as_of = escape(&snap.as_of),
    )
}
