//! The store's synchronous standby (`cluster up --pg-standby`) and its
//! promotion.
//!
//! The standby is a second PostgreSQL in `DIR/postgres-standby`, made once
//! by `pg_basebackup` from the primary, streaming its WAL through the
//! physical slot [`STANDBY`]. The primary lists it in
//! `synchronous_standby_names` with `synchronous_commit = on`, so a
//! worker's COMMIT returns (and its XACK to Redis follows) only once the
//! standby has flushed that commit's WAL: a primary lost with its disk
//! loses no committed vote. The tiers' `DATABASE_URL` names both servers
//! with `target_session_attrs=read-write`, so libpq connects to whichever
//! takes writes, and the pools' check on checkout drops connections to a
//! dead one.
//!
//! The supervisor ([`Store::tend`]) promotes the standby (`pg_ctl
//! promote`) when the primary exits with its data directory gone, and from
//! then never starts that primary again: a fresh, empty read-write server
//! beside the promoted one would split the count. `cluster promote-standby`
//! promotes by hand (refused while the primary answers). A promoted
//! standby commits alone: nothing streams from it until the next
//! `cluster up --pg-standby`, which takes it as the primary
//! ([`adopt_standby`]) and makes a new standby from it.
//!
//! While the standby is not streaming, every commit waits for it: the
//! workers acknowledge nothing, their `/readyz` fails once a commit has
//! waited a few seconds, and the supervisor logs the change both ways.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};

use super::postgres::{self, PgPasswords, PgRole, STANDBY, STANDBY_SIGNAL};
use super::procs::Proc;
use super::ClusterError;

/// The standby's directory in the data dir, and its process's name.
pub const STANDBY_DIR: &str = "postgres-standby";
pub const STANDBY_PROC: &str = "pg-standby";
/// Where its port is kept across `cluster up`s.
pub const STANDBY_PORT_FILE: &str = "postgres-standby.port";
/// How often the supervisor asks the primary whether the standby streams.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long the standby may take to stream at start.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(60);

/// `pg_stat_replication`'s word for the standby: `sync` when commits wait
/// for it and it answers; `none` when it is not connected at all.
#[derive(diesel::QueryableByName)]
struct SyncState {
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
}

/// The standby as the primary sees it.
fn sync_state(conn: &mut PgConnection) -> Result<String, diesel::result::Error> {
    diesel::sql_query(format!(
        "SELECT coalesce((SELECT sync_state FROM pg_stat_replication \
         WHERE application_name = '{STANDBY}' AND state = 'streaming' LIMIT 1), 'none') AS state"
    ))
    .get_result::<SyncState>(conn)
    .map(|s| s.state)
}

/// A quick look, never a wait: the supervisor's thread asks.
fn watch_url(passwords: &PgPasswords, port: u16) -> String {
    format!(
        "{}?connect_timeout=2&options=-c%20statement_timeout%3D2000",
        passwords.url(PgRole::Superuser, port)
    )
}

/// Before the primary starts: when the primary's directory is gone and a
/// standby's is there (the primary was lost, promoted or not), the standby
/// becomes the primary, in the primary's place and on its own port, so
/// that `initdb` never makes an empty primary beside the votes. Refuses two
/// read-write copies.
pub fn adopt_standby(data_dir: &Path) -> Result<(), ClusterError> {
    let primary = data_dir.join("postgres");
    let standby = data_dir.join(STANDBY_DIR);
    if !standby.join("PG_VERSION").exists() {
        return Ok(());
    }
    let promoted = !standby.join(STANDBY_SIGNAL).exists();
    if primary.join("PG_VERSION").exists() {
        if promoted {
            return Err(ClusterError::new(format!(
                "{} and {} are both read-write copies of the database (the standby was promoted \
                 while the primary's directory stayed): keep the one with the newer votes, move \
                 the other away, and run `cluster up` again",
                primary.display(),
                standby.display()
            )));
        }
        return Ok(());
    }
    log::warn!(
        "{} is gone: the standby in {} takes its place as the primary{}",
        primary.display(),
        standby.display(),
        if promoted {
            " (it was promoted)"
        } else {
            ", promoted now"
        }
    );
    let _ = std::fs::remove_dir_all(&primary);
    std::fs::rename(&standby, &primary).map_err(ClusterError::io("move", &standby))?;
    // Without standby.signal it starts as a primary, after replaying
    // every WAL record it received.
    let signal = primary.join(STANDBY_SIGNAL);
    if signal.exists() {
        std::fs::remove_file(&signal).map_err(ClusterError::io("remove", &signal))?;
    }
    postgres::set_standby_keys(&primary, None)?;
    // `cluster promote-standby` held the old primary; the new one must be
    // restarted when it dies.
    let _ = std::fs::remove_file(data_dir.join("run").join("postgres.hold"));
    let port_file = data_dir.join(STANDBY_PORT_FILE);
    if port_file.exists() {
        let to = data_dir.join("postgres.port");
        std::fs::rename(&port_file, &to).map_err(ClusterError::io("move", &port_file))?;
    }
    Ok(())
}

