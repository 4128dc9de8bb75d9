//! `loadgen`: rehearses the big night, and checks the count afterwards.
//!
//! Simulated voters, each with its own cookie jar, vote through the load
//! balancer (`POST /api/vote`) for any of the poll's options (as many as
//! the vote page has buttons, or `--options`); a fraction of them change
//! their vote later, to another option.
//! `429` and `503` are retried, respecting `Retry-After`, until the vote is
//! acknowledged. A new voter (no cookie yet) solves the target's
//! proof-of-work challenge first when it asks for one (`GET /api/pow`), as
//! the vote page's script does. The ground truth is each voter's last
//! acknowledged vote.
//! Afterwards loadgen waits until the results say the count is final and
//! compares each option's count, and with a database URL it checks every
//! voter's stored choice. The run passes only when everything matches.
//!
//! A voter whose last attempt was never acknowledged but may have been
//! stored (a `503` after a timeout, a dropped connection) is *uncertain*:
//! either outcome is correct for it, and the report says how many there are.
//!
//! With `--past-close` the voters go on voting across the poll's close: a
//! `403` with reason `poll_closed` is then expected, counted apart, and
//! leaves the voter's last acknowledged vote (if any) as its ground truth,
//! so the checks show that every vote acknowledged before the close is
//! counted and none after it.

pub mod report;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::config::{ConfigError, ExposeSecret, SecretString};
use crate::poll;
pub use report::Report;

/// Backoff after a refused attempt without `Retry-After`, from 50 ms
/// doubling up to 2 s: quick enough to ride out a node restart, slow enough
/// not to hammer a struggling one.
const RESEND: crate::retry::RetryPolicy =
    crate::retry::RetryPolicy::doubling(Duration::from_millis(50), Duration::from_secs(2));

/// Most attempts for one vote before the voter is given up on.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 200;

#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Where voters vote (the load balancer), e.g. http://127.0.0.1:8080
    #[arg(long, env = "LOADGEN_TARGET")]
    pub target: String,
    /// Number of simulated voters.
    #[arg(long, default_value_t = 10_000)]
    pub voters: usize,
    /// Fraction of voters who change their vote once, 0 to 1.
    #[arg(long, default_value_t = 0.1)]
    pub change_fraction: f64,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Most requests per second, overall [default: as fast as answered].
    #[arg(long)]
    pub rate: Option<f64>,
    /// The results node; loadgen waits for the final count and compares it.
    #[arg(long)]
    pub results: Option<String>,
    /// PostgreSQL; loadgen checks every voter's stored choice.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Also write the report to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Also write the report's figures as JSON to this file (read by
    /// `cargo xtask`; the environment reaches it through `cluster rehearse`).
    #[arg(long, env = "LOADGEN_REPORT_JSON")]
    pub report_json: Option<PathBuf>,
    /// How long to wait for the count to become final, in seconds.
    #[arg(long, default_value_t = 300)]
    pub final_timeout_secs: u64,
    /// Seed for the voters' choices, for a repeatable run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Attempts per vote before giving up on that voter.
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Client threads, each with its own connections [default: the cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// For https:// targets: trust this CA (PEM) besides the system's
    /// roots, e.g. a local cluster's DIR/tls/ca.pem.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Open a new connection for each voter's vote, as phones arriving from
    /// an advert do, instead of reusing keep-alive connections.
    #[arg(long)]
    pub new_connection_per_voter: bool,
    /// Refuse TLS session resumption: every new connection makes a full
    /// handshake (the worst case for the edge).
    #[arg(long)]
    pub no_tls_resumption: bool,
    /// The poll's options, comma-separated as its OPTIONS: voters choose
    /// among as many letters (`a`, `b`, ...) [default: read from the vote
    /// page's buttons].
    #[arg(long)]
    pub options: Option<String>,
    /// Keep voting past the poll's close: `403 poll_closed` is then an
    /// expected answer (counted in the report), not a failed voter.
    #[arg(long)]
    pub past_close: bool,
}

