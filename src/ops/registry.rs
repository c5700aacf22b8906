//! The registry: operation name → typed handler, erased to JSON in, JSON out.
//! A table, not a `match`: the pipeline, the MCP tool list, discovery and the
//! schema generator all walk it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use serde_json::Value;

use super::schema::{Checker, input_schema_of, nul_at, output_schema_of, truncate_chars};
use super::{Answer, OpCtx, Operation};
use crate::error::OpError;
use crate::store::attributed;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub struct Entry {
    pub name: &'static str,
    pub input_schema: fn() -> Value,
    pub output_schema: fn() -> Value,
    call: fn(OpCtx, Value) -> BoxFuture<Result<Answer, OpError>>,
    input_check: OnceLock<Checker>,
    output_check: OnceLock<Checker>,
}

impl Entry {
    pub(crate) fn of<O: Operation>() -> Entry {
        Entry {
            name: O::NAME,
            input_schema: input_schema_of::<O::Input>,
            output_schema: output_schema::<O>,
            call: call::<O>,
            input_check: OnceLock::new(),
            output_check: OnceLock::new(),
        }
    }

    /// Checks `args` against the published input schema, decodes them into the
    /// operation's input type and runs it. A panic inside becomes
    /// [`OpError::Internal`]: the caller gets an answer and every permit the call
    /// held is released by the code that took it.
    pub async fn call(&self, cx: OpCtx, args: Value) -> Result<Answer, OpError> {
        let args = match args {
            Value::Null => Value::Object(Default::default()),
            Value::Object(_) => args,
            other => {
                return Err(OpError::invalid(format!(
                    "{} takes a JSON object of named arguments, not {}",
                    self.name,
                    match other {
                        Value::Array(_) => "an array",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        _ => "a boolean",
                    }
                )));
            }
        };
        if let Some(problems) = self.input_checker().check(&args) {
            return Err(OpError::invalid(format!(
                "{}: {problems}. See the tool's input schema (discover_tools with detail \"full\")",
                self.name
            )));
        }
        if let Some(at) = nul_at(&args) {
            return Err(OpError::invalid(format!(
                "{}: {at} holds a NUL character (\\u0000), which engram does not store: \
                 remove it",
                self.name
            )));
        }
        let run = std::panic::AssertUnwindSafe((self.call)(cx, args));
        let answer = match futures::FutureExt::catch_unwind(run).await {
            Ok(result) => result?,
            Err(panic) => return Err(OpError::from_panic(self.name, panic)),
        };
        #[cfg(debug_assertions)]
        if let Some(problems) = self.output_checker().check(&answer.value) {
            // A bug in engram, caught before a validating client sees it.
            return Err(OpError::Internal(format!(
                "the answer of {} does not match its output schema: {problems}",
                self.name
            )));
        }
        Ok(answer)
    }

    /// The compiled input schema, built at first use.
    pub fn input_checker(&self) -> &Checker {
        self.input_check
            .get_or_init(|| Checker::new(&(self.input_schema)()))
    }

    /// The compiled output schema, built at first use.
    pub fn output_checker(&self) -> &Checker {
        self.output_check
            .get_or_init(|| Checker::new(&(self.output_schema)()))
    }
}

pub struct Registry {
    entries: Vec<Entry>,
    by_name: HashMap<&'static str, usize>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

/// Every operation engram has: the operation table in `ops/mod.rs`.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let entries: Vec<Entry> = super::OPERATIONS.iter().map(|of| of()).collect();
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name, i))
            .collect();
        Registry { entries, by_name }
    })
}

fn call<O: Operation>(cx: OpCtx, args: Value) -> BoxFuture<Result<Answer, OpError>> {
    Box::pin(async move {
        let input = decode_args::<O::Input>(O::NAME, args)?;
        let session = cx.session.clone();
        let token = session.grant().map(|g| g.label.as_str());
        let (output, fired) = attributed(O::NAME, &session.id, token, O::run(cx, input)).await;
        let output = output?;
        let degraded = O::degraded(&output);
        let encode =
            |e: serde_json::Error| OpError::Internal(format!("cannot encode the answer: {e}"));
        let mut value = serde_json::to_value(output).map_err(encode)?;
        if let (false, Value::Object(fields)) = (fired.is_empty(), &mut value) {
            let reminders = serde_json::to_value(fired).map_err(encode)?;
            fields.insert("reminders".into(), reminders);
        }
        Ok(Answer { value, degraded })
    })
}

/// What a write's answer adds when it fired reminders. (Only the schema: the
/// items are `Trigger`s, described once, in prospective_triggers' schema, to
/// keep every write tool's listing short.)
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct Reminders {
    /// Reminders this write fired (set with prospective_trigger_set), shaped as
    /// prospective_triggers lists them: act on them now.
    #[schemars(default)]
    reminders: Vec<serde_json::Map<String, Value>>,
}

/// The output schema of `O`: its output type's, and for an operation that
/// writes records reminders watch, the `reminders` its answer may carry.
fn output_schema<O: Operation>() -> Value {
    let mut schema = output_schema_of::<O::Output>();
    let writes = crate::catalog::catalog()
        .get(O::NAME)
        .is_some_and(|spec| spec.writes.iter().any(|k| k.watchable()));
    if writes {
        let extra = output_schema_of::<Reminders>();
        for key in ["properties", "$defs"] {
            if let Some(Value::Object(more)) = extra.get(key) {
                let into = schema.as_object_mut().map(|s| {
                    s.entry(key)
                        .or_insert_with(|| Value::Object(Default::default()))
                });
                if let Some(Value::Object(into)) = into {
                    into.extend(more.clone());
                }
            }
        }
    }
    schema
}

/// Decodes arguments (already checked against the input schema), naming the
/// exact field that is wrong if serde still refuses them (a time it cannot read).
fn decode_args<T: serde::de::DeserializeOwned>(op: &str, args: Value) -> Result<T, OpError> {
    serde_path_to_error::deserialize(&args).map_err(|e| {
        let path = e.path().to_string();
        let inner = truncate_chars(&e.into_inner().to_string(), 400);
        let at = if path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        OpError::invalid(format!(
            "{op}{at}: {inner}. See the tool's input schema (discover_tools with detail \"full\")"
        ))
    })
}

/// The committed `schemas/<name>.json` document of an operation: its catalog
/// facts plus generated input and output schemas. Pretty JSON with a final newline.
pub fn schema_document(entry: &Entry) -> String {
    let spec = crate::catalog::catalog().get(entry.name);
    let doc = serde_json::json!({
        "name": entry.name,
        "layer": spec.map(|s| s.layer.clone()),
        "kind": spec.map(|s| s.kind),
        "summary": spec.map(|s| s.summary.clone()),
        "annotations": spec.map(|s| s.annotations.clone()),
        "input_schema": (entry.input_schema)(),
        "output_schema": (entry.output_schema)(),
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("schema documents serialize");
    text.push('\n');
    text
}

/// The command that regenerates `schemas/`.
pub const REGENERATE_SCHEMAS: &str = "cargo run -- schemas --write";
