//! One isolated context per MCP session: its id, namespace, enabled tools and
//! working memory. Nothing here is shared between sessions.
//!
//! Must not: know MCP. The server layer creates sessions and resolves their
//! namespace; operations read them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};

use crate::catalog::{Catalog, OperationSpec};
use crate::config::DEFAULT_NAMESPACE;
use crate::model::{Micros, new_id, now_micros};
use crate::pipeline::limiter::SessionLimiter;

/// Which tools a session lists: a profile plus any layers enabled on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSelection {
    pub all: bool,
    pub core: bool,
    pub compat: bool,
    pub layers: BTreeSet<String>,
}

impl ToolSelection {
    /// Parses `core`, `all`, `compat`, or a comma-separated list of layers
    /// (which may include `core`).
    pub fn parse(spec: &str, catalog: &Catalog) -> Result<Self, String> {
        let mut sel = ToolSelection {
            all: false,
            core: false,
            compat: false,
            layers: BTreeSet::new(),
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => sel.all = true,
                "core" => sel.core = true,
                "compat" => sel.compat = true,
                layer if catalog.layer(layer).is_some() => {
                    sel.layers.insert(layer.to_string());
                }
                other => {
                    let known: Vec<&str> = catalog.layers.iter().map(|l| l.name.as_str()).collect();
                    return Err(format!(
                        "unknown tool profile or layer {other:?}: use core, all, compat, or layers from {}",
                        known.join(", ")
                    ));
                }
            }
        }
        if sel == ToolSelection::parse_empty() {
            return Err("no tools selected: use core, all, compat, or a list of layers".into());
        }
        Ok(sel)
    }

    fn parse_empty() -> Self {
        ToolSelection {
            all: false,
            core: false,
            compat: false,
            layers: BTreeSet::new(),
        }
    }

    pub fn includes(&self, op: &OperationSpec) -> bool {
        self.all
            || self.layers.contains(&op.layer)
            || (self.core && op.profiles.iter().any(|p| p == "core"))
            || (self.compat && op.profiles.iter().any(|p| p == "compat"))
    }
}

pub struct Session {
    pub id: String,
    pub created_at: Micros,
    namespace: OnceLock<String>,
    tools: Mutex<ToolSelection>,
    /// Working memory: key → the value's JSON text (its size is its length, and
    /// text costs far less memory than a parsed value).
    scratch: Mutex<BTreeMap<String, String>>,
    /// This session's own allowance of calls per second.
    pub limiter: SessionLimiter,
}

impl Session {
    pub fn new(tools: ToolSelection, limiter: SessionLimiter) -> Self {
        Session {
            id: new_id(),
            created_at: now_micros(),
            namespace: OnceLock::new(),
            tools: Mutex::new(tools),
            scratch: Mutex::new(BTreeMap::new()),
            limiter,
        }
    }

    /// Fixes the namespace; a session's namespace never changes once set.
    pub fn set_namespace(&self, ns: String) {
        let _ = self.namespace.set(ns);
    }

    pub fn namespace_is_set(&self) -> bool {
        self.namespace.get().is_some()
    }

    pub fn namespace(&self) -> &str {
        self.namespace.get_or_init(|| DEFAULT_NAMESPACE.to_string())
    }

    pub fn tools(&self) -> ToolSelection {
        self.tools.lock().expect("session poisoned").clone()
    }

    /// Adds a layer to this session's tools; false if it was already listed.
    pub fn enable_layer(&self, layer: &str) -> bool {
        self.tools
            .lock()
            .expect("session poisoned")
            .layers
            .insert(layer.to_string())
    }

    pub fn scratch(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.scratch.lock().expect("session poisoned")
    }
}
