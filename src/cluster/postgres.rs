//! The cluster's own PostgreSQL: `initdb` once in the data directory, then
//! `postgres` as a supervised child on a loopback port. PostgreSQL refuses
//! to run as root, so when we are root it runs as the `postgres` user
//! (created by Debian's `postgresql` package).
//!
//! Least privilege as in every deployment (`docs/SECURITY.md`): password
//! authentication only (`scram-sha-256`, also on the Unix socket), the
//! superuser's and each role's password generated into the secrets
//! directory ([`PgPasswords`]), and the roles made by the same SQL the
//! postgres container runs at its first start (`docker/postgres-roles.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::procs::Spec;
use super::ClusterError;

/// The database the cluster creates and the tiers use.
pub const DATABASE: &str = "voteswarm";
/// The superuser: only the cluster itself (roles, the database) and
/// operators' look inside use it.
pub const SUPERUSER: &str = "postgres";
/// The roles' SQL lives in the container's init script, between markers.
const ROLES_SCRIPT: &str = include_str!("../../docker/postgres-roles.sh");

/// A PostgreSQL login of voteswarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgRole {
    Superuser,
    /// Owns the database and the schema: `worker --migrate`.
    Migrator,
    /// SELECT, INSERT, UPDATE on `votes` and `vote_counts`.
    Worker,
    /// SELECT on `vote_counts`.
    Results,
}

impl PgRole {
    pub fn user(self) -> &'static str {
        match self {
            PgRole::Superuser => SUPERUSER,
            PgRole::Migrator => "voteswarm_migrator",
            PgRole::Worker => "voteswarm_worker",
            PgRole::Results => "voteswarm_results",
        }
    }

    /// The secret's file name, as in the deployments.
    pub fn secret_name(self) -> &'static str {
        match self {
            PgRole::Superuser => "pg_postgres_password",
            PgRole::Migrator => "pg_migrator_password",
            PgRole::Worker => "pg_worker_password",
            PgRole::Results => "pg_results_password",
        }
    }
}

/// Every PostgreSQL login's password, from (or made in) a directory.
#[derive(Clone)]
pub struct PgPasswords {
    pub dir: PathBuf,
    passwords: [String; 4],
}

impl PgPasswords {
    const ROLES: [PgRole; 4] = [
        PgRole::Superuser,
        PgRole::Migrator,
        PgRole::Worker,
        PgRole::Results,
    ];

    pub fn ensure(dir: &Path) -> Result<PgPasswords, ClusterError> {
        let mut passwords: [String; 4] = Default::default();
        for (i, r) in Self::ROLES.iter().enumerate() {
            passwords[i] = super::secrets::ensure(dir, r.secret_name())?;
        }
        Ok(PgPasswords {
            dir: dir.to_path_buf(),
            passwords,
        })
    }

    pub fn password(&self, role: PgRole) -> &str {
        let i = Self::ROLES.iter().position(|r| *r == role).expect("a role");
        &self.passwords[i]
    }

    /// Where a tier's `DATABASE_PASSWORD_FILE` points.
    pub fn file(&self, role: PgRole) -> PathBuf {
        self.dir.join(role.secret_name())
    }

    /// `postgres://role:password@127.0.0.1:port/voteswarm`.
    pub fn url(&self, role: PgRole, port: u16) -> String {
        self.url_to(role, port, DATABASE)
    }

    fn url_to(&self, role: PgRole, port: u16, db: &str) -> String {
        crate::config::with_credentials(
            "DATABASE_URL",
            &format!("postgres://{}@127.0.0.1:{port}/{db}", role.user()),
            None,
            self.password(role),
        )
        .expect("a plain URL takes credentials")
    }

