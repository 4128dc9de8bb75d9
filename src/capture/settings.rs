//! The `capture` node's settings: its flags and environment variables
//! ([`CaptureArgs`]) and what they resolve to ([`CaptureSettings`]),
//! including the cookie keys' checks.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::cookie::Key;
use clap::Args;

use super::edge_id::EdgeIdKey;
use crate::config::{
    host_name, nonempty, secret_from, with_credentials, ConfigError, ExposeSecret, RedisAuthArgs,
    SecretString, VoteChanges,
};
use crate::poll::{Poll, PollArgs};

/// `Key::derive_from` needs at least this much key material (and panics
/// below it, so the length is checked here first).
pub const MIN_COOKIE_KEY_BYTES: usize = 32;

/// Default QUEUE_LIMIT. A vote entry takes about 150 bytes in Redis, so
/// five million is about 750 MB: well inside the `maxmemory 2gb` that
/// `swarm/redis.conf` sets, with room for the AOF rewrite's buffers.
pub const DEFAULT_QUEUE_LIMIT: u64 = 5_000_000;
/// More replicas of one queue than this is a typo: each is another copy of
/// every vote, and the batch waits for the slowest of them.
pub const MAX_ACK_REPLICAS: usize = 16;
/// More threads than this is a typo, not a machine.
const MAX_HTTP_WORKERS: usize = 1024;

/// Settings of a `capture` node, as flags and environment variables.
#[derive(Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Address to listen on for HTTP.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// This node's own Redis (may carry a password: redis://:pw@host:port).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    #[command(flatten)]
    pub redis_auth: RedisAuthArgs,
    /// Name stamped on every vote this node takes [default: the host name].
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// The question, its options and its window.
    #[command(flatten)]
    pub poll: PollArgs,
    /// Cookie key (encrypts and authenticates the voter cookie), at least
    /// 32 random bytes, the same on every capture node.
    #[arg(long, env = "COOKIE_KEY", hide_env_values = true)]
    pub cookie_key: Option<String>,
    /// File holding the cookie key (a Docker secret).
    #[arg(long, env = "COOKIE_KEY_FILE")]
    pub cookie_key_file: Option<PathBuf>,
    /// Previous cookie keys, whitespace-separated: cookies they sealed are
    /// still read (key rotation keeps the voters), new ones use COOKIE_KEY.
    #[arg(long, env = "COOKIE_KEYS_PREVIOUS", hide_env_values = true)]
    pub cookie_keys_previous: Option<String>,
    /// File holding the previous cookie keys, one per line.
    #[arg(long, env = "COOKIE_KEYS_PREVIOUS_FILE")]
    pub cookie_keys_previous_file: Option<PathBuf>,
    /// The key the edge tags its `edge_id` cookie with (base64 of at least
    /// 32 random bytes, HAProxy's `EDGE_ID_KEY`): a first-time voter the
    /// edge answered itself keeps that request's identity on the retry
    /// (`src/capture/edge_id.rs`). Unset: the cookie is ignored.
    #[arg(long, env = "EDGE_ID_KEY", hide_env_values = true)]
    pub edge_id_key: Option<String>,
    /// File holding the edge id key (a Docker secret).
    #[arg(long, env = "EDGE_ID_KEY_FILE")]
    pub edge_id_key_file: Option<PathBuf>,
    /// Where the vote page links to the results ("See the results"): a
    /// URL or a path. Unset or empty: no link (the results live on their
    /// own port or host, which only the deployment knows).
    #[arg(long, env = "RESULTS_URL")]
    pub results_url: Option<String>,
    /// Accept a cookie key marked DEMO-ONLY (the committed demo key).
    #[arg(long, env = "ALLOW_DEMO_COOKIE_KEY", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_demo_cookie_key: bool,
    /// How long an Idempotency-Key is remembered (its answer replayed).
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = 3600)]
    pub idempotency_ttl_secs: u64,
    /// Most Idempotency-Keys remembered per node; the oldest go first.
    #[arg(long, env = "IDEMPOTENCY_MAX_KEYS", default_value_t = 100_000)]
    pub idempotency_max_keys: usize,
    /// Proof of work asked of new voters (cookieless votes), in leading zero
    /// bits of SHA-256: 0 is off; each bit doubles the work (16: ~65,000
    /// hashes, well under a second in a phone's browser).
    #[arg(long, env = "POW_BITS", default_value_t = 0)]
    pub pow_bits: u8,
    /// A proof-of-work challenge is valid for this long (two windows).
    #[arg(long, env = "POW_WINDOW_SECS", default_value_t = 300)]
    pub pow_window_secs: u64,
    /// Redis Stream that takes the votes.
    #[arg(long, env = "STREAM_KEY", default_value = "votes")]
    pub stream_key: String,
    /// A voter who changes their vote sooner than this gets 429.
    #[arg(long, env = "MIN_CHANGE_INTERVAL_MS", default_value_t = 1000)]
    pub min_change_interval_ms: u64,
    /// `allow`: the latest vote counts; `deny`: the first one does.
    #[arg(long, env = "VOTE_CHANGES", value_enum, default_value_t = VoteChanges::Allow)]
    pub vote_changes: VoteChanges,
    /// A vote not stored in Redis within this gets 503.
    #[arg(long, env = "ENQUEUE_TIMEOUT_MS", default_value_t = 2000)]
    pub enqueue_timeout_ms: u64,
    /// Replicas of this node's Redis that must have a batch before its
    /// votes are answered 2xx (Redis `WAIT` within ENQUEUE_TIMEOUT_MS;
    /// fewer is 503, and /readyz fails while fewer are connected). 0: the
    /// primary's own append-only file is the promise.
    #[arg(long, env = "ACK_REPLICAS", default_value_t = 0)]
    pub ack_replicas: usize,
    /// Most votes written to Redis in one pipeline.
    #[arg(long, env = "MAX_BATCH", default_value_t = crate::actors::queue_writer::DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// Refuse votes (503) and fail /readyz while this node's queue holds
    /// more entries than this: the workers are far behind, and Redis must
    /// not run out of memory.
    #[arg(long, env = "QUEUE_LIMIT", default_value_t = DEFAULT_QUEUE_LIMIT)]
    pub queue_limit: u64,
    /// Most votes waiting for Redis at once, per HTTP worker thread;
    /// beyond it, 503 at once.
    #[arg(long, env = "WRITER_CAPACITY", default_value_t = crate::actors::queue_writer::DEFAULT_CAPACITY)]
    pub writer_capacity: usize,
    /// HTTP worker threads, each with its own Redis writer [default: one
    /// per core]. Fewer when several nodes share a host's cores: each
    /// thread's Redis pipeline then carries bigger batches, and the threads
    /// wake each other less.
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
}

