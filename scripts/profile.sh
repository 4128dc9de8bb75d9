#!/usr/bin/env bash
# make profile: where each hot path's instructions go, per vote, counted by
# callgrind (valgrind) so that the figures repeat whatever else runs on the
# machine. Three profiles in one invocation:
#   - capture (one node and its private Redis, appendonly everysec) taking
#     VOTES form posts `vote=a` from new voters (no cookie), as wrk sends them;
#   - the baseline (examples/baseline.rs: the same form parser, no Redis)
#     taking the same VOTES;
#   - one worker draining WORKER_VOTES from 3 Redis queues (examples/preload)
#     into a private PostgreSQL.
# Each counts a steady-state window only: after a warm-up the counters are
# zeroed (callgrind_control -z) and after the measured votes dumped
# (callgrind_control -d). callgrind_annotate (self and inclusive) gives the
# cost centres, grouped into buckets. Callgrind sees no kernel time: a short
# run without valgrind gives each process's user/system CPU split. Writes the
# "Profiles" section of BENCHMARKS.md (between <!-- profile:begin --> and
# <!-- profile:end -->) and keeps the callgrind files in target/profile/.
# Progress goes to stderr.
#   VOTES=20000 WARMUP_VOTES=2000 CONCURRENCY=16 WORKER_VOTES=100000 \
#   WORKER_WARMUP_VOTES=10000 KERNEL_SECONDS=5 TOP=10 scripts/profile.sh
# SKIP_BUILD=1: use target/release as it is; REPORT_ONLY=1: only rewrite the
# section from the last run's files in target/profile/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh disable=SC1091 # followed when given too (make test)
. scripts/bench-lib.sh
# What bench-lib.sh's functions set, named here so that `shellcheck
# scripts/profile.sh` alone knows them: bench_start (work, pg_pid),
# start_redis (redis_port, redis_pid), start_pg (db, pgbin, pg_pid).
work="" pg_pid="" redis_port="" redis_pid="" db="" pgbin=""

VOTES="${VOTES:-20000}"
WARMUP_VOTES="${WARMUP_VOTES:-2000}"
CONCURRENCY="${CONCURRENCY:-16}"
WORKER_VOTES="${WORKER_VOTES:-100000}"
WORKER_WARMUP_VOTES="${WORKER_WARMUP_VOTES:-10000}"
CHANGE_FRACTION="${CHANGE_FRACTION:-0.1}"
BATCH_SIZE="${BATCH_SIZE:-2000}"
DB_POOL_SIZE="${DB_POOL_SIZE:-4}"
KERNEL_SECONDS="${KERNEL_SECONDS:-5}"
TOP="${TOP:-10}"
QUEUES=3
# Under valgrind a node takes seconds to start, and a drain runs ~50x slower.
START_TIMEOUT_S=120
DRAIN_TIMEOUT_S="${DRAIN_TIMEOUT_S:-900}"
for n in "$VOTES" "$WARMUP_VOTES" "$CONCURRENCY" "$WORKER_VOTES" "$WORKER_WARMUP_VOTES" "$KERNEL_SECONDS" "$TOP"; do
  case "$n" in '' | *[!0-9]* | 0) echo "profile: the sizes take positive whole numbers" >&2; exit 2 ;; esac
done

