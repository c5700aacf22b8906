//! The text analyzers, used for indexing and for queries alike.
//!
//! - `engram_en2` (the `text` field): split on non-alphanumerics, also keeping
//!   each hyphenated word whole ("de-stress" is "de", "stress" and "destress",
//!   so it finds "destress" and back), irregular verbs as their base form
//!   ("went" is "go"), drop absurdly long tokens, lower-case, drop English stop
//!   words (so "the" never blocks a match), stem ("deploys" finds "deployed").
//!   Ranked, phrase and boolean search. (Renamed from `engram_en` when it
//!   learned compounds and verbs: an index made with the old one no longer
//!   matches the schema and is rebuilt from the store.)
//! - `engram_raw` (the `text_raw` field): the same words lower-cased but neither
//!   stemmed nor filtered, for prefix (as-you-type) and fuzzy (typo) matching,
//!   which must compare what the user typed with the words as written.

use std::cell::RefCell;

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    Token, TokenStream, Tokenizer,
};

pub(crate) const NAME: &str = "engram_en2";
pub(crate) const RAW_NAME: &str = "engram_raw";
pub(crate) const NGRAM_NAME: &str = "engram_trigram";
/// Substring search looks for every 3-character piece of the query.
pub(crate) const NGRAM: usize = 3;
/// Tokens longer than this (base64 blobs, hashes) are not indexed.
const MAX_TOKEN_BYTES: usize = 40;

pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer)
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(
            StopWordFilter::new(Language::English).expect("English stop words ship with tantivy"),
        )
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Words as `SimpleTokenizer` splits them (runs of alphanumerics), plus each
/// hyphenated word joined (at the position of its last part), with irregular
/// verb forms replaced by their base form.
#[derive(Clone)]
struct WordTokenizer;

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = Words;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Words {
        Words {
            tokens: words(text),
            next: 0,
        }
    }
}

struct Words {
    tokens: Vec<Token>,
    next: usize,
}

impl TokenStream for Words {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

fn words(text: &str) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    // The hyphenated word being read: where it starts and its parts so far.
    let mut compound: Option<(usize, String, usize)> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((from, c)) = chars.next() {
        if !c.is_alphanumeric() {
            continue;
        }
        let mut to = from + c.len_utf8();
        while let Some(&(i, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            to = i + c.len_utf8();
            chars.next();
        }
        let word = &text[from..to];
        let position = out.len();
        out.push(Token {
            offset_from: from,
            offset_to: to,
            position,
            text: base_form(word).unwrap_or(word).to_string(),
            position_length: 1,
        });
        let (start, mut joined, parts) = compound.take().unwrap_or((from, String::new(), 0));
        joined.push_str(word);
        let hyphen_next = text[to..].starts_with('-')
            && text[to + 1..].starts_with(|c: char| c.is_alphanumeric());
        if hyphen_next {
            compound = Some((start, joined, parts + 1));
        } else if parts > 0 {
            // The whole word spans its parts: that marks it as the whole.
            out.push(Token {
                offset_from: start,
                offset_to: to,
                position,
                text: joined,
                position_length: parts + 1,
            });
        }
    }
    // Compounds share their last part's position: renumber the rest densely.
    let mut position = 0;
    for i in 0..out.len() {
        if i > 0 && out[i].offset_from < out[i - 1].offset_to {
            out[i].position = out[i - 1].position;
        } else {
            out[i].position = position;
            position += 1;
        }
    }
    out
}

/// Irregular past forms of common verbs and their base form: "went" finds
/// "go". Forms that are mostly other words ("left", "saw", "fell", "won")
/// are left alone.
#[rustfmt::skip]
const IRREGULAR: &[(&str, &str)] = &[
    ("went", "go"), ("gone", "go"), ("ran", "run"), ("seen", "see"), ("ate", "eat"),
    ("eaten", "eat"), ("took", "take"), ("taken", "take"), ("gave", "give"), ("given", "give"),
    ("came", "come"), ("made", "make"), ("got", "get"), ("gotten", "get"), ("bought", "buy"),
    ("brought", "bring"), ("thought", "think"), ("told", "tell"), ("said", "say"),
    ("found", "find"), ("felt", "feel"), ("kept", "keep"), ("met", "meet"), ("paid", "pay"),
    ("sent", "send"), ("spent", "spend"), ("built", "build"), ("taught", "teach"),
    ("caught", "catch"), ("wrote", "write"), ("written", "write"), ("drove", "drive"),
    ("driven", "drive"), ("rode", "ride"), ("ridden", "ride"), ("swam", "swim"),
    ("swum", "swim"), ("began", "begin"), ("begun", "begin"), ("sang", "sing"),
    ("sung", "sing"), ("drank", "drink"), ("flew", "fly"), ("flown", "fly"), ("knew", "know"),
    ("known", "know"), ("grew", "grow"), ("grown", "grow"), ("threw", "throw"),
    ("thrown", "throw"), ("broke", "break"), ("broken", "break"), ("spoke", "speak"),
    ("spoken", "speak"), ("chose", "choose"), ("chosen", "choose"), ("forgot", "forget"),
    ("forgotten", "forget"), ("held", "hold"), ("led", "lead"), ("lost", "lose"),
    ("sold", "sell"), ("stood", "stand"), ("understood", "understand"), ("woke", "wake"),
    ("woken", "wake"), ("wore", "wear"), ("worn", "wear"), ("slept", "sleep"),
    ("heard", "hear"), ("read", "read"), ("shot", "shoot"), ("fought", "fight"),
    ("sought", "seek"), ("hung", "hang"), ("hid", "hide"), ("hidden", "hide"), ("bit", "bite"),
    ("bitten", "bite"), ("shook", "shake"), ("shaken", "shake"), ("froze", "freeze"),
    ("frozen", "freeze"), ("stole", "steal"), ("stolen", "steal"), ("dug", "dig"),
    ("fed", "feed"), ("fled", "flee"), ("lent", "lend"), ("meant", "mean"), ("dealt", "deal"),
    ("bent", "bend"), ("sat", "sit"), ("slid", "slide"), ("spun", "spin"),
    ("struck", "strike"), ("swore", "swear"), ("tore", "tear"), ("torn", "tear"),
];

/// The base form of an irregular verb form (as written, any case).
fn base_form(word: &str) -> Option<&'static str> {
    if word.len() > 10 {
        return None;
    }
    IRREGULAR
        .iter()
        .find(|(form, _)| form.eq_ignore_ascii_case(word))
        .map(|(_, base)| *base)
}

