//! Procedures in the store: the current version of each in `procedures` (with
//! its track record as counters), every version as written in
//! `procedure_versions`, every run in `procedure_runs`. A procedure's name is
//! unique in its namespace. Recording a run updates the counters in the same
//! transaction, and the procedure's search document (its weight is its
//! smoothed success rate).

use std::convert::Infallible;

use serde_json::{Map, Value};

use super::sql::{Conn, Row, args};
use super::table::{Query, Records, Table, Tags, from_json, json, set, to_json};
use super::writer::WriteTxn;
use super::{Searchable, Store, StoreError};
use crate::model::{
    Execution, Micros, Outcome, Procedure, ProcedureVersion, RecordKind, SearchDoc, TrackRecord,
    micros_to_datetime, new_id,
};

/// A procedure to store; validated by the caller.
#[derive(Debug, Clone)]
pub struct NewProcedure {
    pub name: String,
    pub goal: String,
    pub steps: Vec<String>,
    pub preconditions: Vec<String>,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
}

/// What a new version changes; `None` keeps the field of the current version.
#[derive(Debug, Clone, Default)]
pub struct ProcedurePatch {
    pub name: Option<String>,
    pub goal: Option<String>,
    pub steps: Option<Vec<String>>,
    pub preconditions: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
}

/// A run to record; validated by the caller.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub outcome: Outcome,
    pub duration_ms: Option<u64>,
    pub notes: Option<String>,
}

/// Which procedures a list covers: tags and the time of the current version.
#[derive(Debug, Clone, Default)]
pub struct ProcedureFilter {
    pub tags: Vec<String>,
    pub since: Option<Micros>,
    pub until: Option<Micros>,
}

/// What `procedure_stats` reads beyond the counters.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Durations of the runs that recorded one, in milliseconds.
    pub durations_ms: Vec<u64>,
    /// The latest failed run.
    pub last_failure: Option<Execution>,
    /// The latest runs, newest first.
    pub recent: Vec<Execution>,
    /// (version, runs, successes, partials) for each version that was run.
    pub by_version: Vec<(u32, u64, u64, u64)>,
}

impl ProcedureFilter {
    /// Narrows a query of `procedures p` to this filter.
    fn narrow(self, q: &mut Query) -> &mut Query {
        q.and_some("p.updated_at >= ?", self.since)
            .and_some("p.updated_at < ?", self.until)
            .and_each(TAGS.has, &self.tags)
    }
}

pub(super) static PROCEDURES: Table<Procedure> = Table {
    name: "procedures",
    alias: "p",
    columns: "p.id, p.body, p.created_at, p.runs, p.successes, p.partials, p.failures, \
              p.last_run_at",
    decode: procedure_from_row,
    search: &SEARCH,
    listed_by: "procedural_list, procedural_search or procedural_suggest",
};

pub(super) static SEARCH: Searchable = Searchable {
    kind: RecordKind::Procedure,
    sql: "SELECT p.id, p.body, p.created_at, p.runs, p.successes, p.partials, p.failures, \
          p.last_run_at, p.namespace FROM procedures p",
    doc: |_, r| Ok(search_doc(&procedure_from_row(r)?, &r.get::<String>(8)?)),
};

static TAGS: Tags = Tags {
    clear: "DELETE FROM procedure_tags WHERE procedure_id = ?1",
    add: "INSERT INTO procedure_tags (procedure_id, namespace, tag) VALUES (?1, ?2, ?3) \
          ON CONFLICT DO NOTHING",
    has: "EXISTS (SELECT 1 FROM procedure_tags t WHERE t.procedure_id = p.id AND t.tag = ?)",
};

/// The success rate a procedure is ranked by: successes (a partial run counts
/// half) with one success and one failure assumed beforehand (Laplace), so a
/// single lucky run does not outrank a long good record: 1 of 1 scores 0.67,
/// 45 of 50 scores 0.88, a procedure never run 0.5.
pub fn smoothed_success(t: &TrackRecord) -> f64 {
    (t.successes as f64 + t.partials as f64 / 2.0 + 1.0) / (t.runs as f64 + 2.0)
}

