//! `cluster backup` and `cluster restore`: the count kept for the day after,
//! as a `pg_dump` custom-format archive of the cluster's database.
//!
//! Backup reads a running cluster (its PostgreSQL port and the superuser's
//! password from the data directory, the password through the pgpass file
//! `cluster up` writes, never a command line). The archive and the voter
//! count it reports come from one snapshot (`pg_dump --snapshot`), so the
//! summary says what the file holds even while votes keep coming. The file
//! appears whole or not at all: written aside, fsynced, renamed.
//!
//! Restore needs the cluster stopped (it refuses a data directory in use):
//! it starts the data directory's own PostgreSQL alone (`initdb` first when
//! the directory is new), replaces the database's objects with the
//! archive's in one transaction, and stops it; the next `cluster up`
//! serves the restored count. A database that holds votes is replaced only
//! with `--force`: a restore must not silently throw a count away.

use std::path::{Path, PathBuf};

use diesel::{Connection, PgConnection, RunQueryDsl};

use super::postgres::{self, PgPasswords, PgRole};
use super::procs::{Proc, Spec};
use super::standby::{STANDBY_PORT_FILE, STANDBY_PROC};
use super::start::{psql_url, refuse_if_in_use, stable_port};
use super::{run_tool, ClusterError};

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

fn pg_error(doing: &str) -> impl FnOnce(diesel::result::Error) -> ClusterError + '_ {
    move |e| ClusterError::new(format!("{doing}: {e}"))
}

/// Voters in the database: one row of `votes` each (0 before the schema).
fn voters(conn: &mut PgConnection) -> Result<i64, ClusterError> {
    let has_table: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_class WHERE oid = to_regclass('public.votes')",
    )
    .get_result(conn)
    .map_err(pg_error("PostgreSQL"))?;
    if has_table.n == 0 {
        return Ok(0);
    }
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM votes")
        .get_result(conn)
        .map_err(pg_error("cannot count the votes"))?;
    Ok(c.n)
}

fn pg_tool(name: &str) -> Result<PathBuf, ClusterError> {
    postgres::pg_program(name).ok_or_else(|| super::missing(name, "postgresql-client"))
}

fn canonical(data_dir: &Path) -> Result<PathBuf, ClusterError> {
    data_dir.canonicalize().map_err(|e| {
        ClusterError::new(format!(
            "no cluster data directory at {}: {e}",
            data_dir.display()
        ))
    })
}

