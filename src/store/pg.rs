//! PostgreSQL as the store, shared by many stateless engram nodes.
//!
//! Owns: connecting (one writer connection per node, an r2d2 pool of read
//! connections), the PostgreSQL schema and its migrations, the monthly
//! partitions of the change log, the audit trail and events, and reconnecting
//! with exponential backoff and jitter when the server goes away.
//!
//! Writes keep sqlite's guarantees. Every node has one writer thread doing
//! group commit (`writer.rs`), and every write transaction first takes one
//! transaction-scoped advisory lock (`Conn::begin_write`). So transactions
//! commit one at a time across all nodes, change numbers are handed out in
//! commit order, and a reader that has seen change `n` has seen every change
//! below it: catching up by sequence never skips a change that commits late.
//! The cost is that writes do not run in parallel across nodes; group commit
//! amortises the lock and the fsync over every write waiting on a node.
//! `synchronous_commit` is left at the server's setting (on by default): a
//! write is acknowledged once its commit is durable.
//!
//! Must not: be seen outside `store`; no PostgreSQL type leaves it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::follow::{self, Follower};
use super::sql::{Conn, Database, PgConn};
use super::writer::{self, ChangeListener};
use super::{Store, StoreError, migrations, reader};
use crate::config::Config;
use crate::model::now_micros;

/// (version, name, SQL). Append only, as sqlite's list.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "schema", include_str!("pg_schema.sql")),
    (2, "session handles", include_str!("pg_handles.sql")),
];

/// Tables partitioned by month, and the column they are partitioned by.
const PARTITIONED: [&str; 3] = ["changes", "audit", "events"];

/// How long a node waits for a connection to PostgreSQL (connect, or a free
/// read connection in the pool) before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive probes start after this much silence on a connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Data unacknowledged this long closes the connection (Linux).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// PostgreSQL ends a session idle this long inside a transaction, releasing
/// its locks (the write lock among them). engram's transactions never wait on
/// anything but the database.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(60);
/// Waits between reconnect attempts: doubled from the first to the last,
/// each with up to half again of random jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The session-level advisory lock migrations run under, so that nodes
/// starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 7_365_837;

