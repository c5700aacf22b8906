//! A model test of the query cache: "the cache never serves an answer older than
//! the last acknowledged write" (ARCHITECTURE.md). Through the real in-process
//! pipeline (default config: the cache on), proptest runs sequences of writes to
//! every layer — episodic_remember / _update / _forget, semantic_store / _update
//! / _delete / _supersede, create_entities / add_observations / delete_entities /
//! create_relations / delete_relations — interleaved with cacheable reads of every
//! layer — episodic_count / _list / _get, semantic_get / _list / _search,
//! read_graph / search_nodes / open_nodes, memory_search — and checks every read
//! against a plain in-memory model of what was written (counts, ids, contents,
//! names, observations, relations). Each read is made twice, so the second is
//! served by the cache: an answer cached before a write and served after it
//! disagrees with the model and fails the test.
//!
//! The concurrent variant runs a writer and readers at once (each in a session of
//! its own in the one namespace, sharing the cache and its coalescing). A read
//! that starts after a write was acknowledged must show it: every read that no
//! write overlapped must give exactly the model's answer after the writes
//! acknowledged before it started. (A read that overlaps a write may show part of
//! it: see `run_concurrently`.)
//!
//! The documents are made of a few words that neither stem together nor contain
//! one another, so which records a search finds follows from the words alone.
//! `ENGRAM_FUZZ_CASES` raises the number of cases (as for tests/fuzz.rs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::mem::Mem;
use common::strings;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};

const WORDS: &[&str] = &["kiwi", "mango", "papaya", "lemon", "cherry", "plum"];
const NAMES: &[&str] = &["ann", "bob", "cy", "dee"];
const TYPES: &[&str] = &["person", "team"];
const RELATIONS: &[&str] = &["knows", "leads"];
/// Every page holds everything: the model compares whole answers.
const ALL: u32 = 500;