/// The running cluster's PostgreSQL port (the primary's, or the promoted
/// standby's) and superuser password, or why there is none to back up.
fn running_database(data_dir: &Path) -> Result<(u16, String), ClusterError> {
    let not_running = |why: &str| {
        ClusterError::new(format!(
            "the cluster in {} is not running ({why}): start it with `cluster up --data-dir {}` and back up again",
            data_dir.display(),
            data_dir.display()
        ))
    };
    let port_of = |file: &str| -> Option<u16> {
        std::fs::read_to_string(data_dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    let port = port_of("postgres.port")
        .ok_or_else(|| not_running("no postgres.port: it never started its own PostgreSQL"))?;
    let password = std::fs::read_to_string(
        data_dir
            .join("secrets")
            .join(PgRole::Superuser.secret_name()),
    )
    .map_err(|_| not_running("no PostgreSQL password in secrets/"))?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    let left = super::procs::left_by_earlier_run(&data_dir.join("run"));
    let alive = |proc_name: &str| {
        left.iter()
            .any(|(name, _, exited)| name == proc_name && !exited)
    };
    let mut ports = Vec::new();
    if alive("postgres") {
        ports.push(port);
    }
    if let Some(p) = port_of(STANDBY_PORT_FILE).filter(|_| alive(STANDBY_PROC)) {
        ports.push(p);
    }
    if ports.is_empty() {
        return Err(not_running("its PostgreSQL is not running"));
    }
    // Whichever takes writes: the primary, or the standby once promoted.
    // The dump then names that one server, so that it reads the snapshot
    // where it was taken.
    let url = crate::config::with_credentials(
        "DATABASE_URL",
        &postgres::hosts_url(PgRole::Superuser.user(), &ports),
        None,
        &password,
    )
    .expect("a plain URL takes credentials");
    #[derive(diesel::QueryableByName)]
    struct Port {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        port: i32,
    }
    let primary = PgConnection::establish(&url)
        .map_err(|e| e.to_string())
        .and_then(|mut c| {
            diesel::sql_query("SELECT inet_server_port() AS port")
                .get_result::<Port>(&mut c)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| not_running(&format!("its PostgreSQL does not answer: {e}")))?;
    let port = u16::try_from(primary.port).map_err(|_| not_running("no port"))?;
    Ok((port, password))
}

/// `cluster backup`: writes the archive and prints its one-line summary.
pub fn backup(data_dir: &Path, out: Option<&Path>) -> Result<(), ClusterError> {
    let data_dir = canonical(data_dir)?;
    let pg_dump = pg_tool("pg_dump")?;
    let (port, password) = running_database(&data_dir)?;
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => {
            let dir = data_dir.join("backups");
            std::fs::create_dir_all(&dir).map_err(ClusterError::io("create", &dir))?;
            dir.join(format!(
                "voteswarm-{}.dump",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ))
        }
    };
    let url = psql_url(&data_dir, port, &password)?;
    let mut conn = PgConnection::establish(&url).map_err(|e| {
        ClusterError::new(format!("cannot connect to the cluster's PostgreSQL: {e}"))
    })?;
    // The count and the dump see the same snapshot, held by this
    // transaction until pg_dump is done.
    diesel::sql_query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .map_err(pg_error("PostgreSQL"))?;
    let snapshot: Snapshot = diesel::sql_query("SELECT pg_export_snapshot() AS id")
        .get_result(&mut conn)
        .map_err(pg_error("cannot export a snapshot"))?;
    let voters = voters(&mut conn)?;

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .ok_or_else(|| ClusterError::new(format!("--out {} names no file", out.display())))?;
    let mut aside = name.to_owned();
    aside.push(format!(".tmp-{}", std::process::id()));
    let aside = dir.join(aside);
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .map_err(ClusterError::io("create", &aside))?
    };
    let written = file
        .try_clone()
        .map_err(ClusterError::io("write", &aside))
        .and_then(|stdout| {
            run_tool(
                std::process::Command::new(&pg_dump)
                    .args(["--format=custom", "--snapshot", &snapshot.id, "--dbname"])
                    .arg(&url)
                    .stdout(stdout),
                "pg_dump",
                || "pg_dump failed".into(),
            )
        });
    let _ = diesel::sql_query("COMMIT").execute(&mut conn);
    let result = written.and_then(|_| {
        file.sync_all()
            .and_then(|()| std::fs::rename(&aside, &out))
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(ClusterError::io("write", &out))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    result?;
    let bytes = std::fs::metadata(&out)
        .map_err(ClusterError::io("read", &out))?
        .len();
    println!("backup: {} ({bytes} bytes, {voters} voters)", out.display());
    Ok(())
}

/// `cluster restore`: the archive into the stopped (or new) cluster of
/// `data_dir`.
pub fn restore(data_dir: &Path, file: &Path, force: bool) -> Result<(), ClusterError> {
    let pg_restore = pg_tool("pg_restore")?;
    std::fs::File::open(file).map_err(ClusterError::io("read", file))?;
    // A file that is not an archive is refused before anything is touched.
    run_tool(
        std::process::Command::new(&pg_restore)
            .arg("--list")
            .arg(file),
        "pg_restore",
        || {
            format!(
                "{} is not a backup of `cluster backup` (pg_dump custom format)",
                file.display()
            )
        },
    )?;
    std::fs::create_dir_all(data_dir).map_err(ClusterError::io("create", data_dir))?;
    let data_dir = canonical(data_dir)?;
    refuse_if_in_use(&data_dir)
        .map_err(|e| ClusterError::new(format!("restore needs the cluster stopped: {e}")))?;
    // The PostgreSQL user must be able to reach its directory inside.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755));
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(ClusterError::io("create", &logs))?;
    // A lost primary's standby is the database to restore into, never a
    // fresh one made beside it.
    super::standby::adopt_standby(&data_dir)?;
    let passwords = PgPasswords::ensure(&data_dir.join("secrets"))?;
    let port = stable_port(&data_dir.join("postgres.port"))?;
    let spec: Spec = postgres::prepare(&data_dir.join("postgres"), port, &passwords)?;
    let mut server = Proc::new(
        "postgres",
        "postgres".into(),
        format!("127.0.0.1:{port}"),
        spec,
        &logs,
    );
    server.stop_signal = libc::SIGINT;
    server
        .start()
        .map_err(|e| ClusterError::new(e.to_string()))?;
    let restored = restore_into(&pg_restore, &data_dir, port, &passwords, file, force);
    let stopped = server.stop();
    let voters = restored?;
    log::info!("postgres stopped ({stopped})");
    println!(
        "restore: {} into {} ({voters} voters); `cluster up --data-dir {}` serves them",
        file.display(),
        data_dir.display(),
        data_dir.display()
    );
    Ok(())
}

/// With the server up: the refusal check, pg_restore, the voters restored.
fn restore_into(
    pg_restore: &Path,
    data_dir: &Path,
    port: u16,
    passwords: &PgPasswords,
    file: &Path,
    force: bool,
) -> Result<i64, ClusterError> {
    postgres::wait_ready_and_create(port, passwords)?;
    let url = psql_url(data_dir, port, passwords.password(PgRole::Superuser))?;
    let mut conn = PgConnection::establish(&url)
        .map_err(|e| ClusterError::new(format!("cannot connect to PostgreSQL: {e}")))?;
    let held = voters(&mut conn)?;
    if held > 0 && !force {
        return Err(ClusterError::new(format!(
            "the database in {} holds {held} voters' votes: restoring would replace them; \
             back them up first, or pass --force to replace them",
            data_dir.display()
        )));
    }
    // --clean replaces what the archive holds (an empty schema of an
    // earlier `cluster up`, or the votes with --force); one transaction, so
    // a failed restore leaves the database as it was.
    run_tool(
        std::process::Command::new(pg_restore)
            .args([
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--exit-on-error",
            ])
            .arg("--dbname")
            .arg(&url)
            .arg(file),
        "pg_restore",
        || "pg_restore failed, the database is as it was".into(),
    )?;
    voters(&mut conn)
}
