//! What every list and search shares: the tag and time window, pages and
//! their cursors, answer budgets, batch limits, and running answer-building
//! work off the runtime.
//!
//! Inputs embed these with `#[serde(flatten)]`: unknown fields are refused by
//! the input schema check before decoding (`registry::Entry::call`), so the
//! types need not `deny_unknown_fields`, which serde cannot combine with
//! `flatten`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{OpCtx, check_id, cursor, normalize_tags, page_size};
use crate::error::OpError;
use crate::model::Micros;
use crate::store::{Order, Records};
use crate::timespec::TimeSpec;

// (Not a doc comment: schemars would copy it into every input that flattens it.)
// Which records, by tags and time. `since`/`until` always bound the record's
// own time: when an event happened, since when a fact holds, when an entity
// last changed.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct Window {
    /// Only records with all these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only records from this time on (events: occurred_at, facts: valid_from; RFC 3339, "2h ago").
    #[serde(default, deserialize_with = "named::since")]
    pub since: Option<TimeSpec>,
    /// Only records from before this time.
    #[serde(default, deserialize_with = "named::until")]
    pub until: Option<TimeSpec>,
}

/// A checked [`Window`]: tags normalised, times in microseconds, `since`
/// before `until`.
#[derive(Debug, Clone, Default)]
pub struct Span {
    pub tags: Vec<String>,
    pub since: Option<Micros>,
    pub until: Option<Micros>,
}

impl Window {
    pub fn check(self, cx: &OpCtx) -> Result<Span, OpError> {
        if let (Some(s), Some(u)) = (self.since, self.until)
            && s.micros() >= u.micros()
        {
            return Err(OpError::invalid(format!(
                "`since` ({}) is not before `until` ({}): swap them or widen the range",
                s.0.to_rfc3339(),
                u.0.to_rfc3339()
            )));
        }
        Ok(Span {
            tags: normalize_tags(self.tags, cx.limits())?,
            since: self.since.map(TimeSpec::micros),
            until: self.until.map(TimeSpec::micros),
        })
    }
}

// (Not a doc comment: schemars would copy it into every input that flattens it.)
// One page of a list: its size and where it resumes.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct Page {
    /// Most items (default 20).
    #[serde(default, deserialize_with = "named::limit")]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// (Not a doc comment: schemars would copy it into every input that flattens it.)
// One page of ranked hits: a [`Page`] with a budget for the answer's size.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct HitPage {
    #[serde(flatten)]
    pub page: Page,
    /// Most characters to answer with; the rest goes to the next page.
    #[serde(default, deserialize_with = "named::max_chars")]
    pub max_chars: Option<usize>,
}

/// Decoders that name their field in errors: serde loses the path to a field
/// of a flattened struct, and an agent must learn which argument to fix. (Type
/// errors the input schema catches never get here; these are the values only
/// decoding refuses: a time it cannot read, a number too large for a count.)
mod named {
    use serde::{Deserialize, Deserializer, de::Error};

    fn named<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        field: &str,
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<T>::deserialize(d).map_err(|e| D::Error::custom(format!("`{field}`: {e}")))
    }

    macro_rules! fields {
        ($($field:ident: $ty:ty),*) => {$(
            pub fn $field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
                named(stringify!($field), d)
            }
        )*};
    }

    fields!(
        since: crate::timespec::TimeSpec,
        until: crate::timespec::TimeSpec,
        limit: usize,
        max_chars: usize
    );
}

/// The page arguments an input embeds: a list's [`Page`], or a search's
/// [`HitPage`] with its budget.
pub trait PageArgs {
    fn split(&mut self) -> (&mut Page, Option<usize>);
}

impl PageArgs for Page {
    fn split(&mut self) -> (&mut Page, Option<usize>) {
        (self, None)
    }
}

impl PageArgs for HitPage {
    fn split(&mut self) -> (&mut Page, Option<usize>) {
        (&mut self.page, self.max_chars)
    }
}

/// Takes the cursor out of `input` (it is not part of what defines the list)
/// and returns it with the page size, the budget and the fingerprint of the
/// remaining arguments, which a cursor must match.
fn take_page<I: Serialize, P: PageArgs>(
    cx: &OpCtx,
    input: &mut I,
    page: fn(&mut I) -> &mut P,
) -> Result<(Option<String>, usize, Option<usize>, String), OpError> {
    let (args, max_chars) = page(input).split();
    let limit = page_size(args.limit, cx.limits())?;
    let cursor_arg = args.cursor.take();
    check_max_chars(max_chars)?;
    Ok((cursor_arg, limit, max_chars, cursor::fingerprint(&*input)))
}