pub(crate) fn raw_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .build()
}

/// Every 3-character piece of the text, lower-cased: the `text_ngram` field, which
/// finds entities containing a query as written (the reference server's rule)
/// without scanning them all.
pub(crate) fn ngram_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(
        tantivy::tokenizer::NgramTokenizer::all_ngrams(NGRAM, NGRAM)
            .expect("3..3 is a valid range"),
    )
    .filter(LowerCaser)
    .build()
}

thread_local! {
    // Built once per thread: building one (the stop-word set, the stemmer) cost
    // more than analyzing a short text, and snippets analyze every word of
    // every hit.
    static ANALYZER: RefCell<TextAnalyzer> = RefCell::new(analyzer());
    static RAW_ANALYZER: RefCell<TextAnalyzer> = RefCell::new(raw_analyzer());
    static NGRAM_ANALYZER: RefCell<TextAnalyzer> = RefCell::new(ngram_analyzer());
}

/// The distinct lower-cased 3-character pieces of `text` (none when shorter).
pub(crate) fn trigrams(text: &str) -> Vec<String> {
    NGRAM_ANALYZER.with_borrow_mut(|a| {
        let mut stream = a.token_stream(text);
        let mut out: Vec<String> = Vec::new();
        while stream.advance() {
            let t = &stream.token().text;
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    })
}

/// Analyzed terms of `text`, in order, with repeats.
pub(crate) fn terms_with_repeats(text: &str) -> Vec<String> {
    positioned_terms(text).into_iter().map(|(_, t)| t).collect()
}

/// Analyzed terms of `text` with their word positions (stop words leave gaps,
/// so a phrase query keeps the distance between the words it names).
pub(crate) fn positioned_terms(text: &str) -> Vec<(usize, String)> {
    analyzed(text).into_iter().map(|(p, t, _)| (p, t)).collect()
}

/// Analyzed terms of `text` with their positions, and whether each is the
/// whole form of a hyphenated word.
fn analyzed(text: &str) -> Vec<(usize, String, bool)> {
    ANALYZER.with_borrow_mut(|a| {
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            let t = stream.token();
            out.push((t.position, t.text.clone(), t.position_length > 1));
        }
        out
    })
}