# report DIR: the section of BENCHMARKS.md from DIR's annotations and figures.
report() {
  python3 - "$1" <<'PY'
# The "Profiles" section of BENCHMARKS.md, from callgrind_annotate's
# listings (self and inclusive) and the callgrind files in DIR, and the
# figures the script noted in DIR/meta.
import collections, os, re, sys

keep = sys.argv[1]
meta = {}
for line in open(os.path.join(keep, "meta")):
    k, _, v = line.rstrip("\n").partition("=")
    meta[k] = v
TOP = int(meta["top"])
PATHS = ("capture", "baseline", "worker")

# --- callgrind_annotate's listing: "  1,234 (12.3%)  file:function [object]"
ROW = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")
OBJ = re.compile(r"\s\[([^\]]+)\]$")


def listing(path):
    rows, total = [], None
    for line in open(path, errors="replace"):
        m = ROW.match(line)
        if not m:
            continue
        ir, rest = int(m.group(1).replace(",", "")), m.group(2)
        if rest.strip() == "PROGRAM TOTALS":
            total = ir
            continue
        obj = ""
        o = OBJ.search(rest)
        if o:
            obj, rest = o.group(1), rest[: o.start()]
        f, _, fn = rest.partition(":")
        rows.append((ir, f, fn.strip(), obj))
    return rows, total


# --- the call graph of a callgrind file: calls[(caller, callee)] = count
def call_graph(path):
    names, calls = {}, collections.Counter()
    fn = cfn = None
    name = re.compile(r"c?fn=\((\d+)\)(?: (.*))?$")
    for line in open(path, errors="replace"):
        if line.startswith(("fn=", "cfn=")):
            m = name.match(line.rstrip("\n"))
            if m.group(2):
                names[m.group(1)] = m.group(2)
            if line[0] == "f":
                fn = names.get(m.group(1))
            else:
                cfn = names.get(m.group(1))
        elif line.startswith("calls="):
            calls[(fn, cfn)] += int(line[6:].split()[0])
    return calls


# --- buckets ---------------------------------------------------------------
HEAD = re.compile(r"(?:^|[<\s,(&*\[])([A-Za-z_][A-Za-z0-9_]*)::")
IN_PATH = re.compile(r"/index\.crates\.io-[^/]+/([A-Za-z0-9_.-]+?)-\d+\.\d+\.\d+[^/]*/")
STD = {"core", "alloc", "std"}


def crate_of(f, fn, obj):
    """The first crate a function's name mentions that is not std, else the
    crate of its source file, else its object file."""
    heads = HEAD.findall(fn)
    for c in heads:
        if c not in STD:
            return c
    m = IN_PATH.search(f)
    if m:
        return m.group(1).replace("-", "_")
    if "/hashbrown-" in f:
        return "hashbrown"
    if heads or "/library/" in f:
        return "std"
    if f.startswith("./"):  # glibc's sources
        return "libc"
    base = os.path.basename(obj)
    for prefix, c in (("libc.so", "libc"), ("ld-linux", "libc"), ("libpq", "libpq"),
                      ("libssl", "libpq"), ("libcrypto", "libpq"), ("libgss", "libpq")):
        if base.startswith(prefix):
            return c
    return base or "?"


B_HTTP = "HTTP: actix-http, actix-web, http, httparse (parse, route, respond)"
B_BUF = "byte buffers and framing (bytes, actix-codec, tokio-util)"
B_RT = "runtime and scheduling (tokio, mio, actix, futures)"
B_HMAC = "cookie crypto (aes-gcm; sha2, hmac)"
B_COOKIE = "cookie value and Set-Cookie (base64, cookie, time)"
B_BODY = "vote body parsing (serde_urlencoded)"
B_RAND = "random ids (rand)"
B_REDIS = "Redis client (redis-rs, combine, memchr: commands out, replies in)"
B_PG = "PostgreSQL client (diesel, libpq, r2d2)"
B_PROM = "metrics (prometheus)"
B_OURS = "voteswarm's own code (and what it inlines)"
B_ALLOC = "allocation (malloc, free, realloc, Vec growth)"
B_MEM = "memcpy, memmove, memset (libc)"
B_FMT = "formatting (core::fmt: format!, to_string, write!)"
B_HASH = "hashing and hash maps"
B_STD = "Rust std, other (strings, UTF-8 checks, iterators, collections)"
B_LIBC = "libc, other (system call wrappers, clock, locks)"
B_LOG = "logging"
B_OTHER = "other"
CRATES = {
    B_HTTP: "actix_http actix_web http httparse actix_router actix_service actix_utils mime bytestring language_tags h2 percent_encoding encoding_rs httpdate url",
    B_BUF: "bytes actix_codec tokio_util",
    B_RT: "tokio mio actix_rt actix_server actix futures_util futures_core futures_task futures_channel futures_sink local_waker local_channel parking_lot parking_lot_core pin_project_lite slab crossbeam_channel crossbeam_utils socket2 signal_hook_registry smallvec",
    B_HMAC: "aes aes_gcm ghash polyval ctr cipher aead universal_hash inout sha2 hmac digest block_buffer crypto_common generic_array cpufeatures subtle",
    B_COOKIE: "base64 cookie time time_core deranged powerfmt",
    B_BODY: "serde_urlencoded form_urlencoded serde serde_core serde_json",
    B_RAND: "rand rand_core rand_chacha ppv_lite86 getrandom",
    B_REDIS: "redis combine memchr itoa arcstr ryu num_bigint xxhash_rust",
    B_PG: "diesel pq_sys libpq r2d2 scheduled_thread_pool byteorder",
    B_PROM: "prometheus protobuf",
    B_OURS: "voteswarm capture worker baseline preload",
    B_HASH: "hashbrown foldhash ahash",
    B_LOG: "log env_logger",
    B_STD: "core alloc std",
    B_LIBC: "libc",
}
BUCKET_OF = {c: b for b, cs in CRATES.items() for c in cs.split()}
ORDER = [B_HTTP, B_BUF, B_RT, B_HMAC, B_COOKIE, B_BODY, B_RAND, B_REDIS, B_PG, B_PROM,
         B_OURS, B_ALLOC, B_MEM, B_FMT, B_HASH, B_STD, B_LIBC, B_LOG, B_OTHER]
ALLOC_FN = re.compile(r"^(malloc|free|cfree|realloc|calloc|_int_\w+|malloc_\w+|unlink_chunk\S*|tcache_\w+|"
                      r"__libc_(malloc|free|realloc|calloc)|\w*memalign|aligned_alloc|sysmalloc|"
                      r"alloc_perturb|arena_get\S*|__rustc::__r\w+|__rust_\w+|__rdl_\w+|_?mi_\w+)$")
MEM_FN = re.compile(r"^(__)?(mem(cpy|move|set|cmp|chr|pcpy)|bcmp|wmemset|strlen|strcmp|strchr)\w*$")
FMT_FN = re.compile(r"(^|[<\s])(core|alloc)::fmt::|::fmt$|<\S+ as core::fmt::|alloc::string::ToString|"
                    r"<alloc::string::String as core::fmt::Write>")


def bucket(f, fn, obj):
    if (ALLOC_FN.match(fn) or "/malloc/" in f or "mimalloc" in f or "alloc::raw_vec::" in fn
            or fn.startswith("alloc::alloc::") or "GlobalAlloc" in fn):
        return B_ALLOC
    if MEM_FN.match(fn):
        return B_MEM
    if FMT_FN.search(fn):
        return B_FMT
    if re.search(r"core::hash::|std::hash::|hashbrown::", fn):
        return B_HASH
    return BUCKET_OF.get(crate_of(f, fn, obj), B_OTHER)


# --- allocation sites: allocator calls pushed up through generic helpers
# The allocator's entry points, glibc's or mimalloc's: Rust's `__rust_alloc`
# shim is not always called (a #[global_allocator] may be inlined into it).
ALLOCS = {"malloc", "calloc", "posix_memalign", "aligned_alloc", "memalign",
          "mi_malloc", "mi_malloc_aligned", "mi_zalloc", "mi_zalloc_aligned", "mi_calloc"}
REALLOCS = {"realloc", "mi_realloc", "mi_realloc_aligned"}
HELPER = re.compile(r"^(__rustc::|__rust_|__rdl_|__rg_)|<mimalloc::MiMalloc as|alloc::raw_vec::|alloc::alloc::|exchange_malloc|"
                    r"<alloc::string::String as core::fmt::Write>::write_str|^core::fmt::write$|"
                    r"alloc::fmt::format::format_inner|bytes::bytes::Bytes::copy_from_slice|"
                    r"bytes::bytes_mut::BytesMut::reserve_inner|as core::clone::Clone>::clone$|"
                    r"spec_extend|spec_from_iter|to_vec|VecDeque<T,A>::grow|<alloc::boxed::Box<T>>::new|"
                    r"^alloc::vec::|^alloc::string::|^core::ptr::drop_in_place|^<core::fmt::Formatter>::|"
                    r"^core::fmt::|^<(str|&T|&mut T|[iu](8|16|32|64|128|size)) as core::fmt::|"
                    r"actix_http::extensions::Extensions::insert")


def alloc_sites(calls, votes):
    into = collections.defaultdict(collections.Counter)  # callee -> caller -> count
    for (caller, callee), n in calls.items():
        if caller and callee:
            into[callee][caller] += n
    sites = collections.Counter()

    def push(fn, n, depth):
        callers = into.get(fn)
        if not callers or depth > 12:
            sites[fn] += n
            return
        total = sum(callers.values())
        for caller, k in callers.items():
            share = n * k / total
            if HELPER.search(caller.split("'")[0]) and caller != fn:
                push(caller, share, depth + 1)
            else:
                sites[caller] += share
    for entry in ALLOCS | REALLOCS:
        if entry in into:
            push(entry, sum(into[entry].values()), 0)
    return [(fn, n / votes) for fn, n in sites.most_common() if n / votes >= 0.2]


# --- read everything ----------------------------------------------------------
P = {}
for name in PATHS:
    srows, total = listing(os.path.join(keep, name + ".self.txt"))
    irows, _ = listing(os.path.join(keep, name + ".inclusive.txt"))
    votes = int(meta[name + "_votes"])
    buckets, selfcost, where = collections.Counter(), collections.Counter(), {}
    for ir, f, fn, obj in srows:
        b = bucket(f, fn, obj)
        buckets[b] += ir
        selfcost[fn] += ir
        where.setdefault(fn, collections.Counter())[b] += ir
    # The row of a function under its own file holds its inclusive cost (the
    # sum of the calls to it); its rows under files inlined into it hold only
    # their self cost: the largest row is the function's.
    incl = collections.Counter()
    for ir, f, fn, obj in irows:
        incl[fn] = max(incl[fn], ir)
    calls = call_graph(os.path.join(keep, name + ".callgrind"))
    into = collections.Counter()
    for (caller, callee), n in calls.items():
        into[callee] += n
    P[name] = dict(total=total, votes=votes, buckets=buckets, self=selfcost, incl=incl,
                   bucket_of={fn: c.most_common(1)[0][0] for fn, c in where.items()},
                   calls=calls, into=into, sites=alloc_sites(calls, votes))


def pv(name, ir):
    return ir / P[name]["votes"]


def total(name):
    return pv(name, P[name]["total"])


def b(name, bk):
    return pv(name, P[name]["buckets"][bk])


def ncalls(name, fn):
    return P[name]["into"][fn] / P[name]["votes"]


def fmt(x):
    return f"{x:,.0f}"


def pct(x, of):
    return f"{100 * x / of:.0f}%" if of else "-"


def short(fn, width=110):
    fn = fn.replace("{{closure}}", "{closure}").replace("{{vtable.shim}}", "")
    fn = re.sub(r"<core::pin::Pin<alloc::boxed::Box<dyn futures_core::stream::Stream\+Item = [^>]*>>>>", "<Payload>", fn)
    return fn if len(fn) <= width else fn[: width - 1] + "…"


def cpu(key):
    u, s = (float(x) for x in meta[key].split())
    return u, s


def code(fn):
    return "`" + short(fn).replace("`", "'") + "`"


out = []
w = out.append
cap, base, wrk = total("capture"), total("baseline"), total("worker")
cu, cs = cpu("capture_cpu")
ru, rs = cpu("capture_redis_cpu")
bu, bs = cpu("baseline_cpu")
wu, ws = cpu("worker_cpu")
pu, ps = cpu("worker_pg_cpu")
allocs = {n: sum(ncalls(n, f) for f in ALLOCS) for n in PATHS}
reallocs = {n: sum(ncalls(n, f) for f in REALLOCS) for n in PATHS}
blocks = ncalls("capture", "sha2::sha256::compress256")
hmac = b("capture", B_HMAC)
soft_block = hmac / blocks if blocks else 0
SHANI_BLOCK = 164  # sha2 0.10's SHA-NI loop, instructions per 64-byte block (objdump of digest_blocks)
native_hmac = blocks * SHANI_BLOCK

w("<!-- profile:begin -->")
w("## Profiles: where each hot path's instructions go, per vote")
w("")
w(f"Measured {meta['date']} on {meta['machine']}, {meta['built']}; {meta['valgrind']} (callgrind), Redis {meta['redis']}, PostgreSQL {meta['pg']}.")
w(f"Command: `make profile` (`scripts/profile.sh`, {meta['command']}).")
w("")
w("Callgrind counts the instructions a process executes in user space (Ir): the same count on every run,")
w("whatever else the machine is doing. Each profile covers a steady state only: after a warm-up the counters")
w("are zeroed (`callgrind_control -z`), and dumped after the measured votes (`callgrind_control -d`); every")
w(f"figure is that window's count divided by its votes. capture and the baseline each take {P['capture']['votes']:,} form posts")
w(f"`vote=a` from new voters (no cookie; keep-alive, {meta['command'].split('CONCURRENCY=')[1].split()[0]} connections; as wrk sends them), capture with its own Redis")
w(f"(append-only, everysec); the worker drains {P['worker']['votes']:,} votes preloaded into 3 Redis queues (`examples/preload`) into PostgreSQL")
w("(one upsert per batch). The callgrind files stay in `target/profile/` for `callgrind_annotate` or `kcachegrind`;")
w("`REPORT_ONLY=1 scripts/profile.sh` rewrites this section from them.")
w("")
w("What the counts do not show as the CPU sees it:")
w("")
w("- **The kernel.** System calls (the sockets, epoll, the futexes between threads) count nothing here. The")
w("  last columns of the first table are each process's user and system CPU from a run without valgrind.")
if blocks:
    w(f"- **SHA-256.** Valgrind does not emulate the SHA extensions, so under it `sha2` runs its portable code,")
    w(f"  {fmt(soft_block)} instructions per 64-byte block; natively this CPU has SHA-NI, whose loop in `sha2` takes")
    w(f"  about {SHANI_BLOCK} per block. The cookie HMAC's {blocks:.0f} blocks per vote are {fmt(hmac)} instructions here and about")
    w(f"  {fmt(native_hmac)} natively.")
w("- **`rep stos`/`rep movs`** count one instruction per byte under callgrind, and glibc's memset and memcpy use")
w("  them from 2 KiB up (a 3 KiB memset: 3,088 instructions instead of 182). The script sets glibc's tunables")
w("  (`GLIBC_TUNABLES=glibc.cpu.x86_rep_stosb_threshold=...`) so that they use their vector loops instead.")
w(f"- **Timing.** Under callgrind the node runs some 50 times slower: a Redis pipeline carried {meta['capture_batch']} votes on average")
w(f"  (more under wrk natively), a worker read {meta['worker_read_batch']} entries and an upsert {meta['worker_commit_batch']} votes; timers (the writers'")
w("  1 s queue-length poll, actix's date header) weigh a little more per vote than they do at full speed.")
w("")
w("| hot path | instructions per vote | ratio to baseline | allocations per vote | native CPU per vote, user + system | in the kernel |")
w("|----------|----------------------:|------------------:|---------------------:|-----------------------------------:|--------------:|")
w(f"| baseline (`examples/baseline.rs`) | {fmt(base)} | 1.00 | {allocs['baseline']:.0f} | {bu:.1f} + {bs:.1f} µs | {pct(bs, bu + bs)} |")
w(f"| capture (one node) | {fmt(cap)} | {cap / base:.2f} | {allocs['capture']:.0f} + {reallocs['capture']:.0f} realloc | {cu:.1f} + {cs:.1f} µs; its Redis {ru:.1f} + {rs:.1f} µs | {pct(cs, cu + cs)} |")
w(f"| worker (one worker, 3 queues) | {fmt(wrk)} | - | {allocs['worker']:.0f} | {wu:.1f} + {ws:.1f} µs; PostgreSQL {pu:.1f} + {ps:.1f} µs | {pct(ws, wu + ws)} |")
w("")
w(f"Native CPU: user and system time from `/proc/PID/stat` over {meta['command'].split('KERNEL_SECONDS=')[1].split()[0]} s of wrk -t2 -c64 (form posts) without valgrind,")
w("and over a drain of the same size for the worker and PostgreSQL's processes. The kernel counts them in 10 ms")
w("ticks, by sampling, so a small share (the worker's system time) is only roughly right.")
w("")
w("### By bucket: self cost, instructions per vote")
w("")
w("| bucket | capture | baseline | capture − baseline | worker |")
w("|--------|--------:|---------:|-------------------:|-------:|")
rows = sorted(ORDER, key=lambda k: -(b("capture", k) + b("worker", k)))
for k in rows:
    c, bb, ww = b("capture", k), b("baseline", k), b("worker", k)
    if max(c, bb, ww) < 50:
        continue
    w(f"| {k} | {fmt(c)} ({pct(c, cap)}) | {fmt(bb)} ({pct(bb, base)}) | {fmt(c - bb)} | {fmt(ww)} ({pct(ww, wrk)}) |")
w(f"| **total** | **{fmt(cap)}** | **{fmt(base)}** | **{fmt(cap - base)}** | **{fmt(wrk)}** |")
w("")
w("A function's own instructions (self cost) go to the crate its name names first (a generic function to the")
w("crate of the type it is instantiated for), so the buckets add up to the total; code inlined into a")
w("function counts as that function's.")

for name, title in (("capture", "capture"), ("baseline", "the baseline"), ("worker", "the worker")):
    w("")
    w(f"### Top self cost: {title}")
    w("")
    w("| per vote | share | function | bucket |")
    w("|---------:|------:|----------|--------|")
    t = P[name]["total"]
    for fn, ir in P[name]["self"].most_common(TOP):
        w(f"| {fmt(pv(name, ir))} | {pct(ir, t)} | {code(fn)} | {P[name]['bucket_of'][fn].split(' (')[0]} |")

DECODE = "<redis::parser::aio_support::ValueCodec as tokio_util::codec::decoder::Decoder>::decode"
OURS_INCL = re.compile(r"voteswarm::|HttpResponse<B>::add_cookie|" + re.escape(DECODE) + "$|"
                       r"redis::pipeline::encode_pipeline|PgConnection as diesel::connection::Connection>::execute_returning_count")
for name in ("capture", "worker"):
    w("")
    w(f"### Inclusive cost of our code: {name}")
    w("")
    w("| per vote, inclusive | share | function |")
    w("|--------------------:|------:|----------|")
    t = P[name]["total"]
    shown = 0
    for fn, ir in P[name]["incl"].most_common():
        if shown >= TOP:
            break
        if "'" in fn or ir > t or not OURS_INCL.search(fn) or fn.startswith("core::ptr::drop_in_place"):
            continue
        if pv(name, ir) < 100:
            break
        w(f"| {fmt(pv(name, ir))} | {pct(ir, t)} | {code(fn)} |")
        shown += 1

w("")
w("### Allocations per vote, by call site (capture)")
w("")
w("Calls to the allocator (alloc and realloc) pushed up through `Vec`/`String` growth, `format!` and `Bytes` copies")
w("to the first function that is not such a helper.")
w("")
w("| per vote | call site |")
w("|---------:|-----------|")
for fn, n in P["capture"]["sites"][:TOP]:
    w(f"| {n:.1f} | {code(fn)} |")

# --- prose ------------------------------------------------------------------------
diff = sorted(((b("capture", k) - b("baseline", k), k) for k in ORDER), reverse=True)
main = [(d, k) for d, k in diff if d >= 0.05 * (cap - base)][:5]
w("")
w("### Where the time goes")
w("")
w(f"**capture.** {fmt(cap)} instructions per vote, {cap / base:.1f} times the baseline's {fmt(base)}. The {fmt(cap - base)} more are, by")
w("bucket: " + "; ".join(f"{k.split(' (')[0]} {fmt(d)}" for d, k in main) + ".")
if blocks:
    w(f"The cookie's HMAC-SHA256 is the largest single item here ({fmt(hmac)}, {pct(hmac, cap)}: {blocks:.0f} SHA-256 blocks per vote, two of")
    w("them hashing the key's inner and outer pads, which `cookie::mac` does again for every cookie), but with")
    w(f"SHA-NI natively those blocks are about {fmt(native_hmac)} instructions, so natively the node runs some {fmt(cap - hmac + native_hmac)} per vote.")
w(f"Allocation is next: {allocs['capture']:.0f} allocations and {reallocs['capture']:.0f} reallocations per vote (the baseline: {allocs['baseline']:.0f}),")
w(f"{fmt(b('capture', B_ALLOC))} instructions in the allocator alone; the table above names the call sites (Vecs that grow one push")
w("at a time, strings formatted per vote, header names looked up by `&str`, which allocate).")
w(f"Natively the node spends {cu:.1f} µs in user space and {cs:.1f} µs in the kernel per vote ({pct(cs, cu + cs)} in the kernel:")
w(f"the loopback TCP of the HTTP exchange and of the Redis pipelines, epoll, the wake-ups), and its Redis {ru + rs:.1f} µs more.")
w("")
w(f"**baseline.** {fmt(base)} instructions per request: actix-web's HTTP/1 parsing, routing and response")
w(f"({fmt(b('baseline', B_HTTP))}), the runtime ({fmt(b('baseline', B_RT))}), {allocs['baseline']:.0f} allocations ({fmt(b('baseline', B_ALLOC))}); the form parse is")
w(f"{fmt(b('baseline', B_BODY))}. Natively {pct(bs, bu + bs)} of its CPU is in the kernel ({bs:.1f} of {bu + bs:.1f} µs)"
  + (": the floor for an actix-web node on this machine is the socket work more than the instructions." if bs > bu else "."))
w("")
redis_w = b("worker", B_REDIS)
incl_w = P["worker"]["incl"]
decode_rs = pv("worker", incl_w.get(DECODE, 0))
decode_ours = pv("worker", max([ir for fn, ir in incl_w.items() if "voteswarm::queue::reply::" in fn and "decode_read_reply" in fn] or [0]))
scan_ours = pv("worker", max([ir for fn, ir in incl_w.items() if "voteswarm::queue::reply::Scan::advance" in fn] or [0]))
w(f"**worker.** {fmt(wrk)} instructions per vote. It decodes the `XREADGROUP` replies itself (`src/queue/reply.rs`): scanning them as")
w(f"they arrive takes {fmt(scan_ours)} and decoding them into entries {fmt(decode_ours)} ({pct(decode_ours, wrk)}); the worker makes {allocs['worker']:.0f}")
w(f"allocations per vote ({fmt(b('worker', B_ALLOC))} instructions in the allocator), most of them the fields, each its own `Vec`, as the")
w("dead-letter path needs them. Before it, redis-rs's reply decoder (`combine`) took 16,374 of the worker's 24,115 instructions per vote (68%, commit")
w(f"8dc9759); redis-rs is now {fmt(redis_w)} ({pct(redis_w, wrk)}), its reply decoder {fmt(decode_rs)}: the acknowledgements and their replies.")
w(f"Our own code ({fmt(b('worker', B_OURS))} self) also checks and deduplicates the entries; formatting ({fmt(b('worker', B_FMT))}) is the ids turned back into")
w(f"text for the upsert. The PostgreSQL client (diesel, libpq) is {fmt(b('worker', B_PG))} per vote: the batch goes as five arrays in")
w(f"one statement. Natively the worker spends {wu + ws:.1f} µs per vote and PostgreSQL {pu + ps:.1f} µs"
  + (": the database, not the worker, is where the drain's CPU goes." if pu + ps > wu + ws else "."))
w("<!-- profile:end -->")
print("\n".join(out))
PY
}

