//! Prospective memory: tasks (with sub-tasks and goals), what is due, and
//! reminders that fire on a matching write or when a time passes.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::listing::{Keyset, Offsets, Page, ids_to_delete};
use super::{OpCtx, check_id, check_metadata, check_text, normalize_tags};
use crate::error::OpError;
use crate::model::{
    Priority, RecordKind, Task, TaskStatus, Trigger, TriggerCondition, TriggerStatus,
    micros_to_datetime, new_id, now_micros,
};
use crate::search::Matcher;
use crate::store::{NewTask, Order, TaskFilter, TaskPatch};
use crate::timespec::TimeSpec;

/// Most bytes of a task's title or a reminder's message.
const MAX_TITLE_BYTES: usize = 1000;
/// Fired reminders a due list shows.
const DUE_REMINDERS: usize = 20;
/// What reminders watch when `kinds` is not given.
const DEFAULT_WATCHED: [RecordKind; 2] = [RecordKind::Event, RecordKind::Fact];

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TaskOutput {
    pub task: Task,
}

/// What an id argument of this layer names.
const TASK_ID: &str = "a task id (prospective_list returns them)";

fn check_notes(notes: Option<&String>, cx: &OpCtx) -> Result<(), OpError> {
    match notes {
        Some(n) => check_text("notes", n, cx.limits().max_content_bytes),
        None => Ok(()),
    }
}

/// A field that may be set, cleared with `null`, or left out.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// ---------- prospective_create ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateInput {
    /// What to do, in a line.
    pub title: String,
    /// Details, context, links.
    pub notes: Option<String>,
    /// When it is due (RFC 3339 with its offset, "tomorrow", "in 2h").
    pub due_at: Option<TimeSpec>,
    /// "low", "normal" (default), "high" or "urgent".
    pub priority: Option<Priority>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The task or goal this one is part of.
    pub parent_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

operation!(Create = "prospective_create", CreateInput => TaskOutput, prospective_create);

async fn prospective_create(cx: OpCtx, input: CreateInput) -> Result<TaskOutput, OpError> {
    let limits = cx.limits();
    check_text("title", &input.title, MAX_TITLE_BYTES)?;
    check_notes(input.notes.as_ref(), &cx)?;
    let metadata = input.metadata.unwrap_or_default();
    check_metadata(&metadata, limits)?;
    if let Some(parent) = &input.parent_id {
        check_id("parent_id", parent, "a task id, or leave it out")?;
    }
    let new = NewTask {
        title: input.title,
        notes: input.notes,
        priority: input.priority.unwrap_or_default(),
        due_at: input.due_at.map(TimeSpec::micros),
        tags: normalize_tags(input.tags, limits)?,
        parent_id: input.parent_id,
        metadata,
    };
    let task = cx
        .store()
        .insert_task(cx.namespace(), &cx.session.id, new)
        .await?;
    Ok(TaskOutput { task })
}

// ---------- prospective_get ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetInput {
    /// The task's id.
    pub id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GetOutput {
    pub task: Task,
    /// Its direct sub-tasks, oldest first.
    pub subtasks: Vec<Task>,
}

operation!(Get = "prospective_get", GetInput => GetOutput, prospective_get);

async fn prospective_get(cx: OpCtx, input: GetInput) -> Result<GetOutput, OpError> {
    check_id("id", &input.id, TASK_ID)?;
    let (task, subtasks) = cx
        .store()
        .task_with_subtasks(cx.namespace(), &input.id)
        .await?;
    Ok(GetOutput { task, subtasks })
}

// ---------- prospective_update ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateInput {
    /// The task to change.
    pub id: String,
    pub title: Option<String>,
    /// New notes; null clears them.
    #[serde(default, deserialize_with = "nullable")]
    pub notes: Option<Option<String>>,
    /// New deadline; null clears it.
    #[serde(default, deserialize_with = "nullable")]
    pub due_at: Option<Option<TimeSpec>>,
    pub priority: Option<Priority>,
    /// New tags, replacing all old tags.
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
}

