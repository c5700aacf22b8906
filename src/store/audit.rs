//! What every write does besides its own work, in its own transaction: fire
//! the reminders it matches, and leave an audit row saying who changed which
//! records with which operation.
//!
//! Who is writing comes from the caller's task ([`attributed`]): the registry
//! runs each operation inside one, naming the operation and session, and
//! collects the reminders its writes fired for its answer. A write outside any
//! (maintenance, tests) is audited as `"engram"`.

use std::future::Future;
use std::sync::Mutex;

use super::sql::{Dialect, Row, args};
use super::table::{Query, from_json, to_json};
use super::writer::WriteTxn;
use super::{DocMatcher, Store, StoreError, prospective};
use crate::model::{AuditEntry, AuditedRecord, Change, Micros, Trigger, micros_to_datetime};

/// Who writes: the operation (or command) and the session.
#[derive(Debug, Clone)]
pub(super) struct Actor {
    operation: String,
    session_id: String,
    /// The label of the caller's access token, if it came with one.
    token: Option<String>,
}

struct Attribution {
    actor: Actor,
    /// Reminders fired by the writes of the attributed work.
    fired: Mutex<Vec<Trigger>>,
}

tokio::task_local! {
    static ATTRIBUTION: Attribution;
}

/// Runs `work` with its writes attributed to `operation` in `session_id`,
/// called with the token labelled `token`; returns its output and the
/// reminders its writes fired, in order.
pub async fn attributed<T>(
    operation: &str,
    session_id: &str,
    token: Option<&str>,
    work: impl Future<Output = T>,
) -> (T, Vec<Trigger>) {
    let attribution = Attribution {
        actor: Actor {
            operation: operation.to_string(),
            session_id: session_id.to_string(),
            token: token.map(str::to_string),
        },
        fired: Mutex::new(Vec::new()),
    };
    ATTRIBUTION
        .scope(attribution, async {
            let out = work.await;
            let fired = ATTRIBUTION.with(|a| std::mem::take(&mut *lock(&a.fired)));
            (out, fired)
        })
        .await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who the current task writes as.
pub(super) fn actor() -> Actor {
    ATTRIBUTION
        .try_with(|a| a.actor.clone())
        .unwrap_or_else(|_| Actor {
            operation: "engram".into(),
            session_id: String::new(),
            token: None,
        })
}

/// Hands reminders fired by a committed write to the attributed work.
pub(super) fn fired(triggers: Vec<Trigger>) {
    if triggers.is_empty() {
        return;
    }
    let _ = ATTRIBUTION.try_with(|a| lock(&a.fired).extend(triggers));
}

/// After a write's own work, in its savepoint: fires the reminders its
/// changes match and writes its audit row. Returns the reminders fired.
pub(super) fn after_write(
    txn: &mut WriteTxn<'_>,
    namespace: &str,
    actor: &Actor,
    matcher: &DocMatcher,
) -> Result<Vec<Trigger>, StoreError> {
    // Only records reminders can watch need the armed reminders read.
    let stored = txn
        .logged()
        .any(|(c, _)| c.doc.is_some() && c.kind.watchable());
    let fired = if stored && watching(txn, namespace)? {
        let changes: Vec<Change> = txn.logged().map(|(c, _)| c.clone()).collect();
        prospective::fire_triggers(txn, namespace, &changes, matcher)?
    } else {
        Vec::new()
    };
    let records: Vec<AuditedRecord> = txn
        .logged()
        .map(|(c, deleted)| AuditedRecord {
            kind: c.kind,
            id: c.id.clone(),
            change: if deleted { "delete" } else { "upsert" }.into(),
        })
        .collect();
    if !records.is_empty() {
        txn.conn.execute(
            "INSERT INTO audit (namespace, at, operation, session_id, token, records)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &args![
                namespace,
                txn.now,
                actor.operation,
                actor.session_id,
                actor.token,
                to_json(&records),
            ],
        )?;
    }
    Ok(fired)
}

/// Whether the namespace has reminders waiting for a write.
fn watching(txn: &WriteTxn<'_>, namespace: &str) -> Result<bool, StoreError> {
    txn.conn.value(
        "SELECT EXISTS (SELECT 1 FROM triggers WHERE namespace = ?1 AND watching = 1)",
        &args![namespace],
    )
}

/// Which audit rows a read covers.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub operation: Option<String>,
    pub session_id: Option<String>,
    /// Rows naming this record id.
    pub record_id: Option<String>,
    /// Rows written with the token of this label.
    pub token: Option<String>,
    pub since: Option<Micros>,
    pub until: Option<Micros>,
}

impl Store {
    /// Audit rows of the namespace matching `filter`, newest first, with a
    /// sequence number below `before` (the previous page's last).
    pub async fn audit(
        &self,
        namespace: &str,
        filter: AuditFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let q = audit_query(self.dialect(), Some(namespace), filter, before, limit);
        self.read_rows(q, audit_row).await
    }
}