/// With the primary up on `port`, before the standby starts: a standby
/// directory whose slot is gone cannot catch up (the primary may have
/// recycled the WAL it needs), so it is made again; a slot without a
/// standby directory is stale and dropped, for `pg_basebackup` to create it
/// anew. Without `wanted` (no `--pg-standby`), the slot is dropped so that
/// the primary stops keeping WAL for a standby that no longer runs.
pub fn prepare_slot(
    port: u16,
    passwords: &PgPasswords,
    dir: &Path,
    wanted: bool,
) -> Result<(), ClusterError> {
    #[derive(diesel::QueryableByName)]
    struct Slot {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        active: bool,
    }
    let mut conn = PgConnection::establish(&postgres::setup_url(
        &passwords.url(PgRole::Superuser, port),
    ))
    .map_err(|e| ClusterError::new(format!("PostgreSQL: {e}")))?;
    let slot: Option<Slot> = diesel::sql_query(format!(
        "SELECT active FROM pg_replication_slots WHERE slot_name = '{STANDBY}'"
    ))
    .load(&mut conn)
    .map_err(|e| ClusterError::new(format!("PostgreSQL: {e}")))?
    .into_iter()
    .next();
    let made = dir.join("PG_VERSION").exists();
    let drop = match (&slot, wanted, made) {
        (None, _, _) => false,
        (Some(_), false, _) => {
            log::warn!(
                "no --pg-standby: dropping the replication slot {STANDBY}, so the standby in {} \
                 falls behind for good (the next --pg-standby makes it anew)",
                dir.display()
            );
            true
        }
        (Some(_), true, false) => true,
        (Some(_), true, true) => false,
    };
    if let Some(Slot { active: true }) = slot.as_ref().filter(|_| drop) {
        return Err(ClusterError::new(format!(
            "the replication slot {STANDBY} is in use by a standby this cluster did not start: stop it first"
        )));
    }
    if drop {
        diesel::sql_query(format!("SELECT pg_drop_replication_slot('{STANDBY}')"))
            .execute(&mut conn)
            .map_err(|e| ClusterError::new(format!("cannot drop the slot {STANDBY}: {e}")))?;
    }
    if wanted && made && slot.is_none() {
        log::warn!(
            "the standby in {} has no replication slot on the primary: making it again",
            dir.display()
        );
        std::fs::remove_dir_all(dir).map_err(ClusterError::io("remove", dir))?;
    }
    Ok(())
}

/// Waits until the primary on `port` sees the standby streaming as its
/// synchronous standby.
pub fn wait_streaming(port: u16, passwords: &PgPasswords, log: &Path) -> Result<(), ClusterError> {
    let deadline = Instant::now() + STREAMING_TIMEOUT;
    let url = watch_url(passwords, port);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match PgConnection::establish(&url)
            .map_err(|e| e.to_string())
            .and_then(|mut c| sync_state(&mut c).map_err(|e| e.to_string()))
        {
            Ok(s) if s == "sync" => return Ok(()),
            Ok(s) => last = format!("sync_state {s}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(ClusterError::new(format!(
        "the standby did not stream to the primary within {} s ({last}); see {}",
        STREAMING_TIMEOUT.as_secs(),
        log.display()
    )))
}

/// What the supervisor keeps of the store's two servers.
pub struct Store {
    pub primary_dir: PathBuf,
    pub standby_dir: PathBuf,
    pub standby_port: u16,
    watch_url: String,
    /// The primary is out of `procs`: lost, never started again.
    retired: bool,
    /// The standby takes writes.
    promoted: bool,
    /// What the primary last said of the standby (`sync`, ...).
    state: Option<String>,
    next_check: Instant,
    conn: Option<PgConnection>,
}

impl Store {
    pub fn new(data_dir: &Path, port: u16, standby_port: u16, passwords: &PgPasswords) -> Store {
        Store {
            primary_dir: data_dir.join("postgres"),
            standby_dir: data_dir.join(STANDBY_DIR),
            standby_port,
            watch_url: watch_url(passwords, port),
            retired: false,
            promoted: false,
            state: Some("sync".into()),
            next_check: Instant::now() + WATCH_INTERVAL,
            conn: None,
        }
    }