#[derive(Debug, Clone)]
pub struct LoadgenSettings {
    pub target: String,
    pub voters: usize,
    pub change_fraction: f64,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub results: Option<String>,
    pub database_url: Option<SecretString>,
    pub report: Option<PathBuf>,
    pub final_timeout: Duration,
    pub seed: u64,
    pub max_attempts: u32,
    pub threads: usize,
    /// The TLS client, when the target or the results are https://.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub new_connection_per_voter: bool,
    /// How many options the poll has; `None`: read from the vote page.
    pub options: Option<usize>,
    pub past_close: bool,
}

impl LoadgenArgs {
    pub fn into_settings(self) -> Result<LoadgenSettings, ConfigError> {
        if !(0.0..=1.0).contains(&self.change_fraction) {
            return Err(ConfigError(
                "--change-fraction must be between 0 and 1".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(ConfigError("--concurrency must be at least 1".into()));
        }
        if let Some(r) = self.rate {
            if r.is_nan() || r <= 0.0 {
                return Err(ConfigError("--rate must be positive".into()));
            }
        }
        for (name, url) in [
            ("--target", Some(&self.target)),
            ("--results", self.results.as_ref()),
        ] {
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(ConfigError(format!(
                        "{name} must be an http:// or https:// URL, got {u:?}"
                    )));
                }
            }
        }
        let https = self.target.starts_with("https://")
            || self
                .results
                .as_deref()
                .is_some_and(|r| r.starts_with("https://"));
        if self.ca_file.is_some() && !https {
            return Err(ConfigError(
                "--ca-file is for https:// targets; --target and --results are http://".into(),
            ));
        }
        let options = self
            .options
            .as_deref()
            .map(|list| {
                let n = list.split(',').count();
                if (poll::MIN_OPTIONS..=poll::MAX_OPTIONS).contains(&n) {
                    Ok(n)
                } else {
                    Err(ConfigError(format!(
                        "--options: {} to {} comma-separated labels, not {n}",
                        poll::MIN_OPTIONS,
                        poll::MAX_OPTIONS
                    )))
                }
            })
            .transpose()?;
        let tls = if https {
            Some(tls::client_config(
                self.ca_file.as_deref(),
                !self.no_tls_resumption,
            )?)
        } else {
            None
        };
        Ok(LoadgenSettings {
            target: self.target.trim_end_matches('/').to_owned(),
            voters: self.voters,
            change_fraction: self.change_fraction,
            concurrency: self.concurrency,
            rate: self.rate,
            results: self.results.map(|r| r.trim_end_matches('/').to_owned()),
            database_url: self.database_url.map(SecretString::from),
            report: self.report,
            final_timeout: Duration::from_secs(self.final_timeout_secs),
            seed: self.seed.unwrap_or_else(rand::random),
            max_attempts: self.max_attempts.max(1),
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .clamp(1, self.concurrency.max(1)),
            tls,
            new_connection_per_voter: self.new_connection_per_voter,
            options,
            past_close: self.past_close,
        })
    }
}

/// What loadgen knows about one simulated voter.
#[derive(Clone, Debug, Default)]
pub struct VoterState {
    /// The signed `voter` cookie value, as a browser would keep it.
    pub cookie: Option<String>,
    /// The voter id from the last receipt.
    pub voter_id: Option<String>,
    /// The option letter of the last acknowledged vote: the ground truth.
    pub acked: Option<char>,
    /// An attempt after the last acknowledgement may have been stored.
    pub uncertain: bool,
    /// The voter was given up on (attempts exhausted or an unexpected 4xx).
    pub failed: bool,
    /// A vote of this voter was refused because the poll had closed
    /// (`--past-close`).
    pub refused_closed: bool,
}

