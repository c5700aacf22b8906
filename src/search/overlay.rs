//! Changes the store has committed and the index has not, keyed by record id.
//! The newest change of a record wins; a commit prunes what it made durable.

use std::collections::HashMap;
use std::sync::Arc;

use super::SearchQuery;
use super::query::PreparedDoc;
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
}

impl Overlay {
    pub(crate) fn apply(&mut self, changes: &[Change]) {
        for c in changes.iter().filter(|c| c.kind.searchable()) {
            let newer = self.entries.get(&c.id).is_none_or(|p| p.seq <= c.seq);
            if newer {
                self.entries.insert(
                    c.id.clone(),
                    Pending {
                        seq: c.seq,
                        namespace: c.namespace.clone(),
                        kind: c.kind,
                        doc: c
                            .doc
                            .as_ref()
                            .map(|d| Arc::new(PreparedDoc::new(d.clone()))),
                    },
                );
            }
        }
    }

    /// Forgets every change numbered `upto` or lower: the index now holds them.
    pub(crate) fn prune(&mut self, upto: i64) {
        self.entries.retain(|_, p| p.seq > upto);
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
