//! Least privilege in the stores (docs/SECURITY.md, items 9 and 10): each
//! tier's PostgreSQL role and Redis user can do its own work and nothing
//! else, and nothing at all without its password. Real PostgreSQL and
//! redis-server, started by the harness with the deployments' roles.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::clean_command;
use common::{bin, http, results_node, spawn_results, wait_until, PgServer, Proc, RedisServer};
use diesel::{Connection, PgConnection, RunQueryDsl};
use voteswarm::cluster::postgres::PgRole;
use voteswarm::cluster::secrets::RedisRole;
use voteswarm::config::VoteChanges;
use voteswarm::vote::{Id128, Vote, VoteOption};

fn vote(voter: u128, option: VoteOption) -> Vote {
    Vote {
        vote_id: Id128(voter + 1_000),
        voter: Id128(voter),
        option,
        ts: 10,
        node: "n1".into(),
    }
}

/// The database's error for `sql`, which must fail.
fn refused(conn: &mut PgConnection, sql: &str) -> String {
    match diesel::sql_query(sql).execute(conn) {
        Ok(_) => panic!("`{sql}` was allowed"),
        Err(e) => e.to_string(),
    }
}

/// `sql` must fail for want of a right.
fn denied(conn: &mut PgConnection, sql: &str) {
    let e = refused(conn, sql);
    assert!(
        e.contains("permission denied") || e.contains("must be owner"),
        "`{sql}`: {e}"
    );
}

fn allowed(conn: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("`{sql}` was refused: {e}"));
}

#[test]
fn results_can_read_the_totals_and_nothing_else_and_can_write_nothing() {
    let pg = PgServer::start();
    let worker_url = pg.migrated_url();
    let mut worker = PgConnection::establish(&worker_url).unwrap();
    voteswarm::db::commit_votes(
        &mut worker,
        &[vote(1, VoteOption::A), vote(2, VoteOption::B)],
        VoteChanges::Allow,
    )
    .unwrap();
    let mut results = PgConnection::establish(&pg.url_as(PgRole::Results)).unwrap();
    // The one query the results node sends (src/actors/tally.rs).
    allowed(
        &mut results,
        "SELECT option, sum(n)::bigint AS count FROM vote_counts GROUP BY option",
    );
    for sql in [
        "SELECT * FROM votes",
        "SELECT voter_id FROM votes",
        "INSERT INTO vote_counts (option, backend, n) VALUES ('a', 1, 1000)",
        "UPDATE vote_counts SET n = n + 1000",
        "DELETE FROM vote_counts",
        "INSERT INTO votes (voter_id, option, ts, vote_id, node) VALUES \
         ('0000000000000000000000000000000a', 'a', 1, '0000000000000000000000000000000b', 'x')",
        "TRUNCATE vote_counts",
        "CREATE TABLE mine (x int)",
        "CREATE TEMP TABLE mine (x int)",
        "DROP TABLE vote_counts",
    ] {
        denied(&mut results, sql);
    }
}

#[test]
fn the_worker_commits_votes_but_cannot_change_the_schema_nor_delete() {
    let pg = PgServer::start();
    let worker_url = pg.migrated_url();
    let mut worker = PgConnection::establish(&worker_url).unwrap();
    // The upsert and the totals its triggers keep: allowed.
    let n = voteswarm::db::commit_votes(
        &mut worker,
        &[vote(1, VoteOption::A), vote(2, VoteOption::B)],
        VoteChanges::Allow,
    )
    .unwrap();
    assert_eq!(n, 2);
    for sql in [
        "CREATE TABLE mine (x int)",
        "CREATE TEMP TABLE mine (x int)",
        "ALTER TABLE votes ADD COLUMN x int",
        "DROP TABLE votes",
        "DROP TRIGGER vote_counts_insert ON votes",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "TRUNCATE votes",
        "DELETE FROM votes",
        "DELETE FROM vote_counts",
        "SELECT * FROM __diesel_schema_migrations",
    ] {
        denied(&mut worker, sql);
    }
    // Migrating is the migrator's: the worker's login cannot.
    assert!(voteswarm::db::migrate(&worker_url).is_err());
    assert!(voteswarm::db::migrate(&pg.migrator_url()).is_ok());
}

