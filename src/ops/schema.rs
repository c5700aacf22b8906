//! The two schemas every operation publishes, and the input check built on one.
//!
//! Schemas that hold by construction:
//! - the **output** schema is generated with schemars' *serialize* contract, so it
//!   describes exactly what serde writes: a field with `skip_serializing_if` is
//!   optional, an `Option` without it is required and nullable. The answer is the
//!   type the schema is generated from, so the two cannot disagree (in debug builds
//!   every answer is also checked against it: see `registry::call`);
//! - the **input** schema is generated with the *deserialize* contract, every
//!   object closed (`additionalProperties: false` unless the type says otherwise),
//!   and arguments are validated against it before serde decodes them. The schema
//!   is the contract on both sides: wrong shapes, arrays for objects, unknown
//!   fields and out-of-range numbers are refused with the field's path.
//!
//! Formats outside JSON Schema's own list (`uint64`, `double`, …) are dropped: they
//! say nothing a client can check and validating clients warn about them.
//!
//! Must not: know MCP.

use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema};
use serde_json::Value;

/// Formats JSON Schema 2020-12 defines; any other `format` is removed.
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Most characters of a bad value an error message quotes.
const QUOTE_CHARS: usize = 48;
/// Most schema violations one error message lists.
const MAX_REPORTED: usize = 3;

#[derive(Clone, Copy)]
struct Tidy {
    /// Close objects that list their properties (input schemas).
    close_objects: bool,
}

impl Transform for Tidy {
    fn transform(&mut self, schema: &mut Schema) {
        if let Some(obj) = schema.as_object_mut() {
            let standard = obj
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| STANDARD_FORMATS.contains(&f));
            if !standard {
                obj.remove("format");
            }
            if self.close_objects
                && obj.contains_key("properties")
                && !obj.contains_key("additionalProperties")
            {
                obj.insert("additionalProperties".into(), Value::Bool(false));
            }
        }
        transform_subschemas(self, schema);
    }
}

fn generate<T: JsonSchema>(settings: SchemaSettings) -> Value {
    let schema = settings.into_generator().into_root_schema_for::<T>();
    serde_json::to_value(schema).expect("schemas serialize")
}

/// The input schema of `T` (draft 2020-12): what the operation accepts.
pub fn input_schema_of<T: JsonSchema>() -> Value {
    generate::<T>(
        SchemaSettings::draft2020_12()
            .for_deserialize()
            .with_transform(Tidy {
                close_objects: true,
            }),
    )
}

/// The output schema of `T` (draft 2020-12): exactly what serde writes for it.
pub fn output_schema_of<T: JsonSchema>() -> Value {
    generate::<T>(
        SchemaSettings::draft2020_12()
            .for_serialize()
            .with_transform(Tidy {
                close_objects: false,
            }),
    )
}

/// A compiled schema.
pub struct Checker {
    validator: jsonschema::Validator,
}

impl Checker {
    pub fn new(schema: &Value) -> Checker {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(schema)
            .expect("generated schemas compile");
        Checker { validator }
    }

    /// `None` when `value` is valid, else a message naming each wrong field
    /// (at most a few), quoting only a short prefix of any bad value.
    pub fn check(&self, value: &Value) -> Option<String> {
        let problems: Vec<String> = self
            .validator
            .iter_errors(value)
            .take(MAX_REPORTED)
            .map(|e| describe(&e))
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let at = field_path(&e.instance_path().to_string());
    let inside = |m: String| {
        if at.is_empty() {
            m
        } else {
            format!("`{at}`: {m}")
        }
    };
    // The two an agent meets most, in the words serde used before.
    match e.kind() {
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            return inside(format!("missing field `{}`", truncate_chars(name, 64)));
        }
        K::AdditionalProperties { unexpected } => {
            let names: Vec<String> = unexpected
                .iter()
                .take(MAX_REPORTED)
                .map(|n| format!("`{}`", truncate_chars(n, 64)))
                .collect();
            return inside(format!(
                "unknown field {}: only the fields in the input schema are accepted",
                names.join(", ")
            ));
        }
        K::Type { .. } => {
            // "5 is not of type \"string\"" → "expected a string, not a number (5)"
            let full = e.to_string();
            let tail = full.rsplit(" is not of ").next().unwrap_or_default();
            let wanted: Vec<&str> = tail
                .split('"')
                .skip(1)
                .step_by(2)
                .map(with_article)
                .collect();
            let text = serde_json::to_string(e.instance().as_ref()).unwrap_or_default();
            return inside(format!(
                "expected {}, not {} ({})",
                wanted.join(" or "),
                json_kind(e.instance().as_ref()),
                quote(&text)
            ));
        }
        _ => {}
    }
    let full = e.to_string();
    let instance = e.instance();
    let text = serde_json::to_string(instance.as_ref()).unwrap_or_default();
    // The validator's message starts with the whole bad value: quote a prefix.
    let message = if text.chars().count() > QUOTE_CHARS {
        full.replacen(&text, &quote(&text), 1)
    } else {
        full
    };
    inside(truncate_chars(&message, 300))
}

fn with_article(json_type: &str) -> &'static str {
    match json_type {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "object" => "an object",
        "array" => "an array",
        "boolean" => "a boolean",
        _ => "null",
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `/events/0/content` → `events[0].content`.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

/// A short prefix of a value's JSON text, marked as cut.
pub fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTE_CHARS {
        return text.to_string();
    }
    let head: String = text.chars().take(QUOTE_CHARS).collect();
    format!("{head}… ({} bytes)", text.len())
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut head: String = s.chars().take(max).collect();
    head.push('…');
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Answer {
        hits: Vec<u64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        degraded: bool,
        next: Option<String>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Args {
        query: String,
        limit: Option<u32>,
    }

    #[test]
    fn output_schemas_follow_what_serde_writes() {
        let schema = output_schema_of::<Answer>();
        let required = schema["required"].as_array().unwrap();
        assert!(required.contains(&"hits".into()));
        assert!(
            required.contains(&"next".into()),
            "Option is written as null"
        );
        assert!(!required.contains(&"degraded".into()), "skipped when false");
        let checker = Checker::new(&schema);
        for answer in [
            Answer {
                hits: vec![],
                degraded: false,
                next: None,
            },
            Answer {
                hits: vec![1, 2],
                degraded: true,
                next: Some("c".into()),
            },
        ] {
            let v = serde_json::to_value(answer).unwrap();
            assert_eq!(checker.check(&v), None, "{v}");
        }
        assert!(!schema.to_string().contains("uint64"));
    }

    #[test]
    fn inputs_are_closed_and_errors_name_the_field_briefly() {
        let checker = Checker::new(&input_schema_of::<Args>());
        assert_eq!(checker.check(&serde_json::json!({"query": "x"})), None);
        let e = checker
            .check(&serde_json::json!({"query": "x", "lmit": 3}))
            .unwrap();
        assert!(e.contains("lmit"), "{e}");
        let e = checker
            .check(&serde_json::json!({"query": "x".repeat(100_000), "limit": "x".repeat(100_000)}))
            .unwrap();
        assert!(e.contains("`limit`"), "{e}");
        assert!(e.len() < 400, "{e}");
        let e = checker.check(&serde_json::json!(["x", 1])).unwrap();
        assert!(e.contains("object"), "{e}");
        assert_eq!(field_path("/events/0/content"), "events[0].content");
    }
}