/// Decodes a cursor of ours and checks it continues a call with these arguments.
fn resume<C: for<'de> Deserialize<'de>>(
    cx: &OpCtx,
    cursor_arg: Option<String>,
    fingerprint: &str,
    fingerprint_of: impl Fn(&C) -> &str,
) -> Result<Option<C>, OpError> {
    let Some(c) = cursor_arg else {
        return Ok(None);
    };
    let c: C = cursor::decode(cx, &c)?;
    if fingerprint_of(&c) != fingerprint {
        return Err(cursor::mismatch());
    }
    Ok(Some(c))
}

#[derive(Serialize, Deserialize)]
struct OffsetCursor {
    o: usize,
    f: String,
}

#[derive(Serialize, Deserialize)]
struct KeysetCursor {
    t: i64,
    id: String,
    f: String,
}

/// A page of a ranked search, resumed by offset.
pub struct Offsets {
    pub offset: usize,
    pub limit: usize,
    max_chars: Option<usize>,
    fingerprint: String,
}

/// A page's hits as answered: those that fit the budget, whether the budget
/// cut it, and the cursor of the next page.
pub struct PageOf<T> {
    pub hits: Vec<T>,
    pub truncated: bool,
    pub next_cursor: Option<String>,
}

/// One page of ranked hits, as the searches answer it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Hits<T> {
    pub hits: Vec<T>,
    /// True when the search index was unavailable and the answer came from a
    /// slower scan of the store (same matches; scores may differ slightly).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// True when `max_chars` cut this page short; `next_cursor` continues it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Pass as `cursor` with the same arguments for more hits. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Hits<T> {
    /// The answer to a page of hits, `degraded` when they came from the store scan.
    pub fn of(page: PageOf<T>, degraded: bool) -> Hits<T> {
        Hits {
            hits: page.hits,
            degraded,
            truncated: page.truncated,
            next_cursor: page.next_cursor,
        }
    }
}

/// What a delete by ids did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    pub deleted: Vec<String>,
    /// Ids that matched nothing in this namespace (nothing was done for them).
    pub not_found: Vec<String>,
}

impl Offsets {
    /// Checks the page size and budget, takes the cursor out of `input` and
    /// resumes it: a cursor only continues a call with the same arguments.
    pub fn start<I: Serialize, P: PageArgs>(
        cx: &OpCtx,
        input: &mut I,
        page: fn(&mut I) -> &mut P,
    ) -> Result<Offsets, OpError> {
        let (cursor_arg, limit, max_chars, fingerprint) = take_page(cx, input, page)?;
        let mut page = Offsets::resume(cx, cursor_arg, limit, fingerprint)?;
        page.max_chars = max_chars;
        Ok(page)
    }

    /// Resumes a page of arguments the caller took apart itself: `fingerprint`
    /// is of the arguments without the cursor.
    pub fn resume(
        cx: &OpCtx,
        cursor_arg: Option<String>,
        limit: usize,
        fingerprint: String,
    ) -> Result<Offsets, OpError> {
        let resumed = resume(cx, cursor_arg, &fingerprint, |c: &OffsetCursor| &c.f)?;
        Ok(Offsets {
            offset: resumed.map_or(0, |c| c.o),
            limit,
            max_chars: None,
            fingerprint,
        })
    }

    /// The cursor that continues after `shown` more items.
    pub fn cursor_after(self, cx: &OpCtx, shown: usize) -> String {
        cursor::encode(
            cx,
            &OffsetCursor {
                o: self.offset + shown,
                f: self.fingerprint,
            },
        )
    }

    /// The answer to this page: `hits` cut to the budget, and a cursor when
    /// `more` hits exist past them or the budget cut some.
    pub fn finish<T: Serialize>(self, cx: &OpCtx, hits: Vec<T>, more: bool) -> PageOf<T> {
        let (hits, truncated) = fit_budget(hits, self.max_chars);
        let next_cursor = (more || truncated).then(|| self.cursor_after(cx, hits.len()));
        PageOf {
            hits,
            truncated,
            next_cursor,
        }
    }
}

/// A page of a list in a stable order, resumed after the last item's
/// (time, id) key.
pub struct Keyset {
    /// Resume after this key (`None`: the first page).
    pub after: Option<(Micros, String)>,
    pub limit: usize,
    fingerprint: String,
}

impl Keyset {
    pub fn start<I: Serialize>(
        cx: &OpCtx,
        input: &mut I,
        page: fn(&mut I) -> &mut Page,
    ) -> Result<Keyset, OpError> {
        let (cursor_arg, limit, _, fingerprint) = take_page(cx, input, page)?;
        Keyset::resume(cx, cursor_arg, limit, fingerprint)
    }

    /// Resumes a page of arguments the caller took apart itself: `fingerprint`
    /// is of the arguments without the cursor.
    pub fn resume(
        cx: &OpCtx,
        cursor_arg: Option<String>,
        limit: usize,
        fingerprint: String,
    ) -> Result<Keyset, OpError> {
        let resumed = resume(cx, cursor_arg, &fingerprint, |c: &KeysetCursor| &c.f)?;
        Ok(Keyset {
            after: resumed.map(|c| (c.t, c.id)),
            limit,
            fingerprint,
        })
    }