#[test]
fn every_login_needs_its_password() {
    let pg = PgServer::start();
    pg.migrated_url();
    for role in [
        PgRole::Superuser,
        PgRole::Migrator,
        PgRole::Worker,
        PgRole::Results,
    ] {
        let user = role.user();
        let port = pg.port;
        for url in [
            format!("postgres://{user}@127.0.0.1:{port}/voteswarm"),
            format!("postgres://{user}:wrong@127.0.0.1:{port}/voteswarm"),
        ] {
            let e = PgConnection::establish(&url)
                .err()
                .unwrap_or_else(|| panic!("{user} logged in without its password"))
                .to_string();
            assert!(
                e.contains("password authentication failed") || e.contains("no password"),
                "{user}: {e}"
            );
        }
        assert!(PgConnection::establish(&pg.url_as(role)).is_ok(), "{user}");
    }
}

#[test]
fn worker_migrate_only_applies_the_schema_as_the_migrator_from_password_files() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let port = pg.port;
    let run = |migrate_user: &str, migrate_role: PgRole| {
        clean_command(bin::WORKER)
            .env(
                "DATABASE_URL",
                format!("postgres://voteswarm_worker@127.0.0.1:{port}/voteswarm"),
            )
            .env("DATABASE_PASSWORD_FILE", pg.passwords.file(PgRole::Worker))
            .env(
                "MIGRATE_DATABASE_URL",
                format!("postgres://{migrate_user}@127.0.0.1:{port}/voteswarm"),
            )
            .env(
                "MIGRATE_DATABASE_PASSWORD_FILE",
                pg.passwords.file(migrate_role),
            )
            .env("REDIS_URLS", redis.anonymous_url())
            .env("REDIS_USER", "worker")
            .env(
                "REDIS_PASSWORD_FILE",
                redis.passwords.file(RedisRole::Worker),
            )
            .arg("--migrate-only")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run worker --migrate-only")
    };
    // As the worker's own login: refused, and it says so.
    let out = run("voteswarm_worker", PgRole::Worker);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("migration") || err.contains("permission"),
        "{err}"
    );
    assert!(
        !err.contains(pg.passwords.password(PgRole::Worker)),
        "{err}"
    );
    // As the migrator: the schema is there, and the worker can use it.
    let out = run("voteswarm_migrator", PgRole::Migrator);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut worker = PgConnection::establish(&pg.url()).unwrap();
    allowed(&mut worker, "SELECT count(*) FROM votes");
}

