//! Tasks and reminders in the store.
//!
//! Tasks form trees by `parent_id` (goals and their sub-tasks); deleting a
//! task deletes its sub-tasks and the reminders that point at any of them,
//! each change logged. A reminder (`triggers`) is kept as its JSON with two
//! columns to find it by: `watching` (armed and waiting for a write: fired by
//! `fire_triggers`, in the transaction of the write that matches it) and `at`
//! (waiting for a time: it counts as fired once the time has passed, without a
//! write).

use serde_json::{Map, Value};

use super::sql::{Conn, Dialect, Row, args};
use super::table::{Order, Query, Records, Table, Tags, from_json, json, set, to_json};
use super::writer::WriteTxn;
use super::{Searchable, Store, StoreError};
use crate::model::{
    Change, Micros, Priority, RecordKind, RecordRef, SearchDoc, Task, TaskStatus, Trigger,
    TriggerStatus, micros_to_datetime, new_id,
};

/// A task to store; validated by the caller.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: String,
    pub notes: Option<String>,
    pub priority: Priority,
    pub due_at: Option<Micros>,
    pub tags: Vec<String>,
    pub parent_id: Option<String>,
    pub metadata: Map<String, Value>,
}

/// Fields to change on a task; `None` leaves a field as it is (`Some(None)`
/// clears an optional one).
#[derive(Debug, Clone, Default)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub notes: Option<Option<String>>,
    pub priority: Option<Priority>,
    pub due_at: Option<Option<Micros>>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
}

/// Which tasks a list covers.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Any of these statuses (none: any status).
    pub statuses: Vec<TaskStatus>,
    pub tags: Vec<String>,
    /// `Some(Some(id))`: sub-tasks of `id`; `Some(None)`: top-level tasks only.
    pub parent: Option<Option<String>>,
    /// due_at >= due_after
    pub due_after: Option<Micros>,
    /// due_at < due_before
    pub due_before: Option<Micros>,
}

impl TaskFilter {
    /// Narrows a query of `tasks k` to this filter.
    fn narrow(self, q: &mut Query) -> &mut Query {
        let statuses = self.statuses.iter().map(|s| status_name(*s).to_string());
        q.and_in("k.status", statuses.collect())
            .and_some("k.due_at >= ?", self.due_after)
            .and_some("k.due_at < ?", self.due_before)
            .and_each(TAGS.has, &self.tags);
        match self.parent {
            Some(Some(parent)) => q.and("k.parent_id = ?", parent),
            Some(None) => q.push(" AND k.parent_id IS NULL", []),
            None => q,
        }
    }
}

impl TaskPatch {
    fn apply(self, t: &mut Task, now: Micros) {
        set(&mut t.title, self.title);
        set(&mut t.notes, self.notes);
        set(&mut t.priority, self.priority);
        set(
            &mut t.due_at,
            self.due_at.map(|d| d.map(micros_to_datetime)),
        );
        set(&mut t.tags, self.tags);
        set(&mut t.metadata, self.metadata);
        t.updated_at = micros_to_datetime(now);
    }
}

pub(super) static TASKS: Table<Task> = Table {
    name: "tasks",
    alias: "k",
    columns: "k.id, k.title, k.notes, k.status, k.priority, k.due_at, k.tags, k.parent_id, \
              k.metadata, k.created_at, k.updated_at, k.closed_at, k.session_id",
    decode: task_from_row,
    search: &SEARCH,
    listed_by: "prospective_list or prospective_due",
};

pub(super) static SEARCH: Searchable = Searchable {
    kind: RecordKind::Task,
    sql: "SELECT k.id, k.title, k.notes, k.status, k.priority, k.due_at, k.tags, k.parent_id, \
          k.metadata, k.created_at, k.updated_at, k.closed_at, k.session_id, k.namespace \
          FROM tasks k",
    doc: |_, r| Ok(search_doc(&task_from_row(r)?, &r.get::<String>(13)?)),
};

static TAGS: Tags = Tags {
    clear: "DELETE FROM task_tags WHERE task_id = ?1",
    add: "INSERT INTO task_tags (task_id, namespace, tag) VALUES (?1, ?2, ?3) \
          ON CONFLICT DO NOTHING",
    has: "EXISTS (SELECT 1 FROM task_tags t WHERE t.task_id = k.id AND t.tag = ?)",
};

pub(crate) fn status_name(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Open => "open",
        TaskStatus::Done => "done",
        TaskStatus::Cancelled => "cancelled",
    }
}

fn priority_rank(p: Priority) -> i64 {
    p as i64
}

