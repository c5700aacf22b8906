//! Changes the store has committed and the index has not, keyed by record id.
//! The newest change of a record wins; a commit prunes what it made durable.

use std::collections::HashMap;
use std::sync::Arc;

use super::SearchQuery;
use super::query::{PreparedDoc, Which};
use crate::model::{Change, RecordKind, SearchDoc};

/// A pending document with its analyzed forms, computed once when it arrives
/// rather than at every search. Shared by `Arc` so a snapshot copies pointers.
pub(crate) type OverlayDoc = PreparedDoc;

struct Pending {
    seq: i64,
    namespace: String,
    kind: RecordKind,
    /// `None`: deleted.
    doc: Option<Arc<OverlayDoc>>,
}

#[derive(Default)]
pub(crate) struct Overlay {
    entries: HashMap<String, Pending>,
    counts: Counts,
}

/// What BM25 needs to know of the overlay's documents, kept as they come and
/// go: ranking adds it to the committed index's statistics, so a record just
/// stored is weighed against everything stored, not only what was committed
/// (after a bulk load into a fresh store, nothing was).
#[derive(Default)]
struct Counts {
    docs: u64,
    /// Tokens per field (`Which` as index).
    tokens: [u64; 2],
    /// Documents holding each term, per field (`Which` as index).
    df: [HashMap<String, u64>; 2],
}

impl Counts {
    fn add(&mut self, d: &PreparedDoc) {
        self.docs += 1;
        self.tokens[Which::Stemmed as usize] += d.stems.len() as u64;
        self.tokens[Which::Raw as usize] += d.raw.len() as u64;
        for (which, term) in distinct_terms(d) {
            // A term's string is copied only the first time the overlay sees it.
            match self.df[which as usize].get_mut(term) {
                Some(n) => *n += 1,
                None => {
                    self.df[which as usize].insert(term.to_string(), 1);
                }
            }
        }
    }

    fn remove(&mut self, d: &PreparedDoc) {
        self.docs = self.docs.saturating_sub(1);
        // Every removal matches an earlier add of the same document.
        let stemmed = &mut self.tokens[Which::Stemmed as usize];
        debug_assert!(*stemmed >= d.stems.len() as u64);
        *stemmed = stemmed.saturating_sub(d.stems.len() as u64);
        let raw = &mut self.tokens[Which::Raw as usize];
        *raw = raw.saturating_sub(d.raw.len() as u64);
        for (which, term) in distinct_terms(d) {
            let df = &mut self.df[which as usize];
            if let Some(n) = df.get_mut(term) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    df.remove(term);
                }
            }
        }
    }
}

/// The distinct terms of a document, per field, borrowed from it.
fn distinct_terms(d: &PreparedDoc) -> std::collections::HashSet<(Which, &str)> {
    let stems = d.stems.iter().map(|(_, t)| (Which::Stemmed, t.as_str()));
    let raw = d.raw.iter().map(|w| (Which::Raw, w.as_str()));
    stems.chain(raw).collect()
}

/// The overlay's share of the corpus statistics for one query's terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct OverlayStats {
    pub docs: u64,
    pub tokens: [u64; 2],
    pub df: HashMap<(Which, String), u64>,
}

impl Overlay {
    pub(crate) fn apply(&mut self, changes: &[Change]) {
        for c in changes.iter().filter(|c| c.kind.searchable()) {
            let newer = self.entries.get(&c.id).is_none_or(|p| p.seq <= c.seq);
            if !newer {
                continue;
            }
            let doc = c
                .doc
                .as_ref()
                .map(|d| Arc::new(PreparedDoc::new(d.clone())));
            if let Some(d) = &doc {
                self.counts.add(d);
            }
            let pending = Pending {
                seq: c.seq,
                namespace: c.namespace.clone(),
                kind: c.kind,
                doc,
            };
            if let Some(old) = self.entries.insert(c.id.clone(), pending)
                && let Some(d) = old.doc
            {
                self.counts.remove(&d);
            }
        }
    }

    /// Forgets every change numbered `upto` or lower: the index now holds them.
    pub(crate) fn prune(&mut self, upto: i64) {
        let counts = &mut self.counts;
        self.entries.retain(|_, p| {
            let keep = p.seq > upto;
            if let (false, Some(d)) = (keep, &p.doc) {
                counts.remove(d);
            }
            keep
        });
    }

    /// The overlay's statistics for these terms.
    pub(crate) fn stats_for(&self, terms: &[(Which, String)]) -> OverlayStats {
        OverlayStats {
            docs: self.counts.docs,
            tokens: self.counts.tokens,
            df: terms
                .iter()
                .filter_map(|k| {
                    let n = self.counts.df[k.0 as usize].get(&k.1)?;
                    Some((k.clone(), *n))
                })
                .collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The pending records of one namespace and some kinds: id → new doc (None: deleted).
    pub(crate) fn snapshot(
        &self,
        namespace: &str,
        kinds: &[RecordKind],
    ) -> HashMap<String, Option<Arc<OverlayDoc>>> {
        self.entries
            .iter()
            .filter(|(_, p)| kinds.contains(&p.kind) && p.namespace == namespace)
            .map(|(id, p)| (id.clone(), p.doc.clone()))
            .collect()
    }
}

/// The non-text part of a query, applied to an overlay or scanned document.
pub(crate) fn passes_filters(doc: &SearchDoc, q: &SearchQuery) -> bool {
    (q.include_superseded || !doc.superseded)
        && !q.exclude_ids.contains(&doc.id)
        && q.since.is_none_or(|t| doc.time >= t)
        && q.until.is_none_or(|t| doc.time < t)
        && q.min_weight.is_none_or(|w| doc.weight >= w)
        && q.tags.iter().all(|t| doc.tags.contains(t))
}
