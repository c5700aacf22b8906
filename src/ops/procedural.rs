//! Procedural memory: how to do things, versioned, with each procedure's track
//! record; suggestions rank by text relevance times a smoothed success rate.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::listing::{Deleted, HitPage, Hits, Keyset, Offsets, Page, Window, ids_to_delete};
use super::search::search_records;
use super::{OpCtx, check_id, check_metadata, check_text, normalize_tags, page_size};
use crate::error::OpError;
use crate::model::{Execution, Outcome, Procedure, ProcedureVersion, RecordKind, TrackRecord};
use crate::search::{Matcher, SearchQuery};
use crate::store::{
    NewExecution, NewProcedure, Order, ProcedureFilter, ProcedurePatch, smoothed_success,
};

/// Most steps (and most preconditions) one procedure has.
const MAX_STEPS: usize = 100;
/// Most bytes of a procedure's name.
const MAX_NAME_BYTES: usize = 200;
const DEFAULT_SUGGESTIONS: usize = 5;
/// How many of the best text matches a suggestion re-ranks.
const SUGGEST_CANDIDATES: usize = 50;
/// Runs a stats answer lists.
const RECENT_RUNS: usize = 5;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcedureOutput {
    pub procedure: Procedure,
}

/// What an id argument of this layer names: a procedure is named by its id
/// or by its unique name.
const PROCEDURE_KEY: &str = "a procedure's id or name";

fn check_lines(field: &str, lines: &[String], cx: &OpCtx, required: bool) -> Result<(), OpError> {
    if required && lines.is_empty() {
        return Err(OpError::invalid(format!(
            "`{field}` is empty: give at least one, in order"
        )));
    }
    if lines.len() > MAX_STEPS {
        return Err(OpError::invalid(format!(
            "`{field}` has {} items, the limit is {MAX_STEPS}: split the procedure",
            lines.len()
        )));
    }
    for (i, line) in lines.iter().enumerate() {
        check_text(
            &format!("{field}[{i}]"),
            line,
            cx.limits().max_content_bytes,
        )?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), OpError> {
    check_text("name", name, MAX_NAME_BYTES)
}

// ---------- procedural_store ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StoreInput {
    /// A short name, unique here, e.g. "deploy-web".
    pub name: String,
    /// What it achieves and when to use it.
    pub goal: String,
    /// The steps, in order.
    pub steps: Vec<String>,
    /// What must hold before starting.
    #[serde(default)]
    pub preconditions: Vec<String>,
    /// Labels to filter by later.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Extra JSON detail, kept as given, not searched.
    pub metadata: Option<Map<String, Value>>,
}

operation!(StoreProcedure = "procedural_store", StoreInput => ProcedureOutput, procedural_store);

async fn procedural_store(cx: OpCtx, input: StoreInput) -> Result<ProcedureOutput, OpError> {
    let limits = cx.limits();
    check_name(&input.name)?;
    check_text("goal", &input.goal, limits.max_content_bytes)?;
    check_lines("steps", &input.steps, &cx, true)?;
    check_lines("preconditions", &input.preconditions, &cx, false)?;
    let metadata = input.metadata.unwrap_or_default();
    check_metadata(&metadata, limits)?;
    let new = NewProcedure {
        name: input.name.trim().to_string(),
        goal: input.goal,
        steps: input.steps,
        preconditions: input.preconditions,
        tags: normalize_tags(input.tags, limits)?,
        metadata,
    };
    let procedure = cx
        .store()
        .insert_procedure(cx.namespace(), &cx.session.id, new)
        .await?;
    Ok(ProcedureOutput { procedure })
}

// ---------- procedural_get ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetInput {
    /// The procedure's id or name.
    pub id: String,
    /// An older version to read as well (see procedural_versions).
    pub version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GetOutput {
    pub procedure: Procedure,
    /// The version asked for with `version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<ProcedureVersion>,
}

operation!(Get = "procedural_get", GetInput => GetOutput, procedural_get);

