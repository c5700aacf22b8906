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
    /// Close every object that does not say it is open (input schemas).
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
            let object = obj.contains_key("properties")
                || obj.get("type").and_then(Value::as_str) == Some("object");
            if self.close_objects && object && !obj.contains_key("additionalProperties") {
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
            .map(|e| describe(&e, value))
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

fn describe(e: &jsonschema::ValidationError<'_>, args: &Value) -> String {
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
        // `additionalProperties: false` on an object with no properties (a tool
        // that takes no arguments): the validator names neither the object's
        // path nor the field, so name the fields the object has.
        K::FalseSchema
            if e.schema_path()
                .to_string()
                .ends_with("additionalProperties") =>
        {
            let object = args.pointer(&e.instance_path().to_string());
            let names: Vec<String> = object
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|o| o.keys())
                .take(MAX_REPORTED)
                .map(|n| format!("`{}`", truncate_chars(n, 64)))
                .collect();
            return inside(format!(
                "unknown field {}: it takes no arguments here",
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

/// The path of the first string (or object key) in `value` that holds a NUL
/// character, as `events[0].content`: text no store keeps alike (PostgreSQL
/// refuses it, sqlite cuts it in places), so no input may carry one.
pub fn nul_at(value: &Value) -> Option<String> {
    fn walk(v: &Value, at: &mut String) -> bool {
        let mark = at.len();
        let found = match v {
            Value::String(s) => return s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                at.truncate(mark);
                at.push_str(&format!("[{i}]"));
                walk(item, at)
            }),
            Value::Object(fields) => fields.iter().any(|(k, item)| {
                at.truncate(mark);
                if mark > 0 {
                    at.push('.');
                }
                at.push_str(k);
                k.contains('\0') || walk(item, at)
            }),
            _ => false,
        };
        if !found {
            at.truncate(mark);
        }
        found
    }
    let mut at = String::new();
    walk(value, &mut at).then_some(at)
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

pub use crate::error::truncate_chars;

// ---------- wire forms: what clients are sent with each tool ----------
//
// A host pays for every listed tool on every turn, so the schemas clients are
// sent with each tool are compacted from the generated ones above (which
// `schemas/`, `discover_tools` with detail "full" and the server's own checks
// keep using):
//
// - the **wire input schema** shows only arguments the generated one accepts,
//   and all of them but one: `null` for an optional field (the same as leaving
//   it out) is accepted but not offered. Otherwise only annotations a model does
//   not need are removed (`$schema`, `title`, defaults, the root description
//   that restates the tool's), `$defs` are inlined where they are used (a
//   field's own description wins over its type's), `anyOf [X, null]` becomes a
//   nullable `X`, and a `oneOf` of string constants an `enum`;
// - the **wire output schema** is implied by the generated one (every answer
//   valid against the generated schema is valid against it), so validating
//   clients still accept every answer: annotations and formats are removed, the
//   answer's own fields keep their exact types, enums and `required`, and
//   records nested in it (an event inside a hit) keep their type and their
//   `required` field names but not their fields' types.

/// Keywords that only annotate: dropped from both wire forms.
const ANNOTATION_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords that apply to instances of every type: a schema holding one of them
/// cannot take `null` into its `type` alone.
const ANY_TYPE_KEYWORDS: &[&str] = &[
    "const",
    "not",
    "allOf",
    "anyOf",
    "oneOf",
    "if",
    "then",
    "else",
    "$ref",
    "$dynamicRef",
];

/// Keywords whose value is a map of names to schemas.
const SCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Keywords whose value is one schema.
const SCHEMA_VALUES: &[&str] = &[
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
];

/// Keywords whose value is a list of schemas.
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// The input schema to send with a tool: every argument valid against it is
/// accepted by `full` (an [`input_schema_of`] schema), and so is every argument
/// `full` accepts, except an explicit `null` for an optional field.
pub fn wire_input_schema(full: &Value) -> Value {
    let mut schema = inline_refs(full);
    if let Some(obj) = schema.as_object_mut() {
        // The tool's description says what the arguments are for.
        obj.remove("description");
    }
    let mut schema = compact(schema, false, true);
    drop_unused_defs(&mut schema);
    schema
}

/// The output schema to send with a tool: every answer valid against `full`
/// (an [`output_schema_of`] schema) is valid against it. The answer's own fields
/// keep their exact types, enums and `required`; objects nested in it keep
/// their type and `required` names only.
pub fn wire_output_schema(full: &Value) -> Value {
    let schema = compact(inline_refs(full), true, true);
    let mut schema = loosen_nested(&schema, 0);
    drop_unused_defs(&mut schema);
    schema
}

/// Every schema nested in `obj` (one level down), with the keyword that holds it.
fn subschemas_mut(obj: &mut serde_json::Map<String, Value>) -> Vec<(&str, &mut Value)> {
    let mut out = Vec::new();
    for (k, v) in obj.iter_mut() {
        let k = k.as_str();
        if SCHEMA_MAPS.contains(&k) {
            if let Value::Object(map) = v {
                out.extend(map.values_mut().map(|s| (k, s)));
            }
        } else if SCHEMA_LISTS.contains(&k) {
            if let Value::Array(list) = v {
                out.extend(list.iter_mut().map(|s| (k, s)));
            }
        } else if SCHEMA_VALUES.contains(&k) {
            out.push((k, v));
        }
    }
    out
}

/// `full` with every `$ref: #/$defs/X` replaced by X, except references that
/// would recurse (those stay, with their `$defs`). A reference's own keywords
/// are kept next to the inlined ones and win over them (a field's description
/// over its type's); a reference with validating keywords beside it stays.
fn inline_refs(full: &Value) -> Value {
    let defs = full
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut root = full.clone();
    inline_in(&mut root, &defs, &mut Vec::new());
    root
}

fn inline_in(schema: &mut Value, defs: &serde_json::Map<String, Value>, stack: &mut Vec<String>) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let target = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .map(str::to_string);
    if let Some(name) = target {
        let only_annotations = obj.keys().all(|k| {
            k == "$ref" || k == "description" || ANNOTATION_KEYWORDS.contains(&k.as_str())
        });
        if let Some(def) = defs.get(&name)
            && only_annotations
            && !stack.contains(&name)
        {
            let mut inlined = def.clone();
            stack.push(name);
            inline_in(&mut inlined, defs, stack);
            stack.pop();
            if let Value::Object(mut map) = inlined {
                for (k, v) in std::mem::take(obj) {
                    if k != "$ref" {
                        map.insert(k, v);
                    }
                }
                *obj = map;
            } else {
                // A boolean schema: the annotations beside it say nothing.
                *schema = inlined;
            }
            return;
        }
    }
    for (_, sub) in subschemas_mut(obj) {
        inline_in(sub, defs, stack);
    }
}

/// Removes `$defs` entries nothing refers to any more (and `$defs` if empty).
fn drop_unused_defs(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let Some(Value::Object(defs)) = obj.remove("$defs") else {
        return;
    };
    // A definition is kept when the schema, or a kept definition, refers to it.
    let mut keep: std::collections::BTreeSet<String> = Default::default();
    let mut pending = vec![Value::Object(obj.clone())];
    // (`obj` no longer holds `$defs`: only references from outside them count.)
    while let Some(s) = pending.pop() {
        let mut found = Vec::new();
        collect_refs(&s, &mut found);
        for name in found {
            if let Some(def) = defs.get(&name)
                && keep.insert(name)
            {
                pending.push(def.clone());
            }
        }
    }
    let kept: serde_json::Map<String, Value> =
        defs.into_iter().filter(|(n, _)| keep.contains(n)).collect();
    if !kept.is_empty() {
        obj.insert("$defs".into(), Value::Object(kept));
    }
}

fn collect_refs(schema: &Value, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    if let Some(name) = obj
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        out.push(name.to_string());
    }
    for (k, v) in obj {
        // `$defs` are reached only through references.
        if k == "$defs" || k == "definitions" {
            continue;
        }
        if SCHEMA_MAPS.contains(&k.as_str()) {
            if let Value::Object(map) = v {
                map.values().for_each(|s| collect_refs(s, out));
            }
        } else if SCHEMA_LISTS.contains(&k.as_str()) {
            if let Value::Array(list) = v {
                list.iter().for_each(|s| collect_refs(s, out));
            }
        } else if SCHEMA_VALUES.contains(&k.as_str()) {
            collect_refs(v, out);
        }
    }
}

/// Removes annotations (for outputs also descriptions and formats), and
/// rewrites two verbose shapes into equivalent short ones, bottom-up.
/// `positive`: whether accepting more here accepts more overall (not so under
/// `not` or in an `if`), the only places where formats are dropped (outputs) or
/// `null` left unoffered (inputs).
fn compact(schema: Value, output: bool, positive: bool) -> Value {
    let Value::Object(mut obj) = schema else {
        return schema;
    };
    obj.retain(|k, v| {
        !(ANNOTATION_KEYWORDS.contains(&k.as_str())
            || (output && k == "description")
            || (output && positive && k == "format")
            // The default: any property is allowed.
            || (k == "additionalProperties" && *v == Value::Bool(true)))
    });
    // Doc comments wrap lines: one space says the same in fewer bytes.
    if let Some(Value::String(text)) = obj.get_mut("description") {
        *text = unwrap_lines(text);
    }
    for (keyword, sub) in subschemas_mut(&mut obj) {
        let positive = positive && keyword != "not" && keyword != "if";
        *sub = compact(std::mem::take(sub), output, positive);
    }
    for key in ["oneOf", "anyOf"] {
        if ["type", "enum", "const"]
            .iter()
            .any(|k| obj.contains_key(*k))
        {
            break;
        }
        if let Some(values) = obj.get(key).and_then(string_constants) {
            obj.remove(key);
            obj.insert("type".into(), Value::String("string".into()));
            obj.insert("enum".into(), Value::Array(values));
        }
    }
    fold_null(&mut obj);
    if !output && positive {
        unadvertise_null(&mut obj);
    }
    Value::Object(obj)
}

/// An optional field of an input object takes `null` as if it were absent: the
/// wire form does not advertise `null` there (the field can simply be left out),
/// so a model is not invited to send it. Arguments valid against the result are
/// all still accepted; `null` is too, it is only not offered.
fn unadvertise_null(obj: &mut serde_json::Map<String, Value>) {
    let required: Vec<Value> = obj
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(Value::Object(props)) = obj.get_mut("properties") else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if required.contains(&Value::String(name.clone())) {
            continue;
        }
        let Some(prop) = prop.as_object_mut() else {
            continue;
        };
        let Some(Value::Array(types)) = prop.get("type") else {
            continue;
        };
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if rest.is_empty() || rest.len() == types.len() {
            continue;
        }
        let rest = if rest.len() == 1 {
            rest[0].clone()
        } else {
            Value::Array(rest)
        };
        prop.insert("type".into(), rest);
        if let Some(Value::Array(values)) = prop.get_mut("enum") {
            values.retain(|v| !v.is_null());
        }
    }
}

