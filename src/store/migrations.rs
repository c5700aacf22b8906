//! Numbered, checksummed, idempotent schema migrations, run at every start.
//!
//! A migration that was applied is never edited: its checksum is recorded, and a
//! start that finds a different text for an applied number refuses to continue.

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::StoreError;
use super::sql::{Conn, Dialect, args};

/// (version, name, SQL). Append only.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "change log and episodic events",
        r#"
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    record_id  TEXT    NOT NULL,
    op         TEXT    NOT NULL CHECK (op IN ('upsert', 'delete')),
    at         INTEGER NOT NULL
);
CREATE TABLE events (
    id          TEXT    PRIMARY KEY,
    namespace   TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    tags        TEXT    NOT NULL DEFAULT '[]',
    importance  REAL    NOT NULL,
    occurred_at INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    session_id  TEXT    NOT NULL
);
CREATE INDEX events_by_time ON events (namespace, occurred_at, id);
CREATE TABLE event_tags (
    event_id  TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    tag       TEXT NOT NULL,
    PRIMARY KEY (event_id, tag)
);
CREATE INDEX event_tags_by_tag ON event_tags (namespace, tag, event_id);
"#,
    ),
    (
        2,
        "semantic facts",
        r#"
CREATE TABLE facts (
    id               TEXT    PRIMARY KEY,
    namespace        TEXT    NOT NULL,
    content          TEXT    NOT NULL,
    tags             TEXT    NOT NULL DEFAULT '[]',
    confidence       REAL    NOT NULL,
    source           TEXT,
    valid_from       INTEGER NOT NULL,
    valid_to         INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    access_count     INTEGER NOT NULL DEFAULT 0,
    last_accessed_at INTEGER,
    supersedes       TEXT,
    superseded_by    TEXT,
    metadata         TEXT    NOT NULL DEFAULT '{}',
    session_id       TEXT    NOT NULL
);
CREATE INDEX facts_by_created ON facts (namespace, created_at, id);
CREATE TABLE fact_tags (
    fact_id   TEXT NOT NULL REFERENCES facts (id) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    tag       TEXT NOT NULL,
    current   INTEGER NOT NULL,
    PRIMARY KEY (fact_id, tag)
);
CREATE INDEX fact_tags_by_tag ON fact_tags (namespace, tag, fact_id);
"#,
    ),
    (
        3,
        "knowledge graph",
        r#"
CREATE TABLE entities (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    entity_type TEXT    NOT NULL,
    properties  TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (namespace, name)
);
CREATE TABLE observations (
    entity_id  TEXT    NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    content    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (entity_id, content)
);
CREATE INDEX observations_in_order ON observations (entity_id, position);
CREATE TABLE relations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace     TEXT    NOT NULL,
    from_name     TEXT    NOT NULL,
    to_name       TEXT    NOT NULL,
    relation_type TEXT    NOT NULL,
    properties    TEXT    NOT NULL DEFAULT '{}',
    valid_from    INTEGER,
    valid_to      INTEGER,
    created_at    INTEGER NOT NULL,
    UNIQUE (namespace, from_name, to_name, relation_type)
);
CREATE INDEX relations_by_to ON relations (namespace, to_name);
"#,
    ),
    (
        4,
        "procedural and prospective memory, audit",
        r#"
CREATE TABLE procedures (
    id            TEXT    PRIMARY KEY,
    namespace     TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    body          TEXT    NOT NULL,
    tags          TEXT    NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    runs          INTEGER NOT NULL DEFAULT 0,
    successes     INTEGER NOT NULL DEFAULT 0,
    partials      INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    last_run_at   INTEGER,
    UNIQUE (namespace, name)
);
CREATE INDEX procedures_by_updated ON procedures (namespace, updated_at, id);
CREATE TABLE procedure_tags (
    procedure_id TEXT NOT NULL REFERENCES procedures (id) ON DELETE CASCADE,
    namespace    TEXT NOT NULL,
    tag          TEXT NOT NULL,
    PRIMARY KEY (procedure_id, tag)
);
CREATE INDEX procedure_tags_by_tag ON procedure_tags (namespace, tag, procedure_id);
CREATE TABLE procedure_versions (
    procedure_id TEXT    NOT NULL REFERENCES procedures (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    PRIMARY KEY (procedure_id, version)
);
CREATE TABLE procedure_runs (
    id           TEXT    PRIMARY KEY,
    procedure_id TEXT    NOT NULL REFERENCES procedures (id) ON DELETE CASCADE,
    namespace    TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    duration_ms  INTEGER,
    notes        TEXT,
    at           INTEGER NOT NULL,
    session_id   TEXT    NOT NULL
);
CREATE INDEX procedure_runs_in_order ON procedure_runs (procedure_id, at, id);
CREATE TABLE tasks (
    id          TEXT    PRIMARY KEY,
    namespace   TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    notes       TEXT,
    status      TEXT    NOT NULL,
    priority    INTEGER NOT NULL,
    due_at      INTEGER,
    tags        TEXT    NOT NULL DEFAULT '[]',
    parent_id   TEXT,
    metadata    TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    closed_at   INTEGER,
    session_id  TEXT    NOT NULL
);
CREATE INDEX tasks_by_created ON tasks (namespace, created_at, id);
CREATE INDEX tasks_by_due ON tasks (namespace, status, due_at);
CREATE INDEX tasks_by_parent ON tasks (parent_id);
CREATE TABLE task_tags (
    task_id   TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    tag       TEXT NOT NULL,
    PRIMARY KEY (task_id, tag)
);
CREATE INDEX task_tags_by_tag ON task_tags (namespace, tag, task_id);
CREATE TABLE triggers (
    id          TEXT    PRIMARY KEY,
    namespace   TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    watching    INTEGER NOT NULL,
    at          INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX triggers_watching ON triggers (namespace, watching);
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace  TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    operation  TEXT    NOT NULL,
    session_id TEXT    NOT NULL,
    records    TEXT    NOT NULL
);
CREATE INDEX audit_by_namespace ON audit (namespace, seq);
"#,
    ),
    (
        5,
        "consolidation: decay bookkeeping, the event archive; task indexes for sub-tasks and urgency",
        r#"
ALTER TABLE events ADD COLUMN decayed_at INTEGER;
CREATE TABLE archived_events (
    id          TEXT    PRIMARY KEY,
    namespace   TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    archived_at INTEGER NOT NULL
);
CREATE INDEX archived_events_by_namespace ON archived_events (namespace, archived_at);
DROP INDEX tasks_by_parent;
CREATE INDEX tasks_by_parent ON tasks (parent_id, created_at, id);
CREATE INDEX tasks_by_urgency ON tasks (namespace, status, priority DESC, due_at, id);
"#,
    ),
    (
        6,
        "access tokens; the token each audited write came with",
        r#"
CREATE TABLE tokens (
    id           TEXT    PRIMARY KEY,
    label        TEXT    NOT NULL UNIQUE,
    namespace    TEXT    NOT NULL,
    scope        TEXT    NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    secret_hash  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
ALTER TABLE audit ADD COLUMN token TEXT;
"#,
    ),
];

pub(super) fn checksum(sql: &str) -> String {
    let digest = Sha256::digest(sql.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Brings a sqlite database up to this build's schema.
pub(super) fn run(conn: &mut Connection) -> Result<(), StoreError> {
    apply(Conn::Sqlite(conn), MIGRATIONS)
}

/// Applies the migrations of `list` not yet applied, each in a transaction of
/// its own (the write transaction, which on PostgreSQL also keeps other nodes
/// out), and checks the ones that were.
pub(super) fn apply(conn: Conn<'_>, list: &[(i64, &str, &str)]) -> Result<(), StoreError> {
    conn.batch(match conn.dialect() {
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    INTEGER PRIMARY KEY,
                name       TEXT    NOT NULL,
                checksum   TEXT    NOT NULL,
                applied_at INTEGER NOT NULL
            )"
        }
        Dialect::Postgres => {
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                name       TEXT   NOT NULL,
                checksum   TEXT   NOT NULL,
                applied_at BIGINT NOT NULL
            )"
        }
    })?;
    for &(version, name, sql) in list {
        conn.begin_write()?;
        let applied = apply_one(conn, version, name, sql);
        conn.end(applied.is_ok())?;
        applied?;
    }
    Ok(())
}

