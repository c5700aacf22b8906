//! A namespace as a stream of whole records, and back: what `meta_export`,
//! `meta_import` and `engram export/import --format engram` move.
//!
//! An export runs through the kinds in `EXPORT_ORDER` (what others refer to
//! first), each in the order stored, and resumes from an `ExportPosition`.
//! An import stores every record it is given in one write (all or none) as it
//! was: ids, times, versions, runs and track records. It is idempotent by id:
//! a record whose id the namespace already holds is left as it is. Ids are
//! global in the store, so a record whose id another namespace holds (an
//! export imported into a second namespace) gets an id derived from the
//! namespace and its old id (UUIDv5), the same at every import; references to
//! it (superseded facts, parent tasks, a reminder's task, a run's procedure)
//! follow.

use serde::{Deserialize, Serialize};

use super::graph::{self, EntityRecord, RelationRecord};
use super::sql::{Conn, Dialect, args};
use super::table::{Query, Table, json, to_json};
use super::writer::WriteTxn;
use super::{Store, StoreError, episodic, procedural, prospective, semantic};
use crate::model::{
    Event, Execution, Fact, Procedure, ProcedureVersion, RecordKind, RecordRef, Task, Trigger,
    micros_to_datetime,
};

/// One record of an export: one line of the JSONL format,
/// `{"kind": "event", "record": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "lowercase")]
pub enum Exported {
    Entity(EntityRecord),
    Relation(RelationRecord),
    Event(Event),
    Fact(Fact),
    Procedure(ProcedureRecord),
    Task(Task),
    Trigger(Trigger),
    /// An event consolidation archived.
    #[serde(rename = "archived_event")]
    ArchivedEvent(ArchivedEvent),
}

impl Exported {
    /// The `kind` its line names.
    pub fn kind(&self) -> &'static str {
        match self {
            Exported::Entity(_) => "entity",
            Exported::Relation(_) => "relation",
            Exported::Event(_) => "event",
            Exported::Fact(_) => "fact",
            Exported::Procedure(_) => "procedure",
            Exported::Task(_) => "task",
            Exported::Trigger(_) => "trigger",
            Exported::ArchivedEvent(_) => "archived_event",
        }
    }
}

/// An archived event and when it was archived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedEvent {
    #[serde(flatten)]
    pub event: Event,
    pub archived_at: chrono::DateTime<chrono::Utc>,
}

/// A procedure with every version and every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureRecord {
    #[serde(flatten)]
    pub procedure: Procedure,
    pub versions: Vec<ProcedureVersion>,
    pub runs: Vec<Execution>,
}

/// The order an export runs through the kinds (the `kind` of their lines).
pub const EXPORT_ORDER: [&str; 8] = [
    "entity",
    "relation",
    "event",
    "fact",
    "procedure",
    "task",
    "trigger",
    "archived_event",
];

/// Where an export resumes: a kind (its index in `EXPORT_ORDER`) and the
/// last position read in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPosition {
    pub kind: usize,
    pub after: i64,
}

/// Records an import must create before it refreshes PostgreSQL's statistics.
const ANALYZE_AFTER: u64 = 1_000;