/// Analyzed terms of `text` as a query names words: a hyphenated word's
/// parts, without its whole form.
pub(crate) fn query_positioned_terms(text: &str) -> Vec<(usize, String)> {
    analyzed(text)
        .into_iter()
        .filter(|(_, _, whole)| !whole)
        .map(|(p, t, _)| (p, t))
        .collect()
}

/// The whole forms of the hyphenated words of `text`, analyzed.
pub(crate) fn compounds(text: &str) -> Vec<String> {
    analyzed(text)
        .into_iter()
        .filter(|(_, _, whole)| *whole)
        .map(|(_, t, _)| t)
        .collect()
}

/// Lower-cased words of `text` as written, in order, with repeats.
pub(crate) fn raw_words(text: &str) -> Vec<String> {
    raw_tokens(text).into_iter().map(|(_, _, w)| w).collect()
}

/// Lower-cased words with their byte offsets in `text`: (from, to, word).
pub(crate) fn raw_tokens(text: &str) -> Vec<(usize, usize, String)> {
    RAW_ANALYZER.with_borrow_mut(|a| {
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            let t = stream.token();
            out.push((t.offset_from, t.offset_to, t.text.clone()));
        }
        out
    })
}

/// Words that shape a question rather than say what it is about: question
/// words, auxiliaries, pronouns and the phrasing of asking ("tell me", "do you
/// remember"). Stemming leaves them as they are, so they are not stop words:
/// a document may be about "what we did".
#[rustfmt::skip]
const QUESTION_WORDS: &[&str] = &[
    "what", "when", "where", "which", "who", "whom", "whose", "why", "how", "do", "does",
    "did", "done", "doing", "have", "has", "had", "having", "am", "were", "been", "being",
    "could", "would", "should", "shall", "might", "must", "i", "me", "my", "mine", "you",
    "your", "yours", "he", "him", "his", "she", "her", "hers", "we", "our", "ours", "them",
    "its", "s", "ever", "tell", "know", "remember", "recall", "anything", "something", "any",
    "some", "about", "from", "up", "out", "so", "just",
];

/// Whether an analyzed term is that of a word that only shapes a question.
pub(crate) fn is_question_term(term: &str) -> bool {
    static STEMS: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| QUESTION_WORDS.iter().filter_map(|w| stem(w)).collect());
    STEMS.contains(term)
}

/// The analyzed term of one word: `None` for a stop word.
pub(crate) fn stem(word: &str) -> Option<String> {
    // The first term only: snippets ask this of every word of every hit.
    ANALYZER.with_borrow_mut(|a| {
        let mut stream = a.token_stream(word);
        stream.advance().then(|| stream.token().text.clone())
    })
}

/// Distinct analyzed terms of `text`, in first-seen order.
pub(crate) fn terms(text: &str) -> Vec<String> {
    let mut out = terms_with_repeats(text);
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_lowercases_and_drops_stop_words() {
        assert_eq!(
            terms("The Deploys of the STAGING servers"),
            vec!["deploy", "stage", "server"]
        );
        assert!(terms("the of and").is_empty());
    }

    #[test]
    fn hyphenated_words_are_also_whole_and_irregular_verbs_are_their_base() {
        assert_eq!(terms("to de-stress"), vec!["de", "stress", "destress"]);
        assert_eq!(terms("I destress"), vec!["i", "destress"]);
        assert_eq!(
            positioned_terms("a state-of-the-art tool"),
            vec![
                (1, "state".to_string()),
                (4, "art".to_string()),
                (4, "stateoftheart".to_string()),
                (5, "tool".to_string())
            ]
        );
        assert_eq!(terms("we went hiking"), terms("we go hiking"));
        assert_eq!(
            query_positioned_terms("e-mail me"),
            vec![
                (0, "e".to_string()),
                (1, "mail".to_string()),
                (2, "me".to_string())
            ]
        );
        assert_eq!(
            compounds("an e-mail or a check-in"),
            vec!["email", "checkin"]
        );
        assert!(is_question_term("doe") && is_question_term("when") && !is_question_term("may"));
        assert_eq!(terms("Went"), vec!["go"]);
        assert_eq!(terms("a trailing- hyphen"), vec!["trail", "hyphen"]);
    }

    #[test]
    fn positions_keep_gaps_for_stop_words() {
        assert_eq!(
            positioned_terms("deploy to staging"),
            vec![(0, "deploy".to_string()), (2, "stage".to_string())]
        );
        assert_eq!(
            raw_words("The Postgres-Server"),
            vec!["the", "postgres", "server"]
        );
    }
}