bench_start profile
keep="target/profile"
if [ -n "${REPORT_ONLY:-}" ]; then
  # Only the section again, from the last run's files in target/profile.
  report "$keep" >"$work/section.md"
  write_section profile "$work/section.md"
  exit 0
fi
for prog in valgrind callgrind_control callgrind_annotate wrk curl python3 redis-server; do
  command -v "$prog" >/dev/null || die "$prog not found (apt-get install valgrind wrk curl python3 redis-server)"
done
mkdir -p "$keep"
meta="$work/meta"
: >"$meta"
# note KEY VALUE: a figure for the report.
note() { echo "$1=$2" >>"$meta"; }
if [ -z "${SKIP_BUILD:-}" ]; then
  say "building release binaries (with debug info: Cargo.toml's [profile.release] debug = 1)"
  built="commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  if [ -n "$(git status --porcelain -- src examples Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    built="$built with uncommitted changes"
  fi
  cargo build --locked --release -q --bin capture --bin worker --example baseline --example preload
else
  built="the binaries found in target/release"
fi
note built "$built"

COOKIE_KEY_VALUE="profile-cookie-key-profile-cookie-key-0123456789"
# Callgrind counts each iteration of a `rep stos`/`rep movs` as an
# instruction, and glibc's memset/memcpy use them from 2 KiB up: a 3 KiB
# memset counts 3,088 instructions that way, 182 with the vector loop. The
# tunables keep glibc on the vector loops, so the counts follow the work.
REP_TUNABLES="glibc.cpu.x86_rep_stosb_threshold=0x1000000:glibc.cpu.x86_rep_movsb_threshold=0x1000000"
CALLGRIND=(env "GLIBC_TUNABLES=$REP_TUNABLES" valgrind --tool=callgrind --trace-children=no)

# halt PID...: stop them (SIGTERM, wait) and take them off the cleanup list,
# so that the trap never signals a pid the system has since given away.
halt() {
  local p q rest=()
  stop "$@"
  for p in "${pids[@]}"; do
    for q in "$@"; do [ "$p" != "$q" ] || continue 2; done
    rest+=("$p")
  done
  pids=("${rest[@]}")
}

# wait_listen PORT PID: until PORT accepts connections, while PID lives.
wait_listen() {
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || die "pid $2 exited before listening on port $1"
    [ "$SECONDS" -lt "$deadline" ] || die "nothing listens on port $1 after ${START_TIMEOUT_S}s"
    sleep 0.2
  done
}

# The fixed-count client: exactly N requests `POST / vote=a` (as wrk's
# post.lua, keep-alive, no cookie) over C connections; fails on any answer
# but a 2xx or the form's 303 (capture's POST/redirect/GET; the baseline
# answers 200).
cat >"$work/client.py" <<'PY'
import socket, sys, threading
port, total, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
       b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\nvote=a" % port)
left = [total]
statuses = {}
lock = threading.Lock()

def response(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        rest += chunk
    return status, rest[length:]

def run():
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    buf = b""
    while True:
        with lock:
            if left[0] == 0:
                break
            left[0] -= 1
        sock.sendall(req)
        status, buf = response(sock, buf)
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
    sock.close()

threads = [threading.Thread(target=run) for _ in range(min(conns, total))]
for t in threads:
    t.start()
for t in threads:
    t.join()
ok = sum(n for s, n in statuses.items() if 200 <= s < 300 or s == 303)
if ok != total:
    sys.exit("client: %d of %d answered 2xx or 303: %r" % (ok, total, statuses))
PY
votes_client() { python3 "$work/client.py" "$1" "$2" "$CONCURRENCY"; }

# metric PORT NAME: the value of an unlabelled metric line (0 if absent).
metric() {
  curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {v = $2} END {print v + 0}'
}

# callgrind_zero NAME PID: zero the counters now; callgrind_dump NAME PID
# dumps them to $work/NAME.cg.1 (the file of --callgrind-out-file=$work/NAME.cg).
callgrind_zero() {
  callgrind_control -z "$2" >"$work/$1.control.log" 2>&1 || { cat "$work/$1.control.log" >&2; die "$1: callgrind_control -z failed"; }
}
callgrind_dump() {
  callgrind_control -d "$2" >"$work/$1.control.log" 2>&1 || { cat "$work/$1.control.log" >&2; die "$1: callgrind_control -d failed"; }
  [ -s "$work/$1.cg.1" ] || die "$1: no dump in $work/$1.cg.1"
}

# window NAME PORT PID: zero, VOTES votes, dump: the profile of VOTES votes.
window() {
  local name="$1" port="$2" pid="$3" t0
  callgrind_zero "$name" "$pid"
  say "$name: $VOTES votes over $CONCURRENCY connections under callgrind"
  t0="$(now)"
  votes_client "$port" "$VOTES"
  callgrind_dump "$name" "$pid"
  say "$name: window of $VOTES votes took $(since "$t0") s"
  note "${name}_votes" "$VOTES"
}

# --- capture under callgrind ---------------------------------------------------
start_redis capture everysec
capture_port="$(free_port)"
LISTEN="127.0.0.1:$capture_port" REDIS_URL="redis://127.0.0.1:$redis_port" NODE_ID=profile \
  COOKIE_KEY="$COOKIE_KEY_VALUE" RUST_LOG=warn \
  "${CALLGRIND[@]}" --callgrind-out-file="$work/capture.cg" --log-file="$work/capture.vg.log" \
  target/release/capture &
capture_pid=$!
pids+=("$capture_pid")
say "capture: starting under callgrind (pid $capture_pid)"
wait_listen "$capture_port" "$capture_pid"
say "capture: warm-up, $WARMUP_VOTES votes"
votes_client "$capture_port" "$WARMUP_VOTES"
b_sum0="$(metric "$capture_port" voteswarm_enqueue_batch_size_sum)"
b_cnt0="$(metric "$capture_port" voteswarm_enqueue_batch_size_count)"
x0="$(redis-cli -p "$redis_port" xlen votes)"
window capture "$capture_port" "$capture_pid"
x1="$(redis-cli -p "$redis_port" xlen votes)"
b_sum1="$(metric "$capture_port" voteswarm_enqueue_batch_size_sum)"
b_cnt1="$(metric "$capture_port" voteswarm_enqueue_batch_size_count)"
[ "$((x1 - x0))" -eq "$VOTES" ] || die "capture: $((x1 - x0)) entries stored in the window, expected $VOTES"
note capture_batch "$(awk -v s=$((b_sum1 - b_sum0)) -v c=$((b_cnt1 - b_cnt0)) 'BEGIN { printf "%.1f", c ? s / c : 0 }')"
halt "$capture_pid" "$redis_pid"

# --- the baseline under callgrind ----------------------------------------------
base_port="$(free_port)"
LISTEN="127.0.0.1:$base_port" \
  "${CALLGRIND[@]}" --callgrind-out-file="$work/baseline.cg" --log-file="$work/baseline.vg.log" \
  target/release/examples/baseline &
base_pid=$!
pids+=("$base_pid")
say "baseline: starting under callgrind (pid $base_pid)"
wait_listen "$base_port" "$base_pid"
say "baseline: warm-up, $WARMUP_VOTES votes"
votes_client "$base_port" "$WARMUP_VOTES"
window baseline "$base_port" "$base_pid"
halt "$base_pid"

# --- the worker under callgrind --------------------------------------------------
start_pg
start_queues "$QUEUES"

# preload TOTAL SEED: TOTAL votes into the queues (CHANGE_FRACTION change once).
preload() {
  REDIS_URLS="$redis_urls" TOTAL="$1" CHANGE_FRACTION="$CHANGE_FRACTION" SEED="$2" \
    target/release/examples/preload 2>/dev/null
}

# drained NAME PID: until every queue is empty with nothing pending.
drained() {
  wait_drained "$DRAIN_TIMEOUT_S" "$2" || { cat "$work/$1.log" >&2; die "$1: not drained"; }
}

# start_worker NAME [COMMAND PREFIX...]: a worker on the queues and the
# database; sets worker_pid and worker_metrics (its metrics port).
start_worker() {
  local name="$1"
  shift
  worker_metrics="$(free_port)"
  DATABASE_URL="$db" REDIS_URLS="$redis_urls" WORKER_ID="profile-$name" \
    BATCH_SIZE="$BATCH_SIZE" DB_POOL_SIZE="$DB_POOL_SIZE" METRICS_LISTEN="127.0.0.1:$worker_metrics" \
    RUST_LOG=warn "$@" target/release/worker --migrate 2>"$work/$name.log" &
  worker_pid=$!
  pids+=("$worker_pid")
  wait_listen "$worker_metrics" "$worker_pid"
}

start_worker worker "${CALLGRIND[@]}" --callgrind-out-file="$work/worker.cg" --log-file="$work/worker.vg.log"
say "worker: started under callgrind (pid $worker_pid); warm-up: $WORKER_WARMUP_VOTES votes"
preload "$WORKER_WARMUP_VOTES" 1
drained worker "$worker_pid"
r_sum0="$(metric "$worker_metrics" voteswarm_drain_batch_size_sum)"
r_cnt0="$(metric "$worker_metrics" voteswarm_drain_batch_size_count)"
c_sum0="$(metric "$worker_metrics" voteswarm_commit_batch_votes_sum)"
c_cnt0="$(metric "$worker_metrics" voteswarm_commit_batch_votes_count)"
callgrind_zero worker "$worker_pid"
say "worker: preloading and draining $WORKER_VOTES votes under callgrind"
t0="$(now)"
preload "$WORKER_VOTES" 2
drained worker "$worker_pid"
callgrind_dump worker "$worker_pid"
say "worker: window of $WORKER_VOTES votes took $(since "$t0") s"
note worker_votes "$WORKER_VOTES"
r_sum1="$(metric "$worker_metrics" voteswarm_drain_batch_size_sum)"
r_cnt1="$(metric "$worker_metrics" voteswarm_drain_batch_size_count)"
c_sum1="$(metric "$worker_metrics" voteswarm_commit_batch_votes_sum)"
c_cnt1="$(metric "$worker_metrics" voteswarm_commit_batch_votes_count)"
note worker_read_batch "$(awk -v s=$((r_sum1 - r_sum0)) -v c=$((r_cnt1 - r_cnt0)) 'BEGIN { printf "%.0f", c ? s / c : 0 }')"
note worker_commit_batch "$(awk -v s=$((c_sum1 - c_sum0)) -v c=$((c_cnt1 - c_cnt0)) 'BEGIN { printf "%.0f", c ? s / c : 0 }')"
halt "$worker_pid"

# --- kernel time: the same paths without valgrind --------------------------------
# ticks PID: user and system clock ticks so far.
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# pg_ticks: user and system ticks of PostgreSQL's running processes.
pg_ticks() {
  local p u=0 s=0 a b
  for p in $(pgrep -P "$pg_pid") "$pg_pid"; do
    read -r a b < <(ticks "$p" 2>/dev/null || echo "0 0")
    u=$((u + a))
    s=$((s + b))
  done
  echo "$u $s"
}
# split KEY VOTES U0 S0 U1 S1: µs of user and system CPU per vote.
split() {
  note "$1" "$(awk -v n="$2" -v u=$(($5 - $3)) -v s=$(($6 - $4)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.2f %.2f", u / hz * 1e6 / n, s / hz * 1e6 / n }')"
}

post_lua "$work/post.lua"
# native_http NAME PORT PID [REDIS_PORT REDIS_PID]: wrk -t2 -c64 for a second,
# then KERNEL_SECONDS measured; the votes are Redis's count when there is one.
native_http() {
  local name="$1" port="$2" pid="$3" rport="${4:-}" rpid="${5:-}" out n x0=0 x1=0 cu0 cs0 cu1 cs1 ru0=0 rs0=0 ru1=0 rs1=0
  wrk -t2 -c64 -d1s -s "$work/post.lua" "http://127.0.0.1:$port/" >/dev/null
  read -r cu0 cs0 < <(ticks "$pid")
  if [ -n "$rpid" ]; then
    read -r ru0 rs0 < <(ticks "$rpid")
    x0="$(redis-cli -p "$rport" xlen votes)"
  fi
  out="$(wrk -t2 -c64 -d"${KERNEL_SECONDS}s" -s "$work/post.lua" "http://127.0.0.1:$port/")"
  read -r cu1 cs1 < <(ticks "$pid")
  n="$(awk '$1 == "REQUESTS" {print $2}' <<<"$out")"
  if [ -n "$rpid" ]; then
    read -r ru1 rs1 < <(ticks "$rpid")
    x1="$(redis-cli -p "$rport" xlen votes)"
    n=$((x1 - x0))
    split "${name}_redis_cpu" "$n" "$ru0" "$rs0" "$ru1" "$rs1"
  fi
  split "${name}_cpu" "$n" "$cu0" "$cs0" "$cu1" "$cs1"
  note "${name}_native_rate" "$((n / KERNEL_SECONDS))"
  say "$name without valgrind: $n votes in ${KERNEL_SECONDS}s"
}

start_redis native everysec
native_port="$(free_port)"
LISTEN="127.0.0.1:$native_port" REDIS_URL="redis://127.0.0.1:$redis_port" NODE_ID=profile \
  COOKIE_KEY="$COOKIE_KEY_VALUE" RUST_LOG=warn target/release/capture &
native_pid=$!
pids+=("$native_pid")
wait_listen "$native_port" "$native_pid"
native_http capture "$native_port" "$native_pid" "$redis_port" "$redis_pid"
halt "$native_pid" "$redis_pid"

native_port="$(free_port)"
LISTEN="127.0.0.1:$native_port" target/release/examples/baseline &
native_pid=$!
pids+=("$native_pid")
wait_listen "$native_port" "$native_pid"
native_http baseline "$native_port" "$native_pid"
halt "$native_pid"

start_worker native
preload "$WORKER_WARMUP_VOTES" 3
drained native "$worker_pid"
read -r wu0 ws0 < <(ticks "$worker_pid")
read -r pu0 ps0 < <(pg_ticks)
preload "$WORKER_VOTES" 4
drained native "$worker_pid"
read -r wu1 ws1 < <(ticks "$worker_pid")
read -r pu1 ps1 < <(pg_ticks)
split worker_cpu "$WORKER_VOTES" "$wu0" "$ws0" "$wu1" "$ws1"
split worker_pg_cpu "$WORKER_VOTES" "$pu0" "$ps0" "$pu1" "$ps1"
say "worker without valgrind: drained $WORKER_VOTES votes"
halt "$worker_pid"

# --- callgrind_annotate, buckets, the section ------------------------------------
for name in capture baseline worker; do
  # callgrind writes `calls=0` for calls made before the zeroing that return
  # after it; callgrind_annotate (3.19) then counts their inclusive cost as
  # the caller's self cost. Count them as one call.
  sed 's/^calls=0 /calls=1 /' "$work/$name.cg.1" >"$keep/$name.callgrind"
  callgrind_annotate --inclusive=no --auto=no --threshold=100 "$keep/$name.callgrind" >"$keep/$name.self.txt" 2>/dev/null
  callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$keep/$name.callgrind" >"$keep/$name.inclusive.txt" 2>/dev/null
done
say "callgrind files and annotations kept in $keep/ (callgrind_annotate or kcachegrind)"

note date "$(date -u +%Y-%m-%d)"
note machine "$(cores_desc), $(mem_desc)"
note valgrind "$(valgrind --version)"
note redis "$(redis-server --version | awk '{print $3}' | sed 's/v=//')"
note pg "$("$pgbin/postgres" --version | awk '{print $3}')"
note command "VOTES=$VOTES WARMUP_VOTES=$WARMUP_VOTES CONCURRENCY=$CONCURRENCY WORKER_VOTES=$WORKER_VOTES WORKER_WARMUP_VOTES=$WORKER_WARMUP_VOTES CHANGE_FRACTION=$CHANGE_FRACTION BATCH_SIZE=$BATCH_SIZE DB_POOL_SIZE=$DB_POOL_SIZE KERNEL_SECONDS=$KERNEL_SECONDS"
note top "$TOP"
note keep "$keep"

cp "$meta" "$keep/meta"
section="$work/section.md"
report "$keep" >"$section"
write_section profile "$section"