operation!(Update = "prospective_update", UpdateInput => TaskOutput, prospective_update);

async fn prospective_update(cx: OpCtx, input: UpdateInput) -> Result<TaskOutput, OpError> {
    check_id("id", &input.id, TASK_ID)?;
    let limits = cx.limits();
    some_change!(input, title, notes, due_at, priority, tags, metadata)?;
    if let Some(t) = &input.title {
        check_text("title", t, MAX_TITLE_BYTES)?;
    }
    check_notes(input.notes.as_ref().and_then(Option::as_ref), &cx)?;
    if let Some(m) = &input.metadata {
        check_metadata(m, limits)?;
    }
    let patch = TaskPatch {
        title: input.title,
        notes: input.notes,
        priority: input.priority,
        due_at: input.due_at.map(|d| d.map(TimeSpec::micros)),
        tags: input.tags.map(|t| normalize_tags(t, limits)).transpose()?,
        metadata: input.metadata,
    };
    let task = cx
        .store()
        .tasks()
        .update(cx.namespace(), &input.id, patch)
        .await?;
    Ok(TaskOutput { task })
}

// ---------- prospective_complete / prospective_cancel ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CloseInput {
    /// The open task to close.
    pub id: String,
    /// Also close its open sub-tasks (default false: they must be closed first).
    #[serde(default)]
    pub with_subtasks: bool,
    /// A line added to the task's notes: the outcome, or why it was dropped.
    pub note: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CloseOutput {
    /// Every task closed: the one asked for first, then its sub-tasks.
    pub closed: Vec<Task>,
}

async fn close(cx: OpCtx, input: CloseInput, status: TaskStatus) -> Result<CloseOutput, OpError> {
    check_id("id", &input.id, TASK_ID)?;
    check_notes(input.note.as_ref(), &cx).map_err(|e| match e {
        OpError::InvalidInput(m) => OpError::invalid(m.replace("`notes`", "`note`")),
        other => other,
    })?;
    let closed = cx
        .store()
        .close_task(
            cx.namespace(),
            &input.id,
            status,
            input.with_subtasks,
            input.note,
        )
        .await?;
    Ok(CloseOutput { closed })
}

operation!(Complete = "prospective_complete", CloseInput => CloseOutput, prospective_complete);

async fn prospective_complete(cx: OpCtx, input: CloseInput) -> Result<CloseOutput, OpError> {
    close(cx, input, TaskStatus::Done).await
}

operation!(Cancel = "prospective_cancel", CloseInput => CloseOutput, prospective_cancel);

async fn prospective_cancel(cx: OpCtx, input: CloseInput) -> Result<CloseOutput, OpError> {
    close(cx, input, TaskStatus::Cancelled).await
}

// ---------- prospective_delete ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteInput {
    /// Ids of tasks (deleted with their sub-tasks and reminders) or of reminders.
    pub ids: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteOutput {
    /// Every id deleted, including sub-tasks and reminders deleted with a task.
    pub deleted: Vec<String>,
    /// Ids that matched no task or reminder here (nothing was done for them).
    pub not_found: Vec<String>,
}

operation!(Delete = "prospective_delete", DeleteInput => DeleteOutput, prospective_delete);

async fn prospective_delete(cx: OpCtx, input: DeleteInput) -> Result<DeleteOutput, OpError> {
    let ids = ids_to_delete("ids", input.ids, TASK_ID, &cx)?;
    let (deleted, not_found) = cx.store().delete_prospective(cx.namespace(), ids).await?;
    Ok(DeleteOutput { deleted, not_found })
}

// ---------- prospective_list ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ListInput {
    /// Only tasks in these states (default: ["open"]).
    pub status: Option<Vec<TaskStatus>>,
    /// Only tasks with all these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only the sub-tasks of this task.
    pub parent_id: Option<String>,
    /// Only tasks that are not sub-tasks (default false).
    #[serde(default)]
    pub top_level: bool,
    /// Only tasks due at or after this time.
    pub due_after: Option<TimeSpec>,
    /// Only tasks due before this time.
    pub due_before: Option<TimeSpec>,
    #[serde(flatten)]
    pub page: Page,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    /// Oldest first.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` with the same arguments for the next page. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

