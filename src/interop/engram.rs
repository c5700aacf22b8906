//! engram's own format: a namespace as JSON Lines, every layer, every record
//! whole (ids, times, versions, runs, track records, reminders' state).
//!
//! The first line is a header, `{"format": "engram-jsonl/1", "namespace": ...,
//! "exported_at": ...}`; each other line is one record, `{"kind": "event",
//! "record": {...}}`, in the order `store::EXPORT_ORDER`. `meta_export` answers
//! it in pages (each page a whole file, header first); `engram export --format
//! engram` writes it in one file. Either may be zstd-compressed (`meta_export`
//! with `compress`, or an `--out` file ending in `.zst`); readers recognise
//! zstd by its magic number. An import checks every line against the limits
//! the tools apply before anything is written, then stores all of it in one
//! transaction (`Store::import_records`): idempotent by id.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::config::Limits;
use crate::model::{micros_to_datetime, now_micros};
use crate::ops::graph::{MAX_NAME_BYTES, MAX_TYPE_BYTES};
use crate::store::{ExportPosition, Exported, Imported, Store, StoreError, attributed};

pub const FORMAT: &str = "engram-jsonl/1";
/// zstd's frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The compression level exports use (zstd's default: fast, a good ratio on text).
const ZSTD_LEVEL: i32 = 3;
/// Longest id a record may carry.
const MAX_ID_BYTES: usize = 128;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    /// The namespace exported.
    pub namespace: String,
    pub exported_at: chrono::DateTime<chrono::Utc>,
}

/// A line that cannot be imported: its number (1-based) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// The records as JSON Lines, header first; each line ends with `\n`.
pub fn encode(namespace: &str, records: &[Exported]) -> String {
    let header = Header {
        format: FORMAT.into(),
        namespace: namespace.into(),
        exported_at: micros_to_datetime(now_micros()),
    };
    let mut out = serde_json::to_string(&header).expect("headers serialize");
    out.push('\n');
    for r in records {
        out.push_str(&serde_json::to_string(r).expect("records serialize"));
        out.push('\n');
    }
    out
}

pub fn compress_bytes(text: &str) -> Vec<u8> {
    zstd::bulk::compress(text.as_bytes(), ZSTD_LEVEL).expect("zstd compresses any input")
}

/// The text of an export: zstd-decompressed when it is compressed. Refuses
/// text that is not UTF-8 or grows past `max_bytes`.
pub fn text_of(bytes: &[u8], max_bytes: usize) -> Result<String, String> {
    let raw = if bytes.starts_with(&ZSTD_MAGIC) {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(bytes)
            .map_err(|e| format!("not zstd data: {e}"))?
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("the zstd data is damaged: {e}"))?;
        out
    } else {
        bytes.to_vec()
    };
    if raw.len() > max_bytes {
        return Err(format!(
            "the export is over {max_bytes} bytes: import it in pages (meta_export's pages)"
        ));
    }
    String::from_utf8(raw).map_err(|_| "the export is not UTF-8 text".to_string())
}

/// Reads every line: the header (optional; checked when present) and the
/// records, each checked against `limits`. The first bad line fails all.
pub fn parse(text: &str, limits: &Limits) -> Result<Vec<Exported>, LineError> {
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let bad = |message: String| LineError {
            line: line_no,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        if i == 0 && line.contains("\"format\"") {
            let header: Header =
                serde_json::from_str(line).map_err(|e| bad(format!("not a header: {e}")))?;
            if header.format != FORMAT {
                return Err(bad(format!(
                    "format {:?} is not {FORMAT:?}: export it again with this engram",
                    header.format
                )));
            }
            continue;
        }
        let record: Exported = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "not a record of {FORMAT} ({{\"kind\": ..., \"record\": {{...}}}}): {e}"
            ))
        })?;
        check(&record, limits).map_err(bad)?;
        records.push(record);
    }
    Ok(records)
}

/// Records read from the store per page while exporting a whole namespace.
const EXPORT_PAGE: usize = 5000;