/// Per kind, the records an import stored and those it left (already there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imported {
    pub created: Vec<(&'static str, u64)>,
    pub unchanged: Vec<(&'static str, u64)>,
}

impl Imported {
    fn count(list: &mut Vec<(&'static str, u64)>, kind: &'static str) {
        match list.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => list.push((kind, 1)),
        }
    }
}

/// Rows of a table's namespace after rowid `after`, decoded, with their rowids.
fn rows_after<T>(
    conn: Conn<'_>,
    table: &Table<T>,
    ns: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, T)>, StoreError> {
    let alias = table.alias;
    let width = table.columns.split(',').count();
    let mut q = table.select_of(&format!("{}, {alias}.rowid", table.columns), ns);
    q.and(&format!("{alias}.rowid > ?"), after)
        .push(&format!(" ORDER BY {alias}.rowid"), [])
        .limit(limit);
    q.rows(conn, |r| Ok((r.get(width)?, (table.decode)(r)?)))
}

/// Up to `limit` records of one kind after `after`, with their positions.
fn page_of(
    conn: Conn<'_>,
    ns: &str,
    kind: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, Exported)>, StoreError> {
    fn wrap<T>(rows: Vec<(i64, T)>, f: fn(T) -> Exported) -> Vec<(i64, Exported)> {
        rows.into_iter().map(|(at, r)| (at, f(r))).collect()
    }
    Ok(match kind {
        "entity" => wrap(
            graph::export_entities(conn, ns, after, limit)?,
            Exported::Entity,
        ),
        "relation" => wrap(
            graph::export_relations(conn, ns, after, limit)?,
            Exported::Relation,
        ),
        "event" => wrap(
            rows_after(conn, &episodic::EVENTS, ns, after, limit)?,
            Exported::Event,
        ),
        "fact" => wrap(
            rows_after(conn, &semantic::FACTS, ns, after, limit)?,
            Exported::Fact,
        ),
        "procedure" => rows_after(conn, &procedural::PROCEDURES, ns, after, limit)?
            .into_iter()
            .map(|(at, procedure)| {
                let (versions, runs) = procedural::history(conn, &procedure.id)?;
                let record = ProcedureRecord {
                    procedure,
                    versions,
                    runs,
                };
                Ok((at, Exported::Procedure(record)))
            })
            .collect::<Result<_, StoreError>>()?,
        "task" => wrap(
            rows_after(conn, &prospective::TASKS, ns, after, limit)?,
            Exported::Task,
        ),
        "trigger" => wrap(
            prospective::triggers_after(conn, ns, after, limit)?,
            Exported::Trigger,
        ),
        _ => wrap(
            archived_after(conn, ns, after, limit)?,
            Exported::ArchivedEvent,
        ),
    })
}

fn archived_after(
    conn: Conn<'_>,
    ns: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, ArchivedEvent)>, StoreError> {
    let mut q = Query::new(
        "SELECT body, archived_at, rowid FROM archived_events WHERE namespace = ?",
        [ns.to_string().into()],
    );
    q.and("rowid > ?", after)
        .push(" ORDER BY rowid", [])
        .limit(limit);
    q.rows(conn, |r| {
        let archived = ArchivedEvent {
            event: json(r, 0)?,
            archived_at: micros_to_datetime(r.get(1)?),
        };
        Ok((r.get(2)?, archived))
    })
}

/// What an id becomes in namespace `ns`: itself, unless another namespace
/// holds it in `table`; then an id derived from `ns` and it.
fn map_id(txn: &WriteTxn<'_>, table: &str, ns: &str, id: &str) -> Result<String, StoreError> {
    let held: Option<String> = txn.conn.first(
        &format!("SELECT namespace FROM {table} WHERE id = ?1"),
        &args![id],
        |r| r.get(0),
    )?;
    Ok(match held {
        Some(other) if other != ns => {
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{ns}\0{id}").as_bytes())
                .to_string()
        }
        _ => id.to_string(),
    })
}

fn exists(txn: &WriteTxn<'_>, table: &str, ns: &str, id: &str) -> Result<bool, StoreError> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE namespace = ?1 AND id = ?2)");
    txn.conn.value(&sql, &args![ns, id])
}

fn table_of(kind: RecordKind) -> Option<&'static str> {
    match kind {
        RecordKind::Event => Some("events"),
        RecordKind::Fact => Some("facts"),
        RecordKind::Entity => Some("entities"),
        RecordKind::Procedure => Some("procedures"),
        RecordKind::Task => Some("tasks"),
        RecordKind::Trigger => Some("triggers"),
        RecordKind::Relation => None,
    }
}

/// `id` of `kind` as this import maps it; `None` stays `None`.
fn mapped(
    txn: &WriteTxn<'_>,
    kind: RecordKind,
    ns: &str,
    id: Option<&String>,
) -> Result<Option<String>, StoreError> {
    match (id, table_of(kind)) {
        (Some(id), Some(table)) => map_id(txn, table, ns, id).map(Some),
        (id, _) => Ok(id.cloned()),
    }
}

/// Stores one exported record unless the namespace holds it; whether it did.
fn import_one(txn: &mut WriteTxn<'_>, ns: &str, record: Exported) -> Result<bool, StoreError> {
    let table = match &record {
        Exported::ArchivedEvent(_) => Some("archived_events"),
        other => table_of(kind_of(other)),
    };
    let fresh = |txn: &WriteTxn<'_>, id: &str| -> Result<Option<String>, StoreError> {
        let Some(table) = table else {
            return Ok(Some(id.to_string()));
        };
        let id = map_id(txn, table, ns, id)?;
        Ok((!exists(txn, table, ns, &id)?).then_some(id))
    };
    match record {
        Exported::Entity(mut e) => {
            let Some(id) = fresh(txn, &e.id)? else {
                return Ok(false);
            };
            e.id = id;
            graph::import_entity(txn, ns, &e)
        }
        Exported::Relation(r) => graph::import_relation(txn, ns, &r),
        Exported::Event(mut e) => {
            let Some(id) = fresh(txn, &e.id)? else {
                return Ok(false);
            };
            e.id = id;
            episodic::save(txn, ns, &e).map(|_| true)
        }
        Exported::Fact(mut f) => {
            let Some(id) = fresh(txn, &f.id)? else {
                return Ok(false);
            };
            f.id = id;
            f.supersedes = mapped(txn, RecordKind::Fact, ns, f.supersedes.as_ref())?;
            f.superseded_by = mapped(txn, RecordKind::Fact, ns, f.superseded_by.as_ref())?;
            semantic::save(txn, ns, &f).map(|_| true)
        }
        Exported::Procedure(mut p) => {
            let Some(id) = fresh(txn, &p.procedure.id)? else {
                return Ok(false);
            };
            p.procedure.id = id;
            for run in &mut p.runs {
                run.id = map_id(txn, "procedure_runs", ns, &run.id)?;
                run.procedure_id = p.procedure.id.clone();
            }
            procedural::import(txn, ns, &p.procedure, &p.versions, &p.runs).map(|_| true)
        }
        Exported::Task(mut t) => {
            let Some(id) = fresh(txn, &t.id)? else {
                return Ok(false);
            };
            t.id = id;
            t.parent_id = mapped(txn, RecordKind::Task, ns, t.parent_id.as_ref())?;
            prospective::save(txn, ns, &t).map(|_| true)
        }
        Exported::Trigger(mut t) => {
            let Some(id) = fresh(txn, &t.id)? else {
                return Ok(false);
            };
            t.id = id;
            import_trigger(txn, ns, t).map(|_| true)
        }
        Exported::ArchivedEvent(mut a) => {
            let Some(id) = fresh(txn, &a.event.id)? else {
                return Ok(false);
            };
            a.event.id = id;
            import_archived(txn, ns, &a).map(|_| true)
        }
    }
}