fn cases(default: u32) -> u32 {
    std::env::var("ENGRAM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- steps

/// A record picked among every id its layer has handed out (deleted ones too),
/// by position modulo their number.
type Pick = usize;

#[derive(Debug, Clone)]
enum Write {
    Remember(String),
    UpdateEvent(Pick, String),
    Forget(Pick),
    Store(String),
    UpdateFact(Pick, String),
    DeleteFact(Pick),
    Supersede(Pick, String),
    CreateEntity(&'static str, &'static str, Vec<&'static str>),
    AddObservation(&'static str, &'static str),
    DeleteEntity(&'static str),
    Relate(&'static str, &'static str, &'static str),
    Unrelate(&'static str, &'static str, &'static str),
}

#[derive(Debug, Clone)]
enum Reading {
    EpisodicCount,
    EpisodicList,
    EpisodicGet(Pick),
    SemanticGet(Pick),
    SemanticList,
    SemanticSearch(&'static str),
    ReadGraph,
    SearchNodes(&'static str),
    OpenNodes(Vec<&'static str>),
    MemorySearch(&'static str),
}

#[derive(Debug, Clone)]
enum Step {
    Write(Write),
    Reading(Reading),
}

fn word() -> impl Strategy<Value = &'static str> {
    prop::sample::select(WORDS)
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 1..4).prop_map(|w| w.join(" "))
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(NAMES)
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        text().prop_map(Write::Remember),
        (any::<Pick>(), text()).prop_map(|(p, t)| Write::UpdateEvent(p, t)),
        any::<Pick>().prop_map(Write::Forget),
        text().prop_map(Write::Store),
        (any::<Pick>(), text()).prop_map(|(p, t)| Write::UpdateFact(p, t)),
        any::<Pick>().prop_map(Write::DeleteFact),
        (any::<Pick>(), text()).prop_map(|(p, t)| Write::Supersede(p, t)),
        (
            name(),
            prop::sample::select(TYPES),
            prop::collection::vec(word(), 0..3)
        )
            .prop_map(|(n, t, o)| Write::CreateEntity(n, t, o)),
        (name(), word()).prop_map(|(n, w)| Write::AddObservation(n, w)),
        name().prop_map(Write::DeleteEntity),
        (name(), name(), prop::sample::select(RELATIONS))
            .prop_map(|(a, b, r)| Write::Relate(a, b, r)),
        (name(), name(), prop::sample::select(RELATIONS))
            .prop_map(|(a, b, r)| Write::Unrelate(a, b, r)),
    ]
}

fn read() -> impl Strategy<Value = Reading> {
    prop_oneof![
        Just(Reading::EpisodicCount),
        Just(Reading::EpisodicList),
        any::<Pick>().prop_map(Reading::EpisodicGet),
        any::<Pick>().prop_map(Reading::SemanticGet),
        Just(Reading::SemanticList),
        word().prop_map(Reading::SemanticSearch),
        Just(Reading::ReadGraph),
        word().prop_map(Reading::SearchNodes),
        prop::collection::vec(name(), 1..3).prop_map(Reading::OpenNodes),
        word().prop_map(Reading::MemorySearch),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        write().prop_map(Step::Write),
        read().prop_map(Step::Reading)
    ]
}

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone)]
struct Fact {
    content: String,
    supersedes: Option<String>,
    superseded_by: Option<String>,
}

/// What was written, as the tools promise it.
#[derive(Debug, Clone, Default)]
struct Model {
    /// id → content
    events: BTreeMap<String, String>,
    facts: BTreeMap<String, Fact>,
    /// name → (type, observations in the order added)
    entities: BTreeMap<String, (String, Vec<String>)>,
    /// (from, to, type)
    relations: BTreeSet<(String, String, String)>,
    /// Every id handed out, deleted ones too, for steps to pick from.
    event_ids: Vec<String>,
    fact_ids: Vec<String>,
}

fn pick(ids: &[String], p: Pick) -> Option<String> {
    (!ids.is_empty()).then(|| ids[p % ids.len()].clone())
}

fn has_word(text: &str, word: &str) -> bool {
    text.split(' ').any(|w| w == word)
}

impl Model {
    fn current_facts(&self) -> impl Iterator<Item = (&String, &Fact)> {
        self.facts.iter().filter(|(_, f)| f.superseded_by.is_none())
    }

    fn entity_has_word(&self, name: &str, word: &str) -> bool {
        self.entities[name].1.iter().any(|o| has_word(o, word))
    }
}

/// A write as the tool is called: its operation and arguments, and whether the
/// model says it succeeds. `None`: nothing to call (no record to pick yet).
fn call_of(w: &Write, m: &Model) -> Option<(&'static str, Value, bool)> {
    let rel = |a: &str, b: &str, t: &str| json!({"from": a, "to": b, "relationType": t});
    let is_event = |id: &String| m.events.contains_key(id);
    let is_fact = |id: &String| m.facts.contains_key(id);
    // New content for a picked record: succeeds while the record exists.
    let update = |op, ids: &[String], exists: &dyn Fn(&String) -> bool, p: &Pick, t: &str| {
        let id = pick(ids, *p)?;
        let ok = exists(&id);
        Some((op, json!({"id": id, "content": t}), ok))
    };
    // Deleting a picked record: succeeds whether it still exists or not.
    let delete = |op, ids: &[String], p: &Pick| Some((op, json!({"ids": [pick(ids, *p)?]}), true));
    Some(match w {
        Write::Remember(t) => ("episodic_remember", json!({"content": t}), true),
        Write::UpdateEvent(p, t) => update("episodic_update", &m.event_ids, &is_event, p, t)?,
        Write::Forget(p) => delete("episodic_forget", &m.event_ids, p)?,
        Write::Store(t) => ("semantic_store", json!({"content": t}), true),
        Write::UpdateFact(p, t) => update("semantic_update", &m.fact_ids, &is_fact, p, t)?,
        Write::DeleteFact(p) => delete("semantic_delete", &m.fact_ids, p)?,
        Write::Supersede(p, t) => {
            let id = pick(&m.fact_ids, *p)?;
            let ok = m.facts.get(&id).is_some_and(|f| f.superseded_by.is_none());
            let args = json!({"id": id, "new": {"content": t}});
            ("semantic_supersede", args, ok)
        }
        Write::CreateEntity(n, t, o) => {
            let e = json!({"name": n, "entityType": t, "observations": o});
            ("create_entities", json!({"entities": [e]}), true)
        }
        Write::AddObservation(n, o) => {
            let args = json!({"observations": [{"entityName": n, "contents": [o]}]});
            ("add_observations", args, m.entities.contains_key(*n))
        }
        Write::DeleteEntity(n) => ("delete_entities", json!({"entityNames": [n]}), true),
        Write::Relate(a, b, t) => {
            let ok = m.entities.contains_key(*a) && m.entities.contains_key(*b);
            ("create_relations", json!({"relations": [rel(a, b, t)]}), ok)
        }
        Write::Unrelate(a, b, t) => (
            "delete_relations",
            json!({"relations": [rel(a, b, t)]}),
            true,
        ),
    })
}

/// The model after a write the tool acknowledged with `answer`.
fn apply(m: &mut Model, w: &Write, args: &Value, answer: &Value) {
    let id = |v: &Value| v.as_str().unwrap().to_string();
    match w {
        Write::Remember(t) => {
            let new = id(&answer["event"]["id"]);
            m.events.insert(new.clone(), t.clone());
            m.event_ids.push(new);
        }
        Write::UpdateEvent(_, t) => {
            m.events.insert(id(&args["id"]), t.clone());
        }
        Write::Forget(_) => {
            m.events.remove(&id(&args["ids"][0]));
        }
        Write::Store(t) => {
            let new = id(&answer["fact"]["id"]);
            let fact = Fact {
                content: t.clone(),
                supersedes: None,
                superseded_by: None,
            };
            m.facts.insert(new.clone(), fact);
            m.fact_ids.push(new);
        }
        Write::UpdateFact(_, t) => {
            m.facts.get_mut(&id(&args["id"])).unwrap().content = t.clone();
        }
        Write::DeleteFact(_) => {
            // The fact it replaced becomes current again; its successor now
            // replaces what it replaced.
            let gone = id(&args["ids"][0]);
            if let Some(f) = m.facts.remove(&gone) {
                if let Some(prev) = &f.supersedes
                    && let Some(older) = m.facts.get_mut(prev)
                    && older.superseded_by.as_deref() == Some(gone.as_str())
                {
                    older.superseded_by = None;
                }
                if let Some(next) = &f.superseded_by
                    && let Some(newer) = m.facts.get_mut(next)
                {
                    newer.supersedes = f.supersedes.clone();
                }
            }
        }
        Write::Supersede(_, t) => {
            let (old, new) = (id(&args["id"]), id(&answer["new"]["id"]));
            m.facts.get_mut(&old).unwrap().superseded_by = Some(new.clone());
            let fact = Fact {
                content: t.clone(),
                supersedes: Some(old),
                superseded_by: None,
            };
            m.facts.insert(new.clone(), fact);
            m.fact_ids.push(new);
        }
        Write::CreateEntity(n, t, o) => {
            if !m.entities.contains_key(*n) {
                let mut unique: Vec<String> = Vec::new();
                for w in o {
                    if !unique.iter().any(|u| u == w) {
                        unique.push(w.to_string());
                    }
                }
                m.entities.insert(n.to_string(), (t.to_string(), unique));
            }
        }
        Write::AddObservation(n, o) => {
            let observations = &mut m.entities.get_mut(*n).unwrap().1;
            if !observations.iter().any(|x| x == o) {
                observations.push(o.to_string());
            }
        }
        Write::DeleteEntity(n) => {
            m.entities.remove(*n);
            m.relations.retain(|(a, b, _)| a != n && b != n);
        }
        Write::Relate(a, b, t) => {
            m.relations
                .insert((a.to_string(), b.to_string(), t.to_string()));
        }
        Write::Unrelate(a, b, t) => {
            m.relations
                .remove(&(a.to_string(), b.to_string(), t.to_string()));
        }
    }
}

/// A read as the tool is called. `None`: nothing to pick yet.
fn read_call(r: &Reading, m: &Model) -> Option<(&'static str, Value)> {
    Some(match r {
        Reading::EpisodicCount => ("episodic_count", json!({})),
        Reading::EpisodicList => ("episodic_list", json!({"limit": ALL})),
        Reading::EpisodicGet(p) => ("episodic_get", json!({"id": pick(&m.event_ids, *p)?})),
        Reading::SemanticGet(p) => ("semantic_get", json!({"id": pick(&m.fact_ids, *p)?})),
        Reading::SemanticList => ("semantic_list", json!({"limit": ALL})),
        Reading::SemanticSearch(w) => ("semantic_search", json!({"query": w, "limit": ALL})),
        Reading::ReadGraph => ("read_graph", json!({"limit": ALL})),
        Reading::SearchNodes(w) => ("search_nodes", json!({"query": w, "limit": ALL})),
        Reading::OpenNodes(names) => ("open_nodes", json!({"names": names})),
        Reading::MemorySearch(w) => ("memory_search", json!({"query": w, "limit": ALL})),
    })
}

/// What a read's answer says, reduced to what the model knows: both the answer
/// and the model's prediction go through this, and must come out equal.
#[derive(Debug, PartialEq)]
enum Seen {
    Count(u64),
    /// id → content (superseded_by for facts, as `(content, superseded)`).
    Records(BTreeMap<String, String>),
    Ids(BTreeSet<String>),
    /// name → (type, sorted observations), and relations.
    Graph(
        BTreeMap<String, (String, Vec<String>)>,
        BTreeSet<(String, String, String)>,
    ),
    /// The record asked for does not exist.
    Missing,
    /// Any other error: never expected.
    Failed(String),
}

fn string(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn records(list: &Value, content: impl Fn(&Value) -> String) -> Seen {
    let list = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    Seen::Records(
        list.iter()
            .map(|r| (string(&r["id"]), content(r)))
            .collect(),
    )
}

fn fact_state(f: &Value) -> String {
    format!(
        "{} superseded={}",
        string(&f["content"]),
        !f["superseded_by"].is_null()
    )
}

fn graph(answer: &Value) -> Seen {
    let entities = answer["entities"].as_array().unwrap().iter().map(|e| {
        let mut obs: Vec<String> = strings(&e["observations"], "")
            .into_iter()
            .map(String::from)
            .collect();
        obs.sort();
        (string(&e["name"]), (string(&e["entityType"]), obs))
    });
    let relations = answer["relations"].as_array().unwrap().iter().map(|r| {
        (
            string(&r["from"]),
            string(&r["to"]),
            string(&r["relationType"]),
        )
    });
    Seen::Graph(entities.collect(), relations.collect())
}

/// What the tool answered, as the model sees it.
fn seen(r: &Reading, answer: Result<Value, String>) -> Seen {
    let a = match answer {
        Ok(a) => a,
        Err(e) if e.starts_with("no event") || e.starts_with("no fact") => return Seen::Missing,
        Err(e) => return Seen::Failed(e),
    };
    match r {
        Reading::EpisodicCount => Seen::Count(a["count"].as_u64().unwrap()),
        Reading::EpisodicList => records(&a["events"], |e| string(&e["content"])),
        Reading::EpisodicGet(_) => records(&json!([a["event"]]), |e| string(&e["content"])),
        Reading::SemanticGet(_) => records(&json!([a["fact"]]), fact_state),
        Reading::SemanticList => records(&a["facts"], fact_state),
        Reading::SemanticSearch(_) => ids(&a["hits"], "/fact/id"),
        Reading::ReadGraph | Reading::OpenNodes(_) => graph(&a),
        Reading::SearchNodes(_) => ids(&a["entities"], "/name"),
        Reading::MemorySearch(_) => {
            let layers = strings(&a["hits"], "/layer");
            let ids = strings(&a["hits"], "/id");
            Seen::Ids(
                layers
                    .iter()
                    .zip(ids)
                    .map(|(l, id)| format!("{l}:{id}"))
                    .collect(),
            )
        }
    }
}

fn ids(list: &Value, pointer: &str) -> Seen {
    Seen::Ids(
        strings(list, pointer)
            .into_iter()
            .map(String::from)
            .collect(),
    )
}

/// What the model says the read answers (`args`: as called).
fn expected(r: &Reading, args: &Value, m: &Model) -> Seen {
    let fact = |f: &Fact| format!("{} superseded={}", f.content, f.superseded_by.is_some());
    let entity = |(n, (t, o)): (&String, &(String, Vec<String>))| {
        let mut o = o.clone();
        o.sort();
        (n.clone(), (t.clone(), o))
    };
    match r {
        Reading::EpisodicCount => Seen::Count(m.events.len() as u64),
        Reading::EpisodicList => Seen::Records(m.events.clone()),
        Reading::EpisodicGet(_) => match m.events.get_key_value(&string(&args["id"])) {
            Some((id, c)) => Seen::Records([(id.clone(), c.clone())].into()),
            None => Seen::Missing,
        },
        Reading::SemanticGet(_) => match m.facts.get_key_value(&string(&args["id"])) {
            Some((id, f)) => Seen::Records([(id.clone(), fact(f))].into()),
            None => Seen::Missing,
        },
        Reading::SemanticList => Seen::Records(
            m.current_facts()
                .map(|(id, f)| (id.clone(), fact(f)))
                .collect(),
        ),
        Reading::SemanticSearch(w) => Seen::Ids(
            m.current_facts()
                .filter(|(_, f)| has_word(&f.content, w))
                .map(|(id, _)| id.clone())
                .collect(),
        ),
        Reading::ReadGraph => {
            Seen::Graph(m.entities.iter().map(entity).collect(), m.relations.clone())
        }
        // The named entities that exist, with every relation touching them.
        Reading::OpenNodes(names) => {
            let open: BTreeSet<&str> = names
                .iter()
                .copied()
                .filter(|n| m.entities.contains_key(*n))
                .collect();
            let relations = m
                .relations
                .iter()
                .filter(|(a, b, _)| open.contains(a.as_str()) || open.contains(b.as_str()))
                .cloned()
                .collect();
            let entities = m.entities.iter().filter(|(n, _)| open.contains(n.as_str()));
            Seen::Graph(entities.map(entity).collect(), relations)
        }
        Reading::SearchNodes(w) => Seen::Ids(
            m.entities
                .keys()
                .filter(|n| m.entity_has_word(n, w))
                .cloned()
                .collect(),
        ),
        Reading::MemorySearch(w) => {
            let events = m
                .events
                .iter()
                .filter(|(_, c)| has_word(c, w))
                .map(|(id, _)| format!("episodic:{id}"));
            let facts = m
                .current_facts()
                .filter(|(_, f)| has_word(&f.content, w))
                .map(|(id, _)| format!("semantic:{id}"));
            let entities = m
                .entities
                .keys()
                .filter(|n| m.entity_has_word(n, w))
                .map(|n| format!("graph:{n}"));
            Seen::Ids(events.chain(facts).chain(entities).collect())
        }
    }
}

// ---------------------------------------------------------------- running

/// Makes a write; the model after it. Fails when the tool and the model
/// disagree about whether it succeeds.
async fn write_step(h: &Mem, w: &Write, m: &Model) -> Result<Option<Model>, TestCaseError> {
    let Some((op, args, should_succeed)) = call_of(w, m) else {
        return Ok(None);
    };
    let answer = h.call(op, args.clone()).await;
    prop_assert_eq!(
        answer.is_ok(),
        should_succeed,
        "{} {}: {:?} (the model expected {})",
        op,
        args,
        answer,
        if should_succeed {
            "success"
        } else {
            "an error"
        }
    );
    let mut next = m.clone();
    if let Ok(answer) = answer {
        apply(&mut next, w, &args, &answer);
    }
    Ok(Some(next))
}

async fn run_sequence(h: &Mem, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Write(w) => {
                if let Some(next) = write_step(h, w, &model).await? {
                    model = next;
                }
            }
            Step::Reading(r) => {
                let Some((op, args)) = read_call(r, &model) else {
                    continue;
                };
                let want = expected(r, &args, &model);
                // Twice: the second answer comes from the cache.
                for attempt in ["first", "repeated"] {
                    let got = seen(r, h.call(op, args.clone()).await);
                    prop_assert_eq!(
                        &got,
                        &want,
                        "step {}: {} {} ({} call)",
                        i,
                        op,
                        args,
                        attempt
                    );
                }
            }
        }
    }
    Ok(())
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(RunConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        ..RunConfig::default()
    })
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Cache hits across a whole run, to show the reads were served by the cache.
async fn cache_hits(h: &Mem) -> u64 {
    h.ok("meta_cache_stats", json!({})).await["hits"]
        .as_u64()
        .unwrap()
}

#[test]
fn reads_never_see_an_answer_older_than_the_last_acknowledged_write() {
    let rt = runtime(1);
    let mut runner = runner(32);
    let hits = AtomicUsize::new(0);
    runner
        .run(&prop::collection::vec(step(), 1..60), |steps| {
            rt.block_on(async {
                let h = Mem::open("alpha", |_| {}).await;
                let outcome = run_sequence(&h, &steps).await;
                hits.fetch_add(cache_hits(&h).await as usize, Ordering::Relaxed);
                outcome
            })
        })
        .unwrap();
    assert!(
        hits.into_inner() > 0,
        "no read was ever served by the cache"
    );
}

// ---------------------------------------------------------------- concurrently

/// One read made while writes ran.
struct Observation {
    read: Reading,
    args: Value,
    /// Writes acknowledged when the read started.
    started: usize,
    /// No write ran at any moment of the read: it started after write `started`
    /// was acknowledged and ended before the next began.
    alone: bool,
    got: Seen,
}

/// Where the writer is (how many writes it has acknowledged, whether one is
/// under way), and how many reads the readers have finished.
#[derive(Default)]
struct Progress {
    acked: AtomicUsize,
    writing: AtomicBool,
    done: AtomicBool,
    reads: AtomicUsize,
}

/// Reads the readers finish between two writes, at least, so that some run with
/// no write under way.
const READS_BETWEEN_WRITES: usize = 4;

async fn observe(
    h: Mem,
    plan: Vec<Reading>,
    history: Arc<Mutex<Vec<Model>>>,
    p: Arc<Progress>,
) -> Vec<Observation> {
    let mut observations = Vec::new();
    for r in plan.iter().cycle() {
        if p.done.load(Ordering::SeqCst) {
            break;
        }
        let writing = p.writing.load(Ordering::SeqCst);
        let started = p.acked.load(Ordering::SeqCst);
        let model = history.lock().unwrap()[started].clone();
        let Some((op, args)) = read_call(r, &model) else {
            p.reads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            continue;
        };
        let got = seen(r, h.call(op, args.clone()).await);
        p.reads.fetch_add(1, Ordering::SeqCst);
        let alone = !writing
            && p.acked.load(Ordering::SeqCst) == started
            && !p.writing.load(Ordering::SeqCst);
        observations.push(Observation {
            read: r.clone(),
            args,
            started,
            alone,
            got,
        });
    }
    observations
}

/// A writer and readers at once. A read that overlaps a write may show part of
/// it (a read of several queries is not one snapshot: read_graph reads entities,
/// then relations; memory_search searches, then loads the records), so only the
/// reads no write overlapped are held to the model: each must give exactly the
/// model's answer after the writes acknowledged before it started. Those are the
/// reads a stale cached answer would be served to. Returns how many were held.
async fn run_concurrently(
    h: &Mem,
    writes: &[Write],
    reads: &[Vec<Reading>],
) -> Result<usize, TestCaseError> {
    // history[v]: the model after v acknowledged writes.
    let history = Arc::new(Mutex::new(vec![Model::default()]));
    let progress = Arc::new(Progress::default());
    let mut readers = tokio::task::JoinSet::new();
    for plan in reads {
        let session = h.session_in("alpha");
        readers.spawn(observe(
            session,
            plan.clone(),
            history.clone(),
            progress.clone(),
        ));
    }
    let mut model = Model::default();
    for w in writes {
        progress.writing.store(true, Ordering::SeqCst);
        if let Some(next) = write_step(h, w, &model).await? {
            model = next;
            history.lock().unwrap().push(model.clone());
            // Acknowledged: every read that starts from here must show it.
            progress.acked.fetch_add(1, Ordering::SeqCst);
        }
        progress.writing.store(false, Ordering::SeqCst);
        let reads = progress.reads.load(Ordering::SeqCst);
        while progress.reads.load(Ordering::SeqCst) < reads + READS_BETWEEN_WRITES {
            tokio::task::yield_now().await;
        }
    }
    progress.done.store(true, Ordering::SeqCst);
    let observations: Vec<Observation> = readers.join_all().await.into_iter().flatten().collect();
    let history = history.lock().unwrap();
    let alone: Vec<&Observation> = observations.iter().filter(|o| o.alone).collect();
    for o in &alone {
        prop_assert_eq!(
            &o.got,
            &expected(&o.read, &o.args, &history[o.started]),
            "{:?} {} started after write {} was acknowledged, no write ran meanwhile",
            o.read,
            o.args,
            o.started
        );
    }
    Ok(alone.len())
}

#[test]
fn concurrent_reads_see_every_write_acknowledged_before_they_start() {
    let rt = runtime(2);
    let mut runner = runner(8);
    let strategy = (
        prop::collection::vec(write(), 10..40),
        prop::collection::vec(prop::collection::vec(read(), 1..8), 3),
    );
    let held = AtomicUsize::new(0);
    runner
        .run(&strategy, |(writes, reads)| {
            rt.block_on(async {
                // Readers in a tight loop of cache hits outrun the default allowance
                // of 5,000 calls a second per session: no rate limit here.
                let h = Mem::open("alpha", |c| c.rate_limit_per_second = 0).await;
                let n = run_concurrently(&h, &writes, &reads).await?;
                held.fetch_add(n, Ordering::Relaxed);
                Ok(())
            })
        })
        .unwrap();
    assert!(held.into_inner() > 0, "no read ran between two writes");
}
