//! `Cluster::start`, step by step: the programs found, the data directory
//! laid out, then each tier started back to front and waited for (PostgreSQL
//! migrated, the Redis queues, the workers, the capture nodes, results,
//! HAProxy), each step handing the ports it chose to the next.

use super::*;
use std::net::TcpListener;

/// Before the ports: an earlier run still alive is why they are taken.
fn check_public_ports(t: &TopologyArgs) -> Result<(), ClusterError> {
    if let Some(d) = &t.data_dir {
        refuse_if_in_use(d)?;
    }
    for port in [t.port, t.results_port, t.tls_port, t.results_tls_port] {
        if TcpListener::bind((t.bind.as_str(), port)).is_err() {
            return Err(ClusterError::new(format!(
                "port {port} on {} is taken: stop what uses it or choose another --port/--results-port/--tls-port/--results-tls-port",
                t.bind
            )));
        }
    }
    Ok(())
}

/// The programs a cluster runs: found before anything starts, so a
/// missing one is the first and only error.
struct Programs {
    redis_server: PathBuf,
    haproxy: PathBuf,
    capture: PathBuf,
    worker: PathBuf,
    results: PathBuf,
}

impl Programs {
    fn find() -> Result<Programs, ClusterError> {
        let redis_server = require("redis-server", "redis-server")?;
        let haproxy = require("haproxy", "haproxy")?;
        require("setpriv", "util-linux")?;
        Ok(Programs {
            redis_server,
            haproxy,
            capture: sibling("capture")?,
            worker: sibling("worker")?,
            results: sibling("results")?,
        })
    }
}

/// The PostgreSQL the tiers use.
enum TierDatabase {
    /// Our own, on `port`: each tier logs in as its own role.
    Own {
        /// The primary's, then the standby's when there is one.
        ports: Vec<u16>,
        passwords: postgres::PgPasswords,
    },
    /// The one `DATABASE_URL` names: every tier uses it as given.
    Given(String),
}

/// What the tiers are started from: the data directory's files and the
/// roles' logins, made once by [`Cluster::prepare`].
struct Layout {
    logs: PathBuf,
    redis_conf: PathBuf,
    redis_acl: PathBuf,
    secrets: PathBuf,
    cookie_key: PathBuf,
    /// `EDGE_ID_KEY`: HAProxy takes the value, capture the file.
    edge_id_key: (String, PathBuf),
    redis_passwords: secrets::RedisPasswords,
    /// `QUESTION`, `OPTIONS`, `POLL_CLOSES` from the flags, for capture,
    /// the workers and results alike.
    poll_env: Vec<(&'static str, String)>,
}

impl Layout {
    /// The poll's variables the flags set, on a tier that runs the poll.
    fn poll(&self, mut spec: Spec) -> Spec {
        for (k, v) in &self.poll_env {
            spec = spec.env(k, v.clone());
        }
        spec
    }

    /// A tier's Redis login: its ACL user and password file.
    fn redis_login(&self, spec: Spec, role: secrets::RedisRole) -> Spec {
        spec.env("REDIS_USER", role.user()).env(
            "REDIS_PASSWORD_FILE",
            self.redis_passwords.file(role).display().to_string(),
        )
    }
}

impl TierDatabase {
    /// A tier's database login: DATABASE_URL without a password and the
    /// role's password file, or the given URL.
    fn login(&self, spec: Spec, role: postgres::PgRole) -> Spec {
        match self {
            TierDatabase::Own { ports, passwords } => spec
                .env("DATABASE_URL", postgres::hosts_url(role.user(), ports))
                .env(
                    "DATABASE_PASSWORD_FILE",
                    passwords.file(role).display().to_string(),
                ),
            TierDatabase::Given(url) => spec.env("DATABASE_URL", url.clone()),
        }
    }
}

/// A queue's `redis-server` (primary or replica, as `conf` says) on
/// loopback `port`, its files in `dir`, with the cluster's ACL users.
fn redis_spec(
    t: &TopologyArgs,
    programs: &Programs,
    layout: &Layout,
    conf: &Path,
    port: u16,
    dir: &Path,
) -> Spec {
    Spec::new(&programs.redis_server)
        .arg(conf.display().to_string())
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir.display().to_string())
        .arg("--aclfile")
        .arg(layout.redis_acl.display().to_string())
        .arg("--appendfsync")
        .arg(t.appendfsync.clone())
        .arg("--daemonize")
        .arg("no")
        .arg("--logfile")
        .arg("")
}

