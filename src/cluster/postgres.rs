//! The cluster's own PostgreSQL: `initdb` once in the data directory, then
//! `postgres` as a supervised child on a loopback port. PostgreSQL refuses
//! to run as root, so when we are root it runs as the `postgres` user
//! (created by Debian's `postgresql` package).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::procs::Spec;
use super::ClusterError;

/// The database the cluster creates and the tiers use.
pub const DATABASE: &str = "voteswarm";
/// A fresh PostgreSQL on a loaded 2-core machine can take a while.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server program: the highest installed version's
/// directory first (Debian keeps them out of PATH), then PATH.
pub fn pg_program(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let p = e.path().join("bin").join(name);
            p.is_file().then_some((v, p))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .or_else(|| super::on_path(name))
}

/// The unprivileged user PostgreSQL runs as when we are root.
pub struct PgUser {
    pub name: String,
    uid: u32,
    gid: u32,
}

/// Who PostgreSQL runs as: ourselves (`None`), or `postgres` when we are
/// root.
pub fn run_as() -> Result<Option<PgUser>, ClusterError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam with a valid C string; the record is read at once,
    // before any other passwd call could overwrite it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(ClusterError::new(
            "running as root, PostgreSQL needs an unprivileged `postgres` user: apt-get install postgresql creates it",
        ));
    }
    // SAFETY: pw is non-null.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some(PgUser {
        name: "postgres".into(),
        uid,
        gid,
    }))
}

fn chown_tree(path: &Path, user: &PgUser) -> Result<(), ClusterError> {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(path)
        .status()
        .map_err(|e| ClusterError::new(format!("chown {}: {e}", path.display())))?;
    if !status.success() {
        return Err(ClusterError::new(format!(
            "chown {} failed",
            path.display()
        )));
    }
    Ok(())
}

/// Creates the cluster in `dir` unless it exists; returns the spec that
/// runs the server on `port`.
pub fn prepare(dir: &Path, port: u16) -> Result<Spec, ClusterError> {
    let initdb = pg_program("initdb").ok_or_else(|| super::missing("initdb", "postgresql"))?;
    let postgres =
        pg_program("postgres").ok_or_else(|| super::missing("postgres", "postgresql"))?;
    let user = run_as()?;
    let fresh = !dir.join("PG_VERSION").exists();
    std::fs::create_dir_all(dir)
        .map_err(|e| ClusterError::new(format!("cannot create {}: {e}", dir.display())))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Some(u) = &user {
        chown_tree(dir, u)?;
        let u = &u.name;
        // The server user must be able to reach the directory.
        let reachable = Command::new("setpriv")
            .args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
                "--",
                "test",
                "-w",
            ])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !reachable {
            return Err(ClusterError::new(format!(
                "user {u} cannot write {}: make its parent directories searchable (chmod o+x) or choose another --data-dir",
                dir.display()
            )));
        }
    }
    if fresh {
        let mut spec = Spec::new(&initdb)
            .arg("-D")
            .arg(dir.display().to_string())
            .arg("-U")
            .arg("postgres")
            .arg("--auth=trust")
            .arg("-E")
            .arg("UTF8")
            .arg("--no-instructions");
        spec.run_as = user.as_ref().map(|u| u.name.clone());
        let out = spec
            .command()
            .output()
            .map_err(|e| ClusterError::new(format!("cannot run initdb: {e}")))?;
        if !out.status.success() {
            return Err(ClusterError::new(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let mut spec = Spec::new(&postgres)
        .arg("-D")
        .arg(dir.display().to_string())
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir.display().to_string())
        .arg("-c")
        .arg("listen_addresses=127.0.0.1")
        .arg("-c")
        .arg("max_connections=200");
    spec.run_as = user.map(|u| u.name);
    Ok(spec)
}

pub fn admin_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

pub fn database_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}")
}

/// Waits until the server takes connections, then creates the database
/// unless it exists.
pub fn wait_ready_and_create(port: u16) -> Result<(), ClusterError> {
    use diesel::{Connection, RunQueryDsl};
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut conn = loop {
        match diesel::PgConnection::establish(&admin_url(port)) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                return Err(ClusterError::new(format!(
                    "PostgreSQL did not come up: {e}"
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Exists = diesel::sql_query(format!(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{DATABASE}') AS exists"
    ))
    .get_result(&mut conn)
    .map_err(|e| ClusterError::new(format!("PostgreSQL: {e}")))?;
    if !found.exists {
        diesel::sql_query(format!("CREATE DATABASE {DATABASE}"))
            .execute(&mut conn)
            .map_err(|e| ClusterError::new(format!("cannot create database {DATABASE}: {e}")))?;
    }
    Ok(())
}
