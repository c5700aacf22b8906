//! Consolidation: a namespace's memory tidied the way sleep tidies a brain,
//! without an LLM. Four steps, planned from one read of the namespace and then
//! applied in one write (a dry run only plans, with the same code, so it shows
//! exactly what a real run as of the same time would do):
//!
//! 1. **Promote**: events whose text is the same (case, spacing and end
//!    punctuation aside) at least `min_repeats` times become one semantic
//!    fact, with the events' ids in its metadata (`consolidated_from`). A
//!    current fact with that text already there is left as it is.
//! 2. **Merge**: current facts whose word sets overlap by at least
//!    `similarity` (Jaccard) are merged into the newest of them: it takes the
//!    union of their tags and the highest confidence, lists them in its
//!    metadata (`merged_from`), and each older one is superseded by it (kept,
//!    readable with semantic_history).
//! 3. **Decay**: each event's importance halves every `half_life_days` since
//!    it was stored or last decayed (`importance × 0.5^(days / half_life)`);
//!    changes under 0.001 are not written.
//! 4. **Archive**: events older than `archive_after_days` whose importance
//!    (after decay) is below `archive_below` move to the archive: out of the
//!    events and searches, still counted by meta_stats and carried by exports.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::episodic::{self, EVENTS};
use super::semantic::NewFact;
use super::semantic::{self, FACTS};
use super::sql::{Conn, args};
use super::table::{Query, to_json};
use super::writer::WriteTxn;
use super::{Store, StoreError};
use crate::model::{Event, Fact, Micros, micros_to_datetime};

const DAY_MICROS: f64 = 86_400_000_000.0;
/// Importance changes smaller than this are not written.
const DECAY_EPSILON: f64 = 0.001;
/// A fact is compared with at most this many others sharing its rarest word.
const MAX_CANDIDATES: usize = 200;
/// Words shorter than this do not pick merge candidates.
const MIN_KEY_WORD: usize = 3;

/// What a consolidation may do; see the module docs.
#[derive(Debug, Clone)]
pub struct Policy {
    pub min_repeats: usize,
    pub similarity: f64,
    /// 0 turns decay off.
    pub half_life_days: f64,
    pub archive_below: f64,
    pub archive_after_days: f64,
    /// The time the plan is made for.
    pub as_of: Micros,
}

/// Events promoted to one fact.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    pub content: String,
    pub event_ids: Vec<String>,
    pub tags: Vec<String>,
    pub confidence: f64,
    /// The fact made (a real run only).
    pub fact_id: Option<String>,
}

/// Facts merged into the newest of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    pub into: String,
    pub merged: Vec<String>,
    pub content: String,
}

/// One event's importance before and after decay.
#[derive(Debug, Clone, PartialEq)]
pub struct Decay {
    pub id: String,
    pub from: f64,
    pub to: f64,
}

/// Everything a consolidation does (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub promotions: Vec<Promotion>,
    pub merges: Vec<Merge>,
    pub decays: Vec<Decay>,
    /// Events archived, oldest first.
    pub archived: Vec<String>,
}

/// Text as promotion compares it: lower case, single spaces, no end punctuation.
fn normal(text: &str) -> String {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    words
        .join(" ")
        .trim_end_matches(['.', '!', '?', ';', ','])
        .to_string()
}

fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    let shared = a.intersection(b).count();
    let all = a.len() + b.len() - shared;
    if all == 0 {
        1.0
    } else {
        shared as f64 / all as f64
    }
}

/// An event's importance at `as_of`, and when its last decay counted from.
fn decayed(e: &Event, decayed_at: Option<Micros>, policy: &Policy) -> f64 {
    if policy.half_life_days <= 0.0 {
        return e.importance;
    }
    let since = decayed_at.unwrap_or(e.created_at.timestamp_micros());
    let days = ((policy.as_of - since) as f64 / DAY_MICROS).max(0.0);
    let factor = 0.5f64.powf(days / policy.half_life_days);
    ((e.importance * factor) * 10_000.0).round() / 10_000.0
}

