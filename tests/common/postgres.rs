//! A real PostgreSQL per test: `initdb` in a temporary directory (as the
//! `postgres` user when the tests run as root), the server on a free port,
//! stoppable and restartable to inject outages. Never the PostgreSQL that
//! may happen to run on this machine.

use std::process::{Child, Stdio};
use std::time::Duration;

use voteswarm::cluster::postgres;

use super::{free_port, signal, wait_until};

pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
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
        let mut pg = PgServer {
            port: free_port(),
            dir,
            child: None,
        };
        pg.spawn();
        pg
    }

    fn spawn(&mut self) {
        let mut spec = postgres::prepare(&self.dir.path().join("data"), self.port)
            .unwrap_or_else(|e| panic!("PostgreSQL for the tests: {e}"));
        // Speed; the outages the tests make are clean shutdowns.
        spec.args.extend(["-c".into(), "fsync=off".into()]);
        let child = spec
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        postgres::wait_ready_and_create(self.port).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The test database, with the migrations applied.
    pub fn url(&self) -> String {
        postgres::database_url(self.port)
    }

    pub fn migrated_url(&self) -> String {
        let url = self.url();
        voteswarm::db::migrate(&url).expect("migrate");
        url
    }

    /// Fast shutdown, as `pg_ctl stop -m fast` would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGINT);
            let _ = c.wait();
        }
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

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGINT);
            let _ = c.wait();
        }
    }
}
