//! The text analyzers, used for indexing and for queries alike.
//!
//! - `engram_en` (the `text` field): split on non-alphanumerics, drop absurdly
//!   long tokens, lower-case, drop English stop words (so "the" never blocks a
//!   match), stem ("deploys" finds "deployed"). Ranked, phrase and boolean search.
//! - `engram_raw` (the `text_raw` field): the same words lower-cased but neither
//!   stemmed nor filtered, for prefix (as-you-type) and fuzzy (typo) matching,
//!   which must compare what the user typed with the words as written.

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TokenStream,
};

pub(crate) const NAME: &str = "engram_en";
pub(crate) const RAW_NAME: &str = "engram_raw";
pub(crate) const NGRAM_NAME: &str = "engram_trigram";
/// Substring search looks for every 3-character piece of the query.
pub(crate) const NGRAM: usize = 3;
/// Tokens longer than this (base64 blobs, hashes) are not indexed.
const MAX_TOKEN_BYTES: usize = 40;

pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(
            StopWordFilter::new(Language::English).expect("English stop words ship with tantivy"),
        )
        .filter(Stemmer::new(Language::English))
        .build()
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

/// The distinct lower-cased 3-character pieces of `text` (none when shorter).
pub(crate) fn trigrams(text: &str) -> Vec<String> {
    let mut a = ngram_analyzer();
    let mut stream = a.token_stream(text);
    let mut out: Vec<String> = Vec::new();
    while stream.advance() {
        let t = &stream.token().text;
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// Analyzed terms of `text`, in order, with repeats.
pub(crate) fn terms_with_repeats(text: &str) -> Vec<String> {
    positioned_terms(text).into_iter().map(|(_, t)| t).collect()
}

/// Analyzed terms of `text` with their word positions (stop words leave gaps,
/// so a phrase query keeps the distance between the words it names).
pub(crate) fn positioned_terms(text: &str) -> Vec<(usize, String)> {
    let mut a = analyzer();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        let t = stream.token();
        out.push((t.position, t.text.clone()));
    }
    out
}

/// Lower-cased words of `text` as written, in order, with repeats.
pub(crate) fn raw_words(text: &str) -> Vec<String> {
    raw_tokens(text).into_iter().map(|(_, _, w)| w).collect()
}

/// Lower-cased words with their byte offsets in `text`: (from, to, word).
pub(crate) fn raw_tokens(text: &str) -> Vec<(usize, usize, String)> {
    let mut a = raw_analyzer();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        let t = stream.token();
        out.push((t.offset_from, t.offset_to, t.text.clone()));
    }
    out
}

/// Words that shape a question rather than say what it is about: question
/// words, auxiliaries, pronouns and the phrasing of asking ("tell me", "do you
/// remember"). Stemming leaves them as they are, so they are not stop words:
/// a document may be about "what we did".
const QUESTION_WORDS: &[&str] = &[
    "what",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "whose",
    "why",
    "how",
    "do",
    "does",
    "did",
    "done",
    "doing",
    "have",
    "has",
    "had",
    "having",
    "am",
    "were",
    "been",
    "being",
    "can",
    "could",
    "would",
    "should",
    "shall",
    "may",
    "might",
    "must",
    "i",
    "me",
    "my",
    "mine",
    "you",
    "your",
    "yours",
    "he",
    "him",
    "his",
    "she",
    "her",
    "hers",
    "we",
    "us",
    "our",
    "ours",
    "them",
    "its",
    "s",
    "ever",
    "tell",
    "know",
    "remember",
    "recall",
    "anything",
    "something",
    "any",
    "some",
    "about",
    "from",
    "up",
    "out",
    "so",
    "just",
];

/// Whether a word (lower-cased, as written) only shapes a question.
pub(crate) fn is_question_word(word: &str) -> bool {
    QUESTION_WORDS.contains(&word)
}

/// The analyzed term of one word: `None` for a stop word.
pub(crate) fn stem(word: &str) -> Option<String> {
    terms_with_repeats(word).into_iter().next()
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
