//! Operations: one typed handler per catalog entry, one file per layer.
//!
//! Each operation is a type implementing [`Operation`] (its name, input type,
//! output type and the fn that runs it), declared in one line with
//! `operation!`. The table below lists them by layer module; the [`registry`]
//! erases their types so the pipeline can call any operation by name with JSON.
//! Adding an operation: its types and fn in its layer file, its catalog entry,
//! its name in the table, and `schemas/` regenerated (ARCHITECTURE.md, "Adding
//! an operation / a layer").
//!
//! Must not: import rmcp or know about JSON-RPC; name the pipeline (a nested
//! call goes through `OpCtx::dispatch`); talk to sqlite or tantivy other than
//! through `Store` and `AppState`.

/// Refuses a patch that changes nothing: `some_change!(input, title, notes)`
/// passes when any of those `Option` fields is given and otherwise names them.
macro_rules! some_change {
    ($patch:expr, $($field:ident),+ $(,)?) => {
        $crate::ops::some_change(&[$((stringify!($field), $patch.$field.is_some())),+])
    };
}

/// Declares an operation: its type, its name as the catalog lists it, its
/// input and output types, and the async fn that runs it (`degraded`: its
/// output has a `degraded` flag telling the pipeline not to cache it).
macro_rules! operation {
    ($ty:ident = $name:literal, $input:ty => $output:ty, $run:ident $(, $degraded:ident)?) => {
        pub struct $ty;

        impl $crate::ops::Operation for $ty {
            const NAME: &'static str = $name;
            type Input = $input;
            type Output = $output;

            fn run(
                cx: $crate::ops::OpCtx,
                input: $input,
            ) -> impl std::future::Future<Output = Result<$output, $crate::error::OpError>> + Send {
                $run(cx, input)
            }

            $(
                fn $degraded(output: &$output) -> bool {
                    output.degraded
                }
            )?
        }
    };
}

pub mod listing;
pub mod registry;
pub mod schema;

// The layers, declared here rather than by `layers!` so that rustfmt sees
// their files (it cannot follow a `mod` a macro declares). A module missing
// from the table below leaves its catalog entries without handlers, which the
// registry test reports.
pub mod discovery;
pub mod episodic;
pub mod graph;
pub mod graph_algorithms;
pub mod meta;
pub mod procedural;
pub mod prospective;
pub mod search;
pub mod semantic;
pub mod session;

/// The operation table: every layer module and the operations it defines.
/// The registry, the tool table, discovery and `schemas/` all derive from it
/// and from the catalog (`operations/*.toml`). A new layer is its `mod` line
/// above and one more line here.
macro_rules! layers {
    ($($module:ident => [$($op:ident),* $(,)?]),* $(,)?) => {
        const OPERATIONS: &[fn() -> registry::Entry] = &[$($(registry::Entry::of::<$module::$op>),*),*];
    };
}

#[rustfmt::skip]
layers! {
    discovery => [DiscoverTools, EnableToolset, CallOperation],
    episodic => [Remember, RememberBatch, Recall, Get, List, Recent, Timeline, Around, Update, Forget, ForgetWhere, Count],
    semantic => [StoreFact, StoreBatch, Get, Update, Delete, List, Tags, Reinforce, Supersede, History],
    search => [Search, SearchPhrase, SearchPrefix, SearchFuzzy, SearchBoolean, SearchHybrid, Similar, MemorySearch],
    graph => [CreateEntities, CreateRelations, AddObservations, DeleteEntities, DeleteObservations, DeleteRelations, ReadGraph, SearchNodes, OpenNodes],
    graph_algorithms => [Neighbors, ShortestPath, AllPaths, Subgraph, Centrality, Communities, RenameEntity, MergeEntities, UpdateEntity, Stats],
    procedural => [StoreProcedure, Get, Update, Delete, List, Search, RecordExecution, Suggest, Versions, Stats],
    prospective => [Create, Get, Update, Complete, Cancel, Delete, List, Due, TriggerSet, Triggers],
    meta => [HealthOp, CacheStatsOp, Stats, Namespaces, Consolidate, Export, Import, Reindex, Audit],
    session => [Open, Info, ScratchSet, ScratchGet, ScratchList, ScratchClear],
}