    /// The init script's SQL with these passwords as its psql variables.
    fn roles_sql(&self) -> String {
        let sql = ROLES_SCRIPT
            .split_once("-- BEGIN ROLES\n")
            .and_then(|(_, rest)| rest.split_once("-- END ROLES"))
            .map(|(sql, _)| sql)
            .expect("docker/postgres-roles.sh holds the SQL between its markers");
        let mut sql = sql.to_owned();
        for role in [PgRole::Migrator, PgRole::Worker, PgRole::Results] {
            let var = format!(":'{}_password'", &role.user()["voteswarm_".len()..]);
            let literal = format!("'{}'", self.password(role).replace('\'', "''"));
            sql = sql.replace(&var, &literal);
        }
        sql
    }
}
/// `postgres://user@127.0.0.1:PORT/voteswarm`, no password; with several
/// ports (a primary and its standby), libpq's multi-host form asking for
/// the one that takes writes, so that a client finds a promoted standby
/// by itself.
pub fn hosts_url(user: &str, ports: &[u16]) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    // A host that hangs (frozen, cut off) must not hold a connection
    // attempt for the kernel's minutes: on to the next one.
    let attrs = if ports.len() > 1 {
        "?target_session_attrs=read-write&connect_timeout=5"
    } else {
        ""
    };
    format!("postgres://{user}@{}/{DATABASE}{attrs}", hosts.join(","))
}

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
pub fn prepare(dir: &Path, port: u16, passwords: &PgPasswords) -> Result<Spec, ClusterError> {
    let initdb = pg_program("initdb").ok_or_else(|| super::missing("initdb", "postgresql"))?;
    let postgres =
        pg_program("postgres").ok_or_else(|| super::missing("postgres", "postgresql"))?;
    let user = run_as()?;
    let fresh = !dir.join("PG_VERSION").exists();
    std::fs::create_dir_all(dir).map_err(ClusterError::io("create", dir))?;
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
        // The superuser's password in a file of its own that only the
        // server user can read (it cannot read our secrets directory, nor
        // reopen a pipe of ours), removed after; never on a command line.
        let pwdir = tempfile::Builder::new()
            .prefix("voteswarm-initdb-")
            .tempdir()
            .map_err(|e| ClusterError::new(format!("cannot make a temporary directory: {e}")))?;
        let pwfile = pwdir.path().join("pwfile");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)
                .and_then(|mut f| writeln!(f, "{}", passwords.password(PgRole::Superuser)))
                .map_err(|e| {
                    ClusterError::new(format!("cannot write {}: {e}", pwfile.display()))
                })?;
        }
        if let Some(u) = &user {
            chown_tree(pwdir.path(), u)?;
        }
        let mut spec = Spec::new(&initdb)
            .arg("-D")
            .arg(dir.display().to_string())
            .arg("-U")
            .arg(SUPERUSER)
            .arg("--auth=scram-sha-256")
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-E")
            .arg("UTF8")
            .arg("--no-instructions");
        spec.run_as = user.as_ref().map(|u| u.name.clone());
        super::run_tool(&mut spec.command(), "initdb", || "initdb failed".into())?;
    }
    let hba = std::fs::read_to_string(dir.join("pg_hba.conf")).unwrap_or_default();
    if hba
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.split_whitespace().any(|w| w == "trust"))
    {
        return Err(ClusterError::new(format!(
            "{} was made by an older voteswarm with `trust` authentication (no passwords): \
             move that data directory away or delete it, and `cluster up` makes a new one",
            dir.display()
        )));
    }
    replication_hba(dir)?;
    Ok(server(&postgres, dir, port, user))
}

/// `postgres` on `dir`, listening on loopback `port`; the same for the
/// primary and the standby (a hot standby needs at least the primary's
/// `max_connections`).
fn server(postgres: &Path, dir: &Path, port: u16, user: Option<PgUser>) -> Spec {
    let mut spec = Spec::new(postgres)
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
    spec
}

