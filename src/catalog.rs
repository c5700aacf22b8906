//! The operation catalog: `operations/<layer>.toml`, compiled into the binary.
//!
//! Each entry says what an operation is for (summary, and a description written
//! for a model choosing a tool), its kind, the kinds of record it reads and
//! writes, its annotations, and which profiles include it. The registry test
//! checks that this catalog, the handlers and `schemas/` agree.

use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::RecordKind;

/// Every layer's catalog file (`operations/*.toml`, found by `build.rs`), in
/// the order of their `position`: the order tools are listed in.
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalog_files.rs"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Read,
    Write,
    Admin,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    #[serde(default)]
    pub open_world: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationSpec {
    pub name: String,
    #[serde(skip_deserializing)]
    pub layer: String,
    pub kind: Kind,
    pub summary: String,
    pub description: String,
    /// The kinds of record a read's answer is made of. A read that names some
    /// is answered from the query cache until a change of one of them (in its
    /// namespace) is logged; one that names none is never cached.
    #[serde(default)]
    pub reads: Vec<RecordKind>,
    /// The kinds of record a write changes. Operations that read or write
    /// records run behind the store's circuit breaker.
    #[serde(default)]
    pub writes: Vec<RecordKind>,
    /// A read whose answer depends on the clock (what is due now): never cached.
    #[serde(default)]
    pub uncached: bool,
    /// The token scope a caller needs (`read`, `write`, `admin`) when it is not
    /// the one the kind implies (read, write, admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<crate::auth::Scope>,
    pub annotations: Annotations,
    /// Profiles (`core`, `compat`) that include this operation.
    #[serde(default)]
    pub profiles: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerInfo {
    pub name: String,
    /// Where the layer's tools stand in listings (smaller first).
    pub position: u32,
    pub summary: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerFile {
    layer: LayerInfo,
    operation: Vec<OperationSpec>,
}

#[derive(Debug)]
pub struct Catalog {
    pub layers: Vec<LayerInfo>,
    pub operations: Vec<OperationSpec>,
}

impl OperationSpec {
    /// Whether the operation reads or writes stored records (and so runs
    /// behind the store's circuit breaker).
    pub fn uses_store(&self) -> bool {
        !self.reads.is_empty() || !self.writes.is_empty()
    }

    /// Whether answers may be served from the query cache.
    pub fn cacheable(&self) -> bool {
        self.kind == Kind::Read && !self.reads.is_empty() && !self.uncached
    }
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&OperationSpec> {
        self.operations.iter().find(|o| o.name == name)
    }

    pub fn layer(&self, name: &str) -> Option<&LayerInfo> {
        self.layers.iter().find(|l| l.name == name)
    }
}

/// The catalog, parsed once. A malformed catalog is a build defect: the
/// registry test catches it before it ships.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| parse(FILES).unwrap_or_else(|e| panic!("operations/ catalog: {e}")))
}

fn parse(files: &[(&str, &str)]) -> Result<Catalog, String> {
    let mut layers = Vec::new();
    let mut operations = Vec::new();
    for (file, text) in files {
        let parsed: LayerFile = toml::from_str(text).map_err(|e| format!("{file}.toml: {e}"))?;
        if parsed.layer.name != *file {
            return Err(format!(
                "{file}.toml declares layer {:?}",
                parsed.layer.name
            ));
        }
        if let Some(other) = layers
            .iter()
            .find(|l: &&LayerInfo| l.position == parsed.layer.position)
        {
            return Err(format!(
                "{file}.toml and {}.toml both have position {}",
                other.name, parsed.layer.position
            ));
        }
        for mut op in parsed.operation {
            op.layer = parsed.layer.name.clone();
            operations.push(op);
        }
        layers.push(parsed.layer);
    }
    Ok(Catalog { layers, operations })
}