/// The server's answer to `cmd` as `role` (an error's text, or "OK").
fn as_role(redis: &RedisServer, role: Option<RedisRole>, cmd: &redis::Cmd) -> String {
    let url = match role {
        Some(r) => redis.url_as(r),
        None => redis.anonymous_url(),
    };
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_connection()
        .expect("connect");
    match cmd.query::<redis::Value>(&mut conn) {
        Ok(_) => "OK".into(),
        Err(e) => e.to_string(),
    }
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

#[test]
fn each_redis_user_may_send_only_its_own_commands() {
    let redis = RedisServer::start();
    let entry = ["XADD", "votes", "*", "id", "1"];
    let ok = |role, args: &[&str]| {
        let got = as_role(&redis, Some(role), &cmd(args));
        assert_eq!(got, "OK", "{role:?} {args:?}");
    };
    let noperm = |role, args: &[&str]| {
        let got = as_role(&redis, Some(role), &cmd(args));
        assert!(
            got.to_uppercase().contains("NOPERM"),
            "{role:?} {args:?}: {got}"
        );
    };
    use RedisRole::*;
    // Capture: enqueue, queue depth, readiness.
    ok(Capture, &entry);
    ok(Capture, &["XLEN", "votes"]);
    ok(Capture, &["PING"]);
    // ACK_REPLICAS: a batch's replicas, and readiness counting them.
    ok(Capture, &["WAIT", "0", "1"]);
    ok(Capture, &["INFO", "replication"]);
    noperm(Capture, &["REPLICAOF", "NO", "ONE"]);
    noperm(Capture, &["XADD", "other", "*", "id", "1"]);
    noperm(Capture, &["XRANGE", "votes", "-", "+"]);
    noperm(Capture, &["XDEL", "votes", "0-1"]);
    noperm(
        Capture,
        &["XGROUP", "CREATE", "votes", "workers", "0", "MKSTREAM"],
    );
    noperm(Capture, &["FLUSHALL"]);
    noperm(Capture, &["CONFIG", "GET", "*"]);
    // Workers: the group, dead letters; never a vote of their own.
    ok(
        Worker,
        &["XGROUP", "CREATE", "votes", "workers", "0", "MKSTREAM"],
    );
    ok(
        Worker,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "w1",
            "COUNT",
            "10",
            "STREAMS",
            "votes",
            ">",
        ],
    );
    ok(
        Worker,
        &["XAUTOCLAIM", "votes", "workers", "w2", "0", "0-0"],
    );
    ok(Worker, &["XPENDING", "votes", "workers"]);
    ok(Worker, &["XADD", "votes:dead", "*", "reason", "test"]);
    ok(Worker, &["XLEN", "votes:dead"]);
    ok(Worker, &["XACK", "votes", "workers", "0-1"]);
    ok(Worker, &["XDEL", "votes", "0-1"]);
    noperm(Worker, &entry);
    noperm(Worker, &["XRANGE", "votes:dead", "-", "+"]);
    noperm(Worker, &["DEL", "votes"]);
    noperm(Worker, &["FLUSHALL"]);
    // Results: the backlog only.
    ok(Results, &["XLEN", "votes"]);
    noperm(Results, &entry);
    noperm(
        Results,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "r",
            "STREAMS",
            "votes",
            ">",
        ],
    );
    noperm(Results, &["XRANGE", "votes", "-", "+"]);
}

#[test]
fn capture_cannot_read_the_queue_with_xreadgroup() {
    let redis = RedisServer::start();
    as_role(
        &redis,
        Some(RedisRole::Worker),
        &cmd(&["XGROUP", "CREATE", "votes", "workers", "0", "MKSTREAM"]),
    );
    let got = as_role(
        &redis,
        Some(RedisRole::Capture),
        &cmd(&[
            "XREADGROUP",
            "GROUP",
            "workers",
            "c",
            "STREAMS",
            "votes",
            ">",
        ]),
    );
    assert!(got.to_uppercase().contains("NOPERM"), "{got}");
}

#[test]
fn without_a_password_redis_answers_nothing_at_all() {
    let redis = RedisServer::start();
    for args in [
        &["PING"][..],
        &["XLEN", "votes"],
        &["XADD", "votes", "*", "id", "1"],
        &["CONFIG", "GET", "*"],
    ] {
        let got = as_role(&redis, None, &cmd(args));
        assert!(got.contains("NOAUTH"), "{args:?}: {got}");
    }
    // Nor with a wrong one, nor as `default` with any.
    for url in [
        format!("redis://capture:wrong@127.0.0.1:{}/", redis.port),
        format!("redis://default:x@127.0.0.1:{}/", redis.port),
    ] {
        let conn = redis::Client::open(url.as_str()).unwrap().get_connection();
        assert!(conn.is_err(), "{url} logged in");
    }
    let mut admin = redis.conn();
    let len: i64 = redis::cmd("XLEN").arg("votes").query(&mut admin).unwrap();
    assert_eq!(len, 0, "nothing got in");
}