/// Migration `version` inside the open transaction: applied if it was not,
/// refused if it was with another text.
fn apply_one(conn: Conn<'_>, version: i64, name: &str, sql: &str) -> Result<(), StoreError> {
    let sum = checksum(sql);
    let applied: Option<String> = conn.first(
        "SELECT checksum FROM schema_migrations WHERE version = ?1",
        &args![version],
        |r| r.get(0),
    )?;
    match applied {
        Some(existing) if existing == sum => Ok(()),
        Some(existing) => Err(StoreError::Migration(format!(
            "migration {version} ({name}) was applied with checksum {existing}, \
             but this build has {sum}: the database was made by a different engram"
        ))),
        None => {
            conn.batch(sql)
                .map_err(|e| StoreError::Migration(format!("{version} ({name}): {e}")))?;
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at)
                 VALUES (?1, ?2, ?3, ?4)",
                &args![version, name, sum, crate::model::now_micros()],
            )?;
            tracing::info!(version, name, "applied migration");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("m.sqlite3")).unwrap();
        run(&mut conn).unwrap();
        run(&mut conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);

        conn.execute(
            "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
            [],
        )
        .unwrap();
        let err = run(&mut conn).unwrap_err().to_string();
        assert!(err.contains("different engram"), "{err}");
    }
}
