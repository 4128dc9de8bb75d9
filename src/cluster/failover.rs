//! Failover of a capture node's queue in the local cluster: what the
//! supervisor does when a queue's `redis-server` exits and its data
//! directory is gone with it. On one machine a deleted directory is what
//! stands for a host lost with its disk (a terminated instance, a failed
//! volume); a Redis that exits with its directory in place is only
//! restarted, from its append-only file, as before.
//!
//! - A primary with a replica: the lost primary is never started again as
//!   a primary. Empty, it would be the master its replica connects to, and
//!   a replica full-syncs to an empty master, dropping every vote it holds.
//!   Its replica is promoted (`REPLICAOF NO ONE`; its config file no longer
//!   names a primary, so that a restart keeps it one). The workers list
//!   every queue server (`REDIS_URLS`) and drain a replica once it is
//!   promoted (`src/actors/drainer.rs`, standby), within about a second.
//!   Then the queue is rebuilt in the lost host's place: a fresh, empty
//!   Redis on the lost one's port and directory, as a replica of the
//!   promoted one (it copies from it, never the other way), so the workers'
//!   list stays true and `ACK_REPLICAS` can be met again. The capture node
//!   is started again against the promoted server: its `/readyz` fails,
//!   and HAProxy routes around it, until the fresh replica is in sync.
//!   Results is started again with the promoted server in its `REDIS_URLS`.
//! - A primary without a replica: nothing can be saved. The votes only it
//!   held are lost (the log says so); it starts again empty, in a new
//!   directory, so its capture node takes votes again.
//! - A replica lost with its disk starts again empty, copying from its
//!   primary.
//!
//! Every step is one log line saying what happened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::secrets::{self, RedisPasswords, RedisRole};
use super::{mkdir, queue_urls, Cluster, ClusterError};

/// How long a `REPLICAOF` may take to be answered: it only changes the
/// server's role (the copy, if any, happens afterwards, in the background).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// One capture node's queue: which of its servers takes the writes now.
#[derive(Clone, Debug)]
pub struct Queue {
    /// Its capture node (`capture02`), whose `REDIS_URL` names the primary.
    pub capture: String,
    /// The server capture writes to (`redis02`, or `redis02-r1` after a
    /// failover).
    pub primary: String,
    /// Its replicas, by name.
    pub replicas: Vec<String>,
    /// The primary was lost while no replica ran: it stays down, and the
    /// first replica that runs is promoted.
    pub orphaned: bool,
}

/// How a queue server's own config file is made: the shared settings,
/// then, for a replica, its primary and its login there.
#[derive(Clone)]
pub struct QueueConf {
    /// `swarm/redis.conf` as written in the data dir.
    pub include: PathBuf,
    pub passwords: RedisPasswords,
}

impl QueueConf {
    /// Writes `DIR/replica.conf` (0600) and returns its path. The login is
    /// the operator's user: replication needs PSYNC and REPLCONF, which no
    /// tier's user has. In a file of its own, not on the command line,
    /// where `ps` would show the password.
    pub fn write(&self, dir: &Path, primary: Option<u16>) -> Result<PathBuf, ClusterError> {
        let path = dir.join("replica.conf");
        let mut text = format!("include {}\n", self.include.display());
        if let Some(port) = primary {
            let admin = RedisRole::Admin;
            text.push_str(&format!(
                "replicaof 127.0.0.1 {port}\nmasteruser {}\nmasterauth {}\n",
                admin.user(),
                self.passwords.password(admin)
            ));
        }
        secrets::write_private(&path, &text, false)?;
        Ok(path)
    }

