//! A `cluster up` process for tests, and direct SQL on its database.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, signal, wait_until};

const CLUSTER: &str = env!("CARGO_BIN_EXE_cluster");

/// Counts per option straight from PostgreSQL.
pub fn sql_counts(url: &str) -> (i64, i64) {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        a: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        b: i64,
    }
    let mut conn = diesel::PgConnection::establish(url).expect("connect");
    let r: Row = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE option = 'a') AS a, count(*) FILTER (WHERE option = 'b') AS b FROM votes",
    )
    .get_result(&mut conn)
    .expect("count");
    (r.a, r.b)
}

pub fn sql(url: &str, statement: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn = diesel::PgConnection::establish(url).expect("connect");
    conn.batch_execute(statement).expect(statement);
}

/// A running `cluster up`, stopped with SIGTERM on drop.
pub struct Up {
    child: Child,
    pub table: String,
    pub vote: String,
    pub results: String,
}

impl Up {
    pub fn start(data: &Path, capture: usize, workers: usize) -> Up {
        let (port, rport) = (free_port(), free_port());
        let mut child = Command::new(CLUSTER)
            .args([
                "up",
                "--capture",
                &capture.to_string(),
                "--workers",
                &workers.to_string(),
            ])
            .args([
                "--port",
                &port.to_string(),
                "--results-port",
                &rport.to_string(),
            ])
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cluster up");
        let mut table = String::new();
        let out = child.stdout.take().unwrap();
        for line in BufReader::new(out).lines() {
            let line = line.expect("cluster output");
            table.push_str(&line);
            table.push('\n');
            if line.starts_with("Ctrl-C to stop") {
                break;
            }
        }
        assert!(
            table.contains("Ctrl-C to stop"),
            "cluster up did not start:\n{table}"
        );
        Up {
            child,
            table,
            vote: format!("http://127.0.0.1:{port}"),
            results: format!("http://127.0.0.1:{rport}"),
        }
    }

    pub fn database_url(&self) -> String {
        let addr = self
            .table
            .lines()
            .find(|l| l.starts_with("postgres"))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_else(|| panic!("no postgres row:\n{}", self.table));
        format!("postgres://postgres@{addr}/voteswarm")
    }

    pub fn stop(mut self) -> i32 {
        signal(self.child.id(), libc::SIGTERM);
        let done = wait_until(Duration::from_secs(120), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(done, "cluster did not stop");
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGTERM);
            let _ = wait_until(Duration::from_secs(120), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            });
        }
    }
}