async fn procedural_get(cx: OpCtx, input: GetInput) -> Result<GetOutput, OpError> {
    check_id("id", &input.id, PROCEDURE_KEY)?;
    let store = cx.store();
    let Some(wanted) = input.version else {
        let procedure = store.get_procedure(cx.namespace(), &input.id).await?;
        return Ok(GetOutput {
            procedure,
            version: None,
        });
    };
    let (procedure, versions) = store.procedure_versions(cx.namespace(), &input.id).await?;
    let version = versions.into_iter().find(|v| v.version == wanted);
    if version.is_none() {
        return Err(OpError::NotFound(format!(
            "procedure {:?} has no version {wanted}: its versions are 1 to {}",
            procedure.current.name, procedure.current.version
        )));
    }
    Ok(GetOutput { procedure, version })
}

// ---------- procedural_update ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateInput {
    /// The procedure's id or name.
    pub id: String,
    /// A new name, unique here.
    pub name: Option<String>,
    pub goal: Option<String>,
    /// New steps, replacing all old steps.
    pub steps: Option<Vec<String>>,
    pub preconditions: Option<Vec<String>>,
    /// New tags, replacing all old tags.
    pub tags: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
}

operation!(Update = "procedural_update", UpdateInput => ProcedureOutput, procedural_update);

async fn procedural_update(cx: OpCtx, input: UpdateInput) -> Result<ProcedureOutput, OpError> {
    check_id("id", &input.id, PROCEDURE_KEY)?;
    let limits = cx.limits();
    some_change!(input, name, goal, steps, preconditions, tags, metadata)?;
    if let Some(name) = &input.name {
        check_name(name)?;
    }
    if let Some(goal) = &input.goal {
        check_text("goal", goal, limits.max_content_bytes)?;
    }
    if let Some(steps) = &input.steps {
        check_lines("steps", steps, &cx, true)?;
    }
    if let Some(pre) = &input.preconditions {
        check_lines("preconditions", pre, &cx, false)?;
    }
    if let Some(m) = &input.metadata {
        check_metadata(m, limits)?;
    }
    let patch = ProcedurePatch {
        name: input.name.map(|n| n.trim().to_string()),
        goal: input.goal,
        steps: input.steps,
        preconditions: input.preconditions,
        tags: input.tags.map(|t| normalize_tags(t, limits)).transpose()?,
        metadata: input.metadata,
    };
    let procedure = cx
        .store()
        .update_procedure(cx.namespace(), &cx.session.id, &input.id, patch)
        .await?;
    Ok(ProcedureOutput { procedure })
}

// ---------- procedural_delete ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteInput {
    /// Ids or names of the procedures to delete (with their versions and runs).
    pub ids: Vec<String>,
}

operation!(Delete = "procedural_delete", DeleteInput => Deleted, procedural_delete);

async fn procedural_delete(cx: OpCtx, input: DeleteInput) -> Result<Deleted, OpError> {
    let ids = ids_to_delete("ids", input.ids, PROCEDURE_KEY, &cx)?;
    let (deleted, not_found) = cx.store().delete_procedures(cx.namespace(), ids).await?;
    Ok(Deleted { deleted, not_found })
}

// ---------- procedural_list ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ListInput {
    #[serde(flatten)]
    pub window: Window,
    #[serde(flatten)]
    pub page: Page,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    /// Most recently written first.
    pub procedures: Vec<Procedure>,
    /// Pass as `cursor` with the same arguments for the next page. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

operation!(List = "procedural_list", ListInput => ListOutput, procedural_list);

async fn procedural_list(cx: OpCtx, mut input: ListInput) -> Result<ListOutput, OpError> {
    let page = Keyset::start(&cx, &mut input, |i| &mut i.page)?;
    let span = input.window.check(&cx)?;
    let filter = ProcedureFilter {
        tags: span.tags,
        since: span.since,
        until: span.until,
    };
    let (procedures, next_cursor) = page
        .fetch(&cx, cx.store().procedures(), filter, Order::Desc)
        .await?;
    Ok(ListOutput {
        procedures,
        next_cursor,
    })
}

// ---------- procedural_search ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct SearchInput {
    /// What to look for in names, goals, steps and preconditions.
    pub query: String,
    #[serde(flatten)]
    pub window: Window,
    #[serde(flatten)]
    pub page: HitPage,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchHit {
    /// Relevance (BM25); higher is better. Comparable within one answer only.
    pub score: f32,
    pub procedure: Procedure,
}

