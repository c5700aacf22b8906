//! Meta: engram about itself — health of its backends, the query cache, and
//! the audit trail of writes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use base64::Engine;

use super::listing::{Keyset, Page, Window, off_runtime};
use super::{OpCtx, cursor};
use crate::app::Health;
use crate::error::OpError;
use crate::interop::engram;
use std::collections::BTreeMap;

use crate::model::{AuditEntry, RecordKind, micros_to_datetime, now_micros};
use crate::resilience::cache::CacheStats;
use crate::store::{AuditFilter, ExportPosition, Policy};
use crate::timespec::TimeSpec;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NoInput {}

operation!(HealthOp = "meta_health", NoInput => Health, meta_health);

async fn meta_health(cx: OpCtx, _: NoInput) -> Result<Health, OpError> {
    Ok(cx.app.health())
}

operation!(CacheStatsOp = "meta_cache_stats", NoInput => CacheStats, meta_cache_stats);

async fn meta_cache_stats(cx: OpCtx, _: NoInput) -> Result<CacheStats, OpError> {
    Ok(cx.app.cache_stats())
}

// ---------- meta_audit ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct AuditInput {
    /// Only writes by this operation, e.g. "episodic_remember".
    pub operation: Option<String>,
    /// Only writes by this session (its id, as records show it in `session_id`).
    pub session_id: Option<String>,
    /// Only writes that touched this record id (an entity's id, not its name).
    pub record_id: Option<String>,
    /// Only writes made with the access token of this label (HTTP with tokens).
    pub token: Option<String>,
    /// Only writes from this time on (RFC 3339, "2h ago").
    pub since: Option<TimeSpec>,
    /// Only writes before this time.
    pub until: Option<TimeSpec>,
    #[serde(flatten)]
    pub page: Page,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditOutput {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

operation!(Audit = "meta_audit", AuditInput => AuditOutput, meta_audit);

async fn meta_audit(cx: OpCtx, mut input: AuditInput) -> Result<AuditOutput, OpError> {
    let page = Keyset::start(&cx, &mut input, |i| &mut i.page)?;
    let window = Window {
        since: input.since,
        until: input.until,
        ..Window::default()
    };
    let span = window.check(&cx)?;
    let filter = AuditFilter {
        operation: input.operation,
        session_id: input.session_id,
        record_id: input.record_id,
        token: input.token,
        since: span.since,
        until: span.until,
    };
    let before = page.after.as_ref().map(|(seq, _)| *seq as u64);
    let mut entries = cx
        .store()
        .audit(cx.namespace(), filter, before, page.limit + 1)
        .await?;
    let next_cursor = page.finish(&cx, &mut entries, |e| (e.seq as i64, String::new()));
    Ok(AuditOutput {
        entries,
        next_cursor,
    })
}

// ---------- meta_stats ----------

const DAY_MICROS: i64 = 86_400_000_000;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatsInput {
    /// Every namespace, not only this session's (default false).
    #[serde(default)]
    pub all_namespaces: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct KindStats {
    pub namespace: String,
    pub layer: String,
    pub kind: RecordKind,
    pub records: u64,
    /// Bytes of text and JSON the records hold (indexes not counted).
    pub bytes: u64,
    /// Stored in the last 24 hours.
    pub added_last_day: u64,
    /// Stored in the last 7 days.
    pub added_last_week: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StatsOutput {
    /// One entry per kind of record and namespace that holds any.
    pub kinds: Vec<KindStats>,
    pub total_records: u64,
    pub total_bytes: u64,
    /// The whole database file (every namespace), in bytes.
    pub database_bytes: u64,
    /// Documents committed to the search index (every namespace).
    pub indexed_documents: u64,
    /// Events meta_consolidate archived (out of searches, still exported).
    pub archived_events: u64,
}

operation!(Stats = "meta_stats", StatsInput => StatsOutput, meta_stats);

async fn meta_stats(cx: OpCtx, input: StatsInput) -> Result<StatsOutput, OpError> {
    let now = now_micros();
    let store = cx.store();
    if let (true, Some(grant)) = (input.all_namespaces, cx.session.grant()) {
        grant.permit_admin("all_namespaces (every namespace's counts)")?;
    }
    let namespace = (!input.all_namespaces).then(|| cx.namespace().to_string());
    let archived_events = store.archived_count(namespace.clone()).await?;
    let counts = store
        .kind_counts(namespace, vec![now - DAY_MICROS, now - 7 * DAY_MICROS])
        .await?;
    let kinds: Vec<KindStats> = counts
        .into_iter()
        .map(|c| KindStats {
            layer: c.kind.layer().to_string(),
            added_last_day: c.added[0],
            added_last_week: c.added[1],
            namespace: c.namespace,
            kind: c.kind,
            records: c.records,
            bytes: c.bytes,
        })
        .collect();
    Ok(StatsOutput {
        total_records: kinds.iter().map(|k| k.records).sum(),
        total_bytes: kinds.iter().map(|k| k.bytes).sum(),
        kinds,
        database_bytes: store.database_bytes().await?,
        indexed_documents: cx.app.search_index().committed_documents(),
        archived_events,
    })
}

// ---------- meta_namespaces ----------

#[derive(Debug, Serialize, JsonSchema)]
pub struct NamespaceSummary {
    pub name: String,
    pub records: u64,
    pub bytes: u64,
    /// Records per layer.
    pub layers: BTreeMap<String, u64>,
    /// The newest audited write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_write_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NamespacesOutput {
    /// This session's namespace.
    pub current: String,
    /// Every namespace holding records, by name.
    pub namespaces: Vec<NamespaceSummary>,
}

operation!(Namespaces = "meta_namespaces", NoInput => NamespacesOutput, meta_namespaces);

async fn meta_namespaces(cx: OpCtx, _: NoInput) -> Result<NamespacesOutput, OpError> {
    let store = cx.store();
    let mut by_name: BTreeMap<String, NamespaceSummary> = BTreeMap::new();
    for c in store.kind_counts(None, Vec::new()).await? {
        let entry = by_name
            .entry(c.namespace.clone())
            .or_insert_with(|| NamespaceSummary {
                name: c.namespace,
                records: 0,
                bytes: 0,
                layers: BTreeMap::new(),
                last_write_at: None,
            });
        entry.records += c.records;
        entry.bytes += c.bytes;
        *entry.layers.entry(c.kind.layer().to_string()).or_default() += c.records;
    }
    for (namespace, at) in store.last_writes().await? {
        if let Some(entry) = by_name.get_mut(&namespace) {
            entry.last_write_at = Some(micros_to_datetime(at));
        }
    }
    Ok(NamespacesOutput {
        current: cx.namespace().to_string(),
        namespaces: by_name.into_values().collect(),
    })
}

// ---------- meta_reindex ----------

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReindexOutput {
    /// Records indexed, every namespace.
    pub indexed: u64,
    pub took_ms: u64,
}

operation!(Reindex = "meta_reindex", NoInput => ReindexOutput, meta_reindex);

async fn meta_reindex(cx: OpCtx, _: NoInput) -> Result<ReindexOutput, OpError> {
    let started = std::time::Instant::now();
    let indexed = cx.app.reindex().await? as u64;
    Ok(ReindexOutput {
        indexed,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

// ---------- meta_export / meta_import ----------

const DEFAULT_EXPORT_PAGE: usize = 1000;
const MAX_EXPORT_PAGE: usize = 10_000;
/// Most bytes of text one import reads (after decompressing).
const MAX_IMPORT_BYTES: usize = 64 << 20;

/// How an export's `data` is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Encoding {
    /// JSON Lines as text.
    #[default]
    #[serde(rename = "jsonl")]
    Jsonl,
    /// JSON Lines compressed with zstd, then base64 (standard alphabet).
    #[serde(rename = "zstd+base64")]
    ZstdBase64,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ExportInput {
    /// Most records in this page (default 1000, at most 10000).
    pub limit: Option<usize>,
    /// Compress the page with zstd (then base64) (default false).
    #[serde(default)]
    pub compress: bool,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportOutput {
    /// "engram-jsonl/1": a header line, then one record a line.
    pub format: String,
    pub namespace: String,
    /// Records in this page.
    pub records: usize,
    pub encoding: Encoding,
    /// The page: meta_import (or `engram import --format engram`) reads it as it is.
    pub data: String,
    /// Bytes of JSON Lines before compression.
    pub bytes: usize,
    /// Pass as `cursor` for the next page. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ExportCursor {
    k: usize,
    a: i64,
    f: String,
}

operation!(Export = "meta_export", ExportInput => ExportOutput, meta_export);

async fn meta_export(cx: OpCtx, mut input: ExportInput) -> Result<ExportOutput, OpError> {
    let limit = input.limit.unwrap_or(DEFAULT_EXPORT_PAGE);
    if !(1..=MAX_EXPORT_PAGE).contains(&limit) {
        return Err(OpError::invalid(format!(
            "`limit` is {limit}: give 1 to {MAX_EXPORT_PAGE} records a page"
        )));
    }
    let cursor_arg = input.cursor.take();
    let fingerprint = cursor::fingerprint(&input);
    let from = match cursor_arg {
        None => ExportPosition::default(),
        Some(c) => {
            let c: ExportCursor = cursor::decode(&cx, &c)?;
            if c.f != fingerprint {
                return Err(cursor::mismatch());
            }
            ExportPosition {
                kind: c.k,
                after: c.a,
            }
        }
    };
    let (records, next) = cx.store().export_page(cx.namespace(), from, limit).await?;
    let count = records.len();
    let namespace = cx.namespace().to_string();
    let compress = input.compress;
    let (text_bytes, data) = off_runtime(move || {
        let text = engram::encode(&namespace, &records);
        let data = if compress {
            base64::engine::general_purpose::STANDARD.encode(engram::compress_bytes(&text))
        } else {
            text.clone()
        };
        (text.len(), data)
    })
    .await?;
    let next_cursor = next.map(|at| {
        let state = ExportCursor {
            k: at.kind,
            a: at.after,
            f: fingerprint,
        };
        cursor::encode(&cx, &state)
    });
    Ok(ExportOutput {
        format: engram::FORMAT.into(),
        namespace: cx.namespace().to_string(),
        records: count,
        encoding: if compress {
            Encoding::ZstdBase64
        } else {
            Encoding::Jsonl
        },
        data,
        bytes: text_bytes,
        next_cursor,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ImportInput {
    /// A page of meta_export (its `data`), or a whole `engram export --format engram` file.
    pub data: String,
    /// How `data` is written (default "jsonl").
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ImportOutput {
    /// Records read.
    pub records: usize,
    /// Records stored, per kind.
    pub created: BTreeMap<String, u64>,
    /// Records already here (same id), left as they were, per kind.
    pub unchanged: BTreeMap<String, u64>,
}

operation!(Import = "meta_import", ImportInput => ImportOutput, meta_import);

async fn meta_import(cx: OpCtx, input: ImportInput) -> Result<ImportOutput, OpError> {
    let limits = cx.limits().clone();
    let records = off_runtime(move || {
        let bytes = match input.encoding {
            Encoding::Jsonl => input.data.into_bytes(),
            Encoding::ZstdBase64 => base64::engine::general_purpose::STANDARD
                .decode(input.data.trim())
                .map_err(|e| format!("`data` is not base64: {e}"))?,
        };
        let text = engram::text_of(&bytes, MAX_IMPORT_BYTES).map_err(|e| format!("`data`: {e}"))?;
        engram::parse(&text, &limits).map_err(|e| format!("`data` {e}; nothing was imported"))
    })
    .await?
    .map_err(OpError::invalid)?;
    let count = records.len();
    let imported = cx.store().import_records(cx.namespace(), records).await?;
    Ok(ImportOutput {
        records: count,
        created: engram::by_kind(&imported.created),
        unchanged: engram::by_kind(&imported.unchanged),
    })
}

// ---------- meta_consolidate ----------

/// Decays and archived ids an answer lists (the counts are always whole).
const SHOWN_DECAYS: usize = 20;
const SHOWN_ARCHIVED: usize = 1000;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConsolidateInput {
    /// Only report what would change (default false).
    #[serde(default)]
    pub dry_run: bool,
    /// Identical events needed to promote them to a fact (default 3, at least 2).
    pub min_repeats: Option<usize>,
    /// Word overlap (Jaccard, 0.5 to 1.0) that makes facts duplicates (default 0.85).
    pub similarity: Option<f64>,
    /// Days in which an event's importance halves (default 30; 0: no decay).
    pub half_life_days: Option<f64>,
    /// Archive old events less important than this (default 0.1; 0: archive none).
    pub archive_below: Option<f64>,
    /// ... and older than this many days (default 90).
    pub archive_after_days: Option<f64>,
    /// Plan as of this time (default now): a dry run and a real run with the
    /// same `as_of` do the same.
    pub as_of: Option<TimeSpec>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Promoted {
    pub content: String,
    /// The events it was promoted from (the fact's metadata keeps them too).
    pub event_ids: Vec<String>,
    pub tags: Vec<String>,
    pub confidence: f64,
    /// The fact made; absent on a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fact_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Merged {
    /// The fact kept (the newest), which supersedes the others.
    pub into: String,
    pub content: String,
    /// The facts merged into it, oldest first.
    pub merged: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Decayed {
    pub id: String,
    pub from: f64,
    pub to: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ConsolidateOutput {
    pub dry_run: bool,
    pub as_of: chrono::DateTime<chrono::Utc>,
    /// Repeated events promoted to facts.
    pub promoted: Vec<Promoted>,
    /// Near-duplicate facts merged.
    pub merged: Vec<Merged>,
    /// Events whose importance decayed.
    pub decayed_count: usize,
    /// The first 20 of them.
    pub decayed: Vec<Decayed>,
    /// Events moved to the archive (out of searches; kept, counted, exported).
    pub archived_count: usize,
    /// Their ids, oldest first (at most 1000).
    pub archived: Vec<String>,
}

operation!(Consolidate = "meta_consolidate", ConsolidateInput => ConsolidateOutput, meta_consolidate);

fn policy(input: &ConsolidateInput) -> Result<Policy, OpError> {
    let policy = Policy {
        min_repeats: input.min_repeats.unwrap_or(3),
        similarity: input.similarity.unwrap_or(0.85),
        half_life_days: input.half_life_days.unwrap_or(30.0),
        archive_below: input.archive_below.unwrap_or(0.1),
        archive_after_days: input.archive_after_days.unwrap_or(90.0),
        as_of: input.as_of.map_or_else(now_micros, TimeSpec::micros),
    };
    if policy.min_repeats < 2 {
        return Err(OpError::invalid("`min_repeats` must be at least 2"));
    }
    if !(0.5..=1.0).contains(&policy.similarity) {
        return Err(OpError::invalid(
            "`similarity` must be between 0.5 and 1.0: lower merges facts that only share a few words",
        ));
    }
    for (field, days) in [
        ("half_life_days", policy.half_life_days),
        ("archive_after_days", policy.archive_after_days),
    ] {
        if !(0.0..=36_500.0).contains(&days) {
            return Err(OpError::invalid(format!(
                "`{field}` must be between 0 and 36500 days"
            )));
        }
    }
    super::check_unit("archive_below", policy.archive_below)?;
    Ok(policy)
}

async fn meta_consolidate(
    cx: OpCtx,
    input: ConsolidateInput,
) -> Result<ConsolidateOutput, OpError> {
    let policy = policy(&input)?;
    let as_of = micros_to_datetime(policy.as_of);
    let plan = cx
        .store()
        .consolidate(cx.namespace(), policy, input.dry_run)
        .await?;
    Ok(ConsolidateOutput {
        dry_run: input.dry_run,
        as_of,
        promoted: plan
            .promotions
            .into_iter()
            .map(|p| Promoted {
                content: p.content,
                event_ids: p.event_ids,
                tags: p.tags,
                confidence: p.confidence,
                fact_id: p.fact_id,
            })
            .collect(),
        merged: plan
            .merges
            .into_iter()
            .map(|m| Merged {
                into: m.into,
                content: m.content,
                merged: m.merged,
            })
            .collect(),
        decayed_count: plan.decays.len(),
        decayed: plan
            .decays
            .into_iter()
            .take(SHOWN_DECAYS)
            .map(|d| Decayed {
                id: d.id,
                from: d.from,
                to: d.to,
            })
            .collect(),
        archived_count: plan.archived.len(),
        archived: plan.archived.into_iter().take(SHOWN_ARCHIVED).collect(),
    })
}
