//! The central invariant of search (ARCHITECTURE.md, "one query tree, three
//! evaluators"): the committed tantivy index, the overlay of changes it does not
//! hold yet, and the store scan of the degraded path (`search_scanned`) find the
//! same records for the same query over the same documents.
//!
//! Proptest generates documents from a small vocabulary (stems, prefixes, near
//! misses and stop words in it, so queries hit), a second wave of changes to them
//! (new records, updates, deletions), and queries of every kind engram builds —
//! words, phrase, as-you-type prefix, fuzzy, substring, and boolean with AND / OR
//! / NOT / -word / tag: / "phrases" — under every filter (namespace, kinds, tags,
//! since / until, minimum weight, superseded, excluded ids). Each query runs at
//! four moments against a real index in a temporary directory:
//!
//! 1. the first wave only in the overlay (nothing committed);
//! 2. the first wave committed;
//! 3. the second wave in the overlay over the committed first (the stale
//!    committed copies must be hidden, deleted records must vanish);
//! 4. everything committed (deleted documents still sit in the segments);
//!
//! and each answer must hold exactly the ids `search_scanned` finds over the
//! documents as they are at that moment, each once. (A phrase under a negation
//! is left out until tantivy is upgraded: see `excludes_a_phrase`.)
//!
//! Sets, not order. The three rank with the same BM25 formula but over different
//! statistics: the index counts every namespace and kind, and its deleted
//! documents until a merge, and stores field lengths lossily; the overlay borrows
//! the committed index's statistics; the scan counts what it scanned. So scores,
//! and the order of near ties, legitimately differ; what is promised is the
//! same hits.
//!
//! `ENGRAM_FUZZ_CASES` raises the number of cases (as for tests/fuzz.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestCaseError, TestRunner};

use super::{Matcher, SearchIndex, SearchQuery, search_blocking, search_scanned};
use crate::model::{Change, RecordKind, SearchDoc};

/// Words documents and queries are made of: stems that meet ("deploys",
/// "deployed"), words that prefix others ("serve", "server"), near misses one
/// or two edits apart ("postgres", "postgress", "grafanna"), stop words, case,
/// and a hyphenated word the analyzers split.
const VOCAB: &[&str] = &[
    "deploy",
    "deploys",
    "deployed",
    "deploying",
    "serve",
    "server",
    "servers",
    "Postgres",
    "postgress",
    "postgresql",
    "stage",
    "STAGING",
    "redis",
    "reds",
    "cache",
    "cached",
    "replica",
    "replication",
    "the",
    "of",
    "db",
    "k8s",
    "node",
    "nodes",
    "alpha",
    "alpine",
    "grafana",
    "grafanna",
    "pre-deploy",
];

/// Query words besides the vocabulary: typos and words no document holds.
const STRAYS: &[&str] = &["deplyo", "servr", "postgrs", "stagign", "zebra", "nod"];

const TAGS: &[&str] = &["db", "ops", "prod"];
const NAMESPACES: &[&str] = &["a", "b"];
const KINDS: &[RecordKind] = &[RecordKind::Event, RecordKind::Fact, RecordKind::Entity];
/// Times are small numbers so `since` / `until` cut through them.
const TIMES: std::ops::Range<i64> = 0..12;
const WEIGHTS: &[f64] = &[0.1, 0.3, 0.5, 0.7, 0.9];

fn cases(default: u32) -> u32 {
    std::env::var("ENGRAM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- documents

/// A record's content: everything a change carries but its id.
#[derive(Debug, Clone)]
struct Content {
    text: String,
    tags: Vec<String>,
    time: i64,
    weight: f64,
    superseded: bool,
}

#[derive(Debug, Clone)]
struct Record {
    kind: RecordKind,
    namespace: &'static str,
    content: Content,
}

/// The second wave: what happens to the records after the first is committed.
#[derive(Debug, Clone)]
enum Later {
    Add(Record),
    /// The first-wave record at this index (modulo their number) gets new content.
    Update(usize, Content),
    Delete(usize),
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCAB), 1..8).prop_map(|w| w.join(" "))
}

