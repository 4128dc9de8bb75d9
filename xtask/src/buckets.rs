//! The buckets of `cargo xtask profile`: which part of the system a
//! function's own instructions belong to, from its name, its source file
//! and its object file, and which functions only pass an allocation on
//! (so that an allocation is charged to the code that asked for it).

use regex::Regex;

pub const HTTP: &str = "HTTP: actix-http, actix-web, http, httparse (parse, route, respond)";
pub const BUF: &str = "byte buffers and framing (bytes, actix-codec, tokio-util)";
pub const RT: &str = "runtime and scheduling (tokio, mio, actix, futures)";
pub const HMAC: &str = "cookie crypto (aes-gcm; sha2, hmac)";
pub const COOKIE: &str = "cookie value and Set-Cookie (base64, cookie, time)";
pub const BODY: &str = "vote body parsing (serde_urlencoded)";
pub const RAND: &str = "random ids (rand)";
pub const REDIS: &str = "Redis client (redis-rs, combine, memchr: commands out, replies in)";
pub const PG: &str = "PostgreSQL client (diesel, libpq, r2d2)";
pub const PROM: &str = "metrics (prometheus)";
pub const OURS: &str = "voteswarm's own code (and what it inlines)";
pub const ALLOC: &str = "allocation (malloc, free, realloc, Vec growth)";
pub const MEM: &str = "memcpy, memmove, memset (libc)";
pub const FMT: &str = "formatting (core::fmt: format!, to_string, write!)";
pub const HASH: &str = "hashing and hash maps";
pub const STD: &str = "Rust std, other (strings, UTF-8 checks, iterators, collections)";
pub const LIBC: &str = "libc, other (system call wrappers, clock, locks)";
pub const LOG: &str = "logging";
pub const OTHER: &str = "other";

/// The table's order before it is sorted by cost (ties keep it).
pub const ORDER: [&str; 19] = [
    HTTP, BUF, RT, HMAC, COOKIE, BODY, RAND, REDIS, PG, PROM, OURS, ALLOC, MEM, FMT, HASH, STD,
    LIBC, LOG, OTHER,
];

/// The crates of each bucket (a crate's name as it heads a Rust path).
const CRATES: [(&str, &str); 15] = [
    (HTTP, "actix_http actix_web http httparse actix_router actix_service actix_utils mime bytestring language_tags h2 percent_encoding encoding_rs httpdate url"),
    (BUF, "bytes actix_codec tokio_util"),
    (RT, "tokio mio actix_rt actix_server actix futures_util futures_core futures_task futures_channel futures_sink local_waker local_channel parking_lot parking_lot_core pin_project_lite slab crossbeam_channel crossbeam_utils socket2 signal_hook_registry smallvec"),
    (HMAC, "aes aes_gcm ghash polyval ctr cipher aead universal_hash inout sha2 hmac digest block_buffer crypto_common generic_array cpufeatures subtle"),
    (COOKIE, "base64 cookie time time_core deranged powerfmt"),
    (BODY, "serde_urlencoded form_urlencoded serde serde_core serde_json"),
    (RAND, "rand rand_core rand_chacha ppv_lite86 getrandom"),
    (REDIS, "redis combine memchr itoa arcstr ryu num_bigint xxhash_rust"),
    (PG, "diesel pq_sys libpq r2d2 scheduled_thread_pool byteorder"),
    (PROM, "prometheus protobuf"),
    (OURS, "voteswarm capture worker baseline preload"),
    (HASH, "hashbrown foldhash ahash"),
    (LOG, "log env_logger"),
    (STD, "core alloc std"),
    (LIBC, "libc"),
];

/// The allocator's entry points, glibc's or mimalloc's: Rust's
/// `__rust_alloc` shim is not always called (a #[global_allocator] may be
/// inlined into it).
pub const ALLOCS: [&str; 10] = [
    "malloc",
    "calloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "mi_malloc",
    "mi_malloc_aligned",
    "mi_zalloc",
    "mi_zalloc_aligned",
    "mi_calloc",
];
pub const REALLOCS: [&str; 3] = ["realloc", "mi_realloc", "mi_realloc_aligned"];

pub struct Buckets {
    head: Regex,
    in_path: Regex,
    alloc_fn: Regex,
    mem_fn: Regex,
    fmt_fn: Regex,
    hash_fn: Regex,
    /// Functions that only pass an allocation on: `Vec`/`String` growth,
    /// `format!`, `Bytes` copies, clones.
    pub helper: Regex,
}

