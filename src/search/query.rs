//! Text queries as one tree ([`Matcher`]), evaluated three ways: compiled to a
//! tantivy query for the committed index, and matched directly against prepared
//! documents — the overlay of changes the index does not hold yet, and the store
//! scan that answers while the index is down. All three rank with BM25 using
//! tantivy's constants, so their scores are comparable.
//!
//! Must not: know which operation built the tree. The constructors here turn user
//! text into trees; the operations choose which constructor fits their tool.

use std::collections::HashMap;

use tantivy::query::Bm25StatisticsProvider;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, EmptyQuery, FuzzyTermQuery, Occur,
    PhraseQuery, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Searcher, Term};

use super::overlay::OverlayStats;
use super::{Fields, SearchError, analyzer};
use crate::model::{RecordKind, SearchDoc};

/// Most index terms one prefix or fuzzy word expands to (the most frequent win).
const MAX_EXPANSIONS: usize = 64;
/// Candidates read from the term dictionary before keeping the most frequent.
const MAX_EXPANSION_CANDIDATES: usize = 4096;
/// Words at least this long get two edits of typo tolerance; shorter ones one;
/// words of two letters or fewer none.
const TWO_EDITS_FROM_LEN: usize = 6;

/// What a question word ("when", "did", "you") weighs in a natural-language
/// query, relative to the words that carry its content.
pub const QUESTION_WORD_WEIGHT: f32 = 0.1;

pub(crate) const BM25_K1: f32 = 1.2;
pub(crate) const BM25_B: f32 = 0.75;

/// What a text query asks for.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Matcher {
    /// An analyzed (lower-cased, stemmed) term.
    Term(String),
    /// Analyzed terms at relative word positions, in order.
    Phrase(Vec<(usize, String)>),
    /// Words (as written, lower-cased) starting with this.
    Prefix(String),
    /// Words (as written, lower-cased) within `distance` edits of `word`.
    Fuzzy { word: String, distance: u8 },
    /// Records whose text contains this (lower-cased, at least 3 characters)
    /// as written. Entities only (the reference server's matching rule).
    Substring(String),
    /// Records carrying this tag. Adds no score.
    Tag(String),
    /// Every child matches (and no `Not` child does).
    All(Vec<Matcher>),
    /// At least one child matches; more matches score higher.
    Any(Vec<Matcher>),
    /// The child does not match.
    Not(Box<Matcher>),
    /// The child, its score multiplied by the factor (below 1: a weak term).
    Boost(Box<Matcher>, f32),
}

impl Matcher {
    /// Natural words: any analyzed term may match, BM25 ranks. Words that
    /// only shape a question ("when did you", "what does she") count for little
    /// ([`QUESTION_WORD_WEIGHT`]), so a turn made of them cannot outrank the
    /// one holding the answer. `None` when only stop words remain.
    pub fn words(text: &str) -> Option<Matcher> {
        let clauses: Vec<Matcher> = analyzer::terms(text)
            .into_iter()
            .map(|term| {
                if analyzer::is_question_term(&term) {
                    Matcher::Boost(Box::new(Matcher::Term(term)), QUESTION_WORD_WEIGHT)
                } else {
                    Matcher::Term(term)
                }
            })
            .collect();
        (!clauses.is_empty()).then_some(Matcher::Any(clauses))
    }

    /// Whether the tree holds a text leaf at full weight (not only question
    /// words).
    pub fn has_content_words(&self) -> bool {
        match self {
            Matcher::Boost(inner, factor) => *factor >= 1.0 && inner.has_content_words(),
            Matcher::All(c) | Matcher::Any(c) => c.iter().any(Matcher::has_content_words),
            other => other.has_text(),
        }
    }

    /// The exact sequence of words (stop words in between may differ).
    pub fn phrase(text: &str) -> Option<Matcher> {
        let terms = analyzer::query_positioned_terms(text);
        let first = terms.first()?.0;
        Some(Matcher::Phrase(
            terms.into_iter().map(|(p, t)| (p - first, t)).collect(),
        ))
    }