fn content() -> impl Strategy<Value = Content> {
    (
        text(),
        prop::sample::subsequence(TAGS, 0..=2),
        TIMES,
        prop::sample::select(WEIGHTS),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(text, tags, time, weight, superseded)| Content {
            text,
            tags: tags.into_iter().map(String::from).collect(),
            time,
            weight,
            superseded,
        })
}

fn record() -> impl Strategy<Value = Record> {
    (
        prop::sample::select(KINDS),
        prop::sample::select(NAMESPACES),
        content(),
    )
        .prop_map(|(kind, namespace, content)| Record {
            kind,
            namespace,
            content,
        })
}

fn later() -> impl Strategy<Value = Later> {
    prop_oneof![
        record().prop_map(Later::Add),
        (any::<usize>(), content()).prop_map(|(i, c)| Later::Update(i, c)),
        any::<usize>().prop_map(Later::Delete),
    ]
}

/// The documents as the store holds them, by id, with the change log that made
/// them.
#[derive(Default)]
struct Docs {
    by_id: BTreeMap<String, SearchDoc>,
    seq: i64,
}

impl Docs {
    /// Applies one record's new state (None: deleted); the change it logs.
    fn change(&mut self, id: &str, kind: RecordKind, ns: &str, doc: Option<Content>) -> Change {
        self.seq += 1;
        let doc = doc.map(|c| SearchDoc {
            kind,
            id: id.to_string(),
            namespace: ns.to_string(),
            text: c.text,
            tags: c.tags,
            time: c.time,
            weight: c.weight,
            superseded: c.superseded,
        });
        match &doc {
            Some(d) => self.by_id.insert(id.to_string(), d.clone()),
            None => self.by_id.remove(id),
        };
        Change {
            seq: self.seq,
            kind,
            id: id.to_string(),
            namespace: ns.to_string(),
            doc,
        }
    }

    fn all(&self) -> Vec<SearchDoc> {
        self.by_id.values().cloned().collect()
    }
}

// ---------------------------------------------------------------- queries

/// Where a query's text comes from: drawn words, or a run of a first-wave
/// document's words (so phrases and substrings find something).
#[derive(Debug, Clone)]
enum Words {
    Drawn(Vec<&'static str>),
    FromDoc {
        doc: usize,
        start: usize,
        len: usize,
    },
}

impl Words {
    fn resolve(&self, first_wave: &[String]) -> String {
        match self {
            Words::Drawn(w) => w.join(" "),
            Words::FromDoc { doc, start, len } => {
                let Some(text) = first_wave.get(doc % first_wave.len().max(1)) else {
                    return String::new();
                };
                let words: Vec<&str> = text.split(' ').collect();
                let start = start % words.len();
                words[start..(start + len).min(words.len())].join(" ")
            }
        }
    }
}

/// A boolean query, rendered to the text `parse_boolean` reads.
#[derive(Debug, Clone)]
enum Bool {
    Word(&'static str),
    Phrase(&'static str, &'static str),
    Tag(&'static str),
    Minus(&'static str),
    And(Box<Bool>, Box<Bool>, bool),
    Or(Box<Bool>, Box<Bool>),
    Not(Box<Bool>),
}

impl Bool {
    fn render(&self) -> String {
        match self {
            Bool::Word(w) => w.to_string(),
            Bool::Phrase(a, b) => format!("\"{a} {b}\""),
            Bool::Tag(t) => format!("tag:{t}"),
            Bool::Minus(w) => format!("-{w}"),
            Bool::And(a, b, spelled) => {
                let and = if *spelled { " AND " } else { " " };
                format!("({}{and}{})", a.render(), b.render())
            }
            Bool::Or(a, b) => format!("({} OR {})", a.render(), b.render()),
            Bool::Not(a) => format!("NOT {}", a.render()),
        }
    }
}

/// Content words only: a stop word alone is refused by the parser.
fn content_word() -> impl Strategy<Value = &'static str> {
    prop::sample::select(VOCAB).prop_filter("not a stop word", |w| !["the", "of"].contains(w))
}

fn boolean() -> impl Strategy<Value = Bool> {
    let leaf = prop_oneof![
        4 => content_word().prop_map(Bool::Word),
        1 => (content_word(), content_word()).prop_map(|(a, b)| Bool::Phrase(a, b)),
        1 => prop::sample::select(TAGS).prop_map(Bool::Tag),
        1 => content_word().prop_map(Bool::Minus),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone(), any::<bool>()).prop_map(|(a, b, s)| Bool::And(
                Box::new(a),
                Box::new(b),
                s
            )),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Bool::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Bool::Not(Box::new(a))),
        ]
    })
}