/// `text` with single line breaks (wrapped lines) turned into spaces; blank
/// lines (paragraphs) stay.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|para| {
            para.split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The values of a `oneOf`/`anyOf` whose branches are all string constants
/// (`const` or `enum`, nothing else that validates), when they are distinct.
fn string_constants(branches: &Value) -> Option<Vec<Value>> {
    let branches = branches.as_array()?;
    let mut values: Vec<Value> = Vec::new();
    for b in branches {
        let b = b.as_object()?;
        if b.get("type") != Some(&Value::String("string".into()))
            || b.keys()
                .any(|k| !matches!(k.as_str(), "type" | "const" | "enum" | "description"))
        {
            return None;
        }
        match (b.get("const"), b.get("enum")) {
            (Some(c @ Value::String(_)), None) => values.push(c.clone()),
            (None, Some(Value::Array(e))) if e.iter().all(Value::is_string) => {
                values.extend(e.iter().cloned())
            }
            _ => return None,
        }
    }
    let distinct: std::collections::BTreeSet<String> =
        values.iter().map(|v| v.to_string()).collect();
    (!values.is_empty() && distinct.len() == values.len()).then_some(values)
}

/// `{anyOf: [X, {type: null}], ...}` → `{...X, type: [.., "null"], ...}` when X
/// has a `type` and no keyword that applies to every type (an `enum` takes
/// `null` too). The two accept the same values.
fn fold_null(obj: &mut serde_json::Map<String, Value>) {
    let Some(Value::Array(branches)) = obj.get("anyOf") else {
        return;
    };
    let null = serde_json::json!({"type": "null"});
    let [first, second] = branches.as_slice() else {
        return;
    };
    let x = if *second == null {
        first
    } else if *first == null {
        second
    } else {
        return;
    };
    let Some(x) = x.as_object() else {
        return;
    };
    let mut types: Vec<Value> = match x.get("type") {
        Some(Value::String(t)) => vec![Value::String(t.clone())],
        Some(Value::Array(ts)) => ts.clone(),
        _ => return,
    };
    if types.contains(&Value::String("null".into()))
        || x.keys().any(|k| ANY_TYPE_KEYWORDS.contains(&k.as_str()))
        // The outer schema's own keywords (other than annotations) would clash.
        || x.keys().any(|k| obj.contains_key(k) && k != "description")
    {
        return;
    }
    let mut x = x.clone();
    types.push(Value::String("null".into()));
    x.insert("type".into(), Value::Array(types));
    if let Some(Value::Array(values)) = x.get_mut("enum") {
        values.push(Value::Null);
    }
    obj.remove("anyOf");
    for (k, v) in x {
        // The outer description (the field's) wins over the inner (the type's).
        obj.entry(k).or_insert(v);
    }
}