/// Validated settings of a `capture` node.
#[derive(Clone, Debug)]
pub struct CaptureSettings {
    pub listen: String,
    pub redis_url: SecretString,
    pub node_id: String,
    /// The question, its options, when votes are taken.
    pub poll: Poll,
    pub cookie_key: CookieKey,
    /// Keys that still open cookies (rotation), never used to seal.
    pub cookie_keys_previous: Vec<CookieKey>,
    /// `None`: the edge's `edge_id` cookie is not honoured.
    pub edge_id_key: Option<EdgeIdKey>,
    /// The vote page's link to the results; `None`: no link.
    pub results_url: Option<String>,
    pub stream_key: String,
    pub min_change_interval: Duration,
    pub idempotency_ttl: Duration,
    pub idempotency_max_keys: usize,
    /// 0: no proof of work.
    pub pow_bits: u8,
    pub pow_window: Duration,
    pub vote_changes: VoteChanges,
    pub enqueue_timeout: Duration,
    /// 0: a batch is stored once the primary answered it.
    pub ack_replicas: usize,
    pub max_batch: usize,
    pub writer_capacity: usize,
    pub queue_limit: u64,
    pub http_workers: usize,
}

impl CaptureArgs {
    pub fn into_settings(self) -> Result<CaptureSettings, ConfigError> {
        let key = secret_from("COOKIE_KEY", self.cookie_key, self.cookie_key_file)?
            .ok_or_else(|| {
                ConfigError(format!(
                    "COOKIE_KEY (or COOKIE_KEY_FILE) is required: at least {MIN_COOKIE_KEY_BYTES} bytes shared by all capture nodes"
                ))
            })?;
        check_demo_key(
            "COOKIE_KEY",
            key.expose_secret(),
            self.allow_demo_cookie_key,
        )?;
        let cookie_key = cookie_key_from(key.expose_secret())?;
        let previous = secret_from(
            "COOKIE_KEYS_PREVIOUS",
            self.cookie_keys_previous,
            self.cookie_keys_previous_file,
        )?;
        let mut cookie_keys_previous = Vec::new();
        for (i, material) in previous
            .as_ref()
            .map_or("", |p| p.expose_secret())
            .split_whitespace()
            .enumerate()
        {
            let var = format!("COOKIE_KEYS_PREVIOUS (key {})", i + 1);
            check_demo_key(&var, material, self.allow_demo_cookie_key)?;
            check_key(&var, material)?;
            cookie_keys_previous.push(CookieKey(SecretString::from(material.to_owned())));
        }
        let edge_id_key = secret_from("EDGE_ID_KEY", self.edge_id_key, self.edge_id_key_file)?
            .map(|k| {
                EdgeIdKey::from_base64(k.expose_secret())
                    .map_err(|e| ConfigError(format!("EDGE_ID_KEY {e}")))
            })
            .transpose()?;
        let results_url = self.results_url.filter(|u| !u.trim().is_empty());
        if let Some(u) = &results_url {
            check_results_url(u)?;
        }
        if self.idempotency_ttl_secs == 0 || self.idempotency_max_keys == 0 {
            return Err(ConfigError(
                "IDEMPOTENCY_TTL_SECS and IDEMPOTENCY_MAX_KEYS must be at least 1".into(),
            ));
        }
        if self.pow_bits > MAX_POW_BITS {
            return Err(ConfigError(format!(
                "POW_BITS must be 0 (off) to {MAX_POW_BITS}, not {}",
                self.pow_bits
            )));
        }
        if self.pow_window_secs == 0 {
            return Err(ConfigError("POW_WINDOW_SECS must be at least 1".into()));
        }
        let redis_url = match self.redis_auth.resolve()? {
            None => self.redis_url,
            Some(auth) => with_credentials(
                "REDIS_URL",
                &self.redis_url,
                auth.user.as_deref(),
                auth.password.expose_secret(),
            )?,
        };
        redis::Client::open(redis_url.as_str())
            .map_err(|e| ConfigError(format!("REDIS_URL is not a Redis URL: {e}")))?;
        nonempty("STREAM_KEY", &self.stream_key)?;
        let poll = self.poll.into_poll()?;
        if self.max_batch == 0 {
            return Err(ConfigError("MAX_BATCH must be at least 1".into()));
        }
        if self.writer_capacity < self.max_batch {
            return Err(ConfigError(
                "WRITER_CAPACITY must be at least MAX_BATCH".into(),
            ));
        }
        if self.enqueue_timeout_ms == 0 {
            return Err(ConfigError("ENQUEUE_TIMEOUT_MS must be at least 1".into()));
        }
        if self.ack_replicas > MAX_ACK_REPLICAS {
            return Err(ConfigError(format!(
                "ACK_REPLICAS must be 0 (off) to {MAX_ACK_REPLICAS}, not {}",
                self.ack_replicas
            )));
        }
        let http_workers = match self.http_workers {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n @ 1..=MAX_HTTP_WORKERS) => n,
            Some(n) => {
                return Err(ConfigError(format!(
                    "HTTP_WORKERS must be 1 to {MAX_HTTP_WORKERS}, not {n}"
                )))
            }
        };
        let node_id = self.node_id.unwrap_or_else(host_name);
        if node_id.is_empty() || node_id.len() > crate::vote::MAX_NODE_LEN {
            return Err(ConfigError(format!(
                "NODE_ID must be 1 to {} bytes",
                crate::vote::MAX_NODE_LEN
            )));
        }
        Ok(CaptureSettings {
            listen: self.listen,
            redis_url: SecretString::from(redis_url),
            node_id,
            poll,
            cookie_key,
            cookie_keys_previous,
            edge_id_key,
            results_url,
            stream_key: self.stream_key,
            min_change_interval: Duration::from_millis(self.min_change_interval_ms),
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs),
            idempotency_max_keys: self.idempotency_max_keys,
            pow_bits: self.pow_bits,
            pow_window: Duration::from_secs(self.pow_window_secs),
            vote_changes: self.vote_changes,
            enqueue_timeout: Duration::from_millis(self.enqueue_timeout_ms),
            ack_replicas: self.ack_replicas,
            max_batch: self.max_batch,
            writer_capacity: self.writer_capacity,
            queue_limit: self.queue_limit,
            http_workers,
        })
    }
}