/// What the query matches on, as the operations build it.
#[derive(Debug, Clone)]
enum Text {
    Words(Words),
    Phrase(Words),
    /// As you type: the words, then the first `cut` characters of `last`
    /// (trailing space when `cut` is 0: no unfinished word).
    Prefix(Words, &'static str, usize),
    Fuzzy(Words, Option<u8>),
    /// `len` characters from character `skip` of a first-wave document's words
    /// (or drawn words).
    Substring(Words, usize, usize),
    Boolean(Bool),
}

impl Text {
    /// The matcher, or None where the constructor refuses the text (only stop
    /// words, a boolean query that only excludes, ...).
    fn matcher(&self, first_wave: &[String]) -> Option<Matcher> {
        match self {
            Text::Words(w) => Matcher::words(&w.resolve(first_wave)),
            Text::Phrase(w) => Matcher::phrase(&w.resolve(first_wave)),
            Text::Prefix(w, last, cut) => {
                let last: String = last.chars().take(*cut).collect();
                Matcher::as_you_type(&format!("{} {last}", w.resolve(first_wave)))
            }
            Text::Fuzzy(w, max) => Matcher::fuzzy(&w.resolve(first_wave), *max),
            Text::Substring(w, skip, len) => {
                let needle: String = w
                    .resolve(first_wave)
                    .chars()
                    .skip(*skip)
                    .take(*len)
                    .collect();
                Matcher::substring(&needle)
            }
            Text::Boolean(b) => super::parse_boolean(&b.render()).ok(),
        }
    }
}

fn words() -> impl Strategy<Value = Words> {
    prop_oneof![
        prop::collection::vec(
            prop_oneof![4 => prop::sample::select(VOCAB), 1 => prop::sample::select(STRAYS)],
            1..4
        )
        .prop_map(Words::Drawn),
        (any::<usize>(), any::<usize>(), 1..4usize).prop_map(|(doc, start, len)| Words::FromDoc {
            doc,
            start,
            len
        }),
    ]
}

fn query_text() -> impl Strategy<Value = Text> {
    prop_oneof![
        1 => words().prop_map(Text::Words),
        1 => words().prop_map(Text::Phrase),
        1 => (words(), prop::sample::select(VOCAB), 0..9usize)
            .prop_map(|(w, last, cut)| Text::Prefix(w, last, cut)),
        1 => (words(), prop::option::of(0..=2u8)).prop_map(|(w, max)| Text::Fuzzy(w, max)),
        1 => (words(), 0..6usize, 2..9usize).prop_map(|(w, skip, len)| Text::Substring(w, skip, len)),
        2 => boolean().prop_map(Text::Boolean),
    ]
}

/// A query: its text and its filters.
#[derive(Debug, Clone)]
struct Query {
    text: Text,
    namespace: &'static str,
    kinds: Vec<RecordKind>,
    tags: Vec<&'static str>,
    since: Option<i64>,
    until: Option<i64>,
    min_weight: Option<f64>,
    include_superseded: bool,
    /// A first-wave record (by index) to leave out, as more-like-this does.
    exclude: Option<usize>,
}

/// A filter that applies now and then, so that most queries still find something.
fn sometimes<S: Strategy>(s: S) -> impl Strategy<Value = Option<S::Value>> {
    prop::option::weighted(0.2, s)
}

fn query() -> impl Strategy<Value = Query> {
    (
        query_text(),
        prop::sample::select(NAMESPACES),
        prop_oneof![
            Just(KINDS.to_vec()),
            prop::sample::subsequence(KINDS, 1..=2)
        ],
        sometimes(prop::sample::select(TAGS)).prop_map(|t| t.into_iter().collect()),
        (sometimes(TIMES), sometimes(TIMES)),
        sometimes(prop::sample::select(WEIGHTS)),
        prop::bool::weighted(0.3),
        sometimes(any::<usize>()),
    )
        .prop_map(
            |(text, namespace, kinds, tags, (since, until), min_weight, inc, exclude)| Query {
                text,
                namespace,
                kinds,
                tags,
                since,
                until,
                min_weight,
                include_superseded: inc,
                exclude,
            },
        )
}

impl Query {
    fn build(&self, first_wave: &[String]) -> Option<SearchQuery> {
        let matcher = self.text.matcher(first_wave)?;
        if excludes_a_phrase(&matcher, false) {
            return None;
        }
        let mut q = SearchQuery::new(self.namespace, self.kinds.clone(), matcher, 10_000);
        q.tags = self.tags.iter().map(|t| t.to_string()).collect();
        q.since = self.since;
        q.until = self.until;
        q.min_weight = self.min_weight;
        q.include_superseded = self.include_superseded;
        q.exclude_ids = self
            .exclude
            .map(|i| vec![first_id(i % first_wave.len().max(1))])
            .unwrap_or_default();
        Some(q)
    }
}

/// Left out until tantivy is upgraded: a phrase of two or more words under a
/// negation. tantivy 0.27's `PhraseScorer::seek_danger` asserts (debug builds
/// only) that it is never asked about a document before the one it stands on,
/// and an exclusion asks exactly that: over two committed events "deploy" and
/// "stage server", the boolean query `deploy -"stage server"` panics inside
/// tantivy ("target (0) should be greater than or equal to doc (1)";
/// quickwit-oss/tantivy#2811). Release builds skip the assertion and answer
/// correctly; debug builds fail the search, which counts against the search
/// breaker and is answered from the store scan.
fn excludes_a_phrase(m: &Matcher, negated: bool) -> bool {
    match m {
        Matcher::Phrase(terms) => negated && terms.len() > 1,
        Matcher::Not(inner) => excludes_a_phrase(inner, true),
        Matcher::All(c) | Matcher::Any(c) => c.iter().any(|m| excludes_a_phrase(m, negated)),
        _ => false,
    }
}

fn first_id(i: usize) -> String {
    format!("r{i:02}")
}

// ---------------------------------------------------------------- the check

/// The ids a result holds; fails when one is there twice or the page is cut.
fn ids(results: &super::SearchResults, what: &str) -> Result<BTreeSet<String>, TestCaseError> {
    let set: BTreeSet<String> = results.hits.iter().map(|h| h.id.clone()).collect();
    prop_assert_eq!(set.len(), results.hits.len(), "{} repeats a hit", what);
    prop_assert!(!results.has_more, "{} cut the page", what);
    Ok(set)
}

/// Substring search leaves one check to its caller (`ops::graph`): the index
/// finds records holding every 3-character piece; the caller keeps those that
/// hold the whole needle. The same check applies to every evaluator's answer.
fn as_the_caller_checks(
    q: &SearchQuery,
    docs: &Docs,
    mut found: BTreeSet<String>,
) -> BTreeSet<String> {
    if let Matcher::Substring(needle) = &q.matcher {
        found.retain(|id| {
            docs.by_id
                .get(id)
                .is_some_and(|d| d.text.to_lowercase().contains(needle.as_str()))
        });
    }
    found
}

/// One query against the index (whatever it holds committed and overlaid) and
/// the scan of `docs`, at `moment`.
fn agree(
    index: &SearchIndex,
    docs: &Docs,
    q: &SearchQuery,
    moment: &str,
) -> Result<(), TestCaseError> {
    let indexed = search_blocking(&index.shared, q)
        .map_err(|e| TestCaseError::fail(format!("{moment}: the index failed: {e}")))?;
    let indexed = as_the_caller_checks(q, docs, ids(&indexed, "the index")?);
    let scanned = search_scanned(q, docs.all());
    let scanned = ids(&scanned, "the scan")?;
    prop_assert_eq!(
        as_the_caller_checks(q, docs, scanned.clone()),
        scanned.clone(),
        "the scan matched what the caller's substring check drops"
    );
    prop_assert_eq!(
        &indexed,
        &scanned,
        "{}: index (+ overlay) and store scan disagree\nquery: {:?}\ndocuments: {:#?}",
        moment,
        q,
        docs.by_id.values().collect::<Vec<_>>()
    );
    Ok(())
}

/// A temporary directory, in memory where the system offers one: every case
/// commits twice, and a commit to disk waits for its fsyncs.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let in_memory = shm
        .is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten();
    in_memory.unwrap_or_else(|| tempfile::tempdir().expect("temp dir"))
}