/// Opens the PostgreSQL store at `url`: migrates it, makes this month's and
/// next month's partitions, starts the writer and the read pool.
pub(super) fn open(
    url: &str,
    config: &Config,
    listener: ChangeListener,
) -> Result<Store, StoreError> {
    let pg = parse(url)?;
    // The client blocks on a runtime of its own: not on one of tokio's threads.
    let (db, head) = std::thread::scope(|s| {
        s.spawn(|| {
            let db = connect_migrated(url)?;
            let head: i64 = db
                .conn()
                .value("SELECT coalesce(max(seq), 0) FROM changes", &[])?;
            Ok::<_, StoreError>((db, head))
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    let follower = Follower::new(listener, head);
    let listening = pg.clone();
    follow::listen(&follower, move || connect(&listening))?;
    let reconnect = Reconnect::new(pg.clone());
    let writer = writer::WriterHandle::start_with(
        writer::WriterConn::new(db),
        follower.writer_listener(),
        config.max_group_commit,
        Some(reconnect),
    )?;
    let pool = r2d2::Pool::builder()
        .max_size(config.max_read_connections.max(1) as u32)
        .min_idle(Some(0))
        .connection_timeout(CONNECT_TIMEOUT)
        .build_unchecked(Manager { config: pg });
    Ok(Store {
        writer,
        readers: Arc::new(reader::ReadPool::Postgres(PgPool::new(pool))),
        matcher: Arc::new(super::every_word),
        follower: Some(follower),
    })
}

/// The connection settings in a `postgres://` URL, with engram's timeouts.
fn parse(url: &str) -> Result<postgres::Config, StoreError> {
    let mut pg: postgres::Config = url.parse().map_err(|e| {
        StoreError::Unavailable(format!("the store URL does not parse as PostgreSQL's: {e}"))
    })?;
    pg.connect_timeout(CONNECT_TIMEOUT);
    // A server or node gone silent (no reset) is noticed in seconds, not
    // after the system's two-hour keepalive: a node that vanished holding the
    // write lock frees it, and its peers' writes do not queue behind it.
    pg.keepalives_idle(KEEPALIVE_IDLE);
    pg.tcp_user_timeout(TCP_USER_TIMEOUT);
    if pg.get_application_name().is_none() {
        pg.application_name("engram");
    }
    Ok(pg)
}

/// A connection to the database at `url`, its schema migrated and this
/// month's partitions made: what `engram migrate` and the command line use.
pub(super) fn connect_migrated(url: &str) -> Result<Database, StoreError> {
    let db = connect(&parse(url)?)?;
    migrate(db.conn())?;
    ensure_partitions(db.conn(), now_micros())?;
    Ok(db)
}

/// Runs the migrations not yet applied, under a lock other nodes wait on.
pub(super) fn migrate(conn: Conn<'_>) -> Result<(), StoreError> {
    conn.batch(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
    let out = migrations::apply(conn, MIGRATIONS);
    let unlocked = conn.batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
    out.and(unlocked)
}

fn connect(config: &postgres::Config) -> Result<Database, StoreError> {
    let mut client = config
        .connect(postgres::NoTls)
        .map_err(|e| StoreError::Unavailable(format!("cannot reach PostgreSQL: {e}")))?;
    settle(&mut client)?;
    Ok(Database::Postgres(Box::new(PgConn::new(client))))
}

/// Session settings every connection gets: set by statement, not as startup
/// options, which poolers such as PgBouncer refuse.
fn settle(client: &mut postgres::Client) -> Result<(), postgres::Error> {
    client.batch_execute(&format!(
        "SET idle_in_transaction_session_timeout = {}",
        IDLE_IN_TRANSACTION.as_millis()
    ))
}

/// The month (UTC) holding `micros`, as (year, month).
fn month_of(micros: i64) -> (i32, u32) {
    use chrono::Datelike;
    let t = crate::model::micros_to_datetime(micros);
    (t.year(), t.month())
}

/// The first microsecond of a month.
fn month_start((year, month): (i32, u32)) -> i64 {
    chrono::NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |t| t.and_utc().timestamp_micros())
}

fn next_month((year, month): (i32, u32)) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// Makes the partitions of the month holding `now` and of the month after, for
/// every partitioned table, if they are not there yet: each in a write
/// transaction of its own, so nodes do not race. A partition the default one
/// already holds rows for (a clock or an import far ahead) is left unmade,
/// with a warning: its rows stay in `<table>_default`, and writes go on.
pub(super) fn ensure_partitions(conn: Conn<'_>, now: i64) -> Result<(), StoreError> {
    let this = month_of(now);
    for month in [this, next_month(this)] {
        let (from, to) = (month_start(month), month_start(next_month(month)));
        for table in PARTITIONED {
            let name = format!("{table}_y{:04}m{:02}", month.0, month.1);
            let exists: bool = conn.value(
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = ?1)",
                &super::sql::args![name],
            )?;
            if exists {
                continue;
            }
            conn.begin_write()?;
            let made = conn.batch(&format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} \
                 FOR VALUES FROM ({from}) TO ({to})"
            ));
            conn.end(made.is_ok())?;
            match made {
                Err(StoreError::Postgres(e))
                    if e.code() == Some(&postgres::error::SqlState::CHECK_VIOLATION) =>
                {
                    tracing::warn!(
                        partition = %name,
                        "{table}_default holds rows of this month: the partition is not made \
                         (move them out of the default partition to make it): {}",
                        e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())
                    );
                }
                other => other?,
            }
        }
    }
    Ok(())
}

/// Reconnects the writer after PostgreSQL went away: at most one attempt per
/// backoff step, so writes queued meanwhile fail at once (and open the store's
/// breaker) instead of each waiting for a connect timeout.
pub(crate) struct Reconnect {
    config: postgres::Config,
    wait: Duration,
    next_try: Instant,
    /// The month whose partitions were last made.
    month: (i32, u32),
}

impl Reconnect {
    fn new(config: postgres::Config) -> Self {
        Reconnect {
            config,
            wait: BACKOFF_FIRST,
            next_try: Instant::now(),
            month: month_of(now_micros()),
        }
    }

    /// Called by the writer before each group: a new connection when the old
    /// one is gone (or `Err` saying why there is none yet), and next month's
    /// partitions when the month turned.
    pub(crate) fn ready(&mut self, db: &mut Database) -> Result<(), String> {
        if db.is_broken() {
            let now = Instant::now();
            if now < self.next_try {
                return Err(format!(
                    "PostgreSQL is unreachable; the next attempt to reconnect is in {} ms",
                    (self.next_try - now).as_millis()
                ));
            }
            match connect(&self.config) {
                Ok(fresh) => {
                    tracing::info!("writer reconnected to PostgreSQL");
                    *db = fresh;
                    self.wait = BACKOFF_FIRST;
                }
                Err(e) => {
                    self.next_try = Instant::now() + jittered(self.wait);
                    self.wait = (self.wait * 2).min(BACKOFF_MAX);
                    tracing::warn!(error = %e, "cannot reconnect to PostgreSQL");
                    return Err(e.to_string());
                }
            }
        }
        let month = month_of(now_micros());
        if month != self.month {
            ensure_partitions(db.conn(), now_micros()).map_err(|e| e.to_string())?;
            self.month = month;
        }
        Ok(())
    }
}