impl Cluster {
    /// Starts every tier, back to front, each ready before the next that
    /// needs it: PostgreSQL (migrated), the Redis queues, the workers, the
    /// capture nodes, results, HAProxy.
    pub fn start(t: &TopologyArgs) -> Result<Cluster, ClusterError> {
        if t.capture == 0 || t.workers == 0 {
            return Err(ClusterError::new(
                "--capture and --workers must be at least 1",
            ));
        }
        let most = crate::capture::settings::MAX_ACK_REPLICAS;
        if t.queue_replicas > most {
            return Err(ClusterError::new(format!(
                "--queue-replicas must be 0 to {most}, not {}",
                t.queue_replicas
            )));
        }
        // Before anything starts: a bad poll is one line, not three tiers
        // refusing to start.
        let poll = t.poll.resolve(chrono::Utc::now())?;
        let programs = Programs::find()?;
        check_public_ports(t)?;
        let (mut cluster, layout) = Cluster::prepare(t, poll)?;
        let database = cluster.start_postgres(t, &layout)?;
        let queue_ports = cluster.start_queues(t, &programs, &layout)?;
        // Every queue server, replicas too: a worker drains a replica once
        // it is promoted, and stands by until then.
        let servers: Vec<u16> = cluster
            .queues
            .iter()
            .flat_map(|q| std::iter::once(&q.primary).chain(&q.replicas))
            .filter_map(|name| cluster.port_of_proc(name))
            .collect();
        cluster.start_workers(t, &programs, &layout, &database, &servers)?;
        let capture_ports = cluster.start_capture(t, &programs, &layout, &queue_ports)?;
        let results_port = cluster.start_results(&programs, &layout, &database, &queue_ports)?;
        cluster.start_edge(t, &programs, &layout, &capture_ports, results_port)?;
        Ok(cluster)
    }