    /// As-you-type: every complete word must match, the last (unfinished) word
    /// matches as a prefix of a word. Text ending in a space has no unfinished word.
    pub fn as_you_type(text: &str) -> Option<Matcher> {
        let words = analyzer::raw_words(text);
        let finished = text.ends_with(char::is_whitespace);
        let mut clauses = Vec::new();
        for (i, w) in words.iter().enumerate() {
            if i + 1 == words.len() && !finished {
                clauses.push(Matcher::Prefix(w.clone()));
            } else if let Some(stem) = analyzer::stem(w) {
                clauses.push(Matcher::Term(stem));
            }
        }
        (!clauses.is_empty()).then_some(Matcher::All(clauses))
    }

    /// Typo-tolerant: each word matches words within a few edits of it (or its
    /// stem). `max_distance` caps the automatic tolerance (1 edit for words of
    /// 3–5 letters, 2 from 6 letters).
    pub fn fuzzy(text: &str, max_distance: Option<u8>) -> Option<Matcher> {
        let mut clauses = Vec::new();
        for w in analyzer::raw_words(text) {
            let Some(stem) = analyzer::stem(&w) else {
                continue;
            };
            let auto = match w.chars().count() {
                0..=2 => 0,
                n if n < TWO_EDITS_FROM_LEN => 1,
                _ => 2,
            };
            let distance = max_distance.map_or(auto, |m| auto.min(m));
            clauses.push(Matcher::Any(vec![
                Matcher::Fuzzy { word: w, distance },
                Matcher::Term(stem),
            ]));
        }
        (!clauses.is_empty()).then_some(Matcher::Any(clauses))
    }

    /// Text containing `needle` as written, case-insensitively. `None` when it is
    /// shorter than 3 characters (too short for the trigram index).
    pub fn substring(needle: &str) -> Option<Matcher> {
        let lower = needle.to_lowercase();
        (lower.chars().count() >= analyzer::NGRAM).then_some(Matcher::Substring(lower))
    }

    /// Terms of the text field that, with their weights, make a more-like-this
    /// query: the given terms OR-ed.
    pub fn any_terms(terms: Vec<String>) -> Option<Matcher> {
        (!terms.is_empty()).then(|| Matcher::Any(terms.into_iter().map(Matcher::Term).collect()))
    }

    /// True when the tree can match without any text term (only tags and
    /// negations): such a query matches by filter and all scores are zero.
    pub fn has_text(&self) -> bool {
        match self {
            Matcher::Term(_)
            | Matcher::Phrase(_)
            | Matcher::Prefix(_)
            | Matcher::Fuzzy { .. }
            | Matcher::Substring(_) => true,
            Matcher::Tag(_) | Matcher::Not(_) => false,
            Matcher::All(c) | Matcher::Any(c) => c.iter().any(Matcher::has_text),
            Matcher::Boost(inner, _) => inner.has_text(),
        }
    }

    /// Does the word (as written, lower-cased) satisfy one of the positive leaves?
    /// Used to highlight matches in snippets.
    pub fn highlights(&self, raw_word: &str, stem: Option<&str>) -> bool {
        match self {
            Matcher::Term(t) => stem == Some(t.as_str()),
            Matcher::Phrase(ts) => ts.iter().any(|(_, t)| stem == Some(t.as_str())),
            Matcher::Prefix(p) => prefix_matches(p, raw_word),
            Matcher::Fuzzy { word, distance } => {
                strsim::osa_distance(word, raw_word) <= *distance as usize
            }
            Matcher::Substring(s) => raw_word.contains(s.as_str()),
            Matcher::Tag(_) | Matcher::Not(_) => false,
            Matcher::All(c) | Matcher::Any(c) => c.iter().any(|m| m.highlights(raw_word, stem)),
            Matcher::Boost(inner, _) => inner.highlights(raw_word, stem),
        }
    }
}