fn task_from_row(r: &Row<'_>) -> Result<Task, StoreError> {
    let status: String = r.get(3)?;
    let priority = match r.get::<i64>(4)? {
        0 => Priority::Low,
        1 => Priority::Normal,
        2 => Priority::High,
        3 => Priority::Urgent,
        n => return Err(StoreError::Corrupt(format!("task priority {n}"))),
    };
    Ok(Task {
        id: r.get(0)?,
        title: r.get(1)?,
        notes: r.get(2)?,
        status: from_json(&format!("\"{status}\""))?,
        priority,
        due_at: r.get::<Option<i64>>(5)?.map(micros_to_datetime),
        tags: json(r, 6)?,
        parent_id: r.get(7)?,
        metadata: json(r, 8)?,
        created_at: micros_to_datetime(r.get(9)?),
        updated_at: micros_to_datetime(r.get(10)?),
        closed_at: r.get::<Option<i64>>(11)?.map(micros_to_datetime),
        session_id: r.get(12)?,
    })
}

/// What a search finds a task by: its title and notes. Its time is when it is
/// due (else when it was created); its weight, its priority.
fn search_doc(t: &Task, namespace: &str) -> SearchDoc {
    let text = match &t.notes {
        Some(notes) => format!("{}\n{notes}", t.title),
        None => t.title.clone(),
    };
    SearchDoc {
        kind: RecordKind::Task,
        id: t.id.clone(),
        namespace: namespace.to_string(),
        text,
        tags: t.tags.clone(),
        time: t.due_at.unwrap_or(t.created_at).timestamp_micros(),
        weight: priority_rank(t.priority) as f64 / priority_rank(Priority::Urgent) as f64,
        superseded: false,
    }
}

pub(super) fn save(txn: &mut WriteTxn<'_>, namespace: &str, t: &Task) -> Result<(), StoreError> {
    txn.conn.execute(
        "INSERT INTO tasks (id, namespace, title, notes, status, priority, due_at, tags,
                            parent_id, metadata, created_at, updated_at, closed_at, session_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET
            title = excluded.title, notes = excluded.notes, status = excluded.status,
            priority = excluded.priority, due_at = excluded.due_at, tags = excluded.tags,
            metadata = excluded.metadata, updated_at = excluded.updated_at,
            closed_at = excluded.closed_at",
        &args![
            t.id,
            namespace,
            t.title,
            t.notes,
            status_name(t.status),
            priority_rank(t.priority),
            t.due_at.map(|d| d.timestamp_micros()),
            to_json(&t.tags),
            t.parent_id,
            to_json(&t.metadata),
            t.created_at.timestamp_micros(),
            t.updated_at.timestamp_micros(),
            t.closed_at.map(|d| d.timestamp_micros()),
            t.session_id,
        ],
    )?;
    TAGS.replace(txn.conn, &t.id, namespace, &t.tags, &[])?;
    txn.log_change(
        namespace,
        RecordKind::Task,
        &t.id,
        Some(search_doc(t, namespace)),
    )
}

/// Task `id` and every task below it, parents before their sub-tasks.
fn subtree(txn: &WriteTxn<'_>, namespace: &str, id: &str) -> Result<Vec<Task>, StoreError> {
    let q = Query::new(
        format!(
            "WITH RECURSIVE tree(id, depth) AS (
                 SELECT id, 0 FROM tasks WHERE namespace = ?1 AND id = ?2
                 UNION ALL
                 SELECT t.id, tree.depth + 1 FROM tasks t JOIN tree ON t.parent_id = tree.id
             )
             SELECT {} FROM tree JOIN tasks k ON k.id = tree.id ORDER BY tree.depth, k.id",
            TASKS.columns
        ),
        [namespace.to_string().into(), id.to_string().into()],
    );
    q.rows(txn.conn, task_from_row)
}

// ---- reminders ----

fn trigger_from_row(r: &Row<'_>) -> Result<Trigger, StoreError> {
    Ok(as_of_now(json(r, 0)?))
}

/// A time reminder fires when its time passes: nothing is written then, it
/// reads as fired from that time on.
fn as_of_now(mut t: Trigger) -> Trigger {
    if let (TriggerStatus::Armed, Some(at)) = (t.status, t.when.at)
        && at <= chrono::Utc::now()
    {
        t.status = TriggerStatus::Fired;
        t.fired_at = Some(at);
    }
    t
}

