//! Record types shared by the store, the search index and the operations.
//!
//! These are plain data: no sqlite, tantivy or MCP types appear here, so the
//! store can change backend without the operations noticing.

use chrono::{DateTime, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub type Micros = i64;

pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

pub fn micros_to_datetime(us: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// New time-ordered id (UUIDv7) as a string.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// One episodic memory: something that happened, at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Time-ordered unique id (UUIDv7).
    pub id: String,
    /// What happened, in the agent's words.
    pub content: String,
    /// Labels for filtering, lower-cased.
    pub tags: Vec<String>,
    /// 0.0 (trivial) to 1.0 (critical).
    pub importance: f64,
    /// When the event happened (RFC 3339, UTC).
    pub occurred_at: DateTime<Utc>,
    /// When engram stored it.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Free-form JSON object supplied by the agent.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The MCP session that first stored it.
    pub session_id: String,
}

/// One semantic memory: a fact the agent knows, with how sure it is and how it
/// has been used. Facts are versioned by supersession: a newer fact replaces an
/// older one, which keeps its text, gets a `valid_to`, and points at its successor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Fact {
    /// Time-ordered unique id (UUIDv7).
    pub id: String,
    /// The fact, as a self-contained statement.
    pub content: String,
    /// Labels for filtering, lower-cased.
    pub tags: Vec<String>,
    /// How sure the agent is, 0.0 to 1.0. Rises when the fact is reinforced.
    pub confidence: f64,
    /// Where the fact came from (a URL, a file, "user", ...), if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Since when the fact holds.
    pub valid_from: DateTime<Utc>,
    /// Until when it held; set when a newer fact superseded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How often the fact was opened, found or reinforced (updated within a few
    /// seconds of use; advisory).
    pub access_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_accessed_at: Option<DateTime<Utc>>,
    /// The older fact this one replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The newer fact that replaced this one (then this one is history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Free-form JSON object supplied by the agent.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The MCP session that first stored it.
    pub session_id: String,
}

/// A knowledge-graph entity in the reference memory server's shape: a unique
/// name, a type, and observations (atomic facts about it), in the order added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Entity {
    /// Unique within the namespace; how relations and tools refer to it.
    pub name: String,
    /// What kind of thing it is ("person", "service", "project", ...).
    #[serde(rename = "entityType")]
    pub entity_type: String,
    /// What is known about it, one statement each. Absent when a call asked for
    /// entities without observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observations: Option<Vec<String>>,
}

/// A directed, typed edge between two entities, by name, in active voice
/// ("alice" --works_at--> "acme").
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Relation {
    pub from: String,
    pub to: String,
    #[serde(rename = "relationType")]
    pub relation_type: String,
}

/// A procedure: how to do something, step by step, and how well it has worked.
/// Updating it writes a new version; older versions stay readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Procedure {
    /// Time-ordered unique id (UUIDv7).
    pub id: String,
    #[serde(flatten)]
    pub current: ProcedureVersion,
    /// When its first version was stored.
    pub created_at: DateTime<Utc>,
    /// How its runs went, over all versions.
    pub track_record: TrackRecord,
}

/// One version of a procedure, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProcedureVersion {
    /// 1 for the first version; each update adds one.
    pub version: u32,
    /// Unique within the namespace, e.g. "deploy-web".
    pub name: String,
    /// What it achieves and when to use it.
    pub goal: String,
    /// The steps, in order.
    pub steps: Vec<String>,
    /// What must hold before starting.
    pub preconditions: Vec<String>,
    /// Labels for filtering, lower-cased.
    pub tags: Vec<String>,
    /// Free-form JSON object supplied by the agent.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// When this version was written.
    pub updated_at: DateTime<Utc>,
    /// The MCP session that wrote this version.
    pub session_id: String,
}

/// A procedure's runs so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrackRecord {
    pub runs: u64,
    pub successes: u64,
    pub partials: u64,
    pub failures: u64,
    /// (successes + partials / 2) / runs; absent before the first run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<DateTime<Utc>>,
}

impl TrackRecord {
    /// (successes + partials / 2) / runs; `None` before the first run.
    pub fn rate(successes: u64, partials: u64, runs: u64) -> Option<f64> {
        (runs > 0).then(|| (successes as f64 + partials as f64 / 2.0) / runs as f64)
    }

    /// Counts one more run with this outcome, at `at`.
    pub fn count(&mut self, outcome: Outcome, at: DateTime<Utc>) {
        self.runs += 1;
        match outcome {
            Outcome::Success => self.successes += 1,
            Outcome::Partial => self.partials += 1,
            Outcome::Failure => self.failures += 1,
        }
        self.success_rate = Self::rate(self.successes, self.partials, self.runs);
        self.last_run_at = Some(at);
    }
}

/// How one run of a procedure went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Partial,
    Failure,
}

/// One recorded run of a procedure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Execution {
    pub id: String,
    pub procedure_id: String,
    /// The version that was followed.
    pub version: u32,
    pub outcome: Outcome,
    /// How long it took, in milliseconds, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// What happened: why it failed, what was learned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub at: DateTime<Utc>,
    /// The MCP session that ran it.
    pub session_id: String,
}

