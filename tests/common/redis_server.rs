//! A real `redis-server` per test: a free port, its own temporary directory,
//! append-only on (as in production), the deployments' ACL users (each
//! role's URL from [`RedisServer::url_as`]; [`RedisServer::conn`] is the
//! operator's `admin`), methods to stop, restart, pause and resume it to
//! inject faults, and the queue as capture leaves it: votes appended the
//! way capture appends them, and read back with the workers' decoder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use voteswarm::cluster::secrets::{RedisPasswords, RedisRole};
use voteswarm::vote::Vote;

use super::{free_port, require_program, wait_until, Proc};

/// The stream every suite's nodes use (`STREAM_KEY`'s default).
pub const STREAM: &str = "votes";

/// How long a fresh `redis-server` may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct RedisServer {
    pub port: u16,
    pub passwords: RedisPasswords,
    /// Whether it runs with the ACL file: a test that passes its own
    /// `--user`s cannot have it too (Redis refuses both).
    acl: bool,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Proc>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments, such as
    /// `["--appendfsync", "always"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        require_program("redis-server", "redis-server");
        let dir = tempfile::Builder::new()
            .prefix("voteswarm-redis-")
            .tempdir()
            .expect("temp dir");
        let passwords = RedisPasswords::ensure(&dir.path().join("secrets")).expect("passwords");
        passwords
            .write_acl(&dir.path().join("users.acl"), "votes")
            .expect("ACL file");
        let mut server = RedisServer {
            port: 0,
            passwords,
            acl: !extra.contains(&"--user"),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        // The port could be taken between choosing and binding it: retry.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; see {}",
            server.log_path().display()
        );
    }

    /// A replica of `primary` (`--replicaof`), logging in to it as its
    /// `admin`; with users of its own, as the cluster's replicas have the
    /// primary's.
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let port = primary.port.to_string();
        let replica = Self::start_with(&[
            "--replicaof",
            "127.0.0.1",
            &port,
            "--masteruser",
            RedisRole::Admin.user(),
            "--masterauth",
            primary.passwords.password(RedisRole::Admin),
        ]);
        assert!(
            replica.wait_in_sync(),
            "the replica did not sync; see {}",
            replica.log_path().display()
        );
        replica
    }

    /// Whether this replica's link to its primary is up (it holds the
    /// primary's data and follows it) before a deadline.
    pub fn wait_in_sync(&self) -> bool {
        wait_until(START_TIMEOUT, || {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut self.conn())
                .is_ok_and(|info| info.contains("master_link_status:up"))
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .args(
                self.acl
                    .then(|| ["--aclfile".into(), self.dir.path().join("users.acl")])
                    .into_iter()
                    .flatten(),
            )
            .arg("--appendonly")
            .arg("yes")
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(Proc::spawn(&mut cmd));
        let url = self.ping_url();
        let exited = |s: &mut Self| !s.child.as_mut().is_some_and(Proc::running);
        let ready = wait_until(START_TIMEOUT, || {
            // Exited: stop waiting, reported below.
            exited(self) || ping(&url)
        });
        let exited = exited(self);
        if exited || !ready {
            self.kill();
            return false;
        }
        true
    }

    /// The URL a role's tier is given, with its user and password.
    pub fn url_as(&self, role: RedisRole) -> String {
        self.passwords.url(role, self.port)
    }

    pub fn capture_url(&self) -> String {
        self.url_as(RedisRole::Capture)
    }

    pub fn worker_url(&self) -> String {
        self.url_as(RedisRole::Worker)
    }

    pub fn results_url(&self) -> String {
        self.url_as(RedisRole::Results)
    }

    /// No user, no password: Redis's `default` user.
    pub fn anonymous_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn admin_url(&self) -> String {
        self.url_as(RedisRole::Admin)
    }

    /// Who may PING: `admin`, or with a test's own users the default one.
    fn ping_url(&self) -> String {
        if self.acl {
            self.admin_url()
        } else {
            self.anonymous_url()
        }
    }

    /// The operator's client, for looking inside (the default user's when
    /// the test made its own users).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.ping_url()).expect("redis url")
    }

    pub fn conn(&self) -> redis::Connection {
        self.client()
            .get_connection()
            .expect("connect to test redis")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis running").id()
    }

    /// Kills the server (SIGKILL, a crash): what it acknowledged is in the
    /// append-only file.
    pub fn stop(&mut self) {
        self.kill();
        let url = self.ping_url();
        assert!(
            wait_until(Duration::from_secs(5), || !ping(&url)),
            "redis still answers after kill"
        );
    }

    /// Starts it again on the same port from the same directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop() before restart()");
        // The old listener is gone, so the same port is normally free;
        // retry a few times in case the kernel is slow to release it.
        for _ in 0..20 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// SIGSTOP: the server hangs without closing its connections.
    pub fn pause(&self) {
        self.child
            .as_ref()
            .expect("redis running")
            .signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.child
            .as_ref()
            .expect("redis running")
            .signal(libc::SIGCONT);
    }

    /// SIGKILL, which ends a paused server too; the guard does it on drop.
    fn kill(&mut self) {
        drop(self.child.take());
    }

    /// Entries in [`STREAM`].
    pub fn xlen(&self) -> usize {
        redis::cmd("XLEN")
            .arg(STREAM)
            .query(&mut self.conn())
            .expect("XLEN")
    }

    /// Appends `votes` to [`STREAM`] as capture does (pipelined XADDs).
    pub fn preload(&self, votes: &[Vote]) {
        let mut conn = self.conn();
        for chunk in votes.chunks(1000) {
            let mut pipe = redis::pipe();
            for v in chunk {
                pipe.add_command(xadd(v)).ignore();
            }
            pipe.query::<()>(&mut conn).expect("preload");
        }
    }

    /// Every entry of [`STREAM`], decoded with the one decoder the workers
    /// use.
    pub fn votes(&self) -> Vec<Vote> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .query(&mut self.conn())
            .expect("XRANGE");
        reply
            .ids
            .iter()
            .map(|entry| {
                let fields: Vec<(Vec<u8>, Vec<u8>)> = entry
                    .map
                    .iter()
                    .map(|(k, v)| {
                        let v: Vec<u8> = redis::from_redis_value_ref(v).expect("bytes");
                        (k.as_bytes().to_vec(), v)
                    })
                    .collect();
                Vote::from_fields(fields.iter().map(|(k, v)| (&k[..], &v[..])))
                    .unwrap_or_else(|e| panic!("entry {} does not decode: {e}", entry.id))
            })
            .collect()
    }
}

/// The XADD capture sends for `vote`, to [`STREAM`].
pub fn xadd(vote: &Vote) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(STREAM).arg("*");
    for (k, val) in vote.to_fields() {
        cmd.arg(k).arg(val);
    }
    cmd
}

fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}