impl Buckets {
    pub fn new() -> Buckets {
        let re = |s: &str| Regex::new(s).expect("a valid pattern");
        Buckets {
            head: re(r"(?:^|[<\s,(&*\[])([A-Za-z_][A-Za-z0-9_]*)::"),
            in_path: re(r"/index\.crates\.io-[^/]+/([A-Za-z0-9_.-]+?)-\d+\.\d+\.\d+[^/]*/"),
            alloc_fn: re(concat!(
                r"^(malloc|free|cfree|realloc|calloc|_int_\w+|malloc_\w+|unlink_chunk\S*|tcache_\w+|",
                r"__libc_(malloc|free|realloc|calloc)|\w*memalign|aligned_alloc|sysmalloc|",
                r"alloc_perturb|arena_get\S*|__rustc::__r\w+|__rust_\w+|__rdl_\w+|_?mi_\w+)$"
            )),
            mem_fn: re(
                r"^(__)?(mem(cpy|move|set|cmp|chr|pcpy)|bcmp|wmemset|strlen|strcmp|strchr)\w*$",
            ),
            fmt_fn: re(concat!(
                r"(^|[<\s])(core|alloc)::fmt::|::fmt$|<\S+ as core::fmt::|alloc::string::ToString|",
                r"<alloc::string::String as core::fmt::Write>"
            )),
            hash_fn: re(r"core::hash::|std::hash::|hashbrown::"),
            helper: re(concat!(
                r"^(__rustc::|__rust_|__rdl_|__rg_)|<mimalloc::MiMalloc as|alloc::raw_vec::|alloc::alloc::|exchange_malloc|",
                r"<alloc::string::String as core::fmt::Write>::write_str|^core::fmt::write$|",
                r"alloc::fmt::format::format_inner|bytes::bytes::Bytes::copy_from_slice|",
                r"bytes::bytes_mut::BytesMut::reserve_inner|as core::clone::Clone>::clone$|",
                r"spec_extend|spec_from_iter|to_vec|VecDeque<T,A>::grow|<alloc::boxed::Box<T>>::new|",
                r"^alloc::vec::|^alloc::string::|^core::ptr::drop_in_place|^<core::fmt::Formatter>::|",
                r"^core::fmt::|^<(str|&T|&mut T|[iu](8|16|32|64|128|size)) as core::fmt::|",
                r"actix_http::extensions::Extensions::insert"
            )),
        }
    }

    /// The first crate a function's name mentions that is not std, else
    /// the crate of its source file, else its object file.
    fn crate_of(&self, file: &str, func: &str, obj: &str) -> String {
        let heads: Vec<&str> = self
            .head
            .captures_iter(func)
            .filter_map(|c| c.get(1).map(|m| m.as_str()))
            .collect();
        if let Some(c) = heads.iter().find(|c| !["core", "alloc", "std"].contains(c)) {
            return (*c).to_owned();
        }
        if let Some(m) = self.in_path.captures(file) {
            return m[1].replace('-', "_");
        }
        if file.contains("/hashbrown-") {
            return "hashbrown".into();
        }
        if !heads.is_empty() || file.contains("/library/") {
            return "std".into();
        }
        if file.starts_with("./") {
            // glibc's sources
            return "libc".into();
        }
        let base = obj.rsplit('/').next().unwrap_or("");
        for (prefix, c) in [
            ("libc.so", "libc"),
            ("ld-linux", "libc"),
            ("libpq", "libpq"),
            ("libssl", "libpq"),
            ("libcrypto", "libpq"),
            ("libgss", "libpq"),
        ] {
            if base.starts_with(prefix) {
                return c.into();
            }
        }
        if base.is_empty() {
            "?".into()
        } else {
            base.to_owned()
        }
    }

    /// The bucket of a function's own instructions.
    pub fn of(&self, file: &str, func: &str, obj: &str) -> &'static str {
        if self.alloc_fn.is_match(func)
            || file.contains("/malloc/")
            || file.contains("mimalloc")
            || func.contains("alloc::raw_vec::")
            || func.starts_with("alloc::alloc::")
            || func.contains("GlobalAlloc")
        {
            return ALLOC;
        }
        if self.mem_fn.is_match(func) {
            return MEM;
        }
        if self.fmt_fn.is_match(func) {
            return FMT;
        }
        if self.hash_fn.is_match(func) {
            return HASH;
        }
        let c = self.crate_of(file, func, obj);
        CRATES
            .iter()
            .find(|(_, cs)| cs.split(' ').any(|x| x == c))
            .map_or(OTHER, |(b, _)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_go_to_the_crate_they_name_first() {
        let b = Buckets::new();
        let reg = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        assert_eq!(
            b.of(
                &format!("{reg}/http-0.2.12/src/header/value.rs"),
                "http::header::value::HeaderValue::from_shared",
                "/t/capture"
            ),
            HTTP
        );
        // A generic function of core's, instantiated for a redis type.
        assert_eq!(
            b.of(
                "/rustc/x/library/core/src/ptr/mod.rs",
                "core::ptr::drop_in_place<redis::types::Value>",
                ""
            ),
            REDIS
        );
        assert_eq!(
            b.of("./malloc/malloc.c", "_int_malloc", "/usr/lib/libc.so.6"),
            ALLOC
        );
        assert_eq!(
            b.of(
                "./string/x.S",
                "__memcpy_avx_unaligned_erms",
                "/usr/lib/libc.so.6"
            ),
            MEM
        );
        assert_eq!(
            b.of(
                "./io/write.c",
                "write",
                "/usr/lib/x86_64-linux-gnu/libc.so.6"
            ),
            LIBC
        );
        assert_eq!(
            b.of("???", "0x0000000000012345", "/usr/lib/libpq.so.5.15"),
            PG
        );
        assert_eq!(
            b.of("/src/x.rs", "<voteswarm::A as core::fmt::Display>::fmt", ""),
            FMT
        );
    }

    #[test]
    fn helpers_pass_allocations_on() {
        let b = Buckets::new();
        assert!(b.helper.is_match("alloc::raw_vec::RawVec<T,A>::grow_one"));
        assert!(b.helper.is_match("bytes::bytes::Bytes::copy_from_slice"));
        assert!(!b.helper.is_match("voteswarm::capture::cookie::seal"));
    }
}
