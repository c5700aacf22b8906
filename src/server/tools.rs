//! The tools engram lists: every operation as an MCP `Tool`, built once per
//! process (schemas are generated here, never per `tools/list`), and what each
//! costs a host's context.
//!
//! A memory server is listed in every conversation, so its tool list is paid on
//! every turn: the default profile stays within 9 KB (`tests/footprint.rs`). What
//! is sent is the short form of each operation; nothing is lost, the long form is
//! one `discover_tools` call away (`detail: "full"`: the whole description and the
//! generated schemas, as in `schemas/`):
//! - `description`: the catalog's one-line `summary` (what the tool is for);
//! - `inputSchema`: the generated schema without what a model does not need;
//!   it offers only arguments engram accepts, and accepts all engram accepts but
//!   an explicit `null` for an optional field (`ops::schema::wire_input_schema`);
//! - `outputSchema`: implied by the generated one, so validating clients accept
//!   every answer; the answer's own fields keep their exact types, records
//!   nested in it keep their required field names (`ops::schema::wire_output_schema`);
//! - `annotations`: only the hints that differ from MCP's defaults, and no
//!   destructive/idempotent hint on read-only tools (MCP: meaningful only when
//!   `readOnlyHint` is false); `destructiveHint` is always said on writes.

use std::sync::{Arc, OnceLock};

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::Value;

use crate::catalog::{Annotations, OperationSpec, catalog};
use crate::ops::registry;
use crate::ops::schema::{wire_input_schema, wire_output_schema};

/// Every operation as an MCP `Tool`, built once per process: schemas are
/// generated here, never per `tools/list`.
pub struct ToolTable {
    pub(crate) tools: Vec<(&'static OperationSpec, Tool)>,
}

impl ToolTable {
    pub fn get() -> &'static ToolTable {
        static TABLE: OnceLock<ToolTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            let tools = catalog()
                .operations
                .iter()
                .filter_map(|spec| {
                    let entry = registry().get(&spec.name)?;
                    Some((
                        spec,
                        build_tool(spec, &(entry.input_schema)(), &(entry.output_schema)()),
                    ))
                })
                .collect();
            ToolTable { tools }
        })
    }

    pub(crate) fn find(&self, name: &str) -> Option<&(&'static OperationSpec, Tool)> {
        self.tools.iter().find(|(s, _)| s.name == name)
    }
}

fn as_object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The tool as `tools/list` sends it, from the operation's catalog entry and its
/// generated input and output schemas.
fn build_tool(spec: &OperationSpec, input: &Value, output: &Value) -> Tool {
    Tool::new(
        spec.name.clone(),
        spec.summary.trim().replace('\n', " "),
        as_object(wire_input_schema(input)),
    )
    .with_raw_output_schema(as_object(wire_output_schema(output)))
    .with_annotations(wire_annotations(&spec.annotations))
}

/// The hints a host needs, in the fewest fields: MCP's defaults are
/// `readOnlyHint: false`, `destructiveHint: true`, `idempotentHint: false`,
/// `openWorldHint: true`.
fn wire_annotations(a: &Annotations) -> ToolAnnotations {
    let mut hints = ToolAnnotations::new();
    if a.read_only {
        hints = hints.read_only(true);
    } else {
        hints = hints.destructive(a.destructive);
        if a.idempotent {
            hints = hints.idempotent(true);
        }
    }
    if !a.open_world {
        hints = hints.open_world(false);
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_built_with_both_schemas_and_a_description() {
        let table = ToolTable::get();
        assert!(!table.tools.is_empty());
        for (spec, tool) in &table.tools {
            assert!(
                !tool.description.as_deref().unwrap_or("").is_empty(),
                "{}",
                spec.name
            );
            assert_eq!(tool.input_schema.get("type"), Some(&Value::from("object")));
            let out = tool.output_schema.as_ref().expect("an output schema");
            assert_eq!(
                out.get("type"),
                Some(&Value::from("object")),
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn annotations_say_only_what_differs_from_the_defaults() {
        let read = wire_annotations(&Annotations {
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
        });
        assert_eq!(read.read_only_hint, Some(true));
        assert_eq!(read.destructive_hint, None);
        assert_eq!(read.idempotent_hint, None);
        assert_eq!(read.open_world_hint, Some(false));
        let forget = wire_annotations(&Annotations {
            read_only: false,
            destructive: true,
            idempotent: false,
            open_world: false,
        });
        assert_eq!(forget.read_only_hint, None);
        assert_eq!(forget.destructive_hint, Some(true));
        assert_eq!(forget.idempotent_hint, None);
    }
}