/// `wait` plus up to half of it again, at random: nodes that lost the
/// database together do not all come back at the same instant.
fn jittered(wait: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let _ = getrandom::fill(&mut byte);
    let share = f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX) / 2.0;
    wait + wait.mul_f64(share)
}

/// Opens connections to one database for the r2d2 pool.
pub(crate) struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Database;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Database, postgres::Error> {
        let mut client = self.config.connect(postgres::NoTls)?;
        settle(&mut client)?;
        Ok(Database::Postgres(Box::new(PgConn::new(client))))
    }

    fn is_valid(&self, conn: &mut Database) -> Result<(), postgres::Error> {
        match conn {
            Database::Postgres(p) => p.ping(),
            Database::Sqlite(_) => Ok(()),
        }
    }

    /// Closed, or still inside a transaction (its user panicked before the
    /// end): either way not fit to hand out again.
    fn has_broken(&self, conn: &mut Database) -> bool {
        conn.is_broken() || conn.conn().in_transaction()
    }
}

/// The read connections of a PostgreSQL store. While the server is
/// unreachable, reads fail at once instead of each waiting for a connection:
/// after a failed attempt the pool is "down" for a backoff (100 ms doubling
/// to 5 s, jittered), then one caller probes with a short wait.
pub(crate) struct PgPool {
    pool: r2d2::Pool<Manager>,
    down: std::sync::Mutex<Down>,
}

#[derive(Default)]
struct Down {
    /// Until when reads fail without trying; `None` while the server answers.
    until: Option<Instant>,
    wait: Duration,
}

/// How long a probe waits for a connection once the backoff has passed.
const PROBE_WAIT: Duration = Duration::from_millis(500);

impl PgPool {
    fn new(pool: r2d2::Pool<Manager>) -> Self {
        PgPool {
            pool,
            down: std::sync::Mutex::default(),
        }
    }

    /// `f` on a pooled connection (waiting for one, up to the pool's timeout).
    pub(crate) fn with_connection<T>(
        &self,
        f: impl FnOnce(Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let wait = {
            let down = self.down.lock().expect("pool state poisoned");
            match down.until {
                Some(until) if Instant::now() < until => {
                    return Err(StoreError::Unavailable(format!(
                        "PostgreSQL is unreachable; the next attempt is in {} ms",
                        (until - Instant::now()).as_millis()
                    )));
                }
                Some(_) => PROBE_WAIT,
                None => CONNECT_TIMEOUT,
            }
        };
        let conn = match self.pool.get_timeout(wait) {
            Ok(conn) => {
                self.down.lock().expect("pool state poisoned").until = None;
                conn
            }
            Err(e) => {
                let mut down = self.down.lock().expect("pool state poisoned");
                down.wait = if down.until.is_some() {
                    (down.wait * 2).min(BACKOFF_MAX)
                } else {
                    BACKOFF_FIRST
                };
                down.until = Some(Instant::now() + jittered(down.wait));
                return Err(StoreError::Unavailable(format!(
                    "no PostgreSQL connection: {e}"
                )));
            }
        };
        let out = f(conn.conn());
        if conn.is_broken() {
            // The server went away under this read: the next ones back off.
            let mut down = self.down.lock().expect("pool state poisoned");
            down.wait = BACKOFF_FIRST;
            down.until = Some(Instant::now() + jittered(BACKOFF_FIRST));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::args;

    #[test]
    fn a_month_the_default_partition_holds_is_left_unmade_and_writes_go_on() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pg-test");
        let cluster = engram_bench::postgres::Cluster::start(&root);
        let url = cluster.create_database("partitions");
        let db = connect_migrated(&url).unwrap();
        let conn = db.conn();
        // Three months ahead: no partition yet, so the row lands in the default one.
        let later = next_month(next_month(next_month(month_of(now_micros()))));
        let at = month_start(later) + 1;
        let audit = "INSERT INTO audit (namespace, at, operation, session_id, records) \
                     VALUES ('n', ?1, 'op', 's', '[]')";
        conn.execute(audit, &args![at]).unwrap();

        ensure_partitions(conn, at).unwrap();
        let exists = |name: String| -> bool {
            conn.value(
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = ?1)",
                &args![name],
            )
            .unwrap()
        };
        let name = |table: &str, (y, m): (i32, u32)| format!("{table}_y{y:04}m{m:02}");
        assert!(
            !exists(name("audit", later)),
            "the default partition holds its rows"
        );
        assert!(
            exists(name("events", later)),
            "the other tables' partitions are made"
        );
        assert!(
            exists(name("audit", next_month(later))),
            "and the month after"
        );
        conn.execute(audit, &args![at + 1]).unwrap();
        let held: i64 = conn
            .value("SELECT count(*) FROM audit_default", &[])
            .unwrap();
        assert_eq!(
            held, 2,
            "writes to that month go on, into the default partition"
        );
    }
}