/// A task or goal the agent must see to later. Sub-tasks name their parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    /// Time-ordered unique id (UUIDv7).
    pub id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub status: TaskStatus,
    pub priority: Priority,
    /// When it is due (UTC), if it has a deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    /// Labels for filtering, lower-cased.
    pub tags: Vec<String>,
    /// The task or goal this one is part of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Free-form JSON object supplied by the agent.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it was completed or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// The MCP session that created it.
    pub session_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Open,
    Done,
    Cancelled,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

/// A reminder: a message for the agent, fired once by the first write that
/// matches its condition, or by its time passing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Trigger {
    pub id: String,
    /// What to remind the agent of.
    pub message: String,
    /// What fires it: exactly one of `query`, `tag`, `at`.
    pub when: TriggerCondition,
    /// The task it reminds of, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub status: TriggerStatus,
    pub created_at: DateTime<Utc>,
    /// When it fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    /// The record whose write fired it (absent for a time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_by: Option<RecordRef>,
    /// The MCP session that set it.
    pub session_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerCondition {
    /// A stored record matching these words (as a search would).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A stored record carrying this tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// This time passing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// The kinds of record whose writes are watched (query and tag).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RecordKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriggerStatus {
    /// Waiting for its condition.
    Armed,
    Fired,
}

/// A record named by kind and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordRef {
    pub kind: RecordKind,
    pub id: String,
}

/// One audited write: who changed which records, when, with what operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    /// Increases with every audited write.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The operation (tool) that wrote, or the command ("engram import").
    pub operation: String,
    /// The MCP session that called it (empty for the command line).
    pub session_id: String,
    /// The label of the access token the call came with (HTTP with tokens);
    /// never the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The records it stored, changed or deleted.
    pub records: Vec<AuditedRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditedRecord {
    pub kind: RecordKind,
    pub id: String,
    /// "upsert" (stored or changed) or "delete".
    pub change: String,
}

/// Which kind of record a change or a search document is about. Every write
/// logs a change of each record it touches; derived views (the search index,
/// the query cache, graph snapshots, resource subscriptions) learn of writes
/// from those changes and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Event,
    Fact,
    Entity,
    /// A graph edge. Not searched on its own: relations are read with their
    /// entities, so its changes only invalidate.
    Relation,
    /// A procedure: how to do something, with its versions and track record.
    Procedure,
    /// A task or goal the agent must see to later.
    Task,
    /// A reminder waiting for a write or a time. Not searched.
    Trigger,
}

impl RecordKind {
    pub const ALL: [RecordKind; 7] = [
        RecordKind::Event,
        RecordKind::Fact,
        RecordKind::Entity,
        RecordKind::Relation,
        RecordKind::Procedure,
        RecordKind::Task,
        RecordKind::Trigger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Event => "event",
            RecordKind::Fact => "fact",
            RecordKind::Entity => "entity",
            RecordKind::Relation => "relation",
            RecordKind::Procedure => "procedure",
            RecordKind::Task => "task",
            RecordKind::Trigger => "trigger",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The memory layer that owns this kind of record.
    pub fn layer(self) -> &'static str {
        match self {
            RecordKind::Event => "episodic",
            RecordKind::Fact => "semantic",
            RecordKind::Entity | RecordKind::Relation => "graph",
            RecordKind::Procedure => "procedural",
            RecordKind::Task | RecordKind::Trigger => "prospective",
        }
    }

    /// Whether reminders can watch writes of this kind: the records an agent
    /// stores as memories (the graph tools keep the reference server's shapes).
    pub fn watchable(self) -> bool {
        matches!(
            self,
            RecordKind::Event | RecordKind::Fact | RecordKind::Procedure
        )
    }

    /// Whether records of this kind have search documents.
    pub fn searchable(self) -> bool {
        !matches!(self, RecordKind::Relation | RecordKind::Trigger)
    }

    /// The name of this kind's records in one namespace: what a change of
    /// such a record makes stale (query cache tags, graph snapshots).
    pub fn scope(self, namespace: &str) -> String {
        format!("{namespace}/{}", self.as_str())
    }
}

/// What the search index holds of one record. Built by the store when it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchDoc {
    pub kind: RecordKind,
    pub id: String,
    pub namespace: String,
    pub text: String,
    pub tags: Vec<String>,
    /// The record's position in time (events: occurred_at).
    pub time: Micros,
    /// Importance or confidence, 0..1.
    pub weight: f64,
    /// Replaced by a newer version: searched only when asked for.
    pub superseded: bool,
}

/// One entry of the change log, as handed to derived views after commit.
#[derive(Debug, Clone)]
pub struct Change {
    /// Monotonic change number (the `changes` table's primary key).
    pub seq: i64,
    pub kind: RecordKind,
    pub id: String,
    pub namespace: String,
    /// The record as it now is; `None` when it was deleted.
    pub doc: Option<SearchDoc>,
}
