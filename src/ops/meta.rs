//! Meta: engram about itself — health of its backends, the query cache, and
//! the audit trail of writes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OpCtx;
use super::listing::{Keyset, Page, Window};
use crate::app::Health;
use crate::error::OpError;
use std::collections::BTreeMap;

use crate::model::{AuditEntry, RecordKind, micros_to_datetime, now_micros};
use crate::resilience::cache::CacheStats;
use crate::store::AuditFilter;
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
        since: span.since,
        until: span.until,
    };
    let before = page.after.as_ref().map(|(seq, _)| *seq as u64);
    let mut entries = cx
        .app
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
}

operation!(Stats = "meta_stats", StatsInput => StatsOutput, meta_stats);

async fn meta_stats(cx: OpCtx, input: StatsInput) -> Result<StatsOutput, OpError> {
    let now = now_micros();
    let store = cx.app.store();
    let namespace = (!input.all_namespaces).then(|| cx.namespace().to_string());
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
    let store = cx.app.store();
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