#[test]
fn the_results_page_counts_with_only_the_totals_and_the_queue_length() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let worker_url = pg.migrated_url();
    let mut worker = PgConnection::establish(&worker_url).unwrap();
    voteswarm::db::commit_votes(
        &mut worker,
        &[
            vote(1, VoteOption::A),
            vote(2, VoteOption::B),
            vote(3, VoteOption::B),
        ],
        VoteChanges::Allow,
    )
    .unwrap();
    let node = spawn_results(results_node::settings(
        pg.url_as(PgRole::Results),
        &redis.results_url(),
    ));
    let snapshot = || http::get(node.port, "/api/results")?.json();
    let mut last = None;
    let counted = wait_until(Duration::from_secs(20), || {
        last = snapshot();
        last.as_ref()
            .is_some_and(|v| v["total"] == 3 && v["final"] == true && v.get("error").is_none())
    });
    assert!(counted, "{last:?}");
}

/// Writes `value` as the secret `name` in `dir`, with the trailing newline
/// an editor leaves (not part of the secret).
fn secret_file(dir: &std::path::Path, name: &str, value: &str) {
    std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
}

#[test]
fn the_postgres_containers_init_script_makes_the_same_roles_from_secret_files() {
    common::require_program("psql", "postgresql-client");
    let pg = PgServer::start();
    let secrets = tempfile::tempdir().unwrap();
    for role in ["migrator", "worker", "results"] {
        secret_file(
            secrets.path(),
            &format!("pg_{role}_password"),
            &format!("from-file-{role}'\"$x"),
        );
    }
    // As the postgres image runs it: psql as the superuser, the secrets in
    // a directory. The password goes to psql the way libpq reads it.
    let run = || {
        Command::new("sh")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/docker/postgres-roles.sh"
            ))
            .env("VOTESWARM_SECRETS_DIR", secrets.path())
            .env("POSTGRES_USER", "postgres")
            .env("POSTGRES_DB", "voteswarm")
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", pg.port.to_string())
            .env("PGPASSWORD", pg.passwords.password(PgRole::Superuser))
            .output()
            .expect("run postgres-roles.sh")
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Idempotent: a second run (by hand on an existing database) passes.
    let again = run();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let login = |role: PgRole, password: &str| {
        voteswarm::config::with_credentials(
            "DATABASE_URL",
            &format!("postgres://{}@127.0.0.1:{}/voteswarm", role.user(), pg.port),
            None,
            password,
        )
        .unwrap()
    };
    for (role, name) in [
        (PgRole::Migrator, "migrator"),
        (PgRole::Worker, "worker"),
        (PgRole::Results, "results"),
    ] {
        let url = login(role, &format!("from-file-{name}'\"$x"));
        assert!(
            PgConnection::establish(&url).is_ok(),
            "{name} with the file's password"
        );
        assert!(
            PgConnection::establish(&pg.url_as(role)).is_err(),
            "{name}'s old password is replaced"
        );
    }
    // The migrator owns the database: its migrations grant the rest.
    voteswarm::db::migrate(&login(PgRole::Migrator, "from-file-migrator'\"$x")).unwrap();
    let mut results =
        PgConnection::establish(&login(PgRole::Results, "from-file-results'\"$x")).unwrap();
    allowed(&mut results, "SELECT * FROM vote_counts");
    assert!(refused(&mut results, "SELECT * FROM votes").contains("permission denied"));

    // A missing secret stops it with the file's name.
    std::fs::remove_file(secrets.path().join("pg_worker_password")).unwrap();
    let out = run();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_worker_password"), "{err}");
}

