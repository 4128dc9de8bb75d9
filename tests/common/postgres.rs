//! A real PostgreSQL per test: `initdb` in a temporary directory (as the
//! `postgres` user when the tests run as root), the server on a free port,
//! stoppable and restartable to inject outages. Never the PostgreSQL that
//! may happen to run on this machine. With the deployments' roles and
//! `scram-sha-256` passwords: [`PgServer::url`] is the worker's login.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use voteswarm::cluster::postgres::{self, PgPasswords, PgRole};

use super::{free_port, wait_until, Proc};

/// How long a fast shutdown may take before the guard kills the server.
const STOP_GRACE: Duration = Duration::from_secs(60);

pub struct PgServer {
    pub port: u16,
    pub passwords: PgPasswords,
    dir: tempfile::TempDir,
    child: Option<Proc>,
}

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("voteswarm-pg-")
            .tempdir()
            .expect("temp dir");
        // The server user must be able to enter it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let passwords = PgPasswords::ensure(&dir.path().join("secrets")).expect("passwords");
        let mut pg = PgServer {
            port: free_port(),
            passwords,
            dir,
            child: None,
        };
        pg.spawn();
        pg
    }

    fn spawn(&mut self) {
        // Speed; the outages the tests make are clean shutdowns.
        let child = serve(
            &self.dir.path().join("data"),
            self.port,
            &self.passwords,
            &["-c", "fsync=off"],
        );
        self.child = Some(child);
    }

    /// The test database as the workers log in to it.
    pub fn url(&self) -> String {
        self.url_as(PgRole::Worker)
    }

    pub fn url_as(&self, role: PgRole) -> String {
        self.passwords.url(role, self.port)
    }

    /// As the migrator, who owns the schema (`worker --migrate`).
    pub fn migrator_url(&self) -> String {
        self.url_as(PgRole::Migrator)
    }

    /// The worker's URL, after the migrations (applied by the migrator).
    pub fn migrated_url(&self) -> String {
        voteswarm::db::migrate(&self.migrator_url()).expect("migrate");
        self.url()
    }

    /// Fast shutdown, as `pg_ctl stop -m fast` would.
    pub fn stop(&mut self) {
        drop(self.child.take());
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            }),
            "postgres still answers"
        );
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop() before restart()");
        self.spawn();
    }
}

/// PostgreSQL on `data` (made there first if it is not yet), answering on
/// `port` with the roles of `passwords`; stopped by the guard with a fast
/// shutdown (SIGINT).
pub fn serve(data: &Path, port: u16, passwords: &PgPasswords, extra: &[&str]) -> Proc {
    let mut spec = postgres::prepare(data, port, passwords)
        .unwrap_or_else(|e| panic!("PostgreSQL for the tests: {e}"));
    spec.args.extend(extra.iter().map(|a| a.to_string()));
    let child = Proc::spawn(
        spec.command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .stopped_with(libc::SIGINT, STOP_GRACE);
    postgres::wait_ready_and_create(port, passwords).unwrap_or_else(|e| panic!("{e}"));
    child
}

/// The PostgreSQL a `cluster` run left in its data dir `dir`, started
/// again for a direct look: the guard, and the superuser's URL.
pub fn on_cluster_data(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let passwords = PgPasswords::ensure(&dir.join("secrets")).expect("the cluster's passwords");
    let child = serve(&dir.join("postgres"), port, &passwords, &[]);
    (child, passwords.url(PgRole::Superuser, port))
}