/// Stores a reminder (its id mapped already), the task and record it names mapped.
fn import_trigger(txn: &mut WriteTxn<'_>, ns: &str, mut t: Trigger) -> Result<(), StoreError> {
    t.task_id = mapped(txn, RecordKind::Task, ns, t.task_id.as_ref())?;
    if let Some(by) = &t.fired_by {
        let id = mapped(txn, by.kind, ns, Some(&by.id))?.unwrap_or_default();
        t.fired_by = Some(RecordRef { kind: by.kind, id });
    }
    prospective::save_trigger(txn, ns, &t)
}

fn import_archived(txn: &WriteTxn<'_>, ns: &str, a: &ArchivedEvent) -> Result<(), StoreError> {
    txn.conn.execute(
        "INSERT INTO archived_events (id, namespace, body, archived_at)
         VALUES (?1, ?2, ?3, ?4)",
        &args![
            a.event.id,
            ns,
            to_json(&a.event),
            a.archived_at.timestamp_micros()
        ],
    )?;
    Ok(())
}

/// The kind of record a line holds (an archived event counts as an event).
fn kind_of(record: &Exported) -> RecordKind {
    match record {
        Exported::Entity(_) => RecordKind::Entity,
        Exported::Relation(_) => RecordKind::Relation,
        Exported::Event(_) | Exported::ArchivedEvent(_) => RecordKind::Event,
        Exported::Fact(_) => RecordKind::Fact,
        Exported::Procedure(_) => RecordKind::Procedure,
        Exported::Task(_) => RecordKind::Task,
        Exported::Trigger(_) => RecordKind::Trigger,
    }
}

impl Store {
    /// Up to `limit` records of the namespace from `from` on, in export order,
    /// and where the next page starts (`None`: this was the last).
    pub async fn export_page(
        &self,
        namespace: &str,
        from: ExportPosition,
        limit: usize,
    ) -> Result<(Vec<Exported>, Option<ExportPosition>), StoreError> {
        self.scan_in(namespace, move |conn, ns| {
            let mut out = Vec::new();
            let mut at = from;
            while at.kind < EXPORT_ORDER.len() {
                let room = limit - out.len();
                let page = page_of(conn, ns, EXPORT_ORDER[at.kind], at.after, room + 1)?;
                let more = page.len() > room;
                for (pos, record) in page.into_iter().take(room) {
                    at.after = pos;
                    out.push(record);
                }
                if more {
                    return Ok((out, Some(at)));
                }
                at = ExportPosition {
                    kind: at.kind + 1,
                    after: 0,
                };
                if out.len() == limit {
                    let done = at.kind == EXPORT_ORDER.len();
                    return Ok((out, (!done).then_some(at)));
                }
            }
            Ok((out, None))
        })
        .await
    }

    /// Stores exported records in the namespace in one write: all or none.
    pub async fn import_records(
        &self,
        namespace: &str,
        records: Vec<Exported>,
    ) -> Result<Imported, StoreError> {
        let imported = self.write_records(namespace, records).await?;
        let created: u64 = imported.created.iter().map(|(_, n)| n).sum();
        if created >= ANALYZE_AFTER && self.dialect() == Dialect::Postgres {
            // The planner's statistics, before autovacuum's next pass: until
            // then PostgreSQL may scan a namespace to read records by id.
            // The import stands either way.
            if let Err(e) = self.readers.read(|conn| conn.batch("ANALYZE")).await {
                tracing::warn!("ANALYZE after the import failed: {e}");
            }
        }
        Ok(imported)
    }

    async fn write_records(
        &self,
        namespace: &str,
        records: Vec<Exported>,
    ) -> Result<Imported, StoreError> {
        self.write_in(namespace, move |txn, ns| {
            let mut counts = Imported::default();
            for record in records {
                let kind = record.kind();
                if import_one(txn, ns, record)? {
                    Imported::count(&mut counts.created, kind);
                } else {
                    Imported::count(&mut counts.unchanged, kind);
                }
            }
            Ok(counts)
        })
        .await
    }
}