fn procedure_from_row(r: &Row<'_>) -> Result<Procedure, StoreError> {
    let count = |i| r.get::<i64>(i).map(|n| n.max(0) as u64);
    let (runs, successes, partials) = (count(3)?, count(4)?, count(5)?);
    Ok(Procedure {
        id: r.get(0)?,
        current: json(r, 1)?,
        created_at: micros_to_datetime(r.get(2)?),
        track_record: TrackRecord {
            runs,
            successes,
            partials,
            failures: count(6)?,
            success_rate: TrackRecord::rate(successes, partials, runs),
            last_run_at: r.get::<Option<i64>>(7)?.map(micros_to_datetime),
        },
    })
}

/// What a search finds a procedure by: its name, goal, steps and preconditions.
fn search_doc(p: &Procedure, namespace: &str) -> SearchDoc {
    let v = &p.current;
    let mut text = format!("{}\n{}", v.name, v.goal);
    for line in v.steps.iter().chain(&v.preconditions) {
        text.push('\n');
        text.push_str(line);
    }
    SearchDoc {
        kind: RecordKind::Procedure,
        id: p.id.clone(),
        namespace: namespace.to_string(),
        text,
        tags: v.tags.clone(),
        time: v.updated_at.timestamp_micros(),
        weight: smoothed_success(&p.track_record),
        superseded: false,
    }
}

/// Writes the procedure's current row and tags, the version it holds (once),
/// and the change.
pub(super) fn save(
    txn: &mut WriteTxn<'_>,
    namespace: &str,
    p: &Procedure,
) -> Result<(), StoreError> {
    let v = &p.current;
    let t = &p.track_record;
    let body = to_json(v);
    // Asked before the write, not read from the unique index's error: on
    // PostgreSQL a failed statement would abort the whole transaction.
    let taken = txn.conn.first(
        "SELECT 1 FROM procedures WHERE namespace = ?1 AND name = ?2 AND id <> ?3",
        &args![namespace, v.name, p.id],
        |_| Ok(()),
    )?;
    if taken.is_some() {
        return Err(name_taken(&v.name));
    }
    txn.conn.execute(
        "INSERT INTO procedures (id, namespace, name, version, body, tags, created_at,
                                 updated_at, runs, successes, partials, failures, last_run_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET
            name = excluded.name, version = excluded.version, body = excluded.body,
            tags = excluded.tags, updated_at = excluded.updated_at, runs = excluded.runs,
            successes = excluded.successes, partials = excluded.partials,
            failures = excluded.failures, last_run_at = excluded.last_run_at",
        &args![
            p.id,
            namespace,
            v.name,
            v.version,
            body,
            to_json(&v.tags),
            p.created_at.timestamp_micros(),
            v.updated_at.timestamp_micros(),
            t.runs,
            t.successes,
            t.partials,
            t.failures,
            t.last_run_at.map(|at| at.timestamp_micros()),
        ],
    )?;
    txn.conn
        .execute(ADD_VERSION, &args![p.id, v.version, body])?;
    TAGS.replace(txn.conn, &p.id, namespace, &v.tags, &[])?;
    txn.log_change(
        namespace,
        RecordKind::Procedure,
        &p.id,
        Some(search_doc(p, namespace)),
    )
}

/// Stores a version of a procedure, unless it is stored already: ?1 the
/// procedure's id, ?2 the version, ?3 its body.
const ADD_VERSION: &str = "INSERT INTO procedure_versions (procedure_id, version, body) \
                           VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";

/// The refusal of a name another procedure of the namespace holds.
fn name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "a procedure named {name:?} already exists here: change it with procedural_update \
         (its id is in procedural_get with this name), or choose another name"
    ))
}

fn execution_from_row(r: &Row<'_>) -> Result<Execution, StoreError> {
    let outcome: String = r.get(3)?;
    Ok(Execution {
        id: r.get(0)?,
        procedure_id: r.get(1)?,
        version: version(r, 2)?,
        outcome: from_json(&format!("\"{outcome}\""))?,
        duration_ms: r.get::<Option<i64>>(4)?.map(|d| d.max(0) as u64),
        notes: r.get(5)?,
        at: micros_to_datetime(r.get(6)?),
        session_id: r.get(7)?,
    })
}

const EXECUTION_COLUMNS: &str =
    "id, procedure_id, version, outcome, duration_ms, notes, at, session_id";

/// Column `i`, a procedure's version number.
fn version(r: &Row<'_>, i: usize) -> Result<u32, StoreError> {
    let n = r.get::<i64>(i)?;
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("procedure version {n}")))
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Partial => "partial",
        Outcome::Failure => "failure",
    }
}