#[test]
fn the_redis_containers_entrypoint_loads_the_same_users_from_secret_files() {
    common::require_program("redis-server", "redis-server");
    common::require_program("sha256sum", "coreutils");
    let dir = tempfile::tempdir().unwrap();
    for role in ["capture", "worker", "results", "admin"] {
        secret_file(
            dir.path(),
            &format!("redis_{role}_password"),
            &format!("file-{role}"),
        );
    }
    let port = common::free_port();
    let child = Proc::spawn(
        Command::new("sh")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/docker/redis-entrypoint.sh"
            ))
            .args([
                "redis-server",
                concat!(env!("CARGO_MANIFEST_DIR"), "/swarm/redis.conf"),
            ])
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .env("VOTESWARM_SECRETS_DIR", dir.path())
            .env("REDIS_ACL_FILE", dir.path().join("users.acl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = |user: &str| format!("redis://{user}:file-{user}@127.0.0.1:{port}/");
    let up = wait_until(Duration::from_secs(15), || {
        redis::Client::open(url("admin"))
            .and_then(|c| c.get_connection())
            .is_ok()
    });
    let send = |user: &str, args: &[&str]| -> String {
        let mut conn = redis::Client::open(url(user))
            .unwrap()
            .get_connection()
            .unwrap();
        match cmd(args).query::<redis::Value>(&mut conn) {
            Ok(_) => "OK".into(),
            Err(e) => e.to_string().to_uppercase(),
        }
    };
    let outcome = up.then(|| {
        (
            send("capture", &["XADD", "votes", "*", "id", "1"]),
            send(
                "capture",
                &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "votes", ">"],
            ),
            send("results", &["XLEN", "votes"]),
            std::fs::read_to_string(dir.path().join("users.acl")).unwrap(),
        )
    });
    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .and_then(|mut c| cmd(&["PING"]).query::<String>(&mut c));
    drop(child);
    let (xadd, xreadgroup, xlen, acl) =
        outcome.expect("redis-server came up through the entrypoint");
    assert_eq!(xadd, "OK");
    assert!(xreadgroup.contains("NOPERM"), "{xreadgroup}");
    assert_eq!(xlen, "OK");
    assert!(!acl.contains("file-"), "only verifiers are written:\n{acl}");
    assert!(
        anonymous.is_err(),
        "the default user answered: {anonymous:?}"
    );
}

#[test]
fn a_workers_acknowledgements_survive_a_redis_crash_with_the_users_on() {
    // Redis 7.0 replays a MULTI/EXEC from the append-only file under the
    // `default` user's command rights: with those taken away, every
    // acknowledgement (XACK + XDEL in one MULTI, src/actors/drainer.rs) was
    // dropped at restart, and its entries stayed in the stream for ever.
    let mut redis = RedisServer::start_with(&["--appendfsync", "always"]);
    let mut capture = redis::Client::open(redis.capture_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut worker = redis::Client::open(redis.worker_url())
        .unwrap()
        .get_connection()
        .unwrap();
    cmd(&["XGROUP", "CREATE", "votes", "workers", "0", "MKSTREAM"])
        .query::<()>(&mut worker)
        .unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            cmd(&["XADD", "votes", "*", "id", &i.to_string()])
                .query(&mut capture)
                .unwrap()
        })
        .collect();
    cmd(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        "w",
        "COUNT",
        "10",
        "STREAMS",
        "votes",
        ">",
    ])
    .query::<redis::Value>(&mut worker)
    .unwrap();
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("XACK")
        .arg("votes")
        .arg("workers")
        .arg(&ids)
        .ignore();
    pipe.cmd("XDEL").arg("votes").arg(&ids).ignore();
    pipe.query::<()>(&mut worker).unwrap();
    redis.stop();
    redis.restart();
    let mut admin = redis.conn();
    let len: i64 = cmd(&["XLEN", "votes"]).query(&mut admin).unwrap();
    assert_eq!(len, 0, "the XDELs of the transaction were replayed");
    let log = std::fs::read_to_string(redis.dir().join("redis.log")).unwrap();
    assert!(!log.contains("NOPERM"), "{log}");
}