/// Counters of the load phase.
#[derive(Debug, Default)]
pub struct LoadStats {
    pub requests: u64,
    pub acknowledged: u64,
    /// `403 poll_closed` answers (also in `rejected`): votes too late.
    pub refused_closed: u64,
    /// Refusals by HTTP status, and `0` for connection errors.
    pub rejected: BTreeMap<u16, u64>,
    /// Microseconds, one per answered request.
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
    /// TLS handshakes of the votes (none over plain HTTP).
    pub handshakes: tls::Handshakes,
}

#[derive(Deserialize)]
struct Receipt {
    voter: String,
    option: String,
}

/// A refusal's JSON (`{"error", "reason"}`), as far as loadgen reads it.
#[derive(Deserialize)]
struct Refusal {
    reason: Option<String>,
}

/// The reason a refusal gives for the poll's window.
const POLL_CLOSED: &str = "poll_closed";

/// One load thread's share: its voters (by global index), its client.
struct LoadThread {
    settings: LoadgenSettings,
    client: awc::Client,
    /// Where votes go, as awc is given it ([`tls::wire_url`]).
    vote_url: String,
    /// This thread's handshakes, counted by every client it makes.
    handshakes: Rc<RefCell<tls::Handshakes>>,
    voters: RefCell<HashMap<usize, VoterState>>,
    stats: RefCell<LoadStats>,
    /// When the next request may go out, for `--rate`.
    next_slot: Cell<Instant>,
    progress: indicatif::ProgressBar,
    /// The target's proof-of-work challenge, as last fetched.
    pow: RefCell<Option<PowChallenge>>,
}

/// What `GET /api/pow` said, and when.
#[derive(Clone, Deserialize)]
struct PowChallenge {
    challenge: Option<String>,
    bits: u8,
    #[serde(default)]
    window_secs: u64,
    #[serde(skip, default = "Instant::now")]
    fetched: Instant,
}

impl PowChallenge {
    /// Fetched again after half a window (a challenge lasts two), or a
    /// minute when none is asked, so a rehearsal follows a node's setting.
    fn stale(&self) -> bool {
        let fresh_for = if self.bits == 0 {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(self.window_secs.max(2) / 2)
        };
        self.fetched.elapsed() > fresh_for
    }
}

/// A client for `url` (give it [`tls::wire_url`] of the same): over TLS,
/// with each handshake counted in `handshakes`, when `url` is https:// .
fn http_client(
    connections: usize,
    url: &str,
    tls_config: Option<&Arc<rustls::ClientConfig>>,
    handshakes: &Rc<RefCell<tls::Handshakes>>,
) -> awc::Client {
    let builder = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .disable_redirects();
    match tls_config {
        Some(config) if url.starts_with("https://") => builder
            .connector(
                awc::Connector::new()
                    .connector(tls::Connector::new(config.clone(), handshakes.clone()))
                    .limit(connections.max(1)),
            )
            .finish(),
        _ => builder
            .connector(awc::Connector::new().limit(connections.max(1)))
            .finish(),
    }
}

/// Runs the load on `settings.threads` threads, each an actix system with
/// its own client (awc is single-threaded), voters dealt out round-robin.
fn load(
    settings: &LoadgenSettings,
    actions: &[(usize, char)],
    progress: indicatif::ProgressBar,
) -> (Vec<VoterState>, LoadStats) {
    let threads = settings.threads.max(1);
    let mut part_settings = settings.clone();
    part_settings.concurrency = settings.concurrency.div_ceil(threads);
    part_settings.rate = settings.rate.map(|r| r / threads as f64);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mine: Vec<(usize, char)> = actions
                .iter()
                .copied()
                .filter(|(v, _)| v % threads == t)
                .collect();
            let settings = part_settings.clone();
            let progress = progress.clone();
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || {
                    actix_rt::System::new().block_on(run_load_thread(settings, mine, progress))
                })
                .expect("spawn a load thread")
        })
        .collect();
    let mut voters = vec![VoterState::default(); settings.voters];
    let mut stats = LoadStats::default();
    for h in handles {
        let (part_voters, part_stats) = h.join().expect("load thread");
        for (i, v) in part_voters {
            voters[i] = v;
        }
        stats.requests += part_stats.requests;
        stats.acknowledged += part_stats.acknowledged;
        stats.refused_closed += part_stats.refused_closed;
        for (k, n) in part_stats.rejected {
            *stats.rejected.entry(k).or_default() += n;
        }
        stats.latencies_us.extend(part_stats.latencies_us);
        stats.handshakes.merge(part_stats.handshakes);
    }
    (voters, stats)
}