/// A typed prefix matches a word that starts with it, and also a word it
/// already runs past by an inflection of up to `PREFIX_OVERRUN` letters
/// ("servers" still finds "server").
fn prefix_matches(prefix: &str, word: &str) -> bool {
    word.starts_with(prefix)
        || (word.len() >= MIN_OVERRUN_WORD
            && word.len() + PREFIX_OVERRUN >= prefix.len()
            && prefix.starts_with(word))
}

/// How many letters a typed prefix may run past a whole word and still find it.
const PREFIX_OVERRUN: usize = 2;
/// Shorter words are never found by overrun ("theory" must not find "the").
const MIN_OVERRUN_WORD: usize = 4;

// ---------- boolean query language ----------

/// Parses `AND`, `OR`, `NOT` (or a leading `-`), parentheses, `"quoted
/// phrases"` and `tag:name`. Words side by side are AND-ed. Operators are
/// upper-case; lower-case `and`/`or`/`not` are ordinary words.
pub fn parse_boolean(text: &str) -> Result<Matcher, String> {
    let tokens = lex(text)?;
    let mut p = Parser { tokens, pos: 0 };
    let m = p.or()?;
    if p.pos < p.tokens.len() {
        return Err(format!(
            "unexpected {} at token {}: check the parentheses",
            p.tokens[p.pos].describe(),
            p.pos + 1
        ));
    }
    if !m.has_text() && !matches!(m, Matcher::Tag(_)) && !contains_positive_tag(&m) {
        return Err(
            "the query only excludes things: say what to find too, e.g. `deploy NOT staging`"
                .into(),
        );
    }
    Ok(m)
}

