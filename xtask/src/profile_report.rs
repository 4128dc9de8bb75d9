//! The "Profiles" section of BENCHMARKS.md, from what `cargo xtask profile`
//! keeps in target/profile/: callgrind_annotate's listings (self and
//! inclusive) and the callgrind file of each hot path, and the figures the
//! run noted in `meta` (KEY=VALUE lines).

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;

use crate::buckets::{self, Buckets};
use crate::callgrind::{self, Counter, Edge};
use crate::Res;

pub const PATHS: [&str; 3] = ["capture", "baseline", "worker"];

/// sha2 0.10's SHA-NI loop, instructions per 64-byte block (objdump of
/// digest_blocks): what the cookie HMAC's blocks cost natively.
const SHANI_BLOCK: f64 = 164.0;

/// redis-rs's reply decoder, named in the worker's inclusive table.
const DECODE: &str =
    "<redis::parser::aio_support::ValueCodec as tokio_util::codec::decoder::Decoder>::decode";

/// Deeper than this, an allocation stays where it is (a recursion guard).
const PUSH_DEPTH: usize = 12;

/// One hot path's counts.
struct Profile {
    total: f64,
    votes: f64,
    buckets: Counter<&'static str>,
    self_cost: Counter<String>,
    incl: Counter<String>,
    bucket_of: HashMap<String, &'static str>,
    /// How often each function was called.
    into: Counter<String>,
    sites: Vec<(String, f64)>,
}

impl Profile {
    fn read(keep: &Path, name: &str, votes: f64, bk: &Buckets) -> Res<Profile> {
        let (srows, total) = callgrind::listing(&keep.join(format!("{name}.self.txt")))?;
        let (irows, _) = callgrind::listing(&keep.join(format!("{name}.inclusive.txt")))?;
        let total = total.ok_or(format!("{name}.self.txt: no PROGRAM TOTALS"))?;
        let mut buckets = Counter::new();
        let mut self_cost = Counter::new();
        let mut where_: HashMap<String, Counter<&'static str>> = HashMap::new();
        for r in &srows {
            let b = bk.of(&r.file, &r.func, &r.obj);
            buckets.add(&b, r.ir);
            self_cost.add(&r.func, r.ir);
            where_.entry(r.func.clone()).or_default().add(&b, r.ir);
        }
        // The row of a function under its own file holds its inclusive
        // cost (the sum of the calls to it); its rows under files inlined
        // into it hold only their self cost: the largest row is the
        // function's.
        let mut incl = Counter::new();
        for r in &irows {
            incl.max(&r.func, r.ir);
        }
        let calls = callgrind::call_graph(&keep.join(format!("{name}.callgrind")))?;
        let mut into = Counter::new();
        for ((_, callee), n) in calls.iter() {
            if let Some(c) = callee {
                into.add(c, n);
            }
        }
        let bucket_of = where_
            .into_iter()
            .map(|(f, c)| {
                let b = *c.top().unwrap_or(&buckets::OTHER);
                (f, b)
            })
            .collect();
        Ok(Profile {
            total,
            votes,
            buckets,
            self_cost,
            incl,
            bucket_of,
            into,
            sites: alloc_sites(&calls, votes, bk),
        })
    }

    fn pv(&self, ir: f64) -> f64 {
        ir / self.votes
    }
    fn per_vote(&self) -> f64 {
        self.pv(self.total)
    }
    fn b(&self, bucket: &'static str) -> f64 {
        self.pv(self.buckets.get(&bucket))
    }
    fn ncalls(&self, func: &str) -> f64 {
        self.into.get(&func.to_owned()) / self.votes
    }
    fn allocs(&self) -> f64 {
        buckets::ALLOCS.iter().map(|f| self.ncalls(f)).sum()
    }
    fn reallocs(&self) -> f64 {
        buckets::REALLOCS.iter().map(|f| self.ncalls(f)).sum()
    }
}