fn run_case(
    rt: &tokio::runtime::Runtime,
    first: &[Record],
    then: &[Later],
    queries: &[Query],
) -> Result<(), TestCaseError> {
    let dir = scratch_dir();
    // Commits only when flushed: the overlay serves everything until then.
    let (index, _) = SearchIndex::open(
        &dir.path().join("index"),
        3_600_000,
        1_000_000,
        Arc::new(|_| {}),
    )
    .expect("open the index");
    let listener = index.change_listener();
    let result = (|| {
        let mut docs = Docs::default();
        let wave: Vec<Change> = first
            .iter()
            .enumerate()
            .map(|(i, r)| docs.change(&first_id(i), r.kind, r.namespace, Some(r.content.clone())))
            .collect();
        listener(wave);
        let first_texts: Vec<String> = first.iter().map(|r| r.content.text.clone()).collect();
        let queries: Vec<SearchQuery> = queries
            .iter()
            .filter_map(|q| q.build(&first_texts))
            .collect();
        let check = |docs: &Docs, moment: &str| -> Result<(), TestCaseError> {
            queries
                .iter()
                .try_for_each(|q| agree(&index, docs, q, moment))
        };

        check(&docs, "1. first wave in the overlay")?;
        rt.block_on(index.flush()).expect("flush");
        check(&docs, "2. first wave committed")?;

        let mut wave = Vec::new();
        for (n, change) in then.iter().enumerate() {
            let target = |i: &usize| first_id(i % first.len());
            wave.push(match change {
                Later::Add(r) => docs.change(
                    &format!("n{n:02}"),
                    r.kind,
                    r.namespace,
                    Some(r.content.clone()),
                ),
                Later::Update(i, c) => {
                    let r = &first[i % first.len()];
                    docs.change(&target(i), r.kind, r.namespace, Some(c.clone()))
                }
                Later::Delete(i) => {
                    let r = &first[i % first.len()];
                    docs.change(&target(i), r.kind, r.namespace, None)
                }
            });
        }
        listener(wave);
        check(
            &docs,
            "3. second wave in the overlay over the committed first",
        )?;
        rt.block_on(index.flush()).expect("flush");
        check(&docs, "4. everything committed")
    })();
    index.shutdown();
    result
}

