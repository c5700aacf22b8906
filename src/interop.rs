//! Moving memory in and out of engram in other tools' formats.
//!
//! `server-memory`: the JSON Lines file of the reference memory server
//! (`@modelcontextprotocol/server-memory`): one object per line, entities
//! (`{"type":"entity","name","entityType","observations"}`) then relations
//! (`{"type":"relation","from","to","relationType"}`), lines joined by `\n`.
//! Import keeps everything the file holds, relations to entities it never
//! defines included; export writes the file the reference would write for the
//! same graph, byte for byte.
//!
//! Must not: bypass the store's write path. Imports go through the writer like
//! any other write (group commit, change log, search index).

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::model::Relation;
use crate::store::{NewEntity, StoreError};

/// Lines stored per write transaction while importing.
const IMPORT_BATCH: usize = 1000;
/// Records read from the store per page while exporting.
const EXPORT_PAGE: usize = 5000;

#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Default, Clone, Serialize, schemars::JsonSchema)]
pub struct ImportSummary {
    pub entities_created: usize,
    /// Observations added to entities that already existed (same name).
    pub observations_added: usize,
    pub relations_created: usize,
    /// Entities or relations already present, left as they were.
    pub duplicates: usize,
    /// Lines of another `type` (the reference ignores them too).
    pub skipped_lines: usize,
}

/// One line of the reference's file, in its field order.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Entity {
        name: String,
        #[serde(rename = "entityType")]
        entity_type: String,
        observations: Vec<String>,
    },
    Relation {
        from: String,
        to: String,
        #[serde(rename = "relationType")]
        relation_type: String,
    },
}

/// Imports a server-memory file into `namespace`.
pub async fn import_server_memory(
    app: &AppState,
    namespace: &str,
    input: impl BufRead,
) -> Result<ImportSummary, InteropError> {
    let mut summary = ImportSummary::default();
    let (mut entities, mut relations) = (Vec::new(), Vec::new());
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| InteropError::Parse {
                line: i + 1,
                message: format!("not JSON: {e}"),
            })?;
        if !matches!(
            value.get("type").and_then(|t| t.as_str()),
            Some("entity" | "relation")
        ) {
            summary.skipped_lines += 1;
            continue;
        }
        match serde_json::from_value::<Line>(value).map_err(|e| InteropError::Parse {
            line: i + 1,
            message: e.to_string(),
        })? {
            Line::Entity {
                name,
                entity_type,
                observations,
            } => entities.push(NewEntity {
                name,
                entity_type,
                observations,
            }),
            Line::Relation {
                from,
                to,
                relation_type,
            } => relations.push(Relation {
                from,
                to,
                relation_type,
            }),
        }
        if entities.len() == IMPORT_BATCH {
            store_entities(app, namespace, std::mem::take(&mut entities), &mut summary).await?;
        }
    }
    store_entities(app, namespace, entities, &mut summary).await?;
    // Relations after every entity, so each sees both its ends where they exist.
    for chunk in relations.chunks(IMPORT_BATCH) {
        let created = app
            .store()
            .create_relations(namespace, chunk.to_vec(), false)
            .await?
            .len();
        summary.relations_created += created;
        summary.duplicates += chunk.len() - created;
    }
    app.cache().invalidate(&[format!("{namespace}/graph")]);
    Ok(summary)
}

async fn store_entities(
    app: &AppState,
    namespace: &str,
    batch: Vec<NewEntity>,
    summary: &mut ImportSummary,
) -> Result<(), InteropError> {
    if batch.is_empty() {
        return Ok(());
    }
    let additions: Vec<(String, Vec<String>)> = batch
        .iter()
        .map(|e| (e.name.clone(), e.observations.clone()))
        .collect();
    let n = batch.len();
    let created = app.store().create_entities(namespace, batch).await?;
    summary.entities_created += created.len();
    summary.duplicates += n - created.len();
    // An entity that already existed gains the file's observations it lacked.
    let created: std::collections::HashSet<String> = created.into_iter().map(|e| e.name).collect();
    let existing: Vec<(String, Vec<String>)> = additions
        .into_iter()
        .filter(|(name, _)| !created.contains(name))
        .collect();
    if !existing.is_empty() {
        for (_, added) in app.store().add_observations(namespace, existing).await? {
            summary.observations_added += added.len();
        }
    }
    Ok(())
}

/// Writes `namespace`'s graph as a server-memory file.
pub async fn export_server_memory(
    app: &AppState,
    namespace: &str,
    mut out: impl Write,
) -> Result<usize, InteropError> {
    let store = app.store();
    let mut lines = 0usize;
    let mut write_line = |out: &mut dyn Write, line: &Line| -> Result<(), InteropError> {
        if lines > 0 {
            out.write_all(b"\n")?;
        }
        serde_json::to_writer(&mut *out, line).map_err(std::io::Error::other)?;
        lines += 1;
        Ok(())
    };
    let mut after = 0;
    loop {
        let page = store.entities_after(namespace, after, EXPORT_PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        for (_, e) in page {
            write_line(
                &mut out,
                &Line::Entity {
                    name: e.name,
                    entity_type: e.entity_type,
                    observations: e.observations.unwrap_or_default(),
                },
            )?;
        }
    }
    let mut after = 0;
    loop {
        let page = store.relations_after(namespace, after, EXPORT_PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        for (_, r) in page {
            write_line(
                &mut out,
                &Line::Relation {
                    from: r.from,
                    to: r.to,
                    relation_type: r.relation_type,
                },
            )?;
        }
    }
    out.flush()?;
    Ok(lines)
}