/// Allocation sites: the calls to the allocator pushed up through generic
/// helpers (shared out among their callers by call counts) to the first
/// function that is not one; those at 0.2 per vote or more.
fn alloc_sites(calls: &Counter<Edge>, votes: f64, bk: &Buckets) -> Vec<(String, f64)> {
    // callee -> caller -> count
    let mut into: HashMap<&str, Counter<String>> = HashMap::new();
    for ((caller, callee), n) in calls.iter() {
        if let (Some(a), Some(c)) = (caller, callee) {
            if !a.is_empty() && !c.is_empty() {
                into.entry(c.as_str()).or_default().add(a, n);
            }
        }
    }
    fn push(
        into: &HashMap<&str, Counter<String>>,
        sites: &mut Counter<String>,
        bk: &Buckets,
        func: &str,
        n: f64,
        depth: usize,
    ) {
        let callers = match into.get(func) {
            Some(c) if depth <= PUSH_DEPTH => c,
            _ => {
                sites.add(&func.to_owned(), n);
                return;
            }
        };
        let total = callers.sum();
        for (caller, k) in callers.iter() {
            let share = n * k / total;
            let plain = caller.split('\'').next().unwrap_or("");
            if bk.helper.is_match(plain) && caller != func {
                push(into, sites, bk, caller, share, depth + 1);
            } else {
                sites.add(caller, share);
            }
        }
    }
    let mut sites = Counter::new();
    for entry in buckets::ALLOCS.iter().chain(buckets::REALLOCS.iter()) {
        if let Some(callers) = into.get(entry) {
            push(&into, &mut sites, bk, entry, callers.sum(), 0);
        }
    }
    sites
        .most_common()
        .into_iter()
        .map(|(f, n)| (f, n / votes))
        .filter(|(_, n)| *n >= 0.2)
        .collect()
}

/// 12,345 (no decimals, thousands separated).
fn fmt(x: f64) -> String {
    let s = format!("{x:.0}");
    let (sign, digits) = match s.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", s.as_str()),
    };
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

fn pct(x: f64, of: f64) -> String {
    if of == 0.0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * x / of)
    }
}

/// The first word of a bucket's name, before its parenthesis.
fn short_bucket(b: &str) -> &str {
    b.split(" (").next().unwrap_or(b)
}

struct Names {
    payload: Regex,
}

impl Names {
    /// A function's name, shortened for a table cell.
    fn short(&self, func: &str) -> String {
        const WIDTH: usize = 110;
        let f = func
            .replace("{{closure}}", "{closure}")
            .replace("{{vtable.shim}}", "");
        let f = self.payload.replace_all(&f, "<Payload>").into_owned();
        if f.chars().count() <= WIDTH {
            f
        } else {
            f.chars().take(WIDTH - 1).collect::<String>() + "…"
        }
    }

    fn code(&self, func: &str) -> String {
        format!("`{}`", self.short(func).replace('`', "'"))
    }
}

/// The `meta` file: KEY=VALUE lines.
pub struct Meta(HashMap<String, String>);

impl Meta {
    pub fn read(path: &Path) -> Res<Meta> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Meta(
            text.lines()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
        ))
    }

    fn get(&self, k: &str) -> Res<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("meta: no {k}").into())
    }

    fn num(&self, k: &str) -> Res<f64> {
        let v = self.get(k)?;
        v.parse()
            .map_err(|_| format!("meta: {k}={v} is not a number").into())
    }

    /// µs of user and system CPU per vote.
    fn cpu(&self, k: &str) -> Res<(f64, f64)> {
        let v = self.get(k)?;
        let mut it = v.split_whitespace().map(str::parse::<f64>);
        match (it.next(), it.next()) {
            (Some(Ok(u)), Some(Ok(s))) => Ok((u, s)),
            _ => Err(format!("meta: {k}={v} is not two numbers").into()),
        }
    }

    /// A knob of the `command` line (KNOB=VALUE among others).
    fn knob(&self, k: &str) -> Res<&str> {
        let cmd = self.get("command")?;
        cmd.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .ok_or_else(|| format!("meta: command has no {k}").into())
    }
}