    /// The data directory (given, or a temporary one) with its logs, run
    /// files, cookie key, certificates, Redis settings and passwords.
    fn prepare(
        t: &TopologyArgs,
        (poll, poll_env): (crate::poll::Poll, Vec<(&'static str, String)>),
    ) -> Result<(Cluster, Layout), ClusterError> {
        let (data_dir, temp) = match &t.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("voteswarm-cluster-")
                    .tempdir()
                    .map_err(|e| {
                        ClusterError::new(format!("cannot create a temporary data dir: {e}"))
                    })?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        mkdir(&data_dir)?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|e| ClusterError::new(format!("{}: {e}", data_dir.display())))?;
        // The PostgreSQL user must be able to reach its directory inside.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755));
        let logs = data_dir.join("logs");
        mkdir(&logs)?;
        let run = data_dir.join("run");
        mkdir(&run)?;
        let _ = std::fs::write(run.join("cluster.pid"), std::process::id().to_string());
        let cookie_key = ensure_cookie_key(&data_dir)?;
        let tls = tls::ensure(&data_dir)?;
        let redis_conf = data_dir.join("redis.conf");
        std::fs::write(&redis_conf, REDIS_CONF).map_err(ClusterError::io("write", &redis_conf))?;
        // Passwords of every role, made once per data dir (`secrets/`).
        let secrets = data_dir.join("secrets");
        let redis_passwords = secrets::RedisPasswords::ensure(&secrets)?;
        let edge_id_key = secrets::ensure_edge_id_key(&secrets)?;
        let redis_acl = data_dir.join("redis-users.acl");
        redis_passwords.write_acl(&redis_acl, crate::queue::DEFAULT_STREAM_KEY)?;
        let cluster = Cluster {
            data_dir,
            _temp: temp,
            database_url: String::new(),
            psql_url: "(DATABASE_URL as given)".into(),
            vote_url: format!("http://{}:{}", display_host(&t.bind), t.port),
            results_url: format!("http://{}:{}", display_host(&t.bind), t.results_port),
            vote_https_url: format!("https://{}:{}", tls_host(&t.bind), t.tls_port),
            results_https_url: format!("https://{}:{}", tls_host(&t.bind), t.results_tls_port),
            tls,
            poll,
            procs: Vec::new(),
            queues: Vec::new(),
            queue_conf: failover::QueueConf {
                include: redis_conf.clone(),
                passwords: redis_passwords.clone(),
            },
            store: None,
        };
        let layout = Layout {
            logs,
            redis_conf,
            redis_acl,
            secrets,
            cookie_key,
            edge_id_key,
            redis_passwords,
            poll_env,
        };
        Ok((cluster, layout))
    }

    /// Starts a child and keeps it, for the supervisor and the stop.
    fn spawn(&mut self, mut p: Proc) -> Result<(), ClusterError> {
        p.start().map_err(|e| ClusterError::new(e.to_string()))?;
        self.procs.push(p);
        Ok(())
    }

    /// Starts a tier's child that listens on loopback `port`.
    fn spawn_local(
        &mut self,
        role: &'static str,
        name: String,
        port: u16,
        spec: Spec,
        layout: &Layout,
    ) -> Result<(), ClusterError> {
        let addr = format!("127.0.0.1:{port}");
        self.spawn(Proc::new(role, name, addr, spec, &layout.logs))
    }

    /// PostgreSQL. Our own: the tiers log in as their roles, and the
    /// schema is migrated here, as the migrator, before any worker starts,
    /// so no worker holds the migrator's password. One that `DATABASE_URL`
    /// names: every tier uses that URL, as the operator chose, and the
    /// first worker migrates.
    fn start_postgres(
        &mut self,
        t: &TopologyArgs,
        layout: &Layout,
    ) -> Result<TierDatabase, ClusterError> {
        if let Some(url) = &t.database_url {
            if t.pg_standby {
                return Err(ClusterError::new(
                    "--pg-standby makes a standby of the cluster's own PostgreSQL: leave DATABASE_URL unset",
                ));
            }
            self.database_url = url.clone();
            return Ok(TierDatabase::Given(url.clone()));
        }
        standby::adopt_standby(&self.data_dir)?;
        let port = stable_port(&self.data_dir.join("postgres.port"))?;
        let passwords = postgres::PgPasswords::ensure(&layout.secrets)?;
        let mut spec = postgres::prepare(&self.data_dir.join("postgres"), port, &passwords)?;
        if t.pg_standby {
            spec = spec
                .arg("-c")
                .arg(format!("synchronous_standby_names={}", postgres::STANDBY))
                .args(["-c", "synchronous_commit=on"]);
        }
        let mut p = Proc::new(
            "postgres",
            "postgres".into(),
            format!("127.0.0.1:{port}"),
            spec,
            &layout.logs,
        );
        // SIGINT is PostgreSQL's fast shutdown: clients cut, data safe.
        p.stop_signal = libc::SIGINT;
        self.spawn(p)?;
        postgres::wait_ready_and_create(port, &passwords)?;
        let applied = crate::db::migrate(&postgres::setup_url(
            &passwords.url(postgres::PgRole::Migrator, port),
        ))
        .map_err(ClusterError::new)?;
        if !applied.is_empty() {
            log::info!("applied migrations: {}", applied.join(", "));
        }
        let standby_dir = self.data_dir.join(standby::STANDBY_DIR);
        standby::prepare_slot(port, &passwords, &standby_dir, t.pg_standby)?;
        let mut ports = vec![port];
        if t.pg_standby {
            ports.push(self.start_standby(layout, port, &passwords)?);
        }
        let superuser = passwords.password(postgres::PgRole::Superuser);
        self.database_url = crate::config::with_credentials(
            "DATABASE_URL",
            &postgres::hosts_url(postgres::SUPERUSER, &ports),
            None,
            superuser,
        )
        .expect("a plain URL takes credentials");
        self.psql_url = psql_url_hosts(&self.data_dir, &ports, superuser)?;
        Ok(TierDatabase::Own { ports, passwords })
    }

    /// The synchronous standby: the replicator's login, the copy made once
    /// (`pg_basebackup`), the server, and the wait until the primary sees it
    /// streaming (before any worker commits, which would wait for it).
    /// Returns its port.
    fn start_standby(
        &mut self,
        layout: &Layout,
        primary: u16,
        passwords: &postgres::PgPasswords,
    ) -> Result<u16, ClusterError> {
        let password = postgres::ensure_replicator(primary, passwords)?;
        let port = stable_port(&self.data_dir.join(standby::STANDBY_PORT_FILE))?;
        let dir = self.data_dir.join(standby::STANDBY_DIR);
        let spec = postgres::prepare_standby(&dir, primary, port, &password)?;
        let mut p = Proc::new(
            "standby",
            standby::STANDBY_PROC.into(),
            format!("127.0.0.1:{port}"),
            spec,
            &layout.logs,
        );
        p.stop_signal = libc::SIGINT;
        let log = p.log.clone();
        self.spawn(p)?;
        standby::wait_streaming(primary, passwords, &log)?;
        self.store = Some(standby::Store::new(
            &self.data_dir,
            primary,
            port,
            passwords,
        ));
        Ok(port)
    }

    /// One Redis per capture node, each with its own append-only files;
    /// returns their ports once all accept connections.
    fn start_queues(
        &mut self,
        t: &TopologyArgs,
        programs: &Programs,
        layout: &Layout,
    ) -> Result<Vec<u16>, ClusterError> {
        let mut ports = Vec::new();
        for i in 1..=t.capture {
            let port = free_port()?;
            let dir = self.data_dir.join(format!("redis{i:02}"));
            mkdir(&dir)?;
            let spec = redis_spec(t, programs, layout, &layout.redis_conf, port, &dir);
            self.spawn_local("redis", format!("redis{i:02}"), port, spec, layout)?;
            ports.push(port);
        }
        for (i, &port) in ports.iter().enumerate() {
            self.wait_port(&format!("redis{:02}", i + 1), port)?;
        }
        for (i, &primary) in ports.iter().enumerate() {
            let n = i + 1;
            let mut replicas = Vec::new();
            for r in 1..=t.queue_replicas {
                replicas.push(self.start_replica(t, programs, layout, n, primary, r)?);
            }
            self.queues.push(failover::Queue {
                capture: format!("capture{n:02}"),
                primary: format!("redis{n:02}"),
                replicas,
                orphaned: false,
            });
        }
        Ok(ports)
    }

    /// Replica `r` of queue `n`, on its own port and directory, with the
    /// primary's ACL users (so that the tiers can log in to it once it is
    /// promoted), from a config file of its own ([`failover::QueueConf`]).
    /// It syncs in the background: capture's `/readyz` waits for it.
    /// Returns its name.
    fn start_replica(
        &mut self,
        t: &TopologyArgs,
        programs: &Programs,
        layout: &Layout,
        n: usize,
        primary: u16,
        r: usize,
    ) -> Result<String, ClusterError> {
        let name = format!("redis{n:02}-r{r}");
        let port = free_port()?;
        let dir = self.data_dir.join(&name);
        mkdir(&dir)?;
        let conf = self.queue_conf.write(&dir, Some(primary))?;
        let spec = redis_spec(t, programs, layout, &conf, port, &dir);
        self.spawn_local("replica", name.clone(), port, spec, layout)?;
        self.wait_port(&name, port)?;
        Ok(name)
    }

    /// Workers draining every queue (listing each queue's replicas too:
    /// they stand by until promoted); the first applies the migrations
    /// (when the database is given) before the others start.
    fn start_workers(
        &mut self,
        t: &TopologyArgs,
        programs: &Programs,
        layout: &Layout,
        database: &TierDatabase,
        servers: &[u16],
    ) -> Result<(), ClusterError> {
        for i in 1..=t.workers {
            let port = free_port()?;
            let mut spec = Spec::new(&programs.worker)
                .env("REDIS_URLS", queue_urls(servers))
                .env("WORKER_ID", format!("worker{i:02}"))
                .env("METRICS_LISTEN", format!("127.0.0.1:{port}"));
            spec = layout.redis_login(
                database.login(layout.poll(spec), postgres::PgRole::Worker),
                secrets::RedisRole::Worker,
            );
            if i == 1 && matches!(database, TierDatabase::Given(_)) {
                spec = spec.arg("--migrate");
            }
            self.spawn(Proc::new(
                "worker",
                format!("worker{i:02}"),
                format!("127.0.0.1:{port} (metrics)"),
                spec,
                &layout.logs,
            ))?;
            if i == 1 {
                self.wait_http(&format!("worker{i:02}"), port, "/readyz")?;
            }
        }
        Ok(())
    }

    /// A capture node in front of each queue; returns their ports once all
    /// are ready.
    fn start_capture(
        &mut self,
        t: &TopologyArgs,
        programs: &Programs,
        layout: &Layout,
        queue_ports: &[u16],
    ) -> Result<Vec<u16>, ClusterError> {
        // The nodes share this machine's cores, so each gets its share of
        // HTTP threads rather than one per core: with 3 nodes on 2 cores, 6
        // threads would each carry a third of the votes, in Redis pipelines
        // a third as full, and wake each other up for it.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let http_workers = (cores / t.capture).max(1);
        let mut ports = Vec::new();
        for (i, queue_port) in queue_ports.iter().enumerate() {
            let n = i + 1;
            let port = free_port()?;
            let spec = Spec::new(&programs.capture)
                .env("LISTEN", format!("127.0.0.1:{port}"))
                .env("REDIS_URL", format!("redis://127.0.0.1:{queue_port}"))
                .env("NODE_ID", format!("capture{n:02}"))
                .env("HTTP_WORKERS", http_workers.to_string())
                .env("ACK_REPLICAS", t.queue_replicas.to_string())
                .env("COOKIE_KEY_FILE", layout.cookie_key.display().to_string())
                .env(
                    "EDGE_ID_KEY_FILE",
                    layout.edge_id_key.1.display().to_string(),
                )
                // The results are on their own port: a link to the local
                // one, unless the caller names another.
                .env("RESULTS_URL", env_or("RESULTS_URL", &self.results_url));
            let spec = layout.redis_login(layout.poll(spec), secrets::RedisRole::Capture);
            self.spawn_local("capture", format!("capture{n:02}"), port, spec, layout)?;
            ports.push(port);
        }
        for (i, &port) in ports.iter().enumerate() {
            self.wait_http(&format!("capture{:02}", i + 1), port, "/readyz")?;
        }
        Ok(ports)
    }

    /// The results node; returns its port once ready.
    fn start_results(
        &mut self,
        programs: &Programs,
        layout: &Layout,
        database: &TierDatabase,
        queue_ports: &[u16],
    ) -> Result<u16, ClusterError> {
        let port = free_port()?;
        let spec = Spec::new(&programs.results)
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("REDIS_URLS", queue_urls(queue_ports));
        let spec = layout.redis_login(
            database.login(layout.poll(spec), postgres::PgRole::Results),
            secrets::RedisRole::Results,
        );
        self.spawn_local("results", "results".into(), port, spec, layout)?;
        self.wait_http("results", port, "/readyz")?;
        Ok(port)
    }

    /// HAProxy in front, with the shipped settings, on the public ports.
    fn start_edge(
        &mut self,
        t: &TopologyArgs,
        programs: &Programs,
        layout: &Layout,
        capture_ports: &[u16],
        results_port: u16,
    ) -> Result<(), ClusterError> {
        let cfg = haproxy::render(
            HAPROXY_CFG,
            &haproxy::Local {
                capture: capture_ports
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect(),
                results: format!("127.0.0.1:{results_port}"),
            },
        )?;
        let cfg_path = self.data_dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).map_err(ClusterError::io("write", &cfg_path))?;
        let rate_limit =
            std::env::var("VOTE_RATE_LIMIT").unwrap_or_else(|_| LOCAL_RATE_LIMIT.to_string());
        let new_voter_limit =
            std::env::var("NEW_VOTER_LIMIT").unwrap_or_else(|_| LOCAL_NEW_VOTER_LIMIT.to_string());
        let spec = Spec::new(&programs.haproxy)
            .env("VOTE_BIND", format!("{}:{}", t.bind, t.port))
            .env("RESULTS_BIND", format!("{}:{}", t.bind, t.results_port))
            .env("TLS_BIND", format!("{}:{}", t.bind, t.tls_port))
            .env(
                "RESULTS_TLS_BIND",
                format!("{}:{}", t.bind, t.results_tls_port),
            )
            .env("TLS_CERT", self.tls.edge_pem.display().to_string())
            // Plain HTTP is served as such locally (a browser treats
            // http://localhost as secure), unless HTTPS_REDIRECT=1 asks for
            // the deployments' redirect; and HSTS, which is per host and
            // not per port, would send a browser from the plain port to
            // HTTPS on that same port, so its max-age is 0 unless set.
            .env("HTTPS_REDIRECT", env_or("HTTPS_REDIRECT", "0"))
            .env("HSTS_MAX_AGE", env_or("HSTS_MAX_AGE", "0"))
            .env("HTTPS_REDIRECT_PORT", format!(":{}", t.tls_port))
            .env(
                "RESULTS_HTTPS_REDIRECT_PORT",
                format!(":{}", t.results_tls_port),
            )
            .env("VOTE_RATE_LIMIT", rate_limit)
            .env("NEW_VOTER_LIMIT", new_voter_limit)
            .env("EDGE_ID_KEY", layout.edge_id_key.0.clone())
            // Its peers listener (a cluster has one edge: no peer) must not
            // collide with another cluster's either.
            .env("PEERS_BIND", format!("127.0.0.1:{}", free_port()?))
            // Two clusters on one machine must not share the stats port.
            .env("STATS_BIND", format!("127.0.0.1:{}", free_port()?))
            .arg("-db")
            .arg("-f")
            .arg(cfg_path.display().to_string());
        let mut p = Proc::new(
            "haproxy",
            "haproxy".into(),
            format!(
                "{}:{}/{} (vote), :{}/{} (results)",
                t.bind, t.port, t.tls_port, t.results_port, t.results_tls_port
            ),
            spec,
            &layout.logs,
        );
        // SIGUSR1 is HAProxy's soft stop: it stops listening and lets the
        // requests in flight finish, so no acknowledgement is lost on the
        // way back to a voter.
        p.stop_signal = libc::SIGUSR1;
        self.spawn(p)?;
        self.wait_http("haproxy", t.port, "/healthz")?;
        self.wait_http("haproxy", t.results_port, "/healthz")?;
        self.wait_port("haproxy", t.tls_port)?;
        self.wait_port("haproxy", t.results_tls_port)?;
        Ok(())
    }