pub type SearchOutput = Hits<SearchHit>;

operation!(Search = "procedural_search", SearchInput => SearchOutput, procedural_search, degraded);

fn words(query: &str, cx: &OpCtx) -> Result<Matcher, OpError> {
    check_text("query", query, cx.limits().max_query_bytes)?;
    Matcher::words(query).ok_or_else(|| {
        OpError::invalid(
            "`query` has only very common words (like \"the\", \"of\"): add a word that names \
             the task, or use procedural_list with tags",
        )
    })
}

async fn procedural_search(cx: OpCtx, mut input: SearchInput) -> Result<SearchOutput, OpError> {
    let page = Offsets::start(&cx, &mut input, |i| &mut i.page)?;
    let matcher = words(&input.query, &cx)?;
    let span = input.window.check(&cx)?;
    let query = SearchQuery {
        since: span.since,
        until: span.until,
        tags: span.tags,
        offset: page.offset,
        ..SearchQuery::new(
            cx.namespace(),
            vec![RecordKind::Procedure],
            matcher,
            page.limit,
        )
    };
    let (procedures, ns) = (cx.store().procedures(), cx.namespace());
    let found = search_records(&cx, query, |ids| procedures.get_many(ns, ids), |p| &p.id).await?;
    let hits = found
        .hits
        .into_iter()
        .map(|(score, procedure)| SearchHit { score, procedure })
        .collect();
    Ok(Hits::of(page.finish(&cx, hits, found.more), found.degraded))
}

// ---------- procedural_record_execution ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RecordInput {
    /// The procedure's id or name. The run counts for its current version.
    pub id: String,
    /// "success", "partial" or "failure".
    pub outcome: Outcome,
    /// How long it took, in milliseconds.
    pub duration_ms: Option<u64>,
    /// What happened: why it failed, what to do differently.
    pub notes: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RecordOutput {
    pub execution: Execution,
    /// The procedure with its updated track record.
    pub procedure: Procedure,
}

operation!(RecordExecution = "procedural_record_execution", RecordInput => RecordOutput, procedural_record_execution);

async fn procedural_record_execution(
    cx: OpCtx,
    input: RecordInput,
) -> Result<RecordOutput, OpError> {
    check_id("id", &input.id, PROCEDURE_KEY)?;
    if let Some(notes) = &input.notes {
        check_text("notes", notes, cx.limits().max_content_bytes)?;
    }
    let run = NewExecution {
        outcome: input.outcome,
        duration_ms: input.duration_ms,
        notes: input.notes,
    };
    let (execution, procedure) = cx
        .store()
        .record_execution(cx.namespace(), &cx.session.id, &input.id, run)
        .await?;
    Ok(RecordOutput {
        execution,
        procedure,
    })
}

