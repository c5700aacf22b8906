//! Discovery: find tools in the catalog at three levels of detail, list a layer's
//! tools in this session, or run any operation by name.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{OpCtx, Operation, registry};
use crate::catalog::{Annotations, Kind, OperationSpec, catalog};
use crate::error::OpError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Detail {
    /// Names only: the cheapest overview.
    Name,
    /// Name, layer, kind, one-line summary, and whether it is listed in this session.
    #[default]
    Summary,
    /// Everything, including full description and input/output JSON Schemas.
    Full,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DiscoverInput {
    /// What you want to do ("forget old events"); tools are ranked by it.
    pub query: Option<String>,
    /// Only tools of this layer (episodic, semantic, graph, ...).
    pub layer: Option<String>,
    /// Only tools of this kind.
    pub kind: Option<Kind>,
    /// Default "summary"; "full" adds descriptions and schemas.
    #[serde(default)]
    pub detail: Detail,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ToolInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Whether this session lists it as a tool (otherwise: enable_toolset or call_operation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Annotations>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LayerSummary {
    pub name: String,
    pub summary: String,
    pub tools: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DiscoverOutput {
    pub detail: Detail,
    pub tools: Vec<ToolInfo>,
    /// The layers there are, for enable_toolset.
    pub layers: Vec<LayerSummary>,
}

/// How well `op` matches the query words: name hits count most.
fn relevance(op: &OperationSpec, words: &[String]) -> usize {
    let name = op.name.to_lowercase();
    let summary = op.summary.to_lowercase();
    let description = op.description.to_lowercase();
    words
        .iter()
        .map(|w| {
            if name.contains(w.as_str()) {
                3
            } else if summary.contains(w.as_str()) || op.layer == *w {
                2
            } else if description.contains(w.as_str()) {
                1
            } else {
                0
            }
        })
        .sum()
}

operation!(DiscoverTools = "discover_tools", DiscoverInput => DiscoverOutput, discover_tools);

async fn discover_tools(cx: OpCtx, input: DiscoverInput) -> Result<DiscoverOutput, OpError> {
    let cat = catalog();
    if let Some(layer) = &input.layer
        && cat.layer(layer).is_none()
    {
        return Err(unknown_layer(layer));
    }
    let words: Vec<String> = input
        .query
        .as_deref()
        .unwrap_or("")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 1)
        .map(|w| {
            // Crude stemming so "events" finds "event" and "forgetting" "forget".
            let w = w.to_lowercase();
            let w = w.strip_suffix("ing").unwrap_or(&w).to_string();
            w.strip_suffix('s').map(str::to_string).unwrap_or(w)
        })
        .collect();
    let sel = cx.session.tools();
    let mut matched: Vec<(usize, &OperationSpec)> = cat
        .operations
        .iter()
        .filter(|o| input.layer.as_ref().is_none_or(|l| &o.layer == l))
        .filter(|o| input.kind.is_none_or(|k| o.kind == k))
        .map(|o| (relevance(o, &words), o))
        .filter(|(score, _)| words.is_empty() || *score > 0)
        .collect();
    matched.sort_by_key(|m| std::cmp::Reverse(m.0));
    let tools = matched
        .into_iter()
        .map(|(_, o)| tool_info(o, input.detail, sel.includes(o)))
        .collect();
    let layers = cat
        .layers
        .iter()
        .map(|l| LayerSummary {
            name: l.name.clone(),
            summary: l.summary.clone(),
            tools: cat.operations.iter().filter(|o| o.layer == l.name).count(),
        })
        .collect();
    Ok(DiscoverOutput {
        detail: input.detail,
        tools,
        layers,
    })
}

fn tool_info(o: &OperationSpec, detail: Detail, listed: bool) -> ToolInfo {
    let summary = detail != Detail::Name;
    let full = detail == Detail::Full;
    let entry = registry().get(&o.name);
    ToolInfo {
        name: o.name.clone(),
        layer: summary.then(|| o.layer.clone()),
        kind: summary.then_some(o.kind),
        summary: summary.then(|| o.summary.clone()),
        listed: summary.then_some(listed),
        description: full.then(|| o.description.clone()),
        annotations: full.then(|| o.annotations.clone()),
        input_schema: entry.filter(|_| full).map(|e| (e.input_schema)()),
        output_schema: entry.filter(|_| full).map(|e| (e.output_schema)()),
    }
}

fn unknown_layer(layer: &str) -> OpError {
    let known: Vec<&str> = catalog().layers.iter().map(|l| l.name.as_str()).collect();
    OpError::invalid(format!(
        "there is no layer {:?}: the layers are {}",
        super::schema::truncate_chars(layer, 64),
        known.join(", ")
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EnableToolsetInput {
    /// The layer to list (see discover_tools).
    pub layer: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EnableToolsetOutput {
    pub layer: String,
    /// Tools this call added to the session's list (empty if all were listed already).
    pub added: Vec<String>,
    /// How many tools the session lists now.
    pub listed: usize,
}

operation!(EnableToolset = "enable_toolset", EnableToolsetInput => EnableToolsetOutput, enable_toolset);

async fn enable_toolset(
    cx: OpCtx,
    input: EnableToolsetInput,
) -> Result<EnableToolsetOutput, OpError> {
    let cat = catalog();
    if cat.layer(&input.layer).is_none() {
        return Err(unknown_layer(&input.layer));
    }
    let before = cx.session.tools();
    cx.session.enable_layer(&input.layer);
    let after = cx.session.tools();
    let added = cat
        .operations
        .iter()
        .filter(|o| after.includes(o) && !before.includes(o))
        .map(|o| o.name.clone())
        .collect();
    let listed = cat.operations.iter().filter(|o| after.includes(o)).count();
    Ok(EnableToolsetOutput {
        layer: input.layer,
        added,
        listed,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CallOperationInput {
    /// Operation name, as discover_tools lists it.
    pub name: String,
    /// Its arguments (schema: discover_tools, detail "full").
    pub arguments: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CallOperationOutput {
    pub operation: String,
    /// The operation's own answer (see its output schema).
    pub result: Value,
}

operation!(CallOperation = "call_operation", CallOperationInput => CallOperationOutput, call_operation);

async fn call_operation(
    cx: OpCtx,
    input: CallOperationInput,
) -> Result<CallOperationOutput, OpError> {
    if input.name == CallOperation::NAME {
        return Err(OpError::invalid(
            "call_operation cannot call itself: name the operation you want directly",
        ));
    }
    let args = Value::Object(input.arguments.unwrap_or_default());
    let result = (cx.dispatch)(cx.app, cx.session, input.name.clone(), args).await?;
    Ok(CallOperationOutput {
        operation: input.name,
        result,
    })
}