operation!(List = "prospective_list", ListInput => ListOutput, prospective_list);

async fn prospective_list(cx: OpCtx, mut input: ListInput) -> Result<ListOutput, OpError> {
    let page = Keyset::start(&cx, &mut input, |i| &mut i.page)?;
    if input.top_level && input.parent_id.is_some() {
        return Err(OpError::invalid(
            "`top_level` and `parent_id` exclude each other: pass one",
        ));
    }
    if let (Some(a), Some(b)) = (input.due_after, input.due_before)
        && a.micros() >= b.micros()
    {
        return Err(OpError::invalid(
            "`due_after` is not before `due_before`: swap them or widen the range",
        ));
    }
    let filter = TaskFilter {
        statuses: input.status.unwrap_or_else(|| vec![TaskStatus::Open]),
        tags: normalize_tags(input.tags, cx.limits())?,
        parent: match (input.parent_id, input.top_level) {
            (Some(p), _) => Some(Some(p)),
            (None, true) => Some(None),
            (None, false) => None,
        },
        due_after: input.due_after.map(TimeSpec::micros),
        due_before: input.due_before.map(TimeSpec::micros),
    };
    let (tasks, next_cursor) = page
        .fetch(&cx, cx.store().tasks(), filter, Order::Asc)
        .await?;
    Ok(ListOutput { tasks, next_cursor })
}