async fn run_load_thread(
    settings: LoadgenSettings,
    actions: Vec<(usize, char)>,
    progress: indicatif::ProgressBar,
) -> (HashMap<usize, VoterState>, LoadStats) {
    let handshakes = Rc::default();
    let load_thread = Rc::new(LoadThread {
        client: http_client(
            settings.concurrency,
            &settings.target,
            settings.tls.as_ref(),
            &handshakes,
        ),
        vote_url: format!("{}/api/vote", tls::wire_url(&settings.target)),
        handshakes,
        voters: RefCell::new(HashMap::new()),
        stats: RefCell::new(LoadStats::default()),
        next_slot: Cell::new(Instant::now()),
        progress,
        pow: RefCell::new(None),
        settings,
    });
    // Changes must wait for the voter's first vote: `actions` holds every
    // first vote before any change; run those, then the changes (each
    // respects the node's minimum change interval through 429 +
    // Retry-After).
    let mut seen = std::collections::HashSet::new();
    let split = actions
        .iter()
        .position(|(v, _)| !seen.insert(*v))
        .unwrap_or(actions.len());
    for phase in [&actions[..split], &actions[split..]] {
        futures_util::stream::iter(phase.iter().copied())
            .map(|(voter, option)| {
                let load_thread = load_thread.clone();
                async move { load_thread.vote(voter, option).await }
            })
            .buffer_unordered(load_thread.settings.concurrency)
            .for_each(|_| async {})
            .await;
    }
    let voters = load_thread.voters.take();
    let mut stats = load_thread.stats.take();
    stats.handshakes = load_thread.handshakes.take();
    (voters, stats)
}

/// Runs the whole rehearsal: load, then the checks. Must run inside an
/// actix system (awc is single-threaded).
pub async fn run(settings: LoadgenSettings) -> Report {
    let options = match settings.options {
        Some(n) => n,
        None => match poll_options(&settings).await {
            Ok(n) => n,
            Err(e) => return Report::not_started(&settings, e),
        },
    };
    let letters: Vec<char> = (0..options).map(poll::letter).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed);
    let firsts: Vec<usize> = (0..settings.voters)
        .map(|_| rng.random_range(0..options))
        .collect();
    let mut changers: Vec<usize> = (0..settings.voters).collect();
    changers.shuffle(&mut rng);
    changers.truncate((settings.voters as f64 * settings.change_fraction).round() as usize);

    // Every vote is a first vote, then every change: a change is another
    // option for a voter who already voted, any of the others alike.
    let changes: Vec<(usize, usize)> = changers
        .iter()
        .map(|&i| (i, (firsts[i] + rng.random_range(1..options)) % options))
        .collect();
    let actions: Vec<(usize, char)> = firsts
        .iter()
        .copied()
        .enumerate()
        .chain(changes)
        .map(|(i, o)| (i, letters[o]))
        .collect();

    let progress = indicatif::ProgressBar::new(actions.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} voting [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let client = http_client(
        4,
        settings.results.as_deref().unwrap_or(""),
        settings.tls.as_ref(),
        &Rc::default(),
    );
    // As awc is given it.
    let results_wire = settings.results.as_deref().map(tls::wire_url);

    // What is there before we vote.
    let results_base = match &results_wire {
        Some(r) => Some(results_baseline(&client, r, settings.final_timeout).await),
        None => None,
    };
    let rows_base = match &settings.database_url {
        Some(db) => {
            let url = db.expose_secret().to_owned();
            Some(
                actix_web::rt::task::spawn_blocking(move || count_rows(&url))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string())),
            )
        }
        None => None,
    };

    let started = Instant::now();
    let load_settings = settings.clone();
    let load_progress = progress.clone();
    let (voters, mut stats) =
        actix_web::rt::task::spawn_blocking(move || load(&load_settings, &actions, load_progress))
            .await
            .expect("load threads");
    progress.finish_and_clear();
    stats.elapsed = started.elapsed();
    let load_end = chrono::Utc::now();

    let mut report = Report::new(&settings, options, stats, &voters);
    if let (Some(results), Some(base)) = (&results_wire, results_base) {
        report.results = Some(match base {
            Ok(base) => {
                check_results(
                    &client,
                    results,
                    &voters,
                    &base,
                    settings.final_timeout,
                    load_end,
                )
                .await
            }
            Err(e) => report::ResultsCheck::failed(e),
        });
    }
    if let (Some(db), Some(base)) = (&settings.database_url, rows_base) {
        let url = db.expose_secret().to_owned();
        let timeout = settings.final_timeout;
        let voters = voters.clone();
        report.database = Some(match base {
            Ok(base) => actix_web::rt::task::spawn_blocking(move || {
                check_database(&url, &voters, base, timeout)
            })
            .await
            .unwrap_or_else(|e| report::DbCheck::error(format!("database check crashed: {e}"))),
            Err(e) => report::DbCheck::error(e),
        });
    }
    report
}