/// Audit rows of `namespace` (every namespace's with `None`) matching
/// `filter`, newest first, below sequence number `before`.
pub(super) fn audit_query(
    dialect: Dialect,
    namespace: Option<&str>,
    filter: AuditFilter,
    before: Option<u64>,
    limit: usize,
) -> Query {
    let mut q = Query::new(
        "SELECT seq, at, operation, session_id, token, records, namespace FROM audit a WHERE 1 = 1",
        [],
    );
    q.and_some("a.namespace = ?", namespace.map(str::to_string))
        .and_some("a.seq < ?", before.map(|s| s as i64))
        .and_some("a.operation = ?", filter.operation)
        .and_some("a.session_id = ?", filter.session_id)
        .and_some("a.token = ?", filter.token)
        .and_some("a.at >= ?", filter.since)
        .and_some("a.at < ?", filter.until)
        .and_some(
            match dialect {
                Dialect::Sqlite => {
                    "EXISTS (SELECT 1 FROM json_each(a.records) r \
                     WHERE json_extract(r.value, '$.id') = ?)"
                }
                Dialect::Postgres => {
                    "EXISTS (SELECT 1 FROM jsonb_array_elements(a.records::jsonb) r \
                     WHERE r ->> 'id' = ?)"
                }
            },
            filter.record_id,
        )
        .push(" ORDER BY a.seq DESC", [])
        .limit(limit);
    q
}

pub(super) fn audit_row(r: &Row<'_>) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: r.get::<i64>(0)? as u64,
        at: micros_to_datetime(r.get(1)?),
        operation: r.get(2)?,
        session_id: r.get(3)?,
        token: r.get(4)?,
        records: from_json(&r.get::<String>(5)?)?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{Config, Durability};
    use crate::model::{TriggerCondition, TriggerStatus, micros_to_datetime, now_micros};
    use crate::store::NewEvent;

    fn open(dir: &std::path::Path) -> Store {
        let mut config = Config::new(dir);
        config.durability = Durability::Normal;
        Store::open(&config, Arc::new(|_| {})).unwrap()
    }

    fn reminder(tag: &str) -> Trigger {
        Trigger {
            id: crate::model::new_id(),
            message: format!("saw {tag}"),
            when: TriggerCondition {
                tag: Some(tag.into()),
                kinds: vec![crate::model::RecordKind::Event],
                ..TriggerCondition::default()
            },
            task_id: None,
            status: TriggerStatus::Armed,
            created_at: micros_to_datetime(now_micros()),
            fired_at: None,
            fired_by: None,
            session_id: "s".into(),
        }
    }

    fn event(tag: &str) -> NewEvent {
        NewEvent {
            content: "something happened".into(),
            tags: vec![tag.into()],
            importance: 0.5,
            occurred_at: None,
            metadata: Default::default(),
        }
    }

    /// A write that fails after storing a matching record fires nothing and
    /// leaves no audit row: both are in its transaction. The next matching
    /// write fires the reminder, once, and its caller hears of it.
    #[tokio::test]
    async fn reminders_and_audit_rows_commit_or_roll_back_with_their_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let set = store
            .insert_trigger("ns", reminder("deploy"))
            .await
            .unwrap();

        let failing = store.write_in("ns", |txn, ns| {
            let e = crate::model::Event {
                id: crate::model::new_id(),
                content: "deploy started".into(),
                tags: vec!["deploy".into()],
                importance: 0.5,
                occurred_at: micros_to_datetime(txn.now),
                created_at: micros_to_datetime(txn.now),
                updated_at: micros_to_datetime(txn.now),
                metadata: Default::default(),
                session_id: "s".into(),
            };
            super::super::episodic::save(txn, ns, &e)?;
            Err::<(), _>(StoreError::Conflict("the write fails after storing".into()))
        });
        let (result, fired) = attributed("failing_op", "s", None, failing).await;
        assert!(result.is_err());
        assert!(fired.is_empty(), "a rolled-back write fires nothing");
        let audit = store
            .audit("ns", AuditFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(audit.len(), 1, "only the reminder's own write: {audit:?}");
        assert_eq!(audit[0].operation, "engram");
        let listed = store.list_triggers("ns", None, None, 10).await.unwrap();
        assert_eq!(listed[0].status, TriggerStatus::Armed);

        let write = store.insert_events("ns", "s", vec![event("deploy"), event("deploy")]);
        let (stored, fired) = attributed("episodic_remember_batch", "s", None, write).await;
        let stored = stored.unwrap();
        assert_eq!(
            fired.len(),
            1,
            "two matching records, one reminder, fired once"
        );
        assert_eq!(fired[0].id, set.id);
        assert_eq!(fired[0].fired_by.as_ref().unwrap().id, stored[0].id);
        let again = store.insert_events("ns", "s", vec![event("deploy")]);
        let (_, fired) = attributed("episodic_remember", "s", None, again).await;
        assert!(fired.is_empty(), "it fired already");

        let audit = store
            .audit("ns", AuditFilter::default(), None, 10)
            .await
            .unwrap();
        let ops: Vec<&str> = audit.iter().map(|a| a.operation.as_str()).collect();
        assert_eq!(
            ops,
            ["episodic_remember", "episodic_remember_batch", "engram"]
        );
        let kinds: Vec<&str> = audit[1].records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["event", "event", "trigger"],
            "the firing is audited with the write"
        );
        store.shutdown();
    }
}