// ---------- prospective_due ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct DueInput {
    /// Open tasks due before this time (default: now, i.e. the overdue ones).
    pub before: Option<TimeSpec>,
    /// Only tasks with all these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(flatten)]
    pub page: Page,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DueTask {
    /// Due before now.
    pub overdue: bool,
    pub task: Task,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DueOutput {
    /// Most urgent first: overdue tasks by priority, then deadline; then the
    /// rest by deadline, then priority.
    pub tasks: Vec<DueTask>,
    /// Reminders that have fired (latest first, at most 20). Delete one with
    /// prospective_delete once it is dealt with.
    pub fired_reminders: Vec<Trigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

operation!(Due = "prospective_due", DueInput => DueOutput, prospective_due);

async fn prospective_due(cx: OpCtx, mut input: DueInput) -> Result<DueOutput, OpError> {
    let page = Offsets::start(&cx, &mut input, |i| &mut i.page)?;
    let now = now_micros();
    let before = input.before.map_or(now, TimeSpec::micros);
    let tags = normalize_tags(input.tags, cx.limits())?;
    let (store, ns) = (cx.store(), cx.namespace());
    let mut tasks = store
        .due_tasks(ns, now, before, tags, page.offset, page.limit + 1)
        .await?;
    let more = tasks.len() > page.limit;
    tasks.truncate(page.limit);
    let fired_reminders = store.fired_triggers(ns, now, DUE_REMINDERS).await?;
    let tasks = tasks
        .into_iter()
        .map(|task| DueTask {
            overdue: task.due_at.is_some_and(|d| d.timestamp_micros() < now),
            task,
        })
        .collect();
    let paged = page.finish(&cx, tasks, more);
    Ok(DueOutput {
        tasks: paged.hits,
        fired_reminders,
        next_cursor: paged.next_cursor,
    })
}

// ---------- prospective_trigger_set ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TriggerSetInput {
    /// What to remind of when it fires.
    pub message: String,
    /// Fire when a record holding all these words (any word forms) is stored or changed.
    pub query: Option<String>,
    /// Fire when a record with this tag is stored or changed.
    pub tag: Option<String>,
    /// Fire when this time passes (RFC 3339, "in 2h", "tomorrow").
    pub at: Option<TimeSpec>,
    /// For `query` and `tag`: the kinds of record watched (default
    /// ["event", "fact"]; also "procedure").
    pub kinds: Option<Vec<RecordKind>>,
    /// The task this reminder is about.
    pub task_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TriggerOutput {
    pub trigger: Trigger,
}

operation!(TriggerSet = "prospective_trigger_set", TriggerSetInput => TriggerOutput, prospective_trigger_set);

async fn prospective_trigger_set(
    cx: OpCtx,
    input: TriggerSetInput,
) -> Result<TriggerOutput, OpError> {
    check_text("message", &input.message, MAX_TITLE_BYTES)?;
    let given = [
        input.query.is_some(),
        input.tag.is_some(),
        input.at.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(OpError::invalid(
            "give exactly one of `query` (words a stored record must match), `tag` (a tag it \
             must carry) or `at` (a time)",
        ));
    }
    if let Some(q) = &input.query {
        check_text("query", q, cx.limits().max_query_bytes)?;
        if Matcher::words(q).is_none() {
            return Err(OpError::invalid(
                "`query` has only very common words: add a word that names what to watch for",
            ));
        }
    }
    let tag = match input.tag {
        Some(t) => normalize_tags(vec![t], cx.limits())
            .map_err(|e| OpError::invalid(e.to_string().replace("`tags[0]`", "`tag`")))?
            .pop(),
        None => None,
    };
    let kinds = match (input.at.is_some(), input.kinds) {
        (true, Some(_)) => {
            return Err(OpError::invalid(
                "`kinds` goes with `query` or `tag`: a time reminder watches no writes",
            ));
        }
        (true, None) => Vec::new(),
        (false, None) => DEFAULT_WATCHED.to_vec(),
        (false, Some(kinds)) => check_kinds(kinds)?,
    };
    if let Some(task) = &input.task_id {
        check_id("task_id", task, TASK_ID)?;
    }
    let trigger = Trigger {
        id: new_id(),
        message: input.message,
        when: TriggerCondition {
            query: input.query,
            tag,
            at: input.at.map(|t| micros_to_datetime(t.micros())),
            kinds,
        },
        task_id: input.task_id,
        status: TriggerStatus::Armed,
        created_at: micros_to_datetime(now_micros()),
        fired_at: None,
        fired_by: None,
        session_id: cx.session.id.clone(),
    };
    let trigger = cx.store().insert_trigger(cx.namespace(), trigger).await?;
    Ok(TriggerOutput { trigger })
}

fn check_kinds(mut kinds: Vec<RecordKind>) -> Result<Vec<RecordKind>, OpError> {
    if kinds.is_empty() {
        return Err(OpError::invalid(
            "`kinds` is empty: name at least one, or leave it out for events and facts",
        ));
    }
    if let Some(k) = kinds.iter().find(|k| !k.watchable()) {
        return Err(OpError::invalid(format!(
            "`kinds` has {:?}, which reminders cannot watch: use event, fact or procedure",
            k.as_str()
        )));
    }
    kinds.dedup();
    Ok(kinds)
}

// ---------- prospective_triggers ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct TriggersInput {
    /// Only "armed" (waiting) or only "fired" reminders (default: both).
    pub status: Option<TriggerStatus>,
    #[serde(flatten)]
    pub page: Page,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TriggersOutput {
    /// Newest first, each with what fired it and when.
    pub triggers: Vec<Trigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

operation!(Triggers = "prospective_triggers", TriggersInput => TriggersOutput, prospective_triggers);

async fn prospective_triggers(
    cx: OpCtx,
    mut input: TriggersInput,
) -> Result<TriggersOutput, OpError> {
    let page = Keyset::start(&cx, &mut input, |i| &mut i.page)?;
    let mut triggers = cx
        .store()
        .list_triggers(cx.namespace(), input.status, page.after.clone(), page.limit)
        .await?;
    let next_cursor = page.finish(&cx, &mut triggers, |t| {
        (t.created_at.timestamp_micros(), t.id.clone())
    });
    Ok(TriggersOutput {
        triggers,
        next_cursor,
    })
}