/// The `reason` of a refusal's JSON body, if it has one.
fn refusal_reason(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Refusal>(body).ok()?.reason
}

/// How many options the target's vote page offers: its vote buttons
/// (`<button name="vote" value="a">`, ...), which must be `a`, `b`, ... in
/// order.
async fn poll_options(settings: &LoadgenSettings) -> Result<usize, String> {
    let client = http_client(1, &settings.target, settings.tls.as_ref(), &Rc::default());
    let url = format!("{}/", tls::wire_url(&settings.target));
    let why = |e: String| {
        format!(
            "cannot read the poll's options from the vote page {}/ ({e}); pass --options",
            settings.target
        )
    };
    let mut resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| why(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(why(format!("it answered {}", resp.status())));
    }
    let body = resp
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| why(e.to_string()))?;
    vote_buttons(&String::from_utf8_lossy(&body)).map_err(why)
}

/// The option letters of a vote page's buttons, checked to be `a`, `b`,
/// ... in order: their number.
pub fn vote_buttons(page: &str) -> Result<usize, String> {
    let mut found = Vec::new();
    for tag in page.split("<button").skip(1) {
        let tag = tag.split('>').next().unwrap_or_default();
        if !tag.contains(r#"name="vote""#) {
            continue;
        }
        let value = tag
            .split(r#"value=""#)
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or_default();
        found.push(value.to_owned());
    }
    let want: Vec<String> = (0..found.len().min(poll::MAX_OPTIONS))
        .map(|i| poll::letter(i).to_string())
        .collect();
    if found.len() < poll::MIN_OPTIONS || found != want {
        return Err(format!("vote buttons {found:?}, not a, b, ... in order"));
    }
    Ok(found.len())
}

impl LoadThread {
    async fn pace(&self) {
        let Some(rate) = self.settings.rate else {
            return;
        };
        let now = Instant::now();
        let slot = self.next_slot.get().max(now);
        self.next_slot
            .set(slot + Duration::from_secs_f64(1.0 / rate));
        if slot > now {
            tokio::time::sleep_until(slot.into()).await;
        }
    }

    /// A proof of work for a new voter's vote, as the vote page's script
    /// would find it, if the target asks for one (`GET /api/pow`); `None`
    /// when it does not, or does not say.
    async fn pow_solution(&self) -> Option<String> {
        let cached = self.pow.borrow().clone().filter(|p| !p.stale());
        let pow = match cached {
            Some(p) => p,
            None => {
                let url = format!("{}/api/pow", self.settings.target);
                let fetched = match self.client.get(&url).send().await {
                    Ok(mut r) if r.status().is_success() => r.json::<PowChallenge>().await.ok(),
                    _ => None,
                };
                // A target that does not answer is asked again next time.
                let fetched = fetched?;
                *self.pow.borrow_mut() = Some(fetched.clone());
                fetched
            }
        };
        let challenge = pow.challenge.filter(|_| pow.bits > 0)?;
        Some(crate::capture::pow::solve(&challenge, pow.bits))
    }

    fn voter(&self, voter: usize, f: impl FnOnce(&mut VoterState)) {
        f(self.voters.borrow_mut().entry(voter).or_default());
    }

    async fn vote(&self, voter: usize, option: char) {
        let body = format!(r#"{{"vote":"{option}"}}"#);
        let url = &self.vote_url;
        // A new connection for this voter, as a phone makes: a client of
        // its own, dropped (connection and all) when the vote is done.
        let own_client = self.settings.new_connection_per_voter.then(|| {
            http_client(
                1,
                &self.settings.target,
                self.settings.tls.as_ref(),
                &self.handshakes,
            )
        });
        let client = own_client.as_ref().unwrap_or(&self.client);
        let mut backoff = RESEND.backoff();
        // One key for every attempt of this vote: if an answer is lost after
        // the vote was stored, the retry is the same vote, not a new voter.
        let idempotency_key = crate::vote::Id128::random().to_string();
        for _attempt in 0..self.settings.max_attempts {
            self.pace().await;
            let cookie = self
                .voters
                .borrow()
                .get(&voter)
                .and_then(|v| v.cookie.clone());
            // A new voter pays the proof of work, if the target asks for
            // one: the edge lets new voters who did through more often.
            let pow = match cookie {
                None => self.pow_solution().await,
                Some(_) => None,
            };
            let url = match &pow {
                Some(p) => format!("{url}?pow={p}"),
                None => url.clone(),
            };
            let mut req = client
                .post(&url)
                .insert_header(("Content-Type", "application/json"))
                .insert_header(("Idempotency-Key", idempotency_key.as_str()));
            if let Some(c) = &cookie {
                req = req.insert_header(("Cookie", format!("voter={c}")));
            }
            let started = Instant::now();
            let sent = req.send_body(body.clone()).await;
            self.stats.borrow_mut().requests += 1;
            let mut resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    // The request may or may not have reached a node.
                    log::debug!("voter {voter}: {e}");
                    self.voter(voter, |v| v.uncertain = true);
                    *self.stats.borrow_mut().rejected.entry(0).or_default() += 1;
                    tokio::time::sleep(backoff.next_wait()).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let new_cookie = resp.cookie("voter").map(|c| c.value().to_owned());
            // Any answer may carry our identity (a 503 for a new voter
            // does): keep it, as a browser would.
            if let Some(c) = &new_cookie {
                self.voter(voter, |v| v.cookie = Some(c.clone()));
            }
            let body = resp.body().limit(64 * 1024).await;
            {
                let mut stats = self.stats.borrow_mut();
                stats
                    .latencies_us
                    .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            match status {
                200..=299 => {
                    let receipt = body
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Receipt>(&b).ok());
                    let mut voters = self.voters.borrow_mut();
                    let v = voters.entry(voter).or_default();
                    match receipt {
                        Some(r) if r.option.chars().eq([option]) => {
                            v.voter_id = Some(r.voter);
                            v.acked = Some(option);
                            v.uncertain = false;
                            if new_cookie.is_some() {
                                v.cookie = new_cookie;
                            }
                        }
                        _ => {
                            log::error!("voter {voter}: acknowledged without a valid receipt");
                            v.failed = true;
                        }
                    }
                    self.stats.borrow_mut().acknowledged += 1;
                    self.progress.inc(1);
                    return;
                }
                403 if self.settings.past_close
                    && body
                        .as_ref()
                        .ok()
                        .and_then(|b| refusal_reason(b))
                        .as_deref()
                        == Some(POLL_CLOSED) =>
                {
                    // Too late, as the run expects: this vote is not
                    // stored, the voter's last acknowledged one stands.
                    {
                        let mut stats = self.stats.borrow_mut();
                        *stats.rejected.entry(status).or_default() += 1;
                        stats.refused_closed += 1;
                    }
                    self.voter(voter, |v| v.refused_closed = true);
                    self.progress.inc(1);
                    return;
                }
                403 if pow.is_some() => {
                    // The challenge expired (or the node's key changed):
                    // fetch a new one and try again.
                    *self.stats.borrow_mut().rejected.entry(status).or_default() += 1;
                    self.pow.borrow_mut().take();
                }
                429 | 503 => {
                    *self.stats.borrow_mut().rejected.entry(status).or_default() += 1;
                    if status == 503 {
                        // Not acknowledged, but a timed-out write may still
                        // have reached Redis.
                        self.voter(voter, |v| v.uncertain = true);
                    }
                    // The schedule moves on whether or not the node said
                    // when to come back.
                    let ours = backoff.next_wait();
                    let wait = retry_after.unwrap_or(ours).min(Duration::from_secs(60));
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    *self.stats.borrow_mut().rejected.entry(status).or_default() += 1;
                    log::error!(
                        "voter {voter}: unexpected {status}: {}",
                        body.map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default()
                    );
                    self.voter(voter, |v| v.failed = true);
                    self.progress.inc(1);
                    return;
                }
            }
        }
        log::error!(
            "voter {voter}: gave up after {} attempts",
            self.settings.max_attempts
        );
        self.voter(voter, |v| v.failed = true);
        self.progress.inc(1);
    }
}

/// What the results node says, as far as loadgen reads it.
#[derive(Deserialize, Debug)]
pub struct ResultsSnapshot {
    pub options: Vec<OptionCount>,
    pub as_of: String,
    pub total: i64,
    pub backlog: i64,
    /// Queues that did not answer: the backlog may be larger.
    #[serde(default)]
    pub unreachable_queues: usize,
    /// Why the last tally failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl ResultsSnapshot {
    /// Nothing queued, every queue answered, the count read: every vote
    /// acknowledged before `as_of` is in it. `final` says more (also that
    /// the poll takes no more votes), so a poll still open is caught up
    /// without being final.
    pub fn caught_up(&self) -> bool {
        self.is_final || (self.backlog == 0 && self.unreachable_queues == 0 && self.error.is_none())
    }

    /// Each option's count by letter.
    pub fn counts(&self) -> BTreeMap<char, i64> {
        self.options
            .iter()
            .filter_map(|c| Some((single_letter(&c.option)?, c.count)))
            .collect()
    }
}

fn single_letter(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

#[derive(Deserialize, Debug)]
pub struct OptionCount {
    pub option: String,
    pub label: String,
    pub count: i64,
}

/// The expected count per option letter from the ground truth, and how
/// many voters are uncertain.
pub fn expected_counts(voters: &[VoterState]) -> (BTreeMap<char, i64>, i64) {
    let mut counts = BTreeMap::new();
    let mut uncertain = 0;
    for v in voters {
        if v.uncertain || v.failed {
            uncertain += 1;
        } else if let Some(o) = v.acked {
            *counts.entry(o).or_insert(0) += 1;
        }
    }
    (counts, uncertain)
}

/// Polls `/api/results` until the count has caught up with every vote
/// acknowledged before `not_before` (final, or caught up with the poll
/// still open: [`ResultsSnapshot::caught_up`]) or `timeout` passes;
/// returns the last snapshot (or why there is none).
async fn wait_final(
    client: &awc::Client,
    base: &str,
    timeout: Duration,
    not_before: Option<chrono::DateTime<chrono::Utc>>,
) -> (Option<ResultsSnapshot>, Option<String>) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    let mut last_error = None;
    loop {
        match client.get(format!("{base}/api/results")).send().await {
            Ok(mut r) if r.status().is_success() => {
                match r.json::<ResultsSnapshot>().limit(1 << 20).await {
                    Ok(snap) => {
                        // A snapshot begun before our last vote was
                        // acknowledged may call an older count final.
                        let fresh = match (
                            not_before,
                            chrono::DateTime::parse_from_rfc3339(&snap.as_of),
                        ) {
                            (None, _) => true,
                            (Some(t), Ok(as_of)) => as_of >= t,
                            (Some(_), Err(_)) => false,
                        };
                        let done = snap.caught_up() && fresh;
                        last = Some(snap);
                        if done {
                            break;
                        }
                    }
                    Err(e) => last_error = Some(format!("bad results JSON: {e}")),
                }
            }
            Ok(r) => last_error = Some(format!("results answered {}", r.status())),
            Err(e) => last_error = Some(format!("results unreachable: {e}")),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (last, last_error)
}

/// The counts before the run, so that votes already there (a resumed
/// cluster, an earlier rehearsal) are not mistaken for a wrong count.
async fn results_baseline(
    client: &awc::Client,
    base: &str,
    timeout: Duration,
) -> Result<BTreeMap<char, i64>, String> {
    match wait_final(client, base, timeout, None).await {
        (Some(snap), _) if snap.caught_up() => Ok(snap.counts()),
        (Some(snap), _) => Err(format!(
            "the count had not caught up before the run (backlog {}), so earlier votes cannot be told from this run's",
            snap.backlog
        )),
        (None, e) => Err(e.unwrap_or_else(|| "results did not answer".into())),
    }
}

async fn check_results(
    client: &awc::Client,
    base: &str,
    voters: &[VoterState],
    baseline: &BTreeMap<char, i64>,
    timeout: Duration,
    load_end: chrono::DateTime<chrono::Utc>,
) -> report::ResultsCheck {
    let started = Instant::now();
    let (mut expected, uncertain) = expected_counts(voters);
    for (o, n) in baseline {
        *expected.entry(*o).or_insert(0) += n;
    }
    let (last, last_error) = wait_final(client, base, timeout, Some(load_end)).await;
    report::ResultsCheck::compare(last, last_error, &expected, uncertain, started.elapsed())
}

#[derive(diesel::QueryableByName)]
struct StoredVote {
    #[diesel(sql_type = diesel::sql_types::Text)]
    voter_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    option: String,
}

/// Rows in the votes table now.
pub fn count_rows(url: &str) -> Result<usize, String> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel::PgConnection::establish(url)
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    diesel::sql_query("SELECT count(*) AS n FROM votes")
        .get_result::<N>(&mut conn)
        .map(|r| r.n as usize)
        .map_err(|e| format!("cannot count votes: {e}"))
}

/// Compares every voter's stored choice with the ground truth, polling
/// until they match or `timeout` passes (the workers may still be draining
/// when no results node tells us the count is final).
pub fn check_database(
    url: &str,
    voters: &[VoterState],
    baseline_rows: usize,
    timeout: Duration,
) -> report::DbCheck {
    use diesel::{Connection, RunQueryDsl};
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = diesel::PgConnection::establish(url)
            .map_err(|e| format!("cannot connect to the database: {e}"))
            .and_then(|mut conn| {
                diesel::sql_query("SELECT voter_id, option::text AS option FROM votes")
                    .load::<StoredVote>(&mut conn)
                    .map_err(|e| format!("cannot read votes: {e}"))
            })
            .map(|rows| {
                report::DbCheck::compare(
                    voters,
                    baseline_rows,
                    rows.into_iter().map(|r| (r.voter_id, r.option)),
                )
            });
        let done = matches!(&outcome, Ok(c) if c.mismatches.is_empty());
        if done || Instant::now() >= deadline {
            return outcome.unwrap_or_else(report::DbCheck::error);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