/// The standby's name: its walreceiver's `application_name` (which the
/// primary's `synchronous_standby_names` lists) and its replication slot.
pub const STANDBY: &str = "voteswarm_standby";
/// The login the standby streams with: REPLICATION, nothing else.
pub const REPLICATOR: &str = "voteswarm_replicator";
/// Its password's secret file.
pub const REPLICATOR_SECRET: &str = "pg_replication_password";
/// A standby made by `pg_basebackup` holds this file until it is promoted.
pub const STANDBY_SIGNAL: &str = "standby.signal";
/// What `postgresql.auto.conf` says about the primary a standby streams
/// from: rewritten at every start, so the password follows its file.
const STANDBY_KEYS: [&str; 2] = ["primary_conninfo", "primary_slot_name"];

/// Replication connections come from the standby, on loopback, as the
/// replicator only: initdb's defaults (any role, local socket, `::1`) are
/// replaced. The standby's copy (by `pg_basebackup`) says the same.
fn replication_hba(dir: &Path) -> Result<(), ClusterError> {
    let path = dir.join("pg_hba.conf");
    let hba = std::fs::read_to_string(&path).map_err(ClusterError::io("read", &path))?;
    let ours = format!("host replication {REPLICATOR} 127.0.0.1/32 scram-sha-256");
    let mut lines: Vec<&str> = hba
        .lines()
        .filter(|l| {
            l.trim_start().starts_with('#') || l.split_whitespace().nth(1) != Some("replication")
        })
        .collect();
    lines.push(&ours);
    let tightened = lines.join("\n") + "\n";
    if tightened != hba {
        std::fs::write(&path, tightened).map_err(ClusterError::io("write", &path))?;
    }
    Ok(())
}