    /// One look, before the supervisor restarts what died: the primary's
    /// death with its data directory gone (or the standby promoted by
    /// hand) retires it and promotes the standby; otherwise whether the
    /// standby still streams, logged when that changes.
    pub fn tend(&mut self, procs: &mut Vec<Proc>) {
        if !self.retired {
            let lost = !self.primary_dir.join("PG_VERSION").exists();
            let by_hand = !self.standby_dir.join(STANDBY_SIGNAL).exists();
            if let Some(i) = procs.iter().position(|p| p.name == "postgres") {
                if (lost || by_hand) && !procs[i].is_running() {
                    procs.remove(i);
                    self.next_check = Instant::now();
                    // Its pid file would name a process that is gone.
                    if let Some(run) = self.primary_dir.parent().map(|d| d.join("run")) {
                        let _ = std::fs::remove_file(run.join("postgres.pid"));
                    }
                    self.retired = true;
                    self.conn = None;
                    if by_hand {
                        self.promoted = true;
                        log::warn!(
                            "the standby was promoted (cluster promote-standby): postgres is not started again; \
                             127.0.0.1:{} takes the writes, alone (no synchronous standby)",
                            self.standby_port
                        );
                    } else {
                        log::error!(
                            "postgres exited and its data directory {} is gone: promoting the standby, \
                             never starting postgres again as an empty server",
                            self.primary_dir.display()
                        );
                    }
                }
            }
        }
        if self.retired && !self.promoted && Instant::now() >= self.next_check {
            match postgres::promote(&self.standby_dir) {
                Ok(()) => {
                    self.promoted = true;
                    log::warn!(
                        "standby promoted: 127.0.0.1:{} takes the writes, alone (no synchronous \
                         standby: a loss of its disk now loses what it holds); the tiers reconnect \
                         by themselves (target_session_attrs=read-write)",
                        self.standby_port
                    );
                }
                Err(e) => {
                    log::error!("{e}; trying again");
                    self.next_check = Instant::now() + WATCH_INTERVAL;
                }
            }
            return;
        }
        if !self.retired && Instant::now() >= self.next_check {
            self.next_check = Instant::now() + WATCH_INTERVAL;
            self.watch();
        }
    }

    fn watch(&mut self) {
        if self.conn.is_none() {
            self.conn = PgConnection::establish(&self.watch_url).ok();
        }
        let Some(conn) = &mut self.conn else {
            return; // The primary is down: its restart is logged.
        };
        let state = match sync_state(conn) {
            Ok(s) => s,
            Err(_) => {
                self.conn = None;
                return;
            }
        };
        if self.state.as_deref() == Some(state.as_str()) {
            return;
        }
        if state == "sync" {
            log::info!("the standby streams again (sync): commits go on");
        } else {
            log::warn!(
                "the standby is not streaming (sync_state: {state}): every commit waits for it, so \
                 the workers acknowledge nothing until it streams again (logs/{STANDBY_PROC}.log)"
            );
        }
        self.state = Some(state);
    }
}

/// `cluster promote-standby`: promotes the standby of the cluster in
/// `data_dir` by hand, refused while its primary answers (two read-write
/// servers would split the count). A running `cluster up` then never
/// starts the old primary again.
pub fn promote_by_hand(data_dir: &Path) -> Result<(), ClusterError> {
    let standby = data_dir.join(STANDBY_DIR);
    if !standby.join(STANDBY_SIGNAL).exists() {
        return Err(ClusterError::new(format!(
            "no standby to promote in {} (not made with --pg-standby, or already promoted)",
            standby.display()
        )));
    }
    if let Some(port) = std::fs::read_to_string(data_dir.join("postgres.port"))
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
    {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Err(ClusterError::new(format!(
                "the primary still answers on 127.0.0.1:{port}: promoting the standby would make two \
                 read-write servers; stop the primary first (or let the cluster promote when it is lost)"
            )));
        }
    }
    // A `cluster up` running on this data dir must not restart the primary
    // meanwhile (its hold file); its supervisor then retires it for good.
    let hold = data_dir.join("run").join("postgres.hold");
    if data_dir.join("run").is_dir() {
        std::fs::write(&hold, "").map_err(ClusterError::io("write", &hold))?;
    }
    postgres::promote(&standby)?;
    println!(
        "promote-standby: {} takes the writes, alone (no synchronous standby until the next \
         `cluster up --pg-standby`)",
        standby.display()
    );
    Ok(())
}