/// Reminders of the namespace after rowid `after`, as stored, with their rowids.
pub(super) fn triggers_after(
    conn: Conn<'_>,
    namespace: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, Trigger)>, StoreError> {
    let mut q = Query::new(
        "SELECT body, rowid FROM triggers WHERE namespace = ?",
        [namespace.to_string().into()],
    );
    q.and("rowid > ?", after)
        .push(" ORDER BY rowid", [])
        .limit(limit);
    q.rows(conn, |r| Ok((r.get(1)?, json(r, 0)?)))
}

pub(super) fn save_trigger(
    txn: &mut WriteTxn<'_>,
    namespace: &str,
    t: &Trigger,
) -> Result<(), StoreError> {
    let watching = t.status == TriggerStatus::Armed && t.when.at.is_none();
    txn.conn.execute(
        "INSERT INTO triggers (id, namespace, body, watching, at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, watching = excluded.watching",
        &args![
            t.id,
            namespace,
            to_json(t),
            watching,
            t.when.at.map(|at| at.timestamp_micros()),
            t.created_at.timestamp_micros(),
        ],
    )?;
    txn.log_write(namespace, RecordKind::Trigger, &t.id)
}

/// A top-level text field of a reminder's JSON body, as SQL: `json_extract`
/// in sqlite, `->>` on the body read as `jsonb` in PostgreSQL.
fn body_field(dialect: Dialect, field: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("json_extract(body, '$.{field}')"),
        Dialect::Postgres => format!("(body::jsonb ->> '{field}')"),
    }
}

fn delete_trigger(txn: &mut WriteTxn<'_>, namespace: &str, id: &str) -> Result<bool, StoreError> {
    let deleted = txn.conn.execute(
        "DELETE FROM triggers WHERE namespace = ?1 AND id = ?2",
        &args![namespace, id],
    )? == 1;
    if deleted {
        txn.log_change(namespace, RecordKind::Trigger, id, None)?;
    }
    Ok(deleted)
}

/// Fires, in the open write, every armed reminder of the namespace that one of
/// `changes` (records just stored or changed) matches; `matches` says whether
/// a query matches a record. Each fires once: it stops watching as it fires.
pub(super) fn fire_triggers(
    txn: &mut WriteTxn<'_>,
    namespace: &str,
    changes: &[Change],
    matches: &super::DocMatcher,
) -> Result<Vec<Trigger>, StoreError> {
    let docs: Vec<&SearchDoc> = changes
        .iter()
        .filter(|c| c.namespace == namespace)
        .filter_map(|c| c.doc.as_ref())
        .collect();
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let armed = Query::new(
        "SELECT body FROM triggers WHERE namespace = ? AND watching = 1 ORDER BY created_at, id",
        [namespace.to_string().into()],
    )
    .rows(txn.conn, |r| json::<Trigger>(r, 0))?;
    let mut fired = Vec::new();
    for mut t in armed {
        let kinds = &t.when.kinds;
        let hit = docs.iter().find(|d| {
            d.kind.watchable()
                && kinds.contains(&d.kind)
                && (t.when.tag.as_ref().is_some_and(|tag| d.tags.contains(tag))
                    || t.when.query.as_ref().is_some_and(|q| matches(q, d)))
        });
        if let Some(doc) = hit {
            t.status = TriggerStatus::Fired;
            t.fired_at = Some(micros_to_datetime(txn.now));
            t.fired_by = Some(RecordRef {
                kind: doc.kind,
                id: doc.id.clone(),
            });
            save_trigger(txn, namespace, &t)?;
            fired.push(t);
        }
    }
    Ok(fired)
}

impl Store {
    /// Stores a task; its parent, if any, must be a task of the namespace.
    pub async fn insert_task(
        &self,
        namespace: &str,
        session_id: &str,
        new: NewTask,
    ) -> Result<Task, StoreError> {
        let session_id = session_id.to_string();
        self.write_in(namespace, move |txn, ns| {
            if let Some(parent) = &new.parent_id {
                TASKS.must_get(txn.conn, ns, parent)?;
            }
            let at = micros_to_datetime(txn.now);
            let task = Task {
                id: new_id(),
                title: new.title,
                notes: new.notes,
                status: TaskStatus::Open,
                priority: new.priority,
                due_at: new.due_at.map(micros_to_datetime),
                tags: new.tags,
                parent_id: new.parent_id,
                metadata: new.metadata,
                created_at: at,
                updated_at: at,
                closed_at: None,
                session_id,
            };
            save(txn, ns, &task)?;
            Ok(task)
        })
        .await
    }