fn contains_positive_tag(m: &Matcher) -> bool {
    match m {
        Matcher::Tag(_) => true,
        Matcher::All(c) | Matcher::Any(c) => c.iter().any(contains_positive_tag),
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Phrase(String),
    Tag(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("word {w:?}"),
            Tok::Phrase(p) => format!("phrase {p:?}"),
            Tok::Tag(t) => format!("tag:{t}"),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::Not => "NOT".into(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
        }
    }
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '"' => {
                chars.next();
                let mut phrase = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => phrase.push(c),
                        None => {
                            return Err("a quoted phrase is not closed: add the final `\"`".into());
                        }
                    }
                }
                out.push(Tok::Phrase(phrase));
            }
            // At the start of a token (a hyphen inside a word stays in the word).
            '-' => {
                chars.next();
                out.push(Tok::Not);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == '"' {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(match word.as_str() {
                    "AND" | "&&" => Tok::And,
                    "OR" | "||" => Tok::Or,
                    "NOT" => Tok::Not,
                    w => match w.strip_prefix("tag:") {
                        Some("") => return Err("`tag:` needs a tag name after it".into()),
                        Some(tag) => Tok::Tag(tag.to_lowercase()),
                        None => Tok::Word(word),
                    },
                });
            }
        }
    }
    if out.is_empty() {
        return Err("the query is empty".into());
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<Matcher, String> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Matcher::Any(parts)
        })
    }

    fn and(&mut self) -> Result<Matcher, String> {
        let mut parts = vec![self.unary()?];
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                    parts.push(self.unary()?);
                }
                Some(Tok::Or) | Some(Tok::Close) | None => break,
                Some(_) => parts.push(self.unary()?),
            }
        }
        Ok(
            if parts.len() == 1 && !matches!(parts[0], Matcher::Not(_)) {
                parts.pop().expect("one part")
            } else {
                Matcher::All(parts)
            },
        )
    }

    fn unary(&mut self) -> Result<Matcher, String> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            return Ok(Matcher::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Matcher, String> {
        let Some(tok) = self.tokens.get(self.pos).cloned() else {
            return Err("the query ends where a word, phrase or `(` was expected".into());
        };
        self.pos += 1;
        match tok {
            Tok::Open => {
                let inner = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return Err("a `(` is not closed: add the matching `)`".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            Tok::Word(w) => {
                let terms = analyzer::query_positioned_terms(&w);
                let whole = analyzer::compounds(&w);
                match terms.len() {
                    0 => Err(format!(
                        "{w:?} is too common a word to search for (a stop word): drop it or quote a phrase around it"
                    )),
                    1 => Ok(Matcher::Term(terms.into_iter().next().expect("one").1)),
                    // "e-mail": its two words adjacent, or written whole.
                    _ if !whole.is_empty() => Ok(Matcher::Any(
                        std::iter::once(Matcher::phrase(&w).expect("has terms"))
                            .chain(whole.into_iter().map(Matcher::Term))
                            .collect(),
                    )),
                    _ => Ok(Matcher::phrase(&w).expect("has terms")),
                }
            }
            Tok::Phrase(p) => Matcher::phrase(&p).ok_or_else(|| {
                format!("the phrase {p:?} has only stop words: add a word that names something")
            }),
            Tok::Tag(t) => Ok(Matcher::Tag(t)),
            other => Err(format!(
                "{} cannot start a term: put a word, phrase or `(` before it",
                other.describe()
            )),
        }
    }
}

// ---------- compiling to tantivy ----------

/// The tantivy query for `m` over the committed index. Prefix and fuzzy words
/// expand to the index terms they reach, so they need the searcher.
pub(crate) fn compile(
    m: &Matcher,
    f: &Fields,
    searcher: &Searcher,
) -> Result<Box<dyn Query>, SearchError> {
    Ok(match m {
        Matcher::Term(t) => term_query(f.text, t),
        Matcher::Phrase(ts) if ts.len() == 1 => term_query(f.text, &ts[0].1),
        Matcher::Phrase(ts) => Box::new(PhraseQuery::new_with_offset(
            ts.iter()
                .map(|(p, t)| (*p, Term::from_field_text(f.text, t)))
                .collect(),
        )),
        Matcher::Prefix(p) => {
            let terms = expand_prefix(searcher, f.text_raw, p)?;
            should(
                terms
                    .into_iter()
                    .map(|t| term_query(f.text_raw, &t))
                    .collect(),
            )
        }
        Matcher::Fuzzy { word, distance } => compile_fuzzy(word, *distance, f, searcher)?,
        Matcher::Substring(s) => compile_substring(s, f),
        Matcher::Tag(t) => Box::new(ConstScoreQuery::new(
            Box::new(TermQuery::new(
                Term::from_field_text(f.tags, t),
                IndexRecordOption::Basic,
            )),
            0.0,
        )),
        Matcher::All(children) => compile_all(children, f, searcher)?,
        Matcher::Any(children) => should(
            children
                .iter()
                .map(|c| compile(c, f, searcher))
                .collect::<Result<_, _>>()?,
        ),
        Matcher::Not(inner) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, match_all()),
            (Occur::MustNot, compile(inner, f, searcher)?),
        ])),
        Matcher::Boost(inner, factor) => {
            Box::new(BoostQuery::new(compile(inner, f, searcher)?, *factor))
        }
    })
}

/// Any index word within `distance` edits of `word`, the nearer ones boosted.
fn compile_fuzzy(
    word: &str,
    distance: u8,
    f: &Fields,
    searcher: &Searcher,
) -> Result<Box<dyn Query>, SearchError> {
    let terms = expand_fuzzy(searcher, f.text_raw, word, distance)?;
    Ok(should(
        terms
            .into_iter()
            .map(|t| {
                let boost = fuzzy_boost(word, &t);
                Box::new(BoostQuery::new(term_query(f.text_raw, &t), boost)) as Box<dyn Query>
            })
            .collect(),
    ))
}

/// Every 3-character piece of `s` (nothing matches when it has none).
fn compile_substring(s: &str, f: &Fields) -> Box<dyn Query> {
    // Every piece must be there; the caller checks they are contiguous.
    let pieces: Vec<(Occur, Box<dyn Query>)> = analyzer::trigrams(s)
        .iter()
        .map(|g| {
            let q: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(f.text_ngram, g),
                IndexRecordOption::Basic,
            ));
            (Occur::Must, q)
        })
        .collect();
    if pieces.is_empty() {
        Box::new(EmptyQuery)
    } else {
        Box::new(BooleanQuery::new(pieces))
    }
}