/// A link the page can carry as it is: an absolute `http(s)` URL or a path
/// on this host, printable ASCII without quotes or angle brackets (it goes
/// into an attribute; anything else is a typo or worse).
fn check_results_url(u: &str) -> Result<(), ConfigError> {
    let scheme_ok = u.starts_with("https://") || u.starts_with("http://") || u.starts_with('/');
    let chars_ok = u
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`'));
    if !scheme_ok || !chars_ok || u.starts_with("//") {
        return Err(ConfigError(format!(
            "RESULTS_URL must be an http(s) URL or a path starting with /, without spaces or quotes, not {u:?}"
        )));
    }
    Ok(())
}

/// A cookie key's material, checked (length, entropy) and kept as a
/// [`SecretString`]; the node derives the keys from it when it starts.
#[derive(Clone, Debug)]
pub struct CookieKey(SecretString);

impl CookieKey {
    /// The encryption and signing keys (HKDF of the material).
    pub fn key(&self) -> Key {
        Key::derive_from(self.0.expose_secret().as_bytes())
    }
}

/// Checks the length and the entropy of `COOKIE_KEY`'s material.
pub fn cookie_key_from(material: &str) -> Result<CookieKey, ConfigError> {
    check_key("COOKIE_KEY", material)?;
    Ok(CookieKey(SecretString::from(material.to_owned())))
}

/// Fewer distinct bytes than this in 32 or more is not random material:
/// 32 random base64 characters show about 27 distinct ones, 32 random hex
/// digits about 14, and fewer than 8 almost never.
const MIN_KEY_DISTINCT_BYTES: usize = 8;

/// What marks a key as safe for a demo only: the committed
/// `compose/secrets/cookie_key` carries it, and anything carrying it is
/// refused unless ALLOW_DEMO_COOKIE_KEY says this is a demo.
pub const DEMO_KEY_MARKER: &str = "DEMO-ONLY";

/// More than this is a typo: 32 bits is some four billion hashes a vote.
pub const MAX_POW_BITS: u8 = 32;

fn check_key(var: &str, material: &str) -> Result<(), ConfigError> {
    if material.len() < MIN_COOKIE_KEY_BYTES {
        return Err(ConfigError(format!(
            "{var} is too short: {} bytes, at least {MIN_COOKIE_KEY_BYTES} needed",
            material.len()
        )));
    }
    let distinct = {
        let mut seen = [false; 256];
        material.bytes().for_each(|b| seen[b as usize] = true);
        seen.iter().filter(|&&s| s).count()
    };
    // The shortest period: "abcabc..." repeats with period 3.
    let b = material.as_bytes();
    let period = (1..=b.len() / 2)
        .find(|&p| (p..b.len()).all(|i| b[i] == b[i - p]))
        .unwrap_or(b.len());
    if distinct < MIN_KEY_DISTINCT_BYTES || period < b.len() {
        return Err(ConfigError(format!(
            "{var} looks low-entropy ({}): use at least {MIN_COOKIE_KEY_BYTES} random bytes, e.g. `openssl rand -base64 48`",
            if period < b.len() {
                format!("a pattern of {period} bytes repeated")
            } else {
                format!("only {distinct} distinct characters")
            }
        )));
    }
    Ok(())
}

/// Refuses a key marked [`DEMO_KEY_MARKER`] unless this is a demo.
fn check_demo_key(var: &str, material: &str, allow_demo: bool) -> Result<(), ConfigError> {
    if !allow_demo && material.to_ascii_uppercase().contains(DEMO_KEY_MARKER) {
        return Err(ConfigError(format!(
            "{var} is marked {DEMO_KEY_MARKER} (a key published with the repository): use a random key of your own, or set ALLOW_DEMO_COOKIE_KEY=true for a demo"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_cookie_key_is_refused_by_name() {
        let e = cookie_key_from("short").unwrap_err().to_string();
        assert!(e.contains("COOKIE_KEY") && e.contains("32"), "{e}");
        assert!(cookie_key_from("3q2+7wAAAAAAAAAAg8b1Zmx0aGlzIGlzIHJhbmRvbQ").is_ok());
    }

    #[test]
    fn low_entropy_cookie_keys_are_refused_with_one_line() {
        for weak in [
            "k".repeat(32),
            "ab".repeat(20),
            "another-key-".repeat(4),
            "0000000000000000000000000000000011111111".to_owned(),
        ] {
            let e = cookie_key_from(&weak).unwrap_err().to_string();
            assert!(e.starts_with("COOKIE_KEY looks low-entropy"), "{weak}: {e}");
            assert!(!e.contains('\n'));
        }
        for strong in [
            "test-cookie-key-that-is-at-least-32-bytes-long",
            "profile-cookie-key-profile-cookie-key-0123456789",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ] {
            assert!(cookie_key_from(strong).is_ok(), "{strong}");
        }
    }

    fn capture_args(env: &[(&str, &str)]) -> Result<CaptureSettings, ConfigError> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: CaptureArgs,
        }
        let mut argv = vec!["capture".to_owned()];
        for (k, v) in env {
            argv.push(format!(
                "--{}={v}",
                k.to_ascii_lowercase().replace('_', "-")
            ));
        }
        Cli::try_parse_from(argv)
            .map_err(|e| ConfigError(e.to_string()))?
            .args
            .into_settings()
    }

    #[test]
    fn ack_replicas_defaults_to_0_and_a_typo_is_refused_by_name() {
        let key = (
            "COOKIE_KEY",
            "test-cookie-key-that-is-at-least-32-bytes-long",
        );
        assert_eq!(capture_args(&[key]).unwrap().ack_replicas, 0);
        assert_eq!(
            capture_args(&[key, ("ACK_REPLICAS", "2")])
                .unwrap()
                .ack_replicas,
            2
        );
        let e = capture_args(&[key, ("ACK_REPLICAS", "17")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ACK_REPLICAS must be 0 (off) to 16"), "{e}");
    }

    #[test]
    fn the_committed_demo_key_is_refused_unless_this_is_a_demo() {
        let demo = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/compose/secrets/cookie_key"
        ))
        .unwrap();
        let demo = demo.trim();
        let e = capture_args(&[("COOKIE_KEY", demo)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DEMO-ONLY") && e.contains("ALLOW_DEMO_COOKIE_KEY"),
            "{e}"
        );
        assert!(capture_args(&[("COOKIE_KEY", demo), ("ALLOW_DEMO_COOKIE_KEY", "true")]).is_ok());
        let good = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let e = capture_args(&[("COOKIE_KEY", good), ("COOKIE_KEYS_PREVIOUS", demo)])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("COOKIE_KEYS_PREVIOUS (key 1) is marked DEMO-ONLY"),
            "{e}"
        );
        let s = capture_args(&[
            ("COOKIE_KEY", good),
            ("COOKIE_KEYS_PREVIOUS", "test-cookie-key-that-is-at-least-32-bytes-long profile-cookie-key-profile-cookie-key-0123456789"),
        ])
        .unwrap();
        assert_eq!(s.cookie_keys_previous.len(), 2);
        let e = capture_args(&[("COOKIE_KEY", good), ("COOKIE_KEYS_PREVIOUS", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("COOKIE_KEYS_PREVIOUS (key 1) is too short"),
            "{e}"
        );
    }

    #[test]
    fn the_poll_is_read_from_its_variables_and_defaults_to_cats_or_dogs() {
        let good = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let s = capture_args(&[("COOKIE_KEY", good)]).unwrap();
        assert_eq!(s.poll, Poll::default());
        let s = capture_args(&[
            ("COOKIE_KEY", good),
            ("OPTIONS", "Red,Green,Blue"),
            ("QUESTION", "Which colour?"),
            ("POLL_CLOSES", "2027-02-07T23:45:00Z"),
        ])
        .unwrap();
        assert_eq!(s.poll.options, ["Red", "Green", "Blue"]);
        assert_eq!(s.poll.question, "Which colour?");
        assert!(s.poll.closes.is_some());
        let s = capture_args(&[("COOKIE_KEY", good), ("OPTION_B", "Fish")]).unwrap();
        assert_eq!(s.poll.options, ["Cats", "Fish"]);
        let e = capture_args(&[("COOKIE_KEY", good), ("POLL_OPENS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("POLL_OPENS is not an RFC 3339 time"), "{e}");
    }

    #[test]
    fn the_edge_id_key_and_the_results_url_are_checked_by_name() {
        let good = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let s = capture_args(&[("COOKIE_KEY", good)]).unwrap();
        assert!(s.edge_id_key.is_none() && s.results_url.is_none());
        let edge = "cmZVM0JcXcBaeAWbXVtsWGXeELQRxrPG9Kg1hO051omKE09ST/NGgE5PvCfSwoEQ";
        let s = capture_args(&[
            ("COOKIE_KEY", good),
            ("EDGE_ID_KEY", edge),
            ("RESULTS_URL", "https://results.example.org/"),
        ])
        .unwrap();
        assert!(s.edge_id_key.is_some());
        assert_eq!(
            s.results_url.as_deref(),
            Some("https://results.example.org/")
        );
        for (k, v, says) in [
            ("EDGE_ID_KEY", "c2hvcnQ=", "EDGE_ID_KEY is too short"),
            ("EDGE_ID_KEY", "not base64!", "EDGE_ID_KEY is not base64"),
            ("RESULTS_URL", "javascript:alert(1)", "RESULTS_URL must be"),
            ("RESULTS_URL", "/results\"><script>", "RESULTS_URL must be"),
            ("RESULTS_URL", "//elsewhere", "RESULTS_URL must be"),
        ] {
            let e = capture_args(&[("COOKIE_KEY", good), (k, v)])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(says), "{k}={v}: {e}");
        }
        let s = capture_args(&[("COOKIE_KEY", good), ("RESULTS_URL", "/results")]).unwrap();
        assert_eq!(s.results_url.as_deref(), Some("/results"));
    }
}