    /// The cursor that resumes after the item with this (time, id) key.
    pub fn cursor_after(self, cx: &OpCtx, (t, id): (Micros, String)) -> String {
        cursor::encode(
            cx,
            &KeysetCursor {
                t,
                id,
                f: self.fingerprint,
            },
        )
    }

    /// This page of `records` matching `filter` in `order`, and the cursor
    /// after it when more exist.
    pub async fn fetch<T, F, P>(
        self,
        cx: &OpCtx,
        records: Records<'_, T, F, P>,
        filter: F,
        order: Order,
    ) -> Result<(Vec<T>, Option<String>), OpError>
    where
        T: Send + 'static,
        F: Send + 'static,
        P: Send + 'static,
    {
        let after = self.after.clone();
        let mut items = records
            .list(cx.namespace(), filter, order, after, self.limit + 1)
            .await?;
        let next_cursor = self.finish(cx, &mut items, |r| records.key_of(r));
        Ok((items, next_cursor))
    }

    /// Cuts `items` (fetched with `limit + 1`) to the page, and the cursor
    /// after its last item when more exist. `key` gives an item's (time, id).
    pub fn finish<T>(
        self,
        cx: &OpCtx,
        items: &mut Vec<T>,
        key: impl Fn(&T) -> (Micros, String),
    ) -> Option<String> {
        if items.len() <= self.limit {
            return None;
        }
        items.truncate(self.limit);
        let last = key(items.last()?);
        Some(self.cursor_after(cx, last))
    }
}

/// Keeps the leading hits whose JSON fits in `max_chars` (always at least one,
/// so paging moves on). Returns the hits kept and whether some were cut.
pub fn fit_budget<T: Serialize>(hits: Vec<T>, max_chars: Option<usize>) -> (Vec<T>, bool) {
    let Some(budget) = max_chars else {
        return (hits, false);
    };
    let total = hits.len();
    let mut used = 0;
    let mut kept = Vec::with_capacity(hits.len());
    for hit in hits {
        let size = serde_json::to_string(&hit).map_or(0, |s| s.len() + 1);
        if !kept.is_empty() && used + size > budget {
            break;
        }
        used += size;
        kept.push(hit);
    }
    let cut = kept.len() < total;
    (kept, cut)
}

fn check_max_chars(max_chars: Option<usize>) -> Result<(), OpError> {
    /// Smaller budgets cannot hold even one hit's id and snippet.
    const MIN_MAX_CHARS: usize = 200;
    match max_chars {
        Some(n) if n < MIN_MAX_CHARS => Err(OpError::invalid(format!(
            "`max_chars` is {n}: give at least {MIN_MAX_CHARS}, or leave it out for no budget"
        ))),
        _ => Ok(()),
    }
}

/// Checks a batch argument: not empty, not over the batch limit.
pub fn check_batch<T>(field: &str, items: &[T], cx: &OpCtx) -> Result<(), OpError> {
    let max = cx.limits().max_batch_items;
    if items.is_empty() {
        return Err(OpError::invalid(format!(
            "`{field}` is empty: pass at least one"
        )));
    }
    if items.len() > max {
        return Err(OpError::invalid(format!(
            "`{field}` has {} items, the limit is {max}: split it into several calls",
            items.len()
        )));
    }
    Ok(())
}

/// The ids a delete names, checked: within the batch limit, none blank, each
/// once in the order given (a repeat would otherwise come back as not found).
pub fn ids_to_delete(
    field: &str,
    ids: Vec<String>,
    what: &str,
    cx: &OpCtx,
) -> Result<Vec<String>, OpError> {
    check_batch(field, &ids, cx)?;
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut once = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        check_id(format_args!("{field}[{i}]"), &id, what)?;
        if seen.insert(id.clone()) {
            once.push(id);
        }
    }
    Ok(once)
}

/// Checks a batch and prepares every item first, naming the item that is
/// wrong (`facts[3]: …`): a batch is written whole or not at all.
pub fn prepare_batch<T, U>(
    cx: &OpCtx,
    field: &str,
    items: Vec<T>,
    prepare: impl Fn(T) -> Result<U, OpError>,
) -> Result<Vec<U>, OpError> {
    check_batch(field, &items, cx)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            prepare(item).map_err(|err| match err {
                OpError::InvalidInput(m) => OpError::invalid(format!("{field}[{i}]: {m}")),
                other => other,
            })
        })
        .collect()
}

/// Runs CPU-heavy answer building (snippets over long texts) on the blocking
/// pool, so one big answer never stalls the runtime's workers.
pub async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| OpError::from_join("building the answer", e))
}