/// Every version (oldest first) and every run (in order) of procedure `id`.
pub(super) fn history(
    conn: Conn<'_>,
    id: &str,
) -> Result<(Vec<ProcedureVersion>, Vec<Execution>), StoreError> {
    let of = |sql: String| Query::new(sql, [id.to_string().into()]);
    let versions =
        of("SELECT body FROM procedure_versions WHERE procedure_id = ? ORDER BY version".into())
            .rows(conn, |r| json(r, 0))?;
    let runs = of(format!(
        "SELECT {EXECUTION_COLUMNS} FROM procedure_runs WHERE procedure_id = ? ORDER BY at, id"
    ))
    .rows(conn, execution_from_row)?;
    Ok((versions, runs))
}

/// Stores an exported procedure as it was: its current row, every version
/// and every run (ids already mapped by the import).
pub(super) fn import(
    txn: &mut WriteTxn<'_>,
    namespace: &str,
    p: &Procedure,
    versions: &[ProcedureVersion],
    runs: &[Execution],
) -> Result<(), StoreError> {
    save(txn, namespace, p)?;
    for v in versions {
        txn.conn
            .execute(ADD_VERSION, &args![p.id, v.version, to_json(v)])?;
    }
    let run = format!(
        "INSERT INTO procedure_runs ({EXECUTION_COLUMNS}, namespace)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING"
    );
    for e in runs {
        txn.conn.execute(
            &run,
            &args![
                e.id,
                e.procedure_id,
                e.version,
                outcome_name(e.outcome),
                e.duration_ms.map(|d| d as i64),
                e.notes,
                e.at.timestamp_micros(),
                e.session_id,
                namespace,
            ],
        )?;
    }
    Ok(())
}

/// The procedure named `name` in the namespace, by id or by name.
fn resolve(conn: Conn<'_>, namespace: &str, key: &str) -> Result<Procedure, StoreError> {
    match PROCEDURES.find(conn, namespace, "name", key)? {
        Some(p) => Ok(p),
        None => PROCEDURES.must_get(conn, namespace, key),
    }
}

impl Store {
    pub async fn insert_procedure(
        &self,
        namespace: &str,
        session_id: &str,
        new: NewProcedure,
    ) -> Result<Procedure, StoreError> {
        let build = |new: NewProcedure, session_id: &str, now: Micros| {
            let at = micros_to_datetime(now);
            Procedure {
                id: new_id(),
                current: ProcedureVersion {
                    version: 1,
                    name: new.name,
                    goal: new.goal,
                    steps: new.steps,
                    preconditions: new.preconditions,
                    tags: new.tags,
                    metadata: new.metadata,
                    updated_at: at,
                    session_id: session_id.to_string(),
                },
                created_at: at,
                track_record: TrackRecord::default(),
            }
        };
        let mut out = self
            .insert_records(namespace, session_id, vec![new], build, save)
            .await?;
        Ok(out.pop().expect("one procedure in, one out"))
    }

    /// A procedure by id or by name.
    pub async fn get_procedure(&self, namespace: &str, key: &str) -> Result<Procedure, StoreError> {
        let key = key.to_string();
        self.read_in(namespace, move |conn, ns| resolve(conn, ns, &key))
            .await
    }