    fn check_alive(&mut self, name: &str) -> Result<(), ClusterError> {
        if let Some(p) = self.procs.iter_mut().find(|p| p.name == name) {
            if !p.is_running() {
                return Err(ClusterError::new(format!(
                    "{name} exited at start; see {}",
                    p.log.display()
                )));
            }
        }
        Ok(())
    }

    fn wait_port(&mut self, name: &str, port: u16) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.check_alive(name)?;
            if Instant::now() >= deadline {
                return Err(ClusterError::new(format!(
                    "{name} did not open port {port}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn wait_http(&mut self, name: &str, port: u16, path: &str) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if http_get_status(port, path) == Some(200) {
                return Ok(());
            }
            self.check_alive(name)?;
            if Instant::now() >= deadline {
                let log = self
                    .procs
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.log.display().to_string())
                    .unwrap_or_default();
                return Err(ClusterError::new(format!(
                    "{name} not ready on port {port}{path} after {} s; see {log}",
                    READY_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Refuses a data dir whose earlier run is still alive (a `cluster up`
/// that is running, or children left by one killed before they had a
/// parent-death signal): two runs must never share Redis files or
/// PostgreSQL. Refusing, not stopping them, because a pid file cannot
/// prove which run a process belongs to.
pub(super) fn refuse_if_in_use(data_dir: &Path) -> Result<(), ClusterError> {
    // Children of a killed run are dead within moments (their parent-death
    // signal), but their new parent may take a while to reap them.
    let deadline = Instant::now() + REAP_TIMEOUT;
    let left = loop {
        let left = procs::left_by_earlier_run(&data_dir.join("run"));
        if left.is_empty() {
            return Ok(());
        }
        if left.iter().any(|(_, _, exited)| !exited) || Instant::now() >= deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let live: Vec<(String, u32)> = left.into_iter().map(|(n, p, _)| (n, p)).collect();
    // The supervisor itself, if alive, stops its children in order;
    // otherwise each leftover is told to stop.
    let to_kill: Vec<String> = match live.iter().find(|(n, _)| n == "cluster") {
        Some((_, pid)) => vec![pid.to_string()],
        None => live.iter().map(|(_, p)| p.to_string()).collect(),
    };
    let named: Vec<String> = live.iter().map(|(n, p)| format!("{n} (pid {p})")).collect();
    Err(ClusterError::new(format!(
        "{} is in use by an earlier run still alive: {}; stop it with `kill {}` and run `cluster up` again",
        data_dir.display(),
        named.join(", "),
        to_kill.join(" ")
    )))
}

/// `<data dir>/secrets/pgpass` for the superuser, and the URL that uses
/// it: psql and every libpq client connect with it as printed, and the
/// password stays out of the terminal and the shell history.
pub(super) fn psql_url(data_dir: &Path, port: u16, password: &str) -> Result<String, ClusterError> {
    psql_url_hosts(data_dir, &[port], password)
}

/// As [`psql_url`], to whichever of the servers on `ports` takes writes.
pub(super) fn psql_url_hosts(
    data_dir: &Path,
    ports: &[u16],
    password: &str,
) -> Result<String, ClusterError> {
    let file = data_dir.join("secrets").join("pgpass");
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // libpq ignores a pgpass file that others can read.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| writeln!(f, "*:*:*:{}:{password}", postgres::SUPERUSER))
        .map_err(ClusterError::io("write", &file))?;
    let url = postgres::hosts_url(postgres::SUPERUSER, ports);
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}passfile={}", file.display()))
}

/// The port recorded in `file` if it is still free, else a new one
/// (recorded): the database keeps its address across `cluster up`s, so a
/// `DATABASE_URL` someone copied from the table stays good.
pub(super) fn stable_port(file: &Path) -> Result<u16, ClusterError> {
    if let Some(p) = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
    {
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    let p = free_port()?;
    std::fs::write(file, p.to_string()).map_err(ClusterError::io("write", file))?;
    Ok(p)
}

/// The cookie key shared by the capture nodes, made once per data dir so
/// that voters' cookies stay valid across restarts.
pub(super) fn ensure_cookie_key(dir: &Path) -> Result<PathBuf, ClusterError> {
    let path = dir.join("cookie.key");
    if !path.exists() {
        // Letters and digits, each equally likely (no modulo bias).
        let key: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(64)
            .map(char::from)
            .collect();
        secrets::write_private(&path, &key, true)?;
    }
    Ok(path)
}