/// A value inside a libpq connection string (`key='value'`).
fn conninfo_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Makes the standby in `dir` unless it exists (`pg_basebackup` from the
/// primary on `primary_port`, creating the slot [`STANDBY`] as it copies,
/// so that the primary keeps every WAL segment the standby has yet to
/// receive), points it at the primary and returns the spec that runs it on
/// `port`. The primary must be up, with the replicator's login
/// ([`ensure_replicator`]) and no slot of that name.
pub fn prepare_standby(
    dir: &Path,
    primary_port: u16,
    port: u16,
    password: &str,
) -> Result<Spec, ClusterError> {
    let postgres =
        pg_program("postgres").ok_or_else(|| super::missing("postgres", "postgresql"))?;
    let basebackup =
        pg_program("pg_basebackup").ok_or_else(|| super::missing("pg_basebackup", "postgresql"))?;
    let user = run_as()?;
    if !dir.join("PG_VERSION").exists() {
        // pg_basebackup takes an empty directory; the server user makes
        // nothing in the data dir itself (it is ours).
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(ClusterError::io("create", dir))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Some(u) = &user {
            chown_tree(dir, u)?;
        }
        // The password through the environment, never the command line.
        let mut spec = Spec::new(&basebackup)
            .arg("-D")
            .arg(dir.display().to_string())
            .args(["-h", "127.0.0.1", "-p"])
            .arg(primary_port.to_string())
            .args(["-U", REPLICATOR, "-X", "stream", "--checkpoint=fast"])
            .args(["--create-slot", "--slot", STANDBY, "--no-password"])
            .env("PGPASSWORD", password);
        spec.run_as = user.as_ref().map(|u| u.name.clone());
        super::run_tool(&mut spec.command(), "pg_basebackup", || {
            format!("pg_basebackup of the standby into {} failed", dir.display())
        })?;
        let signal = dir.join(STANDBY_SIGNAL);
        std::fs::write(&signal, "").map_err(ClusterError::io("write", &signal))?;
    }
    let conninfo = format!(
        "host=127.0.0.1 port={primary_port} user={REPLICATOR} password={} application_name={STANDBY}",
        conninfo_quote(password)
    );
    set_standby_keys(dir, Some((&conninfo, STANDBY)))?;
    if let Some(u) = &user {
        for file in [STANDBY_SIGNAL, "postgresql.auto.conf"] {
            chown_tree(&dir.join(file), u)?;
        }
    }
    Ok(server(&postgres, dir, port, user))
}

/// Rewrites [`STANDBY_KEYS`] in `dir/postgresql.auto.conf`: to stream from
/// `conninfo` through `slot`, or (`None`) to none, for a promoted standby
/// that is now the primary.
pub fn set_standby_keys(dir: &Path, standby: Option<(&str, &str)>) -> Result<(), ClusterError> {
    let path = dir.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut out: String = text
        .lines()
        .filter(|l| !STANDBY_KEYS.iter().any(|k| l.trim_start().starts_with(k)))
        .map(|l| format!("{l}\n"))
        .collect();
    if let Some((conninfo, slot)) = standby {
        let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
        out.push_str(&format!(
            "primary_conninfo = {}\nprimary_slot_name = {}\n",
            quote(conninfo),
            quote(slot)
        ));
    }
    if out != text {
        // 0600 like the rest of the data dir: it holds the password.
        super::secrets::write_private(&path, &out, false)?;
    }
    Ok(())
}

/// `pg_ctl promote` on the standby in `dir`: it replays what it received,
/// leaves recovery and takes writes. Returns once it does.
pub fn promote(dir: &Path) -> Result<(), ClusterError> {
    let pg_ctl = pg_program("pg_ctl").ok_or_else(|| super::missing("pg_ctl", "postgresql"))?;
    let mut spec = Spec::new(&pg_ctl)
        .arg("promote")
        .arg("-w")
        .arg("-t")
        .arg(READY_TIMEOUT.as_secs().to_string())
        .arg("-D")
        .arg(dir.display().to_string());
    spec.run_as = run_as()?.map(|u| u.name);
    super::run_tool(&mut spec.command(), "pg_ctl", || {
        format!("pg_ctl promote of the standby in {} failed", dir.display())
    })?;
    Ok(())
}

/// Waits until the server takes connections, then creates the database
/// unless it exists, and the roles (again each time: the passwords follow
/// the files).
pub fn wait_ready_and_create(port: u16, passwords: &PgPasswords) -> Result<(), ClusterError> {
    use diesel::RunQueryDsl;
    let deadline = Instant::now() + READY_TIMEOUT;
    let admin = passwords.url_to(PgRole::Superuser, port, "postgres");
    let mut conn = loop {
        match setup_connection(&admin) {
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
    let mut db = setup_connection(&passwords.url(PgRole::Superuser, port))
        .map_err(|e| ClusterError::new(format!("PostgreSQL: {e}")))?;
    diesel::connection::SimpleConnection::batch_execute(&mut db, &passwords.roles_sql())
        .map_err(|e| ClusterError::new(format!("cannot make the roles: {e}")))?;
    Ok(())
}

/// `url` for the cluster's own setup (the database, the roles, the
/// migrations): its commits do not wait for the synchronous standby, which
/// is made from this very primary only after them. Each is made again at
/// every start, so one lost with the primary before the standby copied it
/// costs nothing.
pub fn setup_url(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20synchronous_commit%3Dlocal")
}

fn setup_connection(url: &str) -> diesel::ConnectionResult<diesel::PgConnection> {
    use diesel::Connection;
    diesel::PgConnection::establish(&setup_url(url))
}

/// The standby's login: REPLICATION and nothing else, with the password of
/// `DIR/secrets/pg_replication_password` (made or reset here).
pub fn ensure_replicator(port: u16, passwords: &PgPasswords) -> Result<String, ClusterError> {
    use diesel::connection::SimpleConnection;
    let password = super::secrets::ensure(&passwords.dir, REPLICATOR_SECRET)?;
    let mut db = setup_connection(&passwords.url(PgRole::Superuser, port))
        .map_err(|e| ClusterError::new(format!("PostgreSQL: {e}")))?;
    db.batch_execute(&format!(
        "SET password_encryption = 'scram-sha-256';
         DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{REPLICATOR}') THEN
                 CREATE ROLE {REPLICATOR};
             END IF;
         END $$;
         ALTER ROLE {REPLICATOR} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '{}';",
        password.replace('\'', "''")
    ))
    .map_err(|e| ClusterError::new(format!("cannot make the replication role: {e}")))?;
    Ok(password)
}