/// Every positive child and none of the `Not` ones; with only `Not` children,
/// every document but theirs.
fn compile_all(
    children: &[Matcher],
    f: &Fields,
    searcher: &Searcher,
) -> Result<Box<dyn Query>, SearchError> {
    let mut clauses = Vec::with_capacity(children.len() + 1);
    let mut positive = false;
    for c in children {
        match c {
            Matcher::Not(inner) => clauses.push((Occur::MustNot, compile(inner, f, searcher)?)),
            other => {
                positive = true;
                clauses.push((Occur::Must, compile(other, f, searcher)?));
            }
        }
    }
    if !positive {
        clauses.push((Occur::Must, match_all()));
    }
    Ok(Box::new(BooleanQuery::new(clauses)))
}

fn term_query(field: Field, t: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, t),
        IndexRecordOption::WithFreqs,
    ))
}

fn match_all() -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(Box::new(AllQuery), 0.0))
}

fn should(queries: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    if queries.is_empty() {
        return Box::new(EmptyQuery);
    }
    Box::new(BooleanQuery::new(
        queries.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

/// Exact words rank above near misses: 1 for the word itself, 1/2 for one edit, 1/3 for two.
fn fuzzy_boost(word: &str, candidate: &str) -> f32 {
    1.0 / (1.0 + strsim::osa_distance(word, candidate) as f32)
}

/// Index words starting with `prefix` (plus words `prefix` runs past), the most
/// frequent first, at most `MAX_EXPANSIONS`.
fn expand_prefix(
    searcher: &Searcher,
    field: Field,
    prefix: &str,
) -> Result<Vec<String>, SearchError> {
    let mut found = Vec::new();
    for seg in searcher.segment_readers() {
        let inverted = seg.inverted_index(field)?;
        let dict = inverted.terms();
        let mut stream = dict.range().ge(prefix.as_bytes()).into_stream()?;
        while stream.advance() && found.len() < MAX_EXPANSION_CANDIDATES {
            let key = stream.key();
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if let Ok(s) = std::str::from_utf8(key) {
                found.push(s.to_string());
            }
        }
        // Words the prefix has already run past ("deploym" still finds "deploy").
        let shortest = MIN_OVERRUN_WORD.max(prefix.len().saturating_sub(PREFIX_OVERRUN));
        for end in shortest..prefix.len() {
            if prefix.is_char_boundary(end) && dict.get(&prefix.as_bytes()[..end])?.is_some() {
                found.push(prefix[..end].to_string());
            }
        }
    }
    most_frequent(searcher, field, found)
}

fn expand_fuzzy(
    searcher: &Searcher,
    field: Field,
    word: &str,
    distance: u8,
) -> Result<Vec<String>, SearchError> {
    if distance == 0 {
        return Ok(vec![word.to_string()]);
    }
    let automaton =
        FuzzyTermQuery::new(Term::from_field_text(field, word), distance, true).automaton()?;
    let mut found = Vec::new();
    for seg in searcher.segment_readers() {
        let inverted = seg.inverted_index(field)?;
        let mut stream = inverted.terms().search(&automaton).into_stream()?;
        while stream.advance() && found.len() < MAX_EXPANSION_CANDIDATES {
            if let Ok(s) = std::str::from_utf8(stream.key()) {
                found.push(s.to_string());
            }
        }
    }
    most_frequent(searcher, field, found)
}

fn most_frequent(
    searcher: &Searcher,
    field: Field,
    mut terms: Vec<String>,
) -> Result<Vec<String>, SearchError> {
    terms.sort();
    terms.dedup();
    if terms.len() <= MAX_EXPANSIONS {
        return Ok(terms);
    }
    let mut counted = Vec::with_capacity(terms.len());
    for t in terms {
        let df = searcher.doc_freq(&Term::from_field_text(field, &t))?;
        counted.push((df, t));
    }
    counted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(counted
        .into_iter()
        .take(MAX_EXPANSIONS)
        .map(|(_, t)| t)
        .collect())
}

// ---------- matching prepared documents (overlay, store scan) ----------

/// A document with its analyzed forms, computed once.
pub(crate) struct PreparedDoc {
    pub doc: SearchDoc,
    /// Analyzed terms with positions, with repeats.
    pub stems: Vec<(usize, String)>,
    /// Lower-cased words as written, with repeats.
    pub raw: Vec<String>,
}

impl PreparedDoc {
    pub(crate) fn new(doc: SearchDoc) -> Self {
        PreparedDoc {
            stems: analyzer::positioned_terms(&doc.text),
            raw: analyzer::raw_words(&doc.text),
            doc,
        }
    }
}

/// Which field a matched term belongs to, for its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Which {
    Stemmed,
    Raw,
}

/// One matched term of one document: it contributes BM25(tf) × boost.
pub(crate) struct TermHit {
    pub which: Which,
    pub term: String,
    pub tf: u32,
    pub boost: f32,
}

/// Does `d` match `m`? Collects the scoring hits of the positive leaves.
pub(crate) fn matches(m: &Matcher, d: &PreparedDoc, hits: &mut Vec<TermHit>) -> bool {
    match m {
        Matcher::Term(t) => {
            let tf = d.stems.iter().filter(|(_, s)| s == t).count() as u32;
            if tf > 0 {
                hits.push(TermHit {
                    which: Which::Stemmed,
                    term: t.clone(),
                    tf,
                    boost: 1.0,
                });
            }
            tf > 0
        }
        Matcher::Phrase(ts) => {
            let occurrences = phrase_count(ts, &d.stems);
            if occurrences > 0 {
                for (_, t) in ts {
                    hits.push(TermHit {
                        which: Which::Stemmed,
                        term: t.clone(),
                        tf: occurrences,
                        boost: 1.0,
                    });
                }
            }
            occurrences > 0
        }
        Matcher::Prefix(p) => raw_hits(d, hits, |w| prefix_matches(p, w).then_some(1.0)),
        Matcher::Fuzzy { word, distance } => raw_hits(d, hits, |w| {
            (strsim::osa_distance(word, w) <= *distance as usize).then(|| fuzzy_boost(word, w))
        }),
        // Only entities carry the trigram field the index answers this from.
        Matcher::Substring(s) => {
            d.doc.kind == RecordKind::Entity && d.doc.text.to_lowercase().contains(s.as_str())
        }
        Matcher::Tag(t) => d.doc.tags.iter().any(|x| x == t),
        Matcher::All(children) => {
            let mark = hits.len();
            let ok = children.iter().all(|c| match c {
                Matcher::Not(inner) => !matches(inner, d, &mut Vec::new()),
                other => matches(other, d, hits),
            });
            if !ok {
                hits.truncate(mark);
            }
            ok
        }
        Matcher::Any(children) => {
            let mut any = false;
            for c in children {
                any |= matches(c, d, hits);
            }
            any
        }
        Matcher::Not(inner) => !matches(inner, d, &mut Vec::new()),
        Matcher::Boost(inner, factor) => {
            let mark = hits.len();
            let matched = matches(inner, d, hits);
            for h in &mut hits[mark..] {
                h.boost *= factor;
            }
            matched
        }
    }
}

fn raw_hits(d: &PreparedDoc, hits: &mut Vec<TermHit>, test: impl Fn(&str) -> Option<f32>) -> bool {
    let mut counts: HashMap<&str, (u32, f32)> = HashMap::new();
    for w in &d.raw {
        if let Some(boost) = test(w) {
            counts.entry(w.as_str()).or_insert((0, boost)).0 += 1;
        }
    }
    let matched = !counts.is_empty();
    for (term, (tf, boost)) in counts {
        hits.push(TermHit {
            which: Which::Raw,
            term: term.to_string(),
            tf,
            boost,
        });
    }
    matched
}

/// How many times the phrase occurs in `stems`.
fn phrase_count(phrase: &[(usize, String)], stems: &[(usize, String)]) -> u32 {
    let Some((_, first)) = phrase.first() else {
        return 0;
    };
    // A hyphenated word's whole form shares its last part's position.
    let at: std::collections::HashSet<(usize, &str)> =
        stems.iter().map(|(p, t)| (*p, t.as_str())).collect();
    stems
        .iter()
        .filter(|(start, t)| {
            t == first
                && phrase
                    .iter()
                    .all(|(off, want)| at.contains(&(start + off, want.as_str())))
        })
        .count() as u32
}

/// Inverse document frequency and average length per field: what BM25 needs
/// beyond the document itself.
pub(crate) trait Bm25Source {
    fn idf(&mut self, which: Which, term: &str) -> f32;
    fn avg_len(&self, which: Which) -> f32;
}

pub(crate) fn idf(docs: u64, df: u64) -> f32 {
    let df = df.min(docs);
    let x = ((docs - df) as f32 + 0.5) / (df as f32 + 0.5);
    (1.0 + x).ln()
}

/// BM25 of a matched document, as tantivy would compute it.
pub(crate) fn score(d: &PreparedDoc, hits: &[TermHit], stats: &mut impl Bm25Source) -> f32 {
    let mut total = 0.0;
    for h in hits {
        let len = match h.which {
            Which::Stemmed => d.stems.len(),
            Which::Raw => d.raw.len(),
        } as f32;
        let avg = stats.avg_len(h.which);
        let avg = if avg > 0.0 { avg } else { len.max(1.0) };
        let tf = h.tf as f32;
        let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len / avg);
        total += h.boost * stats.idf(h.which, &h.term) * tf * (BM25_K1 + 1.0) / (tf + norm);
    }
    total
}

/// The terms whose statistics scoring `m` reads (the stemmed field's; the
/// words prefix and fuzzy leaves reach are known only once expanded).
pub(crate) fn scored_terms(m: &Matcher, out: &mut Vec<(Which, String)>) {
    match m {
        Matcher::Term(t) => out.push((Which::Stemmed, t.clone())),
        Matcher::Phrase(ts) => out.extend(ts.iter().map(|(_, t)| (Which::Stemmed, t.clone()))),
        Matcher::All(c) | Matcher::Any(c) => c.iter().for_each(|m| scored_terms(m, out)),
        Matcher::Boost(inner, _) => scored_terms(inner, out),
        Matcher::Prefix(_)
        | Matcher::Fuzzy { .. }
        | Matcher::Substring(_)
        | Matcher::Tag(_)
        | Matcher::Not(_) => {}
    }
}

/// Corpus statistics of the committed index and the overlay together: what
/// both committed and overlay documents are ranked with, so a record ranks
/// the same whether or not the index has committed it yet.
pub(crate) struct IndexStats<'a> {
    searcher: &'a Searcher,
    fields: &'a Fields,
    overlay: OverlayStats,
    docs: u64,
    avg: [f32; 2],
    cache: HashMap<(Which, String), f32>,
}

