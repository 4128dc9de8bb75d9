//! PostgreSQL: the one pool type of the worker and the results node, the
//! embedded migrations, and every query the nodes run: the statement that
//! commits a batch of votes, the running totals, and the liveness check.
//! Queries are diesel's DSL over `crate::schema` (the tables of
//! `migrations/`), except the batch upsert, whose reason is beside it.

use std::time::Duration;

use diesel::dsl::sql_query;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel::{Connection, IntoSql, QueryDsl, QueryResult, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::VoteChanges;
use crate::schema::{node_counts, vote_counts};
use crate::vote::Vote;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Any number will do as long as every worker uses the same one: it
/// serialises `--migrate` across workers starting at once.
const MIGRATION_LOCK: i64 = 0x766f_7465_7377_6172; // "voteswar"

pub type DbPool = Pool<ConnectionManager<PgConnection>>;

/// A database error, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub message: String,
    /// Connection lost, server restarting, serialization failure: yes.
    /// A constraint violation by the data itself: no.
    pub retriable: bool,
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        let retriable = match &e {
            E::DatabaseError(
                K::UniqueViolation
                | K::CheckViolation
                | K::NotNullViolation
                | K::ForeignKeyViolation,
                _,
            ) => false,
            E::DatabaseError(
                K::UnableToSendCommand | K::ClosedConnection | K::SerializationFailure,
                _,
            ) => true,
            // Most other errors (the server going away mid-query shows up
            // as `Unknown`) may well pass on the next try; the drainer backs
            // off, so a permanent one costs log lines, not votes.
            _ => true,
        };
        DbError {
            message: e.to_string(),
            retriable,
        }
    }
}

impl From<diesel::r2d2::PoolError> for DbError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        DbError {
            message: format!("no database connection: {e}"),
            retriable: true,
        }
    }
}

/// A pool of at most `size` connections that is built even while
/// PostgreSQL is down (connections are made on demand), so a node starts
/// and waits rather than crashes; taking a connection gives up after
/// `connection_timeout`.
///
/// Every connection is pinged as it is taken: diesel calls a connection
/// broken only after a failed transaction, not after a failed statement,
/// so one to a server that died (a primary lost, its standby promoted) goes
/// back to the pool looking healthy. The ping drops it, and the new one
/// goes wherever `url` leads now (libpq's `target_session_attrs`).
pub fn pool(url: &str, size: u32, connection_timeout: Duration) -> DbPool {
    Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(0))
        .test_on_check_out(true)
        .connection_timeout(connection_timeout)
        .build_unchecked(ConnectionManager::new(url))
}

diesel::define_sql_function! {
    /// Waits for the session-level advisory lock `key`. PostgreSQL's
    /// result is `void`, which diesel has no type for: the call is only
    /// ever executed, never loaded.
    fn pg_advisory_lock(key: BigInt) -> Integer;
}

diesel::define_sql_function! {
    /// Releases what `pg_advisory_lock(key)` took.
    fn pg_advisory_unlock(key: BigInt) -> diesel::sql_types::Bool;
}

/// Applies the embedded migrations, one worker at a time.
pub fn migrate(url: &str) -> Result<Vec<String>, String> {
    let mut conn =
        PgConnection::establish(url).map_err(|e| format!("cannot connect to migrate: {e}"))?;
    diesel::select(pg_advisory_lock(MIGRATION_LOCK))
        .execute(&mut conn)
        .map_err(|e| format!("cannot take the migration lock: {e}"))?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|v| v.iter().map(|m| m.to_string()).collect())
        .map_err(|e| format!("migration failed: {e}"));
    let _ = diesel::select(pg_advisory_unlock(MIGRATION_LOCK)).execute(&mut conn);
    applied
}

/// Is the database answering? (`SELECT 1`.)
pub fn ping(conn: &mut PgConnection) -> QueryResult<()> {
    diesel::select(1_i32.into_sql::<Integer>()).execute(conn)?;
    Ok(())
}

/// A commit waits this long for a synchronous standby before `/readyz`
/// says so: every commit waits for one a little, under load.
pub const SYNC_WAIT_REPORTED: Duration = Duration::from_secs(5);

/// This role's commits that have waited longer than `SYNC_WAIT_REPORTED`
/// for a synchronous standby to confirm them (PostgreSQL's `SyncRep`
/// wait): the primary has them, their workers hold their acknowledgements
/// until the standby does. A role sees its own sessions' waits.
pub fn stalled_sync_commits(conn: &mut PgConnection) -> QueryResult<i64> {
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE wait_event = 'SyncRep' AND usename = current_user \
         AND now() - query_start > make_interval(secs => $1)",
    )
    .bind::<diesel::sql_types::Double, _>(SYNC_WAIT_REPORTED.as_secs_f64())
    .get_result::<Waiting>(conn)
    .map(|w| w.n)
}