#[test]
fn the_index_the_overlay_and_the_store_scan_find_the_same_records() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(RunConfig {
        cases: cases(48),
        failure_persistence: None,
        ..RunConfig::default()
    });
    let strategy = (
        prop::collection::vec(record(), 1..20),
        prop::collection::vec(later(), 0..8),
        prop::collection::vec(query(), 1..40),
    );
    runner
        .run(&strategy, |(first, then, queries)| {
            run_case(&rt, &first, &then, &queries)
        })
        .unwrap();
}

/// Regressions the property found, as fixed cases.
#[test]
fn regressions() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let record = |kind, text: &str| Record {
        kind,
        namespace: "a",
        content: Content {
            text: text.into(),
            tags: Vec::new(),
            time: 0,
            weight: 0.5,
            superseded: false,
        },
    };
    let query = |text| Query {
        text,
        namespace: "a",
        kinds: KINDS.to_vec(),
        tags: Vec::new(),
        since: None,
        until: None,
        min_weight: None,
        include_superseded: false,
        exclude: None,
    };
    // The overlay and the scan matched a substring in events too; the index
    // holds the trigrams of entities only.
    let first = [
        record(RecordKind::Event, "deploy"),
        record(RecordKind::Entity, "deploy"),
    ];
    let deploy = Words::Drawn(vec!["deploy"]);
    run_case(&rt, &first, &[], &[query(Text::Substring(deploy, 0, 6))]).unwrap();
}