fn promotions(
    events: &[(Event, Option<Micros>)],
    facts: &[Fact],
    policy: &Policy,
) -> Vec<Promotion> {
    let known: HashSet<String> = facts
        .iter()
        .filter(|f| f.superseded_by.is_none())
        .map(|f| normal(&f.content))
        .collect();
    let mut groups: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for (e, _) in events {
        groups.entry(normal(&e.content)).or_default().push(e);
    }
    groups
        .into_iter()
        .filter(|(text, group)| group.len() >= policy.min_repeats && !known.contains(text))
        .map(|(_, group)| {
            let mut tags: Vec<String> = group.iter().flat_map(|e| e.tags.clone()).collect();
            tags.sort();
            tags.dedup();
            let latest = group
                .iter()
                .max_by_key(|e| (e.occurred_at, e.id.clone()))
                .expect("a group");
            Promotion {
                content: latest.content.clone(),
                event_ids: group.iter().map(|e| e.id.clone()).collect(),
                tags,
                confidence: (0.5 + 0.1 * group.len() as f64).min(0.95),
                fact_id: None,
            }
        })
        .collect()
}

fn merges(facts: &[Fact], policy: &Policy) -> Vec<Merge> {
    let current: Vec<&Fact> = facts.iter().filter(|f| f.superseded_by.is_none()).collect();
    let sets: Vec<HashSet<String>> = current.iter().map(|f| words(&f.content)).collect();
    let mut postings: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, set) in sets.iter().enumerate() {
        for w in set.iter().filter(|w| w.len() >= MIN_KEY_WORD) {
            postings.entry(w.as_str()).or_default().push(i);
        }
    }
    // Union-find over pairs similar enough, candidates from each fact's rarest word.
    let mut parent: Vec<usize> = (0..current.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, set) in sets.iter().enumerate() {
        let rarest = set
            .iter()
            .filter_map(|w| postings.get(w.as_str()))
            .min_by_key(|p| p.len());
        for &j in rarest.into_iter().flatten().take(MAX_CANDIDATES) {
            if j > i && jaccard(set, &sets[j]) >= policy.similarity {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut clusters: BTreeMap<usize, Vec<&Fact>> = BTreeMap::new();
    for (i, fact) in current.iter().enumerate() {
        let r = root(&mut parent, i);
        clusters.entry(r).or_default().push(fact);
    }
    let mut out: Vec<Merge> = clusters
        .into_values()
        .filter(|c| c.len() > 1)
        .map(|mut c| {
            c.sort_by_key(|f| (f.created_at, f.id.clone()));
            let survivor = c.pop().expect("two or more");
            Merge {
                into: survivor.id.clone(),
                merged: c.iter().map(|f| f.id.clone()).collect(),
                content: survivor.content.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.into.cmp(&b.into));
    out
}

/// Every event of the namespace with when it last decayed, oldest first.
fn events_of(conn: Conn<'_>, ns: &str) -> Result<Vec<(Event, Option<Micros>)>, StoreError> {
    let mut q = EVENTS.select_of(&format!("{}, e.decayed_at", EVENTS.columns), ns);
    q.push(" ORDER BY e.occurred_at, e.id", []);
    let width = EVENTS.columns.split(',').count();
    q.rows(conn, |r| Ok(((EVENTS.decode)(r)?, r.get(width)?)))
}

fn facts_of(conn: Conn<'_>, ns: &str) -> Result<Vec<Fact>, StoreError> {
    let mut q = FACTS.select(ns);
    q.push(" ORDER BY f.created_at, f.id", []);
    q.rows(conn, FACTS.decode)
}

/// The plan for the namespace as it is on `conn`.
fn plan(conn: Conn<'_>, ns: &str, policy: &Policy) -> Result<Plan, StoreError> {
    let events = events_of(conn, ns)?;
    let facts = facts_of(conn, ns)?;
    let mut plan = Plan {
        promotions: promotions(&events, &facts, policy),
        merges: merges(&facts, policy),
        ..Plan::default()
    };
    let archive_before = policy.as_of - (policy.archive_after_days * DAY_MICROS) as Micros;
    for (e, decayed_at) in &events {
        let now = decayed(e, *decayed_at, policy);
        if (e.importance - now).abs() >= DECAY_EPSILON {
            plan.decays.push(Decay {
                id: e.id.clone(),
                from: e.importance,
                to: now,
            });
        }
        let old = e.occurred_at.timestamp_micros() < archive_before;
        if old && now < policy.archive_below {
            plan.archived.push(e.id.clone());
        }
    }
    Ok(plan)
}

/// Carries out `plan` in the open write.
fn apply(
    txn: &mut WriteTxn<'_>,
    ns: &str,
    plan: &mut Plan,
    policy: &Policy,
) -> Result<(), StoreError> {
    let at = micros_to_datetime(txn.now);
    for p in &mut plan.promotions {
        let mut metadata = serde_json::Map::new();
        metadata.insert("consolidated_from".into(), Value::from(p.event_ids.clone()));
        let new = NewFact {
            content: p.content.clone(),
            tags: p.tags.clone(),
            confidence: p.confidence,
            source: Some("consolidation".into()),
            valid_from: None,
            metadata,
        };
        let fact = semantic::build(new, "", txn.now);
        semantic::save(txn, ns, &fact)?;
        p.fact_id = Some(fact.id);
    }
    for m in &plan.merges {
        let mut survivor = FACTS.must_get(txn.conn, ns, &m.into)?;
        let mut merged_from = Vec::new();
        for id in &m.merged {
            let mut old = FACTS.must_get(txn.conn, ns, id)?;
            survivor.tags.extend(old.tags.iter().cloned());
            survivor.confidence = survivor.confidence.max(old.confidence);
            old.superseded_by = Some(survivor.id.clone());
            old.valid_to = Some(at.max(old.valid_from));
            old.updated_at = at;
            semantic::save(txn, ns, &old)?;
            merged_from.push(Value::from(id.clone()));
        }
        survivor.tags.sort();
        survivor.tags.dedup();
        if survivor.supersedes.is_none() {
            survivor.supersedes = m.merged.last().cloned();
        }
        survivor
            .metadata
            .insert("merged_from".into(), Value::from(merged_from));
        survivor.updated_at = at;
        semantic::save(txn, ns, &survivor)?;
    }
    for d in &plan.decays {
        let mut e = EVENTS.must_get(txn.conn, ns, &d.id)?;
        e.importance = d.to;
        episodic::save(txn, ns, &e)?;
        txn.conn.execute(
            "UPDATE events SET decayed_at = ?1 WHERE id = ?2",
            &args![policy.as_of, d.id],
        )?;
    }
    for id in &plan.archived {
        txn.conn.execute(
            "INSERT INTO archived_events (id, namespace, body, archived_at)
             SELECT e.id, e.namespace, ?1, ?2
             FROM events e WHERE e.id = ?3
             ON CONFLICT (id) DO UPDATE SET namespace = excluded.namespace,
                 body = excluded.body, archived_at = excluded.archived_at",
            &args![to_json(&EVENTS.must_get(txn.conn, ns, id)?), txn.now, id],
        )?;
        EVENTS.delete(txn, ns, id)?;
    }
    Ok(())
}

impl Store {
    /// Plans a consolidation of the namespace as of `policy.as_of` and, unless
    /// `dry_run`, carries it out in one write. Returns the plan (with the ids
    /// of the facts made, in a real run).
    pub async fn consolidate(
        &self,
        namespace: &str,
        policy: Policy,
        dry_run: bool,
    ) -> Result<Plan, StoreError> {
        if dry_run {
            return self
                .scan_in(namespace, move |conn, ns| plan(conn, ns, &policy))
                .await;
        }
        self.write_in(namespace, move |txn, ns| {
            let mut plan = plan(txn.conn, ns, &policy)?;
            apply(txn, ns, &mut plan, &policy)?;
            Ok(plan)
        })
        .await
    }

    /// Events archived by consolidation, in the namespace (or in all).
    pub async fn archived_count(&self, namespace: Option<String>) -> Result<u64, StoreError> {
        let mut q = Query::new("SELECT count(*) FROM archived_events a WHERE 1 = 1", []);
        q.and_some("a.namespace = ?", namespace);
        self.read_count(q).await
    }
}