/// The section, from the files in `keep`.
pub fn section(keep: &Path) -> Res<String> {
    let meta = Meta::read(&keep.join("meta"))?;
    let top = meta.num("top")? as usize;
    let bk = Buckets::new();
    let names = Names {
        payload: Regex::new(
            r"<core::pin::Pin<alloc::boxed::Box<dyn futures_core::stream::Stream\+Item = [^>]*>>>>",
        )?,
    };
    let mut p = HashMap::new();
    for name in PATHS {
        let votes = meta.num(&format!("{name}_votes"))?;
        p.insert(name, Profile::read(keep, name, votes, &bk)?);
    }
    let (capture, baseline, worker) = (&p["capture"], &p["baseline"], &p["worker"]);
    let (cap, base, wrk) = (capture.per_vote(), baseline.per_vote(), worker.per_vote());
    let (cu, cs) = meta.cpu("capture_cpu")?;
    let (ru, rs) = meta.cpu("capture_redis_cpu")?;
    let (bu, bs) = meta.cpu("baseline_cpu")?;
    let (wu, ws) = meta.cpu("worker_cpu")?;
    let (pu, ps) = meta.cpu("worker_pg_cpu")?;
    let blocks = capture.ncalls("sha2::sha256::compress256");
    let hmac = capture.b(buckets::HMAC);
    let soft_block = if blocks > 0.0 { hmac / blocks } else { 0.0 };
    let native_hmac = blocks * SHANI_BLOCK;
    let (ca, cr, ba, wa) = (
        capture.allocs(),
        capture.reallocs(),
        baseline.allocs(),
        worker.allocs(),
    );

    let mut out: Vec<String> = Vec::new();
    macro_rules! w {
        ($($t:tt)*) => { out.push(format!($($t)*)) };
    }
    w!("<!-- profile:begin -->");
    w!("## Profiles: where each hot path's instructions go, per vote");
    w!("");
    w!(
        "Measured {} on {}, {}; {} (callgrind), Redis {}, PostgreSQL {}.",
        meta.get("date")?,
        meta.get("machine")?,
        meta.get("built")?,
        meta.get("valgrind")?,
        meta.get("redis")?,
        meta.get("pg")?
    );
    w!(
        "Command: `make profile` (`cargo xtask profile`, {}).",
        meta.get("command")?
    );
    w!("");
    w!("Callgrind counts the instructions a process executes in user space (Ir): the same count on every run,");
    w!("whatever else the machine is doing. Each profile covers a steady state only: after a warm-up the counters");
    w!("are zeroed (`callgrind_control -z`), and dumped after the measured votes (`callgrind_control -d`); every");
    w!("figure is that window's count divided by its votes. capture and the baseline each take {} form posts", fmt(capture.votes));
    w!("`vote=a` from new voters (no cookie; keep-alive, {} connections; as wrk sends them), capture with its own Redis", meta.knob("CONCURRENCY")?);
    w!("(append-only, everysec); the worker drains {} votes preloaded into 3 Redis queues (`examples/preload`) into PostgreSQL", fmt(worker.votes));
    w!("(one upsert per batch). The callgrind files stay in `target/profile/` for `callgrind_annotate` or `kcachegrind`;");
    w!("`REPORT_ONLY=1 cargo xtask profile` rewrites this section from them.");
    w!("");
    w!("What the counts do not show as the CPU sees it:");
    w!("");
    w!("- **The kernel.** System calls (the sockets, epoll, the futexes between threads) count nothing here. The");
    w!("  last columns of the first table are each process's user and system CPU from a run without valgrind.");
    if blocks > 0.0 {
        w!("- **SHA-256.** Valgrind does not emulate the SHA extensions, so under it `sha2` runs its portable code,");
        w!("  {} instructions per 64-byte block; natively this CPU has SHA-NI, whose loop in `sha2` takes", fmt(soft_block));
        w!("  about {SHANI_BLOCK:.0} per block. The cookie HMAC's {blocks:.0} blocks per vote are {} instructions here and about", fmt(hmac));
        w!("  {} natively.", fmt(native_hmac));
    }
    w!("- **`rep stos`/`rep movs`** count one instruction per byte under callgrind, and glibc's memset and memcpy use");
    w!("  them from 2 KiB up (a 3 KiB memset: 3,088 instructions instead of 182). The task sets glibc's tunables");
    w!("  (`GLIBC_TUNABLES=glibc.cpu.x86_rep_stosb_threshold=...`) so that they use their vector loops instead.");
    w!("- **Timing.** Under callgrind the node runs some 50 times slower: a Redis pipeline carried {} votes on average", meta.get("capture_batch")?);
    w!("  (more under wrk natively), a worker read {} entries and an upsert {} votes; timers (the writers'", meta.get("worker_read_batch")?, meta.get("worker_commit_batch")?);
    w!("  1 s queue-length poll, actix's date header) weigh a little more per vote than they do at full speed.");
    w!("");
    w!("| hot path | instructions per vote | ratio to baseline | allocations per vote | native CPU per vote, user + system | in the kernel |");
    w!("|----------|----------------------:|------------------:|---------------------:|-----------------------------------:|--------------:|");
    w!(
        "| baseline (`examples/baseline.rs`) | {} | 1.00 | {ba:.0} | {bu:.1} + {bs:.1} µs | {} |",
        fmt(base),
        pct(bs, bu + bs)
    );
    w!("| capture (one node) | {} | {:.2} | {ca:.0} + {cr:.0} realloc | {cu:.1} + {cs:.1} µs; its Redis {ru:.1} + {rs:.1} µs | {} |", fmt(cap), cap / base, pct(cs, cu + cs));
    w!("| worker (one worker, 3 queues) | {} | - | {wa:.0} | {wu:.1} + {ws:.1} µs; PostgreSQL {pu:.1} + {ps:.1} µs | {} |", fmt(wrk), pct(ws, wu + ws));
    w!("");
    w!("Native CPU: user and system time from `/proc/PID/stat` over {} s of wrk -t2 -c64 (form posts) without valgrind,", meta.knob("KERNEL_SECONDS")?);
    w!("and over a drain of the same size for the worker and PostgreSQL's processes. The kernel counts them in 10 ms");
    w!("ticks, by sampling, so a small share (the worker's system time) is only roughly right.");
    w!("");
    w!("### By bucket: self cost, instructions per vote");
    w!("");
    w!("| bucket | capture | baseline | capture − baseline | worker |");
    w!("|--------|--------:|---------:|-------------------:|-------:|");
    let mut rows = buckets::ORDER.to_vec();
    rows.sort_by(|a, b| {
        let key = |k: &'static str| -(capture.b(k) + worker.b(k));
        key(a).total_cmp(&key(b))
    });
    for k in rows {
        let (c, bb, ww) = (capture.b(k), baseline.b(k), worker.b(k));
        if c.max(bb).max(ww) < 50.0 {
            continue;
        }
        w!(
            "| {k} | {} ({}) | {} ({}) | {} | {} ({}) |",
            fmt(c),
            pct(c, cap),
            fmt(bb),
            pct(bb, base),
            fmt(c - bb),
            fmt(ww),
            pct(ww, wrk)
        );
    }
    w!(
        "| **total** | **{}** | **{}** | **{}** | **{}** |",
        fmt(cap),
        fmt(base),
        fmt(cap - base),
        fmt(wrk)
    );
    w!("");
    w!("A function's own instructions (self cost) go to the crate its name names first (a generic function to the");
    w!("crate of the type it is instantiated for), so the buckets add up to the total; code inlined into a");
    w!("function counts as that function's.");

    for (name, title) in [
        ("capture", "capture"),
        ("baseline", "the baseline"),
        ("worker", "the worker"),
    ] {
        let pr = &p[name];
        w!("");
        w!("### Top self cost: {title}");
        w!("");
        w!("| per vote | share | function | bucket |");
        w!("|---------:|------:|----------|--------|");
        for (func, ir) in pr.self_cost.most_common().into_iter().take(top) {
            let b = pr.bucket_of.get(&func).copied().unwrap_or(buckets::OTHER);
            w!(
                "| {} | {} | {} | {} |",
                fmt(pr.pv(ir)),
                pct(ir, pr.total),
                names.code(&func),
                short_bucket(b)
            );
        }
    }

    let ours_incl = Regex::new(&format!(
        r"voteswarm::|HttpResponse<B>::add_cookie|{}$|redis::pipeline::encode_pipeline|PgConnection as diesel::connection::Connection>::execute_returning_count",
        regex::escape(DECODE)
    ))?;
    for name in ["capture", "worker"] {
        let pr = &p[name];
        w!("");
        w!("### Inclusive cost of our code: {name}");
        w!("");
        w!("| per vote, inclusive | share | function |");
        w!("|--------------------:|------:|----------|");
        let mut shown = 0;
        for (func, ir) in pr.incl.most_common() {
            if shown >= top {
                break;
            }
            if func.contains('\'')
                || ir > pr.total
                || !ours_incl.is_match(&func)
                || func.starts_with("core::ptr::drop_in_place")
            {
                continue;
            }
            if pr.pv(ir) < 100.0 {
                break;
            }
            w!(
                "| {} | {} | {} |",
                fmt(pr.pv(ir)),
                pct(ir, pr.total),
                names.code(&func)
            );
            shown += 1;
        }
    }

    w!("");
    w!("### Allocations per vote, by call site (capture)");
    w!("");
    w!("Calls to the allocator (alloc and realloc) pushed up through `Vec`/`String` growth, `format!` and `Bytes` copies");
    w!("to the first function that is not such a helper.");
    w!("");
    w!("| per vote | call site |");
    w!("|---------:|-----------|");
    for (func, n) in capture.sites.iter().take(top) {
        w!("| {n:.1} | {} |", names.code(func));
    }

    // --- prose
    let mut diff: Vec<(f64, &'static str)> = buckets::ORDER
        .iter()
        .map(|&k| (capture.b(k) - baseline.b(k), k))
        .collect();
    diff.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.cmp(a.1)));
    let main: Vec<String> = diff
        .iter()
        .filter(|(d, _)| *d >= 0.05 * (cap - base))
        .take(5)
        .map(|(d, k)| format!("{} {}", short_bucket(k), fmt(*d)))
        .collect();
    w!("");
    w!("### Where the time goes");
    w!("");
    w!(
        "**capture.** {} instructions per vote, {:.1} times the baseline's {}. The {} more are, by",
        fmt(cap),
        cap / base,
        fmt(base),
        fmt(cap - base)
    );
    w!("bucket: {}.", main.join("; "));
    if blocks > 0.0 {
        w!("The cookie's HMAC-SHA256 is the largest single item here ({}, {}: {blocks:.0} SHA-256 blocks per vote, two of", fmt(hmac), pct(hmac, cap));
        w!("them hashing the key's inner and outer pads, which `cookie::mac` does again for every cookie), but with");
        w!("SHA-NI natively those blocks are about {} instructions, so natively the node runs some {} per vote.", fmt(native_hmac), fmt(cap - hmac + native_hmac));
    }
    w!("Allocation is next: {ca:.0} allocations and {cr:.0} reallocations per vote (the baseline: {ba:.0}),");
    w!("{} instructions in the allocator alone; the table above names the call sites (Vecs that grow one push", fmt(capture.b(buckets::ALLOC)));
    w!("at a time, strings formatted per vote, header names looked up by `&str`, which allocate).");
    w!("Natively the node spends {cu:.1} µs in user space and {cs:.1} µs in the kernel per vote ({} in the kernel:", pct(cs, cu + cs));
    w!("the loopback TCP of the HTTP exchange and of the Redis pipelines, epoll, the wake-ups), and its Redis {:.1} µs more.", ru + rs);
    w!("");
    w!("**baseline.** {} instructions per request: actix-web's HTTP/1 parsing, routing and response", fmt(base));
    w!(
        "({}), the runtime ({}), {ba:.0} allocations ({}); the form parse is",
        fmt(baseline.b(buckets::HTTP)),
        fmt(baseline.b(buckets::RT)),
        fmt(baseline.b(buckets::ALLOC))
    );
    w!(
        "{}. Natively {} of its CPU is in the kernel ({bs:.1} of {:.1} µs){}",
        fmt(baseline.b(buckets::BODY)),
        pct(bs, bu + bs),
        bu + bs,
        if bs > bu {
            ": the floor for an actix-web node on this machine is the socket work more than the instructions."
        } else {
            "."
        }
    );
    w!("");
    let redis_w = worker.b(buckets::REDIS);
    let largest = |pick: &dyn Fn(&str) -> bool| {
        worker.pv(worker
            .incl
            .iter()
            .filter(|(f, _)| pick(f))
            .map(|(_, ir)| ir)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            .unwrap_or(0.0))
    };
    let decode_rs = worker.pv(worker.incl.get(&DECODE.to_owned()));
    let decode_ours =
        largest(&|f| f.contains("voteswarm::queue::reply::") && f.contains("decode_read_reply"));
    let scan_ours = largest(&|f| f.contains("voteswarm::queue::reply::Scan::advance"));
    w!("**worker.** {} instructions per vote. It decodes the `XREADGROUP` replies itself (`src/queue/reply.rs`): scanning them as", fmt(wrk));
    w!(
        "they arrive takes {} and decoding them into entries {} ({}); the worker makes {wa:.0}",
        fmt(scan_ours),
        fmt(decode_ours),
        pct(decode_ours, wrk)
    );
    w!("allocations per vote ({} instructions in the allocator), most of them the fields, each its own `Vec`, as the", fmt(worker.b(buckets::ALLOC)));
    w!("dead-letter path needs them. Before it, redis-rs's reply decoder (`combine`) took 16,374 of the worker's 24,115 instructions per vote (68%, commit");
    w!("8dc9759); redis-rs is now {} ({}), its reply decoder {}: the acknowledgements and their replies.", fmt(redis_w), pct(redis_w, wrk), fmt(decode_rs));
    w!("Our own code ({} self) also checks and deduplicates the entries; formatting ({}) is the ids turned back into", fmt(worker.b(buckets::OURS)), fmt(worker.b(buckets::FMT)));
    w!("text for the upsert. The PostgreSQL client (diesel, libpq) is {} per vote: the batch goes as five arrays in", fmt(worker.b(buckets::PG)));
    w!(
        "one statement. Natively the worker spends {:.1} µs per vote and PostgreSQL {:.1} µs{}",
        wu + ws,
        pu + ps,
        if pu + ps > wu + ws {
            ": the database, not the worker, is where the drain's CPU goes."
        } else {
            "."
        }
    );
    w!("<!-- profile:end -->");
    Ok(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::fmt;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(fmt(0.0), "0");
        assert_eq!(fmt(999.4), "999");
        assert_eq!(fmt(1234.0), "1,234");
        assert_eq!(fmt(43823.2), "43,823");
        assert_eq!(fmt(-1234567.0), "-1,234,567");
    }
}