    /// Tasks by id, listed and counted by creation time (created_at, id), and
    /// updated (closing is `close_tasks`).
    pub fn tasks(&self) -> Records<'_, Task, TaskFilter, TaskPatch> {
        Records {
            store: self,
            table: &TASKS,
            key: ("k.created_at", "k.id"),
            key_of: |t| (t.created_at.timestamp_micros(), t.id.clone()),
            narrow: TaskFilter::narrow,
            patch: TaskPatch::apply,
            save,
        }
    }

    /// Task `id` and its direct sub-tasks (oldest first).
    pub async fn task_with_subtasks(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<(Task, Vec<Task>), StoreError> {
        let id = id.to_string();
        self.read_in(namespace, move |conn, ns| {
            let task = TASKS.must_get(conn, ns, &id)?;
            let mut q = TASKS.select(ns);
            q.and("k.parent_id = ?", id)
                .push(" ORDER BY k.created_at, k.id", []);
            Ok((task, q.rows(conn, task_from_row)?))
        })
        .await
    }

    /// Closes task `id` as `status` (done or cancelled). Its open sub-tasks
    /// are closed with it when `with_subtasks`; otherwise they refuse the
    /// close. Returns every task closed, the asked one first.
    pub async fn close_task(
        &self,
        namespace: &str,
        id: &str,
        status: TaskStatus,
        with_subtasks: bool,
        note: Option<String>,
    ) -> Result<Vec<Task>, StoreError> {
        let id = id.to_string();
        self.write_in(namespace, move |txn, ns| {
            let tree = subtree(txn, ns, &id)?;
            let Some(task) = tree.first() else {
                // Not a task of this namespace: the error says where ids come from.
                return TASKS.must_get(txn.conn, ns, &id).map(|_| Vec::new());
            };
            if task.status != TaskStatus::Open {
                return Err(StoreError::Conflict(format!(
                    "task {id:?} is already {}: only open tasks can be completed or cancelled",
                    status_name(task.status)
                )));
            }
            let open_below = tree[1..]
                .iter()
                .filter(|t| t.status == TaskStatus::Open)
                .count();
            if open_below > 0 && !with_subtasks {
                return Err(StoreError::Conflict(format!(
                    "task {id:?} has {open_below} open sub-task(s): close them first, or pass \
                     `with_subtasks: true` to close them with it"
                )));
            }
            let mut closed = Vec::new();
            for (i, mut t) in tree.into_iter().enumerate() {
                if t.status != TaskStatus::Open {
                    continue;
                }
                if i == 0
                    && let Some(note) = &note
                {
                    t.notes = Some(match t.notes.take() {
                        Some(old) => format!("{old}\n{note}"),
                        None => note.clone(),
                    });
                }
                t.status = status;
                t.closed_at = Some(micros_to_datetime(txn.now));
                t.updated_at = micros_to_datetime(txn.now);
                save(txn, ns, &t)?;
                closed.push(t);
            }
            Ok(closed)
        })
        .await
    }

    /// Deletes tasks (each with its sub-tasks and the reminders pointing at
    /// them) and reminders, by id; returns (deleted ids, not found).
    pub async fn delete_prospective(
        &self,
        namespace: &str,
        ids: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        self.write_in(namespace, move |txn, ns| {
            let (mut deleted, mut missing) = (Vec::new(), Vec::new());
            for id in ids {
                if deleted.contains(&id) {
                    continue;
                }
                if delete_trigger(txn, ns, &id)? {
                    deleted.push(id);
                    continue;
                }
                let tree = subtree(txn, ns, &id)?;
                if tree.is_empty() {
                    missing.push(id);
                    continue;
                }
                // Sub-tasks first: a parent outlives its children.
                for t in tree.iter().rev() {
                    let pointing = Query::new(
                        format!(
                            "SELECT id FROM triggers WHERE namespace = ? AND {} = ?",
                            body_field(txn.conn.dialect(), "task_id")
                        ),
                        [ns.to_string().into(), t.id.clone().into()],
                    )
                    .column::<String>(txn.conn)?;
                    for trigger in pointing {
                        delete_trigger(txn, ns, &trigger)?;
                        deleted.push(trigger);
                    }
                    TASKS.delete(txn, ns, &t.id)?;
                    deleted.push(t.id.clone());
                }
            }
            Ok((deleted, missing))
        })
        .await
    }

    /// Open tasks due before `before`, most urgent first: overdue ones (due
    /// before `now`) by priority, then by deadline; then the rest by deadline,
    /// then priority. Skips the first `offset`; at most `limit`.
    ///
    /// Two index walks, not one sort: the overdue part in (priority desc,
    /// deadline) order (`tasks_by_urgency`), then the upcoming part in deadline
    /// order (`tasks_by_due`); each reads only the rows the page needs.
    pub async fn due_tasks(
        &self,
        namespace: &str,
        now: Micros,
        before: Micros,
        tags: Vec<String>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        // Counting the overdue tasks grows with them: a scan.
        self.scan_in(namespace, move |conn, ns| {
            // `due`: the deadline term; `+k.due_at` keeps sqlite from taking
            // the deadline index (and sorting every overdue task) over the
            // urgency index, which is already in the order wanted.
            let open = |due: &str, until: Micros| {
                let mut q = TASKS.select(ns);
                q.push(" AND k.status = 'open'", [])
                    .and(due, until)
                    .and_each(TAGS.has, &tags);
                q
            };
            let overdue_until = now.min(before);
            let mut overdue = open("+k.due_at < ?", overdue_until);
            overdue
                .push(" ORDER BY k.priority DESC, k.due_at, k.id", [])
                .limit(limit)
                .push(" OFFSET ?", [(offset as i64).into()]);
            let mut tasks = overdue.rows(conn, task_from_row)?;
            if tasks.len() == limit || before <= now {
                return Ok(tasks);
            }
            // The page runs past the overdue tasks: count them to know where
            // in the upcoming ones it resumes.
            let mut counted = TASKS.select_of("count(*)", ns);
            counted
                .push(" AND k.status = 'open'", [])
                .and("k.due_at < ?", overdue_until)
                .and_each(TAGS.has, &tags);
            let skip = offset.saturating_sub(counted.count(conn)? as usize);
            let mut upcoming = open("k.due_at < ?", before);
            upcoming
                .and("k.due_at >= ?", now)
                .push(" ORDER BY k.due_at, k.priority DESC, k.id", [])
                .limit(limit - tasks.len())
                .push(" OFFSET ?", [(skip as i64).into()]);
            tasks.extend(upcoming.rows(conn, task_from_row)?);
            Ok(tasks)
        })
        .await
    }

    /// Stores a reminder; the task it names, if any, must exist here.
    pub async fn insert_trigger(
        &self,
        namespace: &str,
        trigger: Trigger,
    ) -> Result<Trigger, StoreError> {
        self.write_in(namespace, move |txn, ns| {
            if let Some(task) = &trigger.task_id {
                TASKS.must_get(txn.conn, ns, task)?;
            }
            let mut t = trigger;
            t.created_at = micros_to_datetime(txn.now);
            save_trigger(txn, ns, &t)?;
            Ok(as_of_now(t))
        })
        .await
    }

    /// Reminders of the namespace, newest first, after the keyset
    /// (created_at, id); `status` narrows to armed or fired ones.
    pub async fn list_triggers(
        &self,
        namespace: &str,
        status: Option<TriggerStatus>,
        after: Option<(Micros, String)>,
        limit: usize,
    ) -> Result<Vec<Trigger>, StoreError> {
        let namespace = namespace.to_string();
        self.readers
            .read(move |conn| {
                // Time reminders change status without a write: filter after reading.
                let mut out = Vec::new();
                let mut after = after;
                loop {
                    let mut q = Query::new(
                        "SELECT body, created_at, id FROM triggers r WHERE r.namespace = ?",
                        [namespace.clone().into()],
                    );
                    q.page(
                        ("r.created_at", "r.id"),
                        Order::Desc,
                        after.take(),
                        limit + 1,
                    );
                    let rows = q.rows(conn, |r| {
                        Ok((trigger_from_row(r)?, r.get::<i64>(1)?, r.get::<String>(2)?))
                    })?;
                    let done = rows.len() <= limit;
                    for (t, at, id) in rows {
                        after = Some((at, id));
                        if status.is_none_or(|s| s == t.status) {
                            out.push(t);
                        }
                        if out.len() > limit {
                            return Ok(out);
                        }
                    }
                    if done {
                        return Ok(out);
                    }
                }
            })
            .await
    }

    /// Reminders that have fired (by a write, or by their time passing up to
    /// `before`), latest first, at most `limit`.
    pub async fn fired_triggers(
        &self,
        namespace: &str,
        before: Micros,
        limit: usize,
    ) -> Result<Vec<Trigger>, StoreError> {
        let status = body_field(self.dialect(), "status");
        let q = Query::new(
            format!(
                "SELECT body FROM triggers WHERE namespace = ?
                   AND ({status} = 'fired' OR (watching = 0 AND at < ?))"
            ),
            [namespace.to_string().into(), before.into()],
        );
        let mut fired = self.scan_rows(q, trigger_from_row).await?;
        fired.sort_by(|a, b| b.fired_at.cmp(&a.fired_at).then(a.id.cmp(&b.id)));
        fired.truncate(limit);
        Ok(fired)
    }
}