/// The whole namespace as one export (header first); zstd-compressed when
/// `compress`. Returns it and the records it holds.
pub async fn export_all(
    store: &Store,
    namespace: &str,
    compress: bool,
) -> Result<(Vec<u8>, usize), StoreError> {
    let mut text = String::new();
    let mut count = 0;
    let mut from = Some(ExportPosition::default());
    while let Some(at) = from {
        let (records, next) = store.export_page(namespace, at, EXPORT_PAGE).await?;
        let page = encode(namespace, &records);
        // The header once, at the top.
        let body = if text.is_empty() {
            page.as_str()
        } else {
            page.split_once('\n').map_or("", |(_, rest)| rest)
        };
        text.push_str(body);
        count += records.len();
        from = next;
    }
    let bytes = if compress {
        compress_bytes(&text)
    } else {
        text.into_bytes()
    };
    Ok((bytes, count))
}

/// Imports a whole export (compressed or not) into `namespace`, attributed to
/// the command line in the audit trail: all of it, or nothing.
pub async fn import_all(
    store: &Store,
    namespace: &str,
    bytes: &[u8],
    limits: &Limits,
) -> Result<(usize, Imported), String> {
    let text = text_of(bytes, usize::MAX / 2)?;
    let records = parse(&text, limits).map_err(|e| format!("{e}; nothing was imported"))?;
    let count = records.len();
    let work = store.import_records(namespace, records);
    let (imported, _) = attributed("engram import", "", None, work).await;
    imported.map(|i| (count, i)).map_err(|e| e.to_string())
}

/// Counts per kind, by kind name.
pub fn by_kind(counts: &[(&str, u64)]) -> BTreeMap<String, u64> {
    counts.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// The records an import created, in all.
pub fn created(imported: &Imported) -> u64 {
    imported.created.iter().map(|(_, n)| n).sum()
}

/// A procedure's versions hold its current one.
fn check_versions(p: &crate::store::ProcedureRecord) -> Result<(), String> {
    let current = p.procedure.current.version;
    if p.versions.iter().any(|v| v.version == current) {
        return Ok(());
    }
    Err(format!(
        "the procedure's versions do not hold its current version {current}"
    ))
}

/// Checks one record against the limits the tools apply to what they store.
fn check(record: &Exported, limits: &Limits) -> Result<(), String> {
    let text = |field: &str, value: &str, max: usize| -> Result<(), String> {
        if value.len() > max {
            return Err(format!(
                "`{field}` is {} bytes, over the limit of {max}",
                value.len()
            ));
        }
        Ok(())
    };
    let id = |value: &str| -> Result<(), String> {
        if value.trim().is_empty() || value.len() > MAX_ID_BYTES {
            return Err(format!(
                "`id` {value:?} is empty or longer than {MAX_ID_BYTES} bytes"
            ));
        }
        Ok(())
    };
    let tags = |tags: &[String]| -> Result<(), String> {
        if tags.len() > limits.max_tags || tags.iter().any(|t| t.len() > limits.max_tag_bytes) {
            return Err(format!(
                "`tags`: at most {} tags of at most {} bytes each",
                limits.max_tags, limits.max_tag_bytes
            ));
        }
        Ok(())
    };
    let content = limits.max_content_bytes;
    match record {
        Exported::Event(e) => {
            id(&e.id)?;
            tags(&e.tags)?;
            text("content", &e.content, content)
        }
        Exported::Fact(f) => {
            id(&f.id)?;
            tags(&f.tags)?;
            text("content", &f.content, content)
        }
        Exported::Entity(e) => {
            id(&e.id)?;
            text("name", &e.name, MAX_NAME_BYTES)?;
            text("entityType", &e.entity_type, MAX_TYPE_BYTES)?;
            e.observations
                .iter()
                .try_for_each(|o| text("observations", o, content))
        }
        Exported::Relation(r) => {
            text("from", &r.relation.from, MAX_NAME_BYTES)?;
            text("to", &r.relation.to, MAX_NAME_BYTES)?;
            text("relationType", &r.relation.relation_type, MAX_TYPE_BYTES)
        }
        Exported::Procedure(p) => {
            id(&p.procedure.id)?;
            let v = &p.procedure.current;
            tags(&v.tags)?;
            text("goal", &v.goal, content)?;
            v.steps.iter().try_for_each(|s| text("steps", s, content))?;
            check_versions(p)
        }
        Exported::Task(t) => {
            id(&t.id)?;
            tags(&t.tags)?;
            text("title", &t.title, content)
        }
        Exported::Trigger(t) => {
            id(&t.id)?;
            text("message", &t.message, content)
        }
        Exported::ArchivedEvent(a) => {
            id(&a.event.id)?;
            tags(&a.event.tags)?;
            text("content", &a.event.content, content)
        }
    }
}
