//! The one text analyzer, used for indexing and for queries alike: split on
//! non-alphanumerics, drop absurdly long tokens, lower-case, drop English stop
//! words (so "the" never blocks a match), stem ("deploys" finds "deployed").

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TokenStream,
};

pub(crate) const NAME: &str = "engram_en";
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

/// Analyzed terms of `text`, in order, with repeats.
pub(crate) fn terms_with_repeats(text: &str) -> Vec<String> {
    let mut a = analyzer();
    let mut stream = a.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
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
}
