//! Memory as MCP resources, like the reference memory server's current release:
//! the namespace's knowledge graph and its recent memory, readable with
//! `resources/read` and watched with `resources/subscribe` (2025-11-25 sessions:
//! a write to the layer sends `notifications/resources/updated`).
//!
//! A resource is an operation's answer: reading one runs that operation through
//! the pipeline for the caller's session (limits, cache, namespace), so a
//! resource never shows what the tool would not.

use rmcp::model::{Resource, ResourceContents};
use serde_json::{Value, json};

/// A resource engram offers: its URI, what it is, and the operation behind it.
pub struct Spec {
    pub uri: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// The layer whose writes change it.
    pub layer: &'static str,
    pub operation: &'static str,
    pub arguments: fn() -> Value,
}

pub const RESOURCES: &[Spec] = &[
    Spec {
        uri: "engram://graph",
        name: "knowledge-graph",
        description: "This namespace's knowledge graph: entities with their observations, and \
                      relations (the first page of read_graph; page on with read_graph).",
        layer: "graph",
        operation: "read_graph",
        arguments: || json!({}),
    },
    Spec {
        uri: "engram://episodic/recent",
        name: "recent-events",
        description: "The 20 most recent events remembered in this namespace.",
        layer: "episodic",
        operation: "episodic_recent",
        arguments: || json!({"limit": 20}),
    },
    Spec {
        uri: "engram://semantic/recent",
        name: "recent-facts",
        description: "The 20 most recently stored current facts of this namespace.",
        layer: "semantic",
        operation: "semantic_list",
        arguments: || json!({"limit": 20}),
    },
];

pub fn find(uri: &str) -> Option<&'static Spec> {
    RESOURCES.iter().find(|r| r.uri == uri)
}

pub fn listed() -> Vec<Resource> {
    RESOURCES
        .iter()
        .map(|r| {
            Resource::new(r.uri, r.name)
                .with_description(r.description)
                .with_mime_type("application/json")
        })
        .collect()
}

/// The contents of `spec` given its operation's answer.
pub fn contents(spec: &Spec, answer: &Value) -> ResourceContents {
    ResourceContents::TextResourceContents {
        uri: spec.uri.to_string(),
        mime_type: Some("application/json".to_string()),
        text: answer.to_string(),
        meta: None,
    }
}

/// The resources a write to `layer` changes.
pub fn changed_by(layer: &str) -> impl Iterator<Item = &'static str> + '_ {
    RESOURCES
        .iter()
        .filter(move |r| r.layer == layer)
        .map(|r| r.uri)
}