impl<'a> IndexStats<'a> {
    pub(crate) fn new(
        searcher: &'a Searcher,
        fields: &'a Fields,
        overlay: OverlayStats,
    ) -> Result<Self, SearchError> {
        let docs = searcher.total_num_docs()? + overlay.docs;
        let avg = |field, which: Which| -> Result<f32, SearchError> {
            let tokens = searcher.total_num_tokens(field)? + overlay.tokens[which as usize];
            Ok(if docs == 0 {
                0.0
            } else {
                tokens as f32 / docs as f32
            })
        };
        let avg = [
            avg(fields.text, Which::Stemmed)?,
            avg(fields.text_raw, Which::Raw)?,
        ];
        Ok(IndexStats {
            searcher,
            fields,
            overlay,
            docs,
            avg,
            cache: HashMap::new(),
        })
    }

    /// The field's statistics side, if it is one of the two text fields.
    fn which(&self, field: Field) -> Option<Which> {
        if field == self.fields.text {
            Some(Which::Stemmed)
        } else if field == self.fields.text_raw {
            Some(Which::Raw)
        } else {
            None
        }
    }

    fn overlay_df(&self, which: Which, term: &str) -> u64 {
        self.overlay
            .df
            .get(&(which, term.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

impl Bm25Source for IndexStats<'_> {
    fn idf(&mut self, which: Which, term: &str) -> f32 {
        let field = match which {
            Which::Stemmed => self.fields.text,
            Which::Raw => self.fields.text_raw,
        };
        let key = (which, term.to_string());
        if let Some(idf) = self.cache.get(&key) {
            return *idf;
        }
        let df = self
            .searcher
            .doc_freq(&Term::from_field_text(field, term))
            .unwrap_or(0)
            + self.overlay_df(which, term);
        *self.cache.entry(key).or_insert(idf(self.docs, df))
    }

    fn avg_len(&self, which: Which) -> f32 {
        self.avg[which as usize]
    }
}

/// The same statistics for tantivy, which ranks the committed documents.
impl Bm25StatisticsProvider for IndexStats<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let overlay = self
            .which(field)
            .map_or(0, |w| self.overlay.tokens[w as usize]);
        Ok(self.searcher.total_num_tokens(field)? + overlay)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let overlay = match (self.which(term.field()), term.value().as_str()) {
            (Some(which), Some(text)) => self.overlay_df(which, text),
            _ => 0,
        };
        Ok(self.searcher.doc_freq(term)? + overlay)
    }
}

/// Statistics counted over a set of scanned documents (the degraded path).
pub(crate) struct ScanStats {
    pub docs: u64,
    pub df: HashMap<(Which, String), u64>,
    pub avg: [f32; 2],
}

impl Bm25Source for ScanStats {
    fn idf(&mut self, which: Which, term: &str) -> f32 {
        let df = self
            .df
            .get(&(which, term.to_string()))
            .copied()
            .unwrap_or(0);
        idf(self.docs, df)
    }

