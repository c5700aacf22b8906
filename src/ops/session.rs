//! Session: facts about this session and its working memory (scratch key/values
//! that live only as long as the session and no other session can see).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::OpCtx;
use crate::catalog::catalog;
use crate::error::OpError;

/// Longest scratch key, in bytes.
const MAX_SCRATCH_KEY_BYTES: usize = 256;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct InfoInput {
    /// A handle from session_open. Needed by stateless clients (MCP 2026-07-28 over
    /// HTTP); otherwise this connection's own session is used.
    pub session: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct OpenInput {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct OpenOutput {
    /// Pass this as `session` to the session_* tools. Keep it private: it is
    /// the session's only key.
    pub session: String,
    /// The namespace the session (and the handle) belongs to.
    pub namespace: String,
    /// The handle expires after this many seconds without use.
    pub idle_expiry_secs: u64,
}

operation!(Open = "session_open", OpenInput => OpenOutput, session_open);

async fn session_open(cx: OpCtx, _: OpenInput) -> Result<OpenOutput, OpError> {
    let session = cx.app.new_session_with_tools(cx.session.tools());
    session.set_namespace(cx.namespace().to_string());
    // The handle works with the token that opened it only.
    if let Some(grant) = cx.session.grant() {
        session
            .bind_grant(grant.clone())
            .map_err(OpError::Internal)?;
    }
    let handle = cx
        .app
        .handles()
        .open(session)
        .await
        .map_err(|e| OpError::Unavailable(e.to_string()))?;
    Ok(OpenOutput {
        session: handle,
        namespace: cx.namespace().to_string(),
        idle_expiry_secs: cx.app.config().handle_idle_secs,
    })
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct InfoOutput {
    pub session_id: String,
    /// The session's handle, when it was opened with session_open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Every record this session reads or writes belongs to this namespace.
    pub namespace: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Names of the tools this session lists.
    pub tools: Vec<String>,
    /// Layers enabled on top of the profile with enable_toolset.
    pub enabled_layers: Vec<String>,
    pub scratch_keys: usize,
    pub server_version: String,
}

operation!(Info = "session_info", InfoInput => InfoOutput, session_info);

async fn session_info(cx: OpCtx, _: InfoInput) -> Result<InfoOutput, OpError> {
    let sel = cx.session.tools();
    Ok(InfoOutput {
        session_id: cx.session.id.clone(),
        handle: cx.session.handle().map(str::to_string),
        namespace: cx.namespace().to_string(),
        started_at: crate::model::micros_to_datetime(cx.session.created_at),
        tools: catalog()
            .operations
            .iter()
            .filter(|o| sel.includes(o))
            .map(|o| o.name.clone())
            .collect(),
        enabled_layers: sel.layers.into_iter().collect(),
        scratch_keys: cx.session.scratch().len(),
        server_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// A kept value back from its JSON text (written by `serde_json`, so it parses).
fn parse_kept(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn check_key(key: &str) -> Result<(), OpError> {
    if key.is_empty() || key.len() > MAX_SCRATCH_KEY_BYTES {
        return Err(OpError::invalid(format!(
            "`key` must be 1 to {MAX_SCRATCH_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScratchSetInput {
    /// Name of the slot, such as "current_plan".
    pub key: String,
    /// Any JSON value to keep for the rest of this session.
    pub value: Value,
    /// A handle from session_open (stateless clients); default: this connection's session.
    pub session: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScratchSetOutput {
    pub key: String,
    /// Whether the key already held a value (now replaced).
    pub replaced: bool,
}

operation!(ScratchSet = "session_scratch_set", ScratchSetInput => ScratchSetOutput, session_scratch_set);

async fn session_scratch_set(
    cx: OpCtx,
    input: ScratchSetInput,
) -> Result<ScratchSetOutput, OpError> {
    check_key(&input.key)?;
    let limits = cx.limits();
    let text = serde_json::to_string(&input.value)
        .map_err(|e| OpError::invalid(format!("`value` cannot be kept: {e}")))?;
    let size = text.len();
    if size > limits.max_scratch_value_bytes {
        return Err(OpError::invalid(format!(
            "`value` is {size} bytes of JSON, over the limit of {}: store large things as memories instead",
            limits.max_scratch_value_bytes
        )));
    }
    let mut scratch = cx.session.scratch();
    if !scratch.contains_key(&input.key) && scratch.len() >= limits.max_scratch_keys {
        return Err(OpError::invalid(format!(
            "this session already holds {} scratch keys, the limit: clear some with session_scratch_clear",
            limits.max_scratch_keys
        )));
    }
    let held: usize = scratch
        .iter()
        .filter(|(k, _)| **k != input.key)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if held + input.key.len() + size > limits.max_scratch_bytes {
        return Err(OpError::invalid(format!(
            "this session's scratch holds {held} bytes; adding {} would pass its limit of {} bytes: \
             clear keys with session_scratch_clear, or store large things as memories",
            input.key.len() + size,
            limits.max_scratch_bytes
        )));
    }
    let replaced = scratch.insert(input.key.clone(), text).is_some();
    Ok(ScratchSetOutput {
        key: input.key,
        replaced,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScratchGetInput {
    pub key: String,
    /// A handle from session_open (stateless clients); default: this connection's session.
    pub session: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScratchGetOutput {
    pub key: String,
    pub found: bool,
    /// The stored value; null when not found.
    pub value: Value,
}

operation!(ScratchGet = "session_scratch_get", ScratchGetInput => ScratchGetOutput, session_scratch_get);

async fn session_scratch_get(
    cx: OpCtx,
    input: ScratchGetInput,
) -> Result<ScratchGetOutput, OpError> {
    check_key(&input.key)?;
    let value = cx
        .session
        .scratch()
        .get(&input.key)
        .map(|text| parse_kept(text));
    Ok(ScratchGetOutput {
        key: input.key,
        found: value.is_some(),
        value: value.unwrap_or(Value::Null),
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScratchListInput {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// A handle from session_open (stateless clients); default: this connection's session.
    pub session: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScratchEntry {
    pub key: String,
    pub value: Value,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScratchListOutput {
    /// In key order.
    pub entries: Vec<ScratchEntry>,
}

operation!(ScratchList = "session_scratch_list", ScratchListInput => ScratchListOutput, session_scratch_list);

async fn session_scratch_list(
    cx: OpCtx,
    input: ScratchListInput,
) -> Result<ScratchListOutput, OpError> {
    let prefix = input.prefix.unwrap_or_default();
    let entries = cx
        .session
        .scratch()
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| ScratchEntry {
            key: k.clone(),
            value: parse_kept(v),
        })
        .collect();
    Ok(ScratchListOutput { entries })
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ScratchClearInput {
    /// Keys to remove. Leave out (with no prefix) to clear everything.
    pub keys: Option<Vec<String>>,
    /// Remove every key starting with this.
    pub prefix: Option<String>,
    /// A handle from session_open (stateless clients); default: this connection's session.
    pub session: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScratchClearOutput {
    pub cleared: usize,
}

operation!(ScratchClear = "session_scratch_clear", ScratchClearInput => ScratchClearOutput, session_scratch_clear);

async fn session_scratch_clear(
    cx: OpCtx,
    input: ScratchClearInput,
) -> Result<ScratchClearOutput, OpError> {
    let mut scratch = cx.session.scratch();
    let before = scratch.len();
    match (input.keys, input.prefix) {
        (None, None) => scratch.clear(),
        (keys, prefix) => {
            let keys = keys.unwrap_or_default();
            scratch.retain(|k, _| {
                !(keys.contains(k) || prefix.as_deref().is_some_and(|p| k.starts_with(p)))
            });
        }
    }
    Ok(ScratchClearOutput {
        cleared: before - scratch.len(),
    })
}
