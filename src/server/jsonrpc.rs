//! Reading one incoming JSON-RPC message, for every transport: what rmcp can
//! handle goes on to it; everything else gets the JSON-RPC error it deserves
//! instead of silence (a client waiting for an answer that never comes hangs).
//!
//! - not UTF-8, not JSON (nested deeper than serde's limit, lone surrogates,
//!   `NaN`, `1e400`, trailing garbage): `-32700` Parse error, `id: null`;
//! - JSON that is not one request (a batch, a scalar, an id that is neither a
//!   string nor an integer, no `jsonrpc: "2.0"`): `-32600` Invalid Request,
//!   with the id when it can be read, else `null`;
//! - a known method whose params do not fit (`tools/call` with `arguments` that
//!   is not an object): `-32602` Invalid params, with the request's id;
//! - a malformed notification or response: nothing may answer those, so they
//!   are logged and dropped.

use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use serde_json::{Map, Value, json};

use crate::ops::schema::truncate_chars;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;

pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Methods rmcp parses into typed requests: when one arrives as a custom
/// request, its params did not fit.
const TYPED_METHODS: &[&str] = &[
    "ping",
    "initialize",
    "server/discover",
    "completion/complete",
    "logging/setLevel",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "tools/call",
    "tools/list",
];

/// Methods MCP 2026-07-28 removed (answered "method not found" under it).
const REMOVED_IN_2026: &[&str] = &[
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// The request names protocol 2026-07-28 or later in its `_meta`.
fn declares_2026(bytes: &[u8]) -> bool {
    let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    value["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
        .as_str()
        .is_some_and(|v| v >= "2026-07-28")
}

/// What to do with one incoming message.
#[derive(Debug)]
pub enum Incoming {
    /// A message rmcp understands.
    Message(Box<ClientJsonRpcMessage>),
    /// Not one: send this error response back.
    Reply(Value),
    /// A malformed notification or response: nothing to answer.
    Drop(String),
}

/// Classifies the bytes of one message (one stdio line, one HTTP body).
pub fn read(bytes: &[u8]) -> Incoming {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
        return route(message, bytes);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => misshapen(&value, bytes),
        Err(e) => {
            let why = if std::str::from_utf8(bytes).is_err() {
                "the message is not valid UTF-8".to_string()
            } else {
                format!("the message is not valid JSON ({e})")
            };
            Incoming::Reply(error(
                Value::Null,
                PARSE_ERROR,
                format!("Parse error: {why}"),
            ))
        }
    }
}

/// A message rmcp parsed: on to rmcp, unless it is a typed method rmcp could
/// only read as a custom request (its params did not fit).
fn route(message: ClientJsonRpcMessage, bytes: &[u8]) -> Incoming {
    let ClientJsonRpcMessage::Request(r) = &message else {
        return Incoming::Message(Box::new(message));
    };
    match &r.request {
        // Methods 2026-07-28 removed: rmcp answers them (-32601, HTTP 404).
        ClientRequest::CustomRequest(c)
            if REMOVED_IN_2026.contains(&c.method.as_str()) && declares_2026(bytes) =>
        {
            Incoming::Message(Box::new(message))
        }
        ClientRequest::CustomRequest(c) if TYPED_METHODS.contains(&c.method.as_str()) => {
            let id = serde_json::to_value(&r.id).unwrap_or(Value::Null);
            Incoming::Reply(error(id, INVALID_PARAMS, params_problem(&c.method, bytes)))
        }
        _ => Incoming::Message(Box::new(message)),
    }
}

/// JSON that rmcp could not read as a message: not an object, a malformed
/// notification or response (dropped), or a request with a bad `id`.
fn misshapen(value: &Value, bytes: &[u8]) -> Incoming {
    let Value::Object(obj) = value else {
        let why = if value.is_array() {
            "batches are not supported: send one JSON-RPC message at a time"
        } else {
            "a JSON-RPC message is a JSON object"
        };
        return Incoming::Reply(error(
            Value::Null,
            INVALID_REQUEST,
            format!("Invalid Request: {why}"),
        ));
    };
    let Some(method) = obj.get("method") else {
        return Incoming::Drop("a response that does not fit any request shape".into());
    };
    let Some(id) = obj.get("id") else {
        return Incoming::Drop(format!(
            "a notification that does not fit its method {}",
            truncate_chars(&method.to_string(), 64)
        ));
    };
    let id_ok = id.is_string() || id.as_i64().is_some();
    if !id_ok {
        return Incoming::Reply(error(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request: `id` must be a string or an integer".into(),
        ));
    }
    Incoming::Reply(bad_request(obj, method, id, bytes))
}

/// The error for a request with a readable `id` that rmcp still refused: a
/// wrong `jsonrpc`, `method` or `params` member, else params of the wrong shape.
fn bad_request(obj: &Map<String, Value>, method: &Value, id: &Value, bytes: &[u8]) -> Value {
    let why = if obj.get("jsonrpc") != Some(&json!("2.0")) {
        "`jsonrpc` must be \"2.0\"".to_string()
    } else if !method.is_string() {
        "`method` must be a string".to_string()
    } else if obj.get("params").is_some_and(|p| !p.is_object()) {
        "`params` must be an object".to_string()
    } else {
        let method = method.as_str().unwrap_or_default();
        return error(id.clone(), INVALID_PARAMS, params_problem(method, bytes));
    };
    error(
        id.clone(),
        INVALID_REQUEST,
        format!("Invalid Request: {why}"),
    )
}

/// Why the params of a typed method did not fit, in words a client author reads.
fn params_problem(method: &str, bytes: &[u8]) -> String {
    let value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let params = &value["params"];
    if method == "tools/call" {
        if !params["name"].is_string() {
            return "Invalid params: tools/call needs `name`, the tool's name as a string".into();
        }
        if !params["arguments"].is_null() && !params["arguments"].is_object() {
            return "Invalid params: tools/call `arguments` must be a JSON object of named \
                    arguments"
                .into();
        }
    }
    format!(
        "Invalid params: the params of {} do not have the shape the method takes",
        truncate_chars(method, 64)
    )
}

/// A JSON-RPC error response.
pub fn error(id: Value, code: i64, message: String) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": truncate_chars(&message, 400) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(bytes: &[u8]) -> Value {
        match read(bytes) {
            Incoming::Reply(v) => v,
            other => panic!("expected an error reply for {bytes:?}, got {other:?}"),
        }
    }

    #[test]
    fn every_malformed_request_gets_its_error() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let mut parse_errors: Vec<Vec<u8>> = vec![
            deep.into_bytes(),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\ud800"}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1e400}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":NaN}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"} garbage"#.to_vec(),
            b"\xff\xfe{}".to_vec(),
        ];
        for bytes in parse_errors.drain(..) {
            let r = reply(&bytes);
            assert_eq!(r["error"]["code"], PARSE_ERROR, "{r}");
            assert_eq!(r["id"], Value::Null);
        }
        let batch = reply(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert_eq!(batch["error"]["code"], INVALID_REQUEST);
        let object_id = reply(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#);
        assert_eq!(object_id["error"]["code"], INVALID_REQUEST);
        assert_eq!(object_id["id"], Value::Null);
        let args = reply(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
        );
        assert_eq!(args["error"]["code"], INVALID_PARAMS);
        assert_eq!(args["id"], 7);
        assert!(
            args["error"]["message"]
                .as_str()
                .unwrap()
                .contains("arguments")
        );
    }

    #[test]
    fn good_messages_pass_and_bad_notifications_are_dropped() {
        assert!(matches!(
            read(br#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#),
            Incoming::Message(_)
        ));
        assert!(matches!(
            read(br#"{"jsonrpc":"2.0","method":5}"#),
            Incoming::Drop(_)
        ));
    }
}