// ---------- procedural_suggest ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SuggestInput {
    /// The task at hand, in natural words.
    pub task: String,
    /// Only procedures with all these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How many suggestions (default 5).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Why {
    /// Text relevance to the task, relative to the best match (1.0).
    pub relevance: f64,
    /// Success rate with one success and one failure assumed beforehand:
    /// 1 of 1 runs gives 0.67, 45 of 50 gives 0.88, no runs 0.5.
    pub smoothed_success: f64,
    pub runs: u64,
    /// The plain rate; absent before the first run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Suggestion {
    /// relevance × smoothed_success; higher is better.
    pub score: f64,
    pub why: Why,
    pub procedure: Procedure,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SuggestOutput {
    /// Best first.
    pub suggestions: Vec<Suggestion>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

operation!(Suggest = "procedural_suggest", SuggestInput => SuggestOutput, procedural_suggest, degraded);

async fn procedural_suggest(cx: OpCtx, input: SuggestInput) -> Result<SuggestOutput, OpError> {
    let limit = page_size(
        Some(input.limit.unwrap_or(DEFAULT_SUGGESTIONS)),
        cx.limits(),
    )?;
    let matcher = words(&input.task, &cx).map_err(|e| match e {
        OpError::InvalidInput(m) => OpError::invalid(m.replace("`query`", "`task`")),
        other => other,
    })?;
    let query = SearchQuery {
        tags: normalize_tags(input.tags, cx.limits())?,
        ..SearchQuery::new(
            cx.namespace(),
            vec![RecordKind::Procedure],
            matcher,
            SUGGEST_CANDIDATES,
        )
    };
    let (procedures, ns) = (cx.store().procedures(), cx.namespace());
    let found = search_records(&cx, query, |ids| procedures.get_many(ns, ids), |p| &p.id).await?;
    let best = found
        .hits
        .iter()
        .map(|(s, _)| *s as f64)
        .fold(0.0, f64::max);
    let mut suggestions: Vec<Suggestion> = found
        .hits
        .into_iter()
        .map(|(score, procedure)| {
            let t = &procedure.track_record;
            let why = Why {
                relevance: if best > 0.0 { score as f64 / best } else { 1.0 },
                smoothed_success: smoothed_success(t),
                runs: t.runs,
                success_rate: t.success_rate,
            };
            Suggestion {
                score: why.relevance * why.smoothed_success,
                why,
                procedure,
            }
        })
        .collect();
    suggestions.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.procedure.id.cmp(&b.procedure.id))
    });
    suggestions.truncate(limit);
    Ok(SuggestOutput {
        suggestions,
        degraded: found.degraded,
    })
}

// ---------- procedural_versions ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct VersionsInput {
    /// The procedure's id or name.
    pub id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionsOutput {
    pub procedure_id: String,
    /// Every version as written, newest first.
    pub versions: Vec<ProcedureVersion>,
}

operation!(Versions = "procedural_versions", VersionsInput => VersionsOutput, procedural_versions);

async fn procedural_versions(cx: OpCtx, input: VersionsInput) -> Result<VersionsOutput, OpError> {
    check_id("id", &input.id, PROCEDURE_KEY)?;
    let (procedure, versions) = cx
        .store()
        .procedure_versions(cx.namespace(), &input.id)
        .await?;
    Ok(VersionsOutput {
        procedure_id: procedure.id,
        versions,
    })
}

// ---------- procedural_stats ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatsInput {
    /// The procedure's id or name.
    pub id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionRecord {
    pub version: u32,
    pub runs: u64,
    /// (successes + partials / 2) / runs.
    pub success_rate: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StatsOutput {
    pub procedure_id: String,
    pub name: String,
    /// The current version.
    pub version: u32,
    #[serde(flatten)]
    pub track_record: TrackRecord,
    /// What procedural_suggest ranks by (see its `why`).
    pub smoothed_success: f64,
    /// Median duration of the runs that recorded one (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_duration_ms: Option<u64>,
    /// The latest failed run, with its notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Execution>,
    /// The latest runs, newest first.
    pub recent: Vec<Execution>,
    /// Runs and success rate of each version that was run.
    pub by_version: Vec<VersionRecord>,
}

operation!(Stats = "procedural_stats", StatsInput => StatsOutput, procedural_stats);

async fn procedural_stats(cx: OpCtx, input: StatsInput) -> Result<StatsOutput, OpError> {
    check_id("id", &input.id, PROCEDURE_KEY)?;
    let (p, runs) = cx
        .store()
        .procedure_runs(cx.namespace(), &input.id, RECENT_RUNS)
        .await?;
    let d = &runs.durations_ms;
    let median_duration_ms = match d.len() {
        0 => None,
        n if n % 2 == 1 => Some(d[n / 2]),
        n => Some((d[n / 2 - 1] + d[n / 2]) / 2),
    };
    let t = &p.track_record;
    Ok(StatsOutput {
        smoothed_success: smoothed_success(t),
        procedure_id: p.id.clone(),
        name: p.current.name.clone(),
        version: p.current.version,
        track_record: t.clone(),
        median_duration_ms,
        last_failure: runs.last_failure,
        recent: runs.recent,
        by_version: runs
            .by_version
            .into_iter()
            .map(|(version, runs, successes, partials)| VersionRecord {
                version,
                runs,
                success_rate: TrackRecord::rate(successes, partials, runs).unwrap_or(0.0),
            })
            .collect(),
    })
}