/// The count per option, from the running totals in `vote_counts` that
/// triggers keep in the workers' own transactions (see its migration): a
/// few rows, however many voters.
pub fn vote_totals(conn: &mut PgConnection) -> QueryResult<Vec<(String, i64)>> {
    let rows = vote_counts::table
        .select((vote_counts::option, vote_counts::n))
        .load::<(String, i64)>(conn)?;
    Ok(add_up(rows))
}

/// The count per capture node (`votes.node`), from `node_counts`, kept
/// by the same triggers; in the order of the nodes' names.
pub fn node_totals(conn: &mut PgConnection) -> QueryResult<Vec<(String, i64)>> {
    let rows = node_counts::table
        .select((node_counts::node, node_counts::n))
        .load::<(String, i64)>(conn)?;
    let mut totals = add_up(rows);
    totals.sort();
    Ok(totals)
}

/// The rows (one per key and database session) added up per key here
/// rather than with SQL's `sum`, whose result over `bigint` is `numeric`,
/// which diesel reads only through a decimal crate the nodes do not
/// otherwise need. A key whose sessions' rows add up to 0 is left out.
fn add_up(rows: Vec<(String, i64)>) -> Vec<(String, i64)> {
    let mut totals: Vec<(String, i64)> = Vec::with_capacity(rows.len().min(16));
    for (key, n) in rows {
        match totals.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => *total += n,
            None => totals.push((key, n)),
        }
    }
    totals.retain(|(_, n)| *n != 0);
    totals
}

/// The statement of the design: insert each voter's vote, or replace the
/// stored one only when the new one is later (`allow`) or earlier (`deny`)
/// by `(ts, vote_id)`. Arrays keep it one statement with five parameters
/// whatever the batch size.
///
/// Raw SQL, the one query here that is not diesel's DSL: diesel writes
/// the conditional `ON CONFLICT ... DO UPDATE ... WHERE` itself, but its
/// `insert_into(..).values(..)` binds five parameters per row (10,000 for
/// a batch of 2,000, a new statement text for every batch size), and an
/// `INSERT ... SELECT` in its DSL selects from a table, not from
/// `unnest` of bound arrays.
fn upsert_sql(mode: VoteChanges) -> &'static str {
    match mode {
        VoteChanges::Allow => {
            "INSERT INTO votes (voter_id, option, ts, vote_id, node) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) \
             ON CONFLICT (voter_id) DO UPDATE SET option = excluded.option, ts = excluded.ts, \
             vote_id = excluded.vote_id, node = excluded.node, committed_at = now() \
             WHERE (votes.ts, votes.vote_id) < (excluded.ts, excluded.vote_id)"
        }
        VoteChanges::Deny => {
            "INSERT INTO votes (voter_id, option, ts, vote_id, node) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) \
             ON CONFLICT (voter_id) DO UPDATE SET option = excluded.option, ts = excluded.ts, \
             vote_id = excluded.vote_id, node = excluded.node, committed_at = now() \
             WHERE (votes.ts, votes.vote_id) > (excluded.ts, excluded.vote_id)"
        }
    }
}

/// Commits one batch (at most one vote per voter: see `Dedup`). Returns
/// the rows inserted or changed. Success means committed: the statement
/// runs in its own implicit transaction.
pub fn commit_votes(
    conn: &mut PgConnection,
    votes: &[Vote],
    mode: VoteChanges,
) -> Result<usize, DbError> {
    if votes.is_empty() {
        return Ok(0);
    }
    // Rows are locked in the order they are inserted. Batches of several
    // workers overlap (a voter's votes sit in several queues); taking the
    // locks in one global order means they wait for each other instead of
    // deadlocking.
    let mut votes: Vec<&Vote> = votes.iter().collect();
    votes.sort_unstable_by_key(|v| v.voter);
    // Both ids of every vote as hex, in one buffer the bound arrays borrow
    // from: `to_string()` went through the formatter and an allocation per
    // id, a twentieth of the worker's instructions (callgrind).
    let mut hex = Vec::with_capacity(votes.len() * 64);
    for v in &votes {
        hex.extend_from_slice(&v.voter.hex());
        hex.extend_from_slice(&v.vote_id.hex());
    }
    let hex = std::str::from_utf8(&hex).expect("hex digits are ASCII");
    let mut voters = Vec::with_capacity(votes.len());
    let mut options = Vec::with_capacity(votes.len());
    let mut tss = Vec::with_capacity(votes.len());
    let mut ids = Vec::with_capacity(votes.len());
    let mut nodes = Vec::with_capacity(votes.len());
    for (i, v) in votes.iter().enumerate() {
        voters.push(&hex[i * 64..i * 64 + 32]);
        options.push(v.option.as_str());
        tss.push(v.ts);
        ids.push(&hex[i * 64 + 32..i * 64 + 64]);
        nodes.push(v.node.as_str());
    }
    let n = sql_query(upsert_sql(mode))
        .bind::<Array<Text>, _>(voters)
        .bind::<Array<Text>, _>(options)
        .bind::<Array<BigInt>, _>(tss)
        .bind::<Array<Text>, _>(ids)
        .bind::<Array<Text>, _>(nodes)
        .execute(conn)?;
    Ok(n)
}