use std::future::Future;
use std::sync::Arc;

use base64::Engine;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::AppState;
use crate::config::Limits;
use crate::error::OpError;
use crate::session::Session;

pub use registry::{BoxFuture, Registry, registry};

/// What an operation runs with: the shared application state and the calling
/// session. Both are cheap handles.
#[derive(Clone)]
pub struct OpCtx {
    pub app: AppState,
    pub session: Arc<Session>,
    /// The operation being run (cursors are bound to it).
    pub op: &'static str,
    /// Runs another operation through the pipeline (`call_operation`): handed
    /// down by the pipeline, so operations never import it.
    pub dispatch: Dispatch,
}

/// How an operation calls another by name: the pipeline without the rate
/// limiter (the outer call was already counted).
pub type Dispatch = fn(AppState, Arc<Session>, String, Value) -> BoxFuture<Result<Value, OpError>>;

/// An operation's answer as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub value: Value,
    /// It came from a fallback (the search index was down and the store was
    /// scanned): correct, but not to be cached.
    pub degraded: bool,
}

impl OpCtx {
    pub fn namespace(&self) -> &str {
        self.session.namespace()
    }

    pub fn limits(&self) -> &Limits {
        &self.app.config().limits
    }

    /// The store, the source of truth.
    pub fn store(&self) -> &crate::store::Store {
        self.app.store()
    }
}

pub trait Operation: Send + Sync + 'static {
    const NAME: &'static str;
    type Input: DeserializeOwned + JsonSchema + Send + 'static;
    type Output: Serialize + JsonSchema + Send + 'static;

    fn run(
        cx: OpCtx,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, OpError>> + Send;

    /// Whether this answer came from a fallback rather than the primary path.
    fn degraded(_output: &Self::Output) -> bool {
        false
    }
}

// ---- helpers shared by the layers: limits, tags, paging ----

/// Checks a required text field against a byte limit.
pub(crate) fn check_text(field: &str, value: &str, max_bytes: usize) -> Result<(), OpError> {
    if value.trim().is_empty() {
        return Err(OpError::invalid(format!(
            "`{field}` is empty: give it some text"
        )));
    }
    if value.len() > max_bytes {
        return Err(OpError::invalid(format!(
            "`{field}` is {} bytes, over the limit of {max_bytes}: shorten it or split it",
            value.len()
        )));
    }
    Ok(())
}

/// Checks an id argument is not blank; `what` says what to pass instead
/// ("an event id", "a procedure's id or name").
pub(crate) fn check_id(field: impl std::fmt::Display, id: &str, what: &str) -> Result<(), OpError> {
    if id.trim().is_empty() {
        return Err(OpError::invalid(format!("`{field}` is empty: pass {what}")));
    }
    Ok(())
}