    /// `REPLICAOF NO ONE` (promote) or `REPLICAOF 127.0.0.1 PORT` (follow),
    /// as the operator's user, to the server on `port`.
    fn replicaof(&self, port: u16, primary: Option<u16>) -> Result<(), String> {
        let client = redis::Client::open(self.passwords.url(RedisRole::Admin, port))
            .map_err(|e| e.to_string())?;
        let mut conn = client
            .get_connection_with_timeout(COMMAND_TIMEOUT)
            .map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut cmd = redis::cmd("REPLICAOF");
        match primary {
            None => cmd.arg("NO").arg("ONE"),
            Some(p) => cmd.arg("127.0.0.1").arg(p),
        };
        cmd.query::<()>(&mut conn).map_err(|e| e.to_string())
    }
}

/// The port of a child's table address (`127.0.0.1:PORT`).
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

impl Cluster {
    fn proc_index(&self, name: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.name == name)
    }

    pub(super) fn port_of_proc(&self, name: &str) -> Option<u16> {
        port_of(&self.procs[self.proc_index(name)?].addr)
    }

    /// Whether `name` exited and its directory is gone: its host is lost.
    fn lost(&mut self, name: &str) -> bool {
        let dir = self.data_dir.join(name);
        match self.proc_index(name) {
            Some(i) => {
                let p = &mut self.procs[i];
                !p.is_retired() && !p.is_running() && !dir.exists()
            }
            None => false,
        }
    }

    /// One look at every queue, before the children that exited are
    /// restarted: a server lost with its disk is handled here instead.
    pub(super) fn tend_queues(&mut self) {
        for qi in 0..self.queues.len() {
            let q = self.queues[qi].clone();
            for replica in &q.replicas {
                if self.lost(replica) {
                    if let Err(e) = self.rebuild_replica(replica, &q.primary) {
                        log::error!("{replica}: cannot rebuild: {e}");
                    }
                }
            }
            if !q.orphaned && !self.lost(&q.primary) {
                continue;
            }
            let result = if q.replicas.is_empty() {
                self.restart_empty(&q.primary)
            } else {
                self.fail_over(qi)
            };
            if let Err(e) = result {
                log::error!("failover of {}: {e}", q.primary);
            }
        }
    }

    /// A replica lost with its disk: a new, empty directory; the restart
    /// that follows copies everything from its primary.
    fn rebuild_replica(&mut self, name: &str, primary: &str) -> Result<(), ClusterError> {
        let dir = self.data_dir.join(name);
        mkdir(&dir)?;
        self.queue_conf.write(&dir, self.port_of_proc(primary))?;
        log::warn!(
            "{name} exited and its data directory is gone (its host lost): starting it again empty, copying from {primary}"
        );
        Ok(())
    }

    /// A primary without a replica lost with its disk: what only it held
    /// is gone; it starts again empty so its capture node is usable.
    fn restart_empty(&mut self, name: &str) -> Result<(), ClusterError> {
        mkdir(&self.data_dir.join(name))?;
        log::error!(
            "{name} exited and its data directory is gone (its host lost), and it has no replica: the votes only it held are lost; starting it again empty"
        );
        Ok(())
    }

    /// Promotes queue `qi`'s first running replica and rebuilds the lost
    /// primary as its replica (this module's doc).
    fn fail_over(&mut self, qi: usize) -> Result<(), ClusterError> {
        let q = self.queues[qi].clone();
        let lost = q.primary.clone();
        let li = self
            .proc_index(&lost)
            .expect("a queue's servers are children");
        // Whatever follows, the lost one never starts again as a primary.
        self.procs[li].retire();
        let mut running = None;
        for (pos, r) in q.replicas.iter().enumerate() {
            if let Some(i) = self.proc_index(r) {
                if self.procs[i].is_running() {
                    running = Some(pos);
                    break;
                }
            }
        }
        let Some(pos) = running else {
            // A replica restarting now may run at the next look.
            if !q.orphaned {
                log::error!(
                    "{lost} exited and its data directory is gone, and no replica of it runs now: not starting it again; promoting a replica as soon as one runs"
                );
                self.queues[qi].orphaned = true;
            }
            return Ok(());
        };
        let promoted = q.replicas[pos].clone();
        let promoted_port = self
            .port_of_proc(&promoted)
            .ok_or_else(|| ClusterError::new(format!("no port for {promoted}")))?;
        log::warn!(
            "{lost} exited and its data directory is gone (its host lost): promoting its replica {promoted}"
        );
        // The file first: should the promoted server restart at any point
        // from here on, it comes back a primary, with its append-only file.
        self.queue_conf
            .write(&self.data_dir.join(&promoted), None)?;
        let pi = self.proc_index(&promoted).expect("a child");
        match self.queue_conf.replicaof(promoted_port, None) {
            Ok(()) => log::info!("{promoted} is the primary of queue {} now", q.capture),
            Err(e) => {
                log::error!(
                    "{promoted}: REPLICAOF NO ONE failed ({e}); restarting it, as a primary"
                );
                // The supervisor restarts what exits, from the new file.
                self.procs[pi].signal_stop();
            }
        }
        self.procs[pi].role = "redis";
        let mut replicas: Vec<String> = q.replicas.clone();
        replicas.remove(pos);
        for other in &replicas {
            let dir = self.data_dir.join(other);
            self.queue_conf.write(&dir, Some(promoted_port))?;
            if let Some(port) = self.port_of_proc(other) {
                match self.queue_conf.replicaof(port, Some(promoted_port)) {
                    Ok(()) => log::info!("{other} follows {promoted} now"),
                    Err(e) => log::warn!(
                        "{other}: REPLICAOF failed ({e}); it follows {promoted} from its next start"
                    ),
                }
            }
        }
        // The lost host's place: a fresh replica of the promoted server,
        // on the same port (the workers' REDIS_URLS name it) and in a new,
        // empty directory.
        let dir = self.data_dir.join(&lost);
        mkdir(&dir)?;
        let conf = self.queue_conf.write(&dir, Some(promoted_port))?;
        let p = &mut self.procs[li];
        // redis-server reads its config file only as its first argument
        // (`redis_spec` puts it there).
        p.spec.args[0] = conf.display().to_string();
        p.role = "replica";
        p.start()
            .map_err(|e| ClusterError::new(format!("cannot start {lost} again: {e}")))?;
        log::warn!(
            "{lost} started again empty in its place, as a replica of {promoted} (pid {})",
            p.pid().unwrap_or(0)
        );
        replicas.push(lost);
        self.queues[qi] = Queue {
            capture: q.capture.clone(),
            primary: promoted.clone(),
            replicas,
            orphaned: false,
        };
        self.repoint(&q.capture, promoted_port)
    }

    /// The capture node of a failed-over queue and results, started again
    /// with the promoted server's address (the workers need nothing: they
    /// list every server and follow the roles by themselves).
    fn repoint(&mut self, capture: &str, primary: u16) -> Result<(), ClusterError> {
        let url = format!("redis://127.0.0.1:{primary}");
        if let Some(i) = self.proc_index(capture) {
            let p = &mut self.procs[i];
            let status = p.stop();
            p.spec.set_env("REDIS_URL", url);
            p.start().map_err(|e| ClusterError::new(e.to_string()))?;
            log::warn!(
                "{capture} ({status}) started again on the promoted queue; ready once its new replica is in sync"
            );
        }
        let primaries: Vec<u16> = self
            .queues
            .iter()
            .filter_map(|q| self.port_of_proc(&q.primary))
            .collect();
        if let Some(i) = self.proc_index("results") {
            let p = &mut self.procs[i];
            p.stop();
            p.spec.set_env("REDIS_URLS", queue_urls(&primaries));
            p.start().map_err(|e| ClusterError::new(e.to_string()))?;
            log::info!("results started again with the promoted queue in REDIS_URLS");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_childs_port_is_read_from_its_table_address() {
        assert_eq!(super::port_of("127.0.0.1:6379"), Some(6379));
        assert_eq!(super::port_of("127.0.0.1:9 (metrics)"), None);
    }
}
