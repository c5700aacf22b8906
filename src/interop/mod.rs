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
//! any other write (change log, search index), in one transaction of their own
//! (`Store::atomically`): a file imports whole or not at all.

pub mod engram;

use std::collections::HashMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::config::Limits;
use crate::error::OpError;
use crate::model::Relation;
// An import accepts exactly the names and types `create_entities` and
// `create_relations` would.
use crate::ops::graph::{MAX_NAME_BYTES, MAX_TYPE_BYTES};
use crate::store::{NewEntity, Store, StoreError};

/// Lines stored per write (each one savepoint of the import's one transaction).
const IMPORT_BATCH: usize = 1000;
/// Records read from the store per page while exporting.
const EXPORT_PAGE: usize = 5000;

#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("line {line}: {message}. Nothing was imported: fix the line and import the file again")]
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

/// Imports a server-memory file into `namespace`: all of it or nothing.
///
/// Every line is read and checked first, against the limits the graph tools
/// apply (name, type and observation sizes, observations per entity); the first
/// bad line fails the import with its number and what to fix, before anything
/// is written. Then one transaction stores every entity, the observations that
/// entities already there lack, and every relation. Entity lines naming the
/// same entity are merged (the first one's type wins).
pub async fn import_server_memory(
    app: &AppState,
    namespace: &str,
    input: impl BufRead,
) -> Result<ImportSummary, InteropError> {
    let ImportFile {
        entities,
        relations,
        skipped_lines,
        ..
    } = ImportFile::read(input, &app.config().limits)?;
    let mut summary = ImportSummary {
        skipped_lines,
        ..ImportSummary::default()
    };
    let ns = namespace.to_string();
    let summary = app
        .store()
        .atomically(|store| async move {
            for chunk in entities.chunks(IMPORT_BATCH) {
                store_entities(&store, &ns, chunk.to_vec(), &mut summary).await?;
            }
            // Relations after every entity, so each sees both its ends where they exist.
            for chunk in relations.chunks(IMPORT_BATCH) {
                let created = store
                    .create_relations(&ns, chunk.to_vec(), false)
                    .await?
                    .len();
                summary.relations_created += created;
                summary.duplicates += chunk.len() - created;
            }
            Ok::<_, InteropError>(summary)
        })
        .await?;
    Ok(summary)
}

/// A server-memory file read and checked, nothing stored yet.
#[derive(Default)]
struct ImportFile {
    /// One per name, in the order of first appearance.
    entities: Vec<NewEntity>,
    /// Where each name's entity is in `entities`.
    by_name: HashMap<String, usize>,
    relations: Vec<Relation>,
    /// Lines of another `type`.
    skipped_lines: usize,
}

impl ImportFile {
    /// Reads every line; the first bad one fails with its number.
    fn read(input: impl BufRead, limits: &Limits) -> Result<Self, InteropError> {
        let mut file = ImportFile::default();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            file.add_line(&line, limits)
                .map_err(|message| InteropError::Parse {
                    line: i + 1,
                    message,
                })?;
        }
        Ok(file)
    }

    /// Takes in one non-empty line: an entity or relation, checked against the
    /// graph tools' limits, or a line of another type (skipped).
    fn add_line(&mut self, line: &str, limits: &Limits) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        if !matches!(
            value.get("type").and_then(|t| t.as_str()),
            Some("entity" | "relation")
        ) {
            self.skipped_lines += 1;
            return Ok(());
        }
        match serde_json::from_value::<Line>(value).map_err(|e| e.to_string())? {
            Line::Entity {
                name,
                entity_type,
                observations,
            } => {
                check_entity(&name, &entity_type, &observations, limits)?;
                self.add_entity(name, entity_type, observations);
            }
            Line::Relation {
                from,
                to,
                relation_type,
            } => {
                let relation = Relation {
                    from,
                    to,
                    relation_type,
                };
                check_relation(&relation)?;
                self.relations.push(relation);
            }
        }
        Ok(())
    }

    /// A new entity, or more observations for one already read (its first
    /// type stays).
    fn add_entity(&mut self, name: String, entity_type: String, observations: Vec<String>) {
        match self.by_name.get(&name) {
            Some(&at) => self.entities[at].observations.extend(observations),
            None => {
                self.by_name.insert(name.clone(), self.entities.len());
                self.entities.push(NewEntity {
                    name,
                    entity_type,
                    observations,
                });
            }
        }
    }
}

/// The message of a tool's limit check, without the tool error's prefix.
fn limit_message(e: OpError) -> String {
    match e {
        OpError::InvalidInput(m) => m,
        other => other.to_string(),
    }
}

/// What `create_entities` checks of one entity.
fn check_entity(
    name: &str,
    entity_type: &str,
    observations: &[String],
    limits: &Limits,
) -> Result<(), String> {
    use crate::ops::check_text;
    check_text("name", name, MAX_NAME_BYTES).map_err(limit_message)?;
    check_text("entityType", entity_type, MAX_TYPE_BYTES).map_err(limit_message)?;
    if observations.len() > limits.max_batch_items {
        return Err(format!(
            "`observations` has {} items, the limit is {}: split the entity over several \
             lines with the same name",
            observations.len(),
            limits.max_batch_items
        ));
    }
    for (j, o) in observations.iter().enumerate() {
        check_text(&format!("observations[{j}]"), o, limits.max_content_bytes)
            .map_err(limit_message)?;
    }
    Ok(())
}

/// What `create_relations` checks of one relation.
fn check_relation(r: &Relation) -> Result<(), String> {
    use crate::ops::check_text;
    check_text("from", &r.from, MAX_NAME_BYTES).map_err(limit_message)?;
    check_text("to", &r.to, MAX_NAME_BYTES).map_err(limit_message)?;
    check_text("relationType", &r.relation_type, MAX_TYPE_BYTES).map_err(limit_message)
}

async fn store_entities(
    store: &Store,
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
    let created = store.create_entities(namespace, batch).await?;
    summary.entities_created += created.len();
    summary.duplicates += n - created.len();
    // An entity that already existed gains the file's observations it lacked.
    let created: std::collections::HashSet<String> = created.into_iter().map(|e| e.name).collect();
    let existing: Vec<(String, Vec<String>)> = additions
        .into_iter()
        .filter(|(name, _)| !created.contains(name))
        .collect();
    if !existing.is_empty() {
        for (_, added) in store.add_observations(namespace, existing).await? {
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