    /// Procedures by id, listed and counted by the time of their current
    /// version (updated_at, id). An update writes a new version
    /// (`update_procedure`), so this handle has no patch.
    pub fn procedures(&self) -> Records<'_, Procedure, ProcedureFilter, Infallible> {
        Records {
            store: self,
            table: &PROCEDURES,
            key: ("p.updated_at", "p.id"),
            key_of: |p| (p.current.updated_at.timestamp_micros(), p.id.clone()),
            narrow: ProcedureFilter::narrow,
            patch: |never, _, _| match never {},
            save,
        }
    }

    /// Writes a new version of procedure `key` (id or name) from its current
    /// one and `patch`; the older versions stay readable.
    pub async fn update_procedure(
        &self,
        namespace: &str,
        session_id: &str,
        key: &str,
        patch: ProcedurePatch,
    ) -> Result<Procedure, StoreError> {
        let (key, session_id) = (key.to_string(), session_id.to_string());
        self.write_in(namespace, move |txn, ns| {
            let mut p = resolve(txn.conn, ns, &key)?;
            let v = &mut p.current;
            set(&mut v.name, patch.name);
            set(&mut v.goal, patch.goal);
            set(&mut v.steps, patch.steps);
            set(&mut v.preconditions, patch.preconditions);
            set(&mut v.tags, patch.tags);
            set(&mut v.metadata, patch.metadata);
            v.version += 1;
            v.updated_at = micros_to_datetime(txn.now);
            v.session_id = session_id;
            save(txn, ns, &p)?;
            Ok(p)
        })
        .await
    }

    /// Every version of procedure `key`, newest first.
    pub async fn procedure_versions(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<(Procedure, Vec<ProcedureVersion>), StoreError> {
        let key = key.to_string();
        self.read_in(namespace, move |conn, ns| {
            let p = resolve(conn, ns, &key)?;
            let q = Query::new(
                "SELECT body FROM procedure_versions WHERE procedure_id = ? ORDER BY version DESC",
                [p.id.clone().into()],
            );
            let versions = q.rows(conn, |r| json(r, 0))?;
            Ok((p, versions))
        })
        .await
    }

    /// Deletes procedures (by id or name) with their versions and runs;
    /// returns (deleted, not found) as given.
    pub async fn delete_procedures(
        &self,
        namespace: &str,
        keys: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        self.delete_each(namespace, keys, |txn, ns, key| {
            let id = PROCEDURES
                .find(txn.conn, ns, "name", key)?
                .map_or_else(|| key.to_string(), |p| p.id);
            PROCEDURES.delete(txn, ns, &id)
        })
        .await
    }

    /// Records a run of procedure `key` against its current version and
    /// updates its track record, in one write.
    pub async fn record_execution(
        &self,
        namespace: &str,
        session_id: &str,
        key: &str,
        run: NewExecution,
    ) -> Result<(Execution, Procedure), StoreError> {
        let (key, session_id) = (key.to_string(), session_id.to_string());
        self.write_in(namespace, move |txn, ns| {
            let mut p = resolve(txn.conn, ns, &key)?;
            let execution = Execution {
                id: new_id(),
                procedure_id: p.id.clone(),
                version: p.current.version,
                outcome: run.outcome,
                duration_ms: run.duration_ms,
                notes: run.notes,
                at: micros_to_datetime(txn.now),
                session_id,
            };
            txn.conn.execute(
                &format!(
                    "INSERT INTO procedure_runs ({EXECUTION_COLUMNS}, namespace)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                &args![
                    execution.id,
                    execution.procedure_id,
                    execution.version,
                    outcome_name(execution.outcome),
                    execution.duration_ms.map(|d| d as i64),
                    execution.notes,
                    txn.now,
                    execution.session_id,
                    ns,
                ],
            )?;
            p.track_record.count(run.outcome, execution.at);
            save(txn, ns, &p)?;
            Ok((execution, p))
        })
        .await
    }

    /// Procedure `key` and what its runs say beyond the counters.
    pub async fn procedure_runs(
        &self,
        namespace: &str,
        key: &str,
        recent: usize,
    ) -> Result<(Procedure, RunSummary), StoreError> {
        let key = key.to_string();
        self.scan_in(namespace, move |conn, ns| {
            let p = resolve(conn, ns, &key)?;
            let of = |sql: &str| Query::new(sql, [p.id.clone().into()]);
            let durations_ms = of("SELECT duration_ms FROM procedure_runs
                 WHERE procedure_id = ? AND duration_ms IS NOT NULL ORDER BY duration_ms")
            .column::<i64>(conn)?
            .into_iter()
            .map(|d| d.max(0) as u64)
            .collect();
            let runs = |filter: &str, limit: usize| {
                let mut q = of(&format!(
                    "SELECT {EXECUTION_COLUMNS} FROM procedure_runs WHERE procedure_id = ?{filter} \
                     ORDER BY at DESC, id DESC"
                ));
                q.limit(limit).rows(conn, execution_from_row)
            };
            let last_failure = runs(" AND outcome = 'failure'", 1)?.pop();
            let recent = runs("", recent)?;
            let by_version = of("SELECT version, count(*),
                    CAST(sum(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(sum(CASE WHEN outcome = 'partial' THEN 1 ELSE 0 END) AS BIGINT)
                 FROM procedure_runs WHERE procedure_id = ? GROUP BY version ORDER BY version")
            .rows(conn, |r| {
                let n = |i| r.get::<i64>(i).map(|n| n.max(0) as u64);
                Ok((version(r, 0)?, n(1)?, n(2)?, n(3)?))
            })?;
            Ok((
                p,
                RunSummary {
                    durations_ms,
                    last_failure,
                    recent,
                    by_version,
                },
            ))
        })
        .await
    }
}