/// Whether `schema` describes an object (its `type` says so, or it lists properties).
fn is_object_schema(schema: &serde_json::Map<String, Value>) -> bool {
    let typed = match schema.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    typed || schema.contains_key("properties")
}

/// Keeps `schema` exact down to the answer's own fields and loosens every
/// object nested below (`objects`: objects entered so far, the root is 0).
/// Only subschemas in positions where a looser schema accepts more are
/// touched: `not` and conditionals stay as they are.
fn loosen_nested(schema: &Value, objects: usize) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    if objects >= 1 && is_object_schema(obj) {
        return skeleton(schema);
    }
    let inside = objects + usize::from(is_object_schema(obj));
    let mut out = serde_json::Map::new();
    let mut loosened = false;
    for (k, v) in obj {
        let new = match k.as_str() {
            "properties" | "patternProperties" => match v {
                Value::Object(map) => Value::Object(
                    map.iter()
                        .map(|(n, s)| (n.clone(), loosen_nested(s, inside)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "additionalProperties" | "unevaluatedProperties" => loosen_nested(v, inside),
            // Items and branches describe values at this same level.
            "items" | "unevaluatedItems" => loosen_nested(v, objects),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => match v {
                Value::Array(list) => {
                    Value::Array(list.iter().map(|s| loosen_nested(s, objects)).collect())
                }
                other => other.clone(),
            },
            _ => v.clone(),
        };
        if k == "oneOf" && new != *v {
            loosened = true;
        }
        out.insert(k.clone(), new);
    }
    // Loosened branches may overlap: "exactly one" becomes "at least one".
    if loosened && let Some(branches) = out.remove("oneOf") {
        out.insert("anyOf".into(), branches);
    }
    Value::Object(out)
}

/// The loose form of a nested schema: its `type` and, for an object, the names
/// of its required fields. Everything else (the fields' types, enums, bounds,
/// closed objects, deeper records) is dropped, so it accepts every value the
/// original accepts.
fn skeleton(schema: &Value) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    let out: serde_json::Map<String, Value> = ["type", "required"]
        .into_iter()
        .filter_map(|k| obj.get(k).map(|v| (k.to_string(), v.clone())))
        .collect();
    Value::Object(out)
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

#[cfg(test)]
mod wire_tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    /// A time written as text, with its own description (as `TimeSpec` has).
    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct When(String);

    impl JsonSchema for When {
        fn schema_name() -> std::borrow::Cow<'static, str> {
            "When".into()
        }
        fn json_schema(_: &mut schemars::SchemaGenerator) -> Schema {
            schemars::json_schema!({
                "type": "string",
                "maxLength": 8,
                "description": "A long explanation of the time forms."
            })
        }
    }

    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        /// Fast.
        Fast,
        /// Slow.
        Slow,
    }

    /// Root doc, restating the tool's description.
    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        /// What to find.
        query: String,
        /// From when.
        #[serde(default)]
        since: Option<When>,
        #[serde(default)]
        until: Option<When>,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Serialize, JsonSchema)]
    #[allow(dead_code)]
    struct Record {
        /// The id.
        id: String,
        at: chrono::DateTime<chrono::Utc>,
        note: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        extra: Option<u32>,
    }

    #[derive(Serialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Kind {
        Event,
        Fact,
    }

    #[derive(Serialize, JsonSchema)]
    #[serde(tag = "type", rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Shape {
        Dot { x: i32 },
        Line { x: i32, y: i32 },
    }

    #[derive(Serialize, JsonSchema)]
    #[allow(dead_code)]
    struct Answer {
        /// Hits, best first.
        hits: Vec<Record>,
        first: Option<Record>,
        kind: Kind,
        shapes: Vec<Shape>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        degraded: bool,
        count: u64,
    }

    fn valid(schema: &Value, value: &Value) -> bool {
        Checker::new(schema).check(value).is_none()
    }

    #[test]
    fn wire_inputs_accept_what_the_full_schema_accepts() {
        let full = input_schema_of::<Args>();
        let wire = wire_input_schema(&full);
        let text = wire.to_string();
        for noise in [
            "$schema", "title", "default", "$defs", "$ref", "Root doc", "oneOf",
        ] {
            assert!(!text.contains(noise), "{noise} in {text}");
        }
        // The field's description wins over its type's; the type's bounds stay.
        assert_eq!(wire["properties"]["since"]["description"], "From when.");
        assert_eq!(wire["properties"]["since"]["maxLength"], 8);
        // Without a description of its own, the field takes its type's.
        assert_eq!(
            wire["properties"]["until"]["description"],
            "A long explanation of the time forms."
        );
        assert_eq!(wire["properties"]["mode"]["enum"], json!(["fast", "slow"]));
        // Optional fields are not offered as nullable; required ones keep their type.
        assert_eq!(wire["properties"]["limit"]["type"], "integer");
        assert_eq!(wire["properties"]["since"]["type"], "string");
        assert_eq!(wire["additionalProperties"], false);
        assert_eq!(wire["required"], json!(["query"]));
        let cases = [
            json!({"query": "x"}),
            json!({"query": "x", "since": "2h ago", "until": "now", "mode": "slow", "limit": 3, "tags": ["a"]}),
            json!({"query": "x", "since": "far too long"}),
            json!({"query": "x", "mode": "medium"}),
            json!({"query": "x", "limit": -1}),
            json!({"query": "x", "other": 1}),
            json!({"limit": 3}),
            json!({"query": 5}),
        ];
        for case in &cases {
            assert_eq!(valid(&full, case), valid(&wire, case), "{case}");
        }
        // `null` is still accepted where the full schema takes it, only not offered.
        assert!(valid(&full, &json!({"query": "x", "limit": null})));
    }

    #[test]
    fn wire_outputs_accept_every_answer_and_keep_the_top_level_exact() {
        let full = output_schema_of::<Answer>();
        let wire = wire_output_schema(&full);
        let text = wire.to_string();
        for noise in [
            "description",
            "format",
            "$schema",
            "title",
            "$defs",
            "oneOf",
        ] {
            assert!(!text.contains(noise), "{noise} in {text}");
        }
        let props = &wire["properties"];
        assert_eq!(props["kind"]["enum"], json!(["event", "fact"]));
        assert_eq!(props["count"]["type"], "integer");
        assert_eq!(props["degraded"]["type"], "boolean");
        assert_eq!(wire["required"], full["required"]);
        // Records nested in the answer: their type and required names only.
        assert_eq!(
            props["hits"]["items"],
            json!({"type": "object", "required": ["id", "at", "note"]})
        );
        assert_eq!(props["first"]["type"], json!(["object", "null"]));
        assert!(props["first"].get("properties").is_none());
        let record = json!({"id": "a", "at": "2026-01-01T00:00:00Z", "note": null});
        let answers = [
            json!({"hits": [], "first": null, "kind": "fact", "shapes": [], "count": 0}),
            json!({
                "hits": [record, {"id": "b", "at": "2026-01-01T00:00:00Z", "note": "n", "extra": 1}],
                "first": record,
                "kind": "event",
                "shapes": [{"type": "dot", "x": 1}, {"type": "line", "x": 1, "y": 2}],
                "degraded": true,
                "count": 2
            }),
        ];
        for answer in &answers {
            assert!(valid(&full, answer), "{answer}");
            assert!(valid(&wire, answer), "{answer} against {wire}");
        }
        // Still a check: missing fields, wrong top-level types, unknown enum values.
        for bad in [
            json!({"hits": [], "first": null, "kind": "fact", "shapes": []}),
            json!({"hits": [{}], "first": null, "kind": "fact", "shapes": [], "count": 0}),
            json!({"hits": [], "first": null, "kind": "other", "shapes": [], "count": 0}),
            json!({"hits": [], "first": null, "kind": "fact", "shapes": [], "count": "1"}),
        ] {
            assert!(!valid(&wire, &bad), "{bad}");
        }
    }

    #[test]
    fn nothing_is_loosened_or_narrowed_under_not() {
        let out = json!({
            "type": "object",
            "properties": {"at": {"type": "string", "not": {"format": "date", "description": "d"}}}
        });
        let wire = wire_output_schema(&out);
        assert_eq!(wire["properties"]["at"]["not"], json!({"format": "date"}));
        let input = json!({
            "type": "object",
            "not": {"properties": {"x": {"type": ["integer", "null"]}}}
        });
        let wire = wire_input_schema(&input);
        assert_eq!(
            wire["not"]["properties"]["x"]["type"],
            json!(["integer", "null"])
        );
    }

    #[test]
    fn every_operation_has_compiling_wire_schemas_without_dangling_refs() {
        for entry in super::super::registry().entries() {
            let name = entry.name;
            let full_in = (entry.input_schema)();
            let full_out = (entry.output_schema)();
            for (wire, full) in [
                (wire_input_schema(&full_in), &full_in),
                (wire_output_schema(&full_out), &full_out),
            ] {
                let _ = Checker::new(&wire);
                assert_eq!(wire["type"], "object", "{name}");
                assert!(wire.to_string().len() <= full.to_string().len(), "{name}");
                let mut refs = Vec::new();
                collect_refs(&wire, &mut refs);
                for r in refs {
                    assert!(wire["$defs"].get(&r).is_some(), "{name}: dangling $ref {r}");
                }
            }
            assert_eq!(
                wire_input_schema(&full_in)["required"],
                full_in["required"],
                "{name}: the required arguments are the contract"
            );
        }
    }
}