    fn avg_len(&self, which: Which) -> f32 {
        self.avg[which as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, tags: &[&str]) -> PreparedDoc {
        PreparedDoc::new(SearchDoc {
            kind: crate::model::RecordKind::Event,
            id: "x".into(),
            namespace: "n".into(),
            text: text.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            time: 0,
            weight: 0.5,
            superseded: false,
        })
    }

    fn hit(q: &Matcher, d: &PreparedDoc) -> bool {
        matches(q, d, &mut Vec::new())
    }

    #[test]
    fn boolean_grammar() {
        let q = parse_boolean("postgres AND (staging OR prod) NOT mysql tag:db").unwrap();
        let d = doc("Postgres 16 runs staging", &["db"]);
        assert!(hit(&q, &d));
        assert!(!hit(
            &q,
            &doc("Postgres 16 runs staging and mysql", &["db"])
        ));
        assert!(!hit(&q, &doc("Postgres 16 runs staging", &[])));
        assert!(hit(&parse_boolean("\"runs staging\" -mysql").unwrap(), &d));
        assert!(!hit(&parse_boolean("\"staging runs\"").unwrap(), &d));
        for bad in [
            "",
            "(postgres",
            "\"open",
            "NOT postgres",
            "the",
            "AND x",
            "tag:",
        ] {
            assert!(parse_boolean(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn prefix_fuzzy_and_phrase_match_prepared_docs() {
        let d = doc("We deployed the Postgres server to staging", &[]);
        assert!(hit(&Matcher::as_you_type("postgres ser").unwrap(), &d));
        assert!(hit(&Matcher::as_you_type("deplo").unwrap(), &d));
        assert!(hit(&Matcher::as_you_type("servers").unwrap(), &d));
        assert!(!hit(&Matcher::as_you_type("theory").unwrap(), &d));
        assert!(!hit(&Matcher::as_you_type("mysq").unwrap(), &d));
        assert!(hit(&Matcher::fuzzy("postgress", None).unwrap(), &d));
        assert!(hit(&Matcher::fuzzy("stagign", None).unwrap(), &d));
        assert!(!hit(&Matcher::fuzzy("mysql", None).unwrap(), &d));
        assert!(hit(&Matcher::phrase("postgres servers").unwrap(), &d));
        assert!(!hit(&Matcher::phrase("server postgres").unwrap(), &d));
    }
}