/// Trims, lower-cases and de-duplicates tags, enforcing count and size limits.
pub(crate) fn normalize_tags(tags: Vec<String>, limits: &Limits) -> Result<Vec<String>, OpError> {
    if tags.len() > limits.max_tags {
        return Err(OpError::invalid(format!(
            "{} tags given, the limit is {}: keep the most useful ones",
            tags.len(),
            limits.max_tags
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.into_iter().enumerate() {
        let t = tag.trim().to_lowercase();
        if t.is_empty() {
            return Err(OpError::invalid(format!(
                "`tags[{i}]` is empty: remove it or give it text"
            )));
        }
        if t.len() > limits.max_tag_bytes {
            return Err(OpError::invalid(format!(
                "`tags[{i}]` ({:?}) is longer than {} bytes: use a short label",
                schema::truncate_chars(&t, 32),
                limits.max_tag_bytes
            )));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Refuses an update that gives none of the fields it could change, naming them.
pub(crate) fn some_change(fields: &[(&str, bool)]) -> Result<(), OpError> {
    if fields.iter().any(|(_, given)| *given) {
        return Ok(());
    }
    let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    Err(OpError::invalid(format!(
        "nothing to change: pass at least one of {}",
        names.join(", ")
    )))
}

pub(crate) fn check_unit(field: &str, v: f64) -> Result<(), OpError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(OpError::invalid(format!(
            "`{field}` is {v}: it must be between 0.0 and 1.0"
        )));
    }
    Ok(())
}

pub(crate) fn check_metadata(
    m: &serde_json::Map<String, serde_json::Value>,
    limits: &Limits,
) -> Result<(), OpError> {
    let size = serde_json::to_string(m)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if size > limits.max_metadata_bytes {
        return Err(OpError::invalid(format!(
            "`metadata` is {size} bytes of JSON, over the limit of {}",
            limits.max_metadata_bytes
        )));
    }
    Ok(())
}

/// The page size to use: the default when absent, an error when out of range.
pub(crate) fn page_size(limit: Option<usize>, limits: &Limits) -> Result<usize, OpError> {
    match limit {
        None => Ok(limits.default_page_size),
        Some(0) => Err(OpError::invalid("`limit` must be at least 1")),
        Some(n) if n > limits.max_page_size => Err(OpError::invalid(format!(
            "`limit` is {n}, the most one call returns is {}: page with `cursor` instead",
            limits.max_page_size
        ))),
        Some(n) => Ok(n),
    }
}

/// Opaque paging cursors: base64url of a small JSON state, signed (HMAC-SHA256
/// with the data dir's key) together with the operation and namespace it was
/// issued for. The state carries a fingerprint of the arguments that define the
/// list, so a cursor is refused when forged, altered, reused with other
/// arguments, by another operation or in another namespace: nothing a client
/// writes in a cursor reaches an allocation or a query unchecked.
pub(crate) mod cursor {
    use super::*;
    use hmac::Mac;
    use serde::Deserialize;

    const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    /// Bytes of the MAC a cursor carries (128 bits).
    const TAG_BYTES: usize = 16;
    /// Longer than any cursor engram issues.
    const MAX_CURSOR_CHARS: usize = 1024;

    type HmacSha256 = hmac::Hmac<sha2::Sha256>;

    fn mac(cx: &OpCtx, payload: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(cx.app.cursor_key()).expect("HMAC takes any key length");
        mac.update(cx.op.as_bytes());
        mac.update(&[0]);
        mac.update(cx.namespace().as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    pub(crate) fn encode<T: Serialize>(cx: &OpCtx, state: &T) -> String {
        let payload = serde_json::to_vec(state).expect("cursor state serializes");
        let tag = mac(cx, &payload).finalize().into_bytes();
        format!(
            "{}.{}",
            ENGINE.encode(&payload),
            ENGINE.encode(&tag[..TAG_BYTES])
        )
    }

    pub(crate) fn decode<T: for<'de> Deserialize<'de>>(cx: &OpCtx, s: &str) -> Result<T, OpError> {
        let invalid = || {
            OpError::invalid(
                "`cursor` is not valid here: pass the `next_cursor` of the previous answer of \
                 this same tool unchanged, or leave it out to start from the first page",
            )
        };
        if s.len() > MAX_CURSOR_CHARS {
            return Err(invalid());
        }
        let (payload, tag) = s.split_once('.').ok_or_else(invalid)?;
        let payload = ENGINE.decode(payload).map_err(|_| invalid())?;
        let tag = ENGINE.decode(tag).map_err(|_| invalid())?;
        if tag.len() != TAG_BYTES {
            return Err(invalid());
        }
        mac(cx, &payload)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        serde_json::from_slice(&payload).map_err(|_| invalid())
    }

    /// A short fingerprint of the arguments that define a list (not the cursor).
    pub(crate) fn fingerprint<T: Serialize>(args: &T) -> String {
        use sha2::Digest;
        let bytes = serde_json::to_vec(args).expect("arguments serialize");
        let digest = sha2::Sha256::digest(bytes);
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn mismatch() -> OpError {
        OpError::invalid(
            "`cursor` belongs to a call with different arguments: repeat the same arguments \
             with the cursor, or drop the cursor to start over",
        )
    }
}
