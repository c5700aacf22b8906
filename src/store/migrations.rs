//! Numbered, checksummed, idempotent schema migrations, run at every start.
//!
//! A migration that was applied is never edited: its checksum is recorded, and a
//! start that finds a different text for an applied number refuses to continue.

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::StoreError;

/// (version, name, SQL). Append only.
const MIGRATIONS: &[(i64, &str, &str)] = &[
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
];

fn checksum(sql: &str) -> String {
    let digest = Sha256::digest(sql.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn run(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT    NOT NULL,
            checksum   TEXT    NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )?;
    for &(version, name, sql) in MIGRATIONS {
        let sum = checksum(sql);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: Option<String> = tx
            .query_row(
                "SELECT checksum FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        match applied {
            Some(existing) if existing == sum => {}
            Some(existing) => {
                return Err(StoreError::Migration(format!(
                    "migration {version} ({name}) was applied with checksum {existing}, \
                     but this build has {sum}: the database was made by a different engram"
                )));
            }
            None => {
                tx.execute_batch(sql)
                    .map_err(|e| StoreError::Migration(format!("{version} ({name}): {e}")))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![version, name, sum, crate::model::now_micros()],
                )?;
                tracing::info!(version, name, "applied migration");
            }
        }
        tx.commit()?;
    }
    Ok(())
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
