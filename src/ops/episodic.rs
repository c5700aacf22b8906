//! Episodic memory: events in time. Remember, recall (ranked text search), and
//! browse by time.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::listing::{Deleted, Keyset, Offsets, Page, Window, ids_to_delete, prepare_batch};
use super::{OpCtx, check_id, check_metadata, check_text, check_unit, normalize_tags, page_size};
use crate::error::OpError;
use crate::model::{Event, Micros, RecordKind};
use crate::search::{Matcher, SearchHit, SearchQuery};
use crate::store::{EventFilter, EventPatch, NewEvent, Order};
use crate::timespec::TimeSpec;

const DEFAULT_IMPORTANCE: f64 = 0.5;
const DEFAULT_RECENT: usize = 10;
const DEFAULT_AROUND: usize = 5;
/// A timeline never returns more buckets than this.
const MAX_TIMELINE_BUCKETS: usize = 1000;
/// How many matched ids a bulk forget reports back.
const FORGET_SAMPLE_IDS: usize = 20;

// ---------- shared pieces ----------

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventOutput {
    pub event: Event,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventsOutput {
    pub events: Vec<Event>,
    /// Pass this as `cursor` (with the same other arguments) for the next page.
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn filter(cx: &OpCtx, window: Window, min_importance: Option<f64>) -> Result<EventFilter, OpError> {
    if let Some(m) = min_importance {
        check_unit("min_importance", m)?;
    }
    let span = window.check(cx)?;
    Ok(EventFilter {
        since: span.since,
        until: span.until,
        tags: span.tags,
        min_importance,
        max_importance: None,
    })
}

/// What an id argument of this layer names.
const EVENT_ID: &str = "an event id";

// ---------- episodic_remember ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RememberInput {
    /// What happened, in plain words; name the things involved so a search finds it.
    pub content: String,
    /// Labels to filter by later, e.g. "deploy".
    #[serde(default)]
    pub tags: Vec<String>,
    /// 0.0 (trivial) to 1.0 (critical); default 0.5.
    pub importance: Option<f64>,
    /// When it happened, if not now (RFC 3339, "yesterday", "2h ago").
    pub occurred_at: Option<TimeSpec>,
    /// Extra JSON detail, kept as given, not searched.
    pub metadata: Option<Map<String, Value>>,
}

impl RememberInput {
    fn prepare(self, cx: &OpCtx) -> Result<NewEvent, OpError> {
        let limits = cx.limits();
        check_text("content", &self.content, limits.max_content_bytes)?;
        let importance = self.importance.unwrap_or(DEFAULT_IMPORTANCE);
        check_unit("importance", importance)?;
        let metadata = self.metadata.unwrap_or_default();
        check_metadata(&metadata, limits)?;
        Ok(NewEvent {
            content: self.content,
            tags: normalize_tags(self.tags, limits)?,
            importance,
            occurred_at: self.occurred_at.map(TimeSpec::micros),
            metadata,
        })
    }
}

operation!(Remember = "episodic_remember", RememberInput => EventOutput, episodic_remember);

async fn episodic_remember(cx: OpCtx, input: RememberInput) -> Result<EventOutput, OpError> {
    let new = input.prepare(&cx)?;
    let mut events = cx
        .store()
        .insert_events(cx.namespace(), &cx.session.id, vec![new])
        .await?;
    Ok(EventOutput {
        event: events.pop().expect("one event in, one out"),
    })
}

// ---------- episodic_remember_batch ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RememberBatchInput {
    /// The events to store, each shaped like episodic_remember's arguments. All
    /// are checked first; if any is invalid, none is stored.
    pub events: Vec<RememberInput>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RememberBatchOutput {
    pub count: usize,
    pub events: Vec<Event>,
}

operation!(RememberBatch = "episodic_remember_batch", RememberBatchInput => RememberBatchOutput, episodic_remember_batch);

async fn episodic_remember_batch(
    cx: OpCtx,
    input: RememberBatchInput,
) -> Result<RememberBatchOutput, OpError> {
    let prepared = prepare_batch(&cx, "events", input.events, |item| item.prepare(&cx))?;
    let events = cx
        .store()
        .insert_events(cx.namespace(), &cx.session.id, prepared)
        .await?;
    Ok(RememberBatchOutput {
        count: events.len(),
        events,
    })
}

// ---------- episodic_recall ----------

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct RecallInput {
    /// What to look for, in natural words; events need not hold every word.
    pub query: String,
    #[serde(flatten)]
    pub window: Window,
    /// Only events at least this important (0.0 to 1.0).
    pub min_importance: Option<f64>,
    #[serde(flatten)]
    pub page: Page,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RecallHit {
    /// Relevance (BM25); higher is better. Comparable within one answer only.
    /// A reply scores a share of its question's own score.
    pub score: f32,
    pub event: Event,
    /// Set when this event ranks as the reply to a matching question (the
    /// session's next event by occurred_at, within 10 minutes of the
    /// question, if the filters admit it) rather than for its own words: the
    /// question's id. Events stored by one call share a session; over
    /// stateless HTTP, separate calls do not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RecallOutput {
    pub hits: Vec<RecallHit>,
    /// True when the search index was unavailable and the answer came from a
    /// slower scan of the store (same matches; scores may differ slightly).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// Pass as `cursor` with the same query for more hits. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

operation!(Recall = "episodic_recall", RecallInput => RecallOutput, episodic_recall, degraded);

async fn episodic_recall(cx: OpCtx, mut input: RecallInput) -> Result<RecallOutput, OpError> {
    let page = Offsets::start(&cx, &mut input, |i| &mut i.page)?;
    check_text("query", &input.query, cx.limits().max_query_bytes)?;
    let f = filter(&cx, input.window, input.min_importance)?;
    let matcher = Matcher::words(&input.query).ok_or_else(|| {
        OpError::invalid(
            "`query` has only very common words (like \"the\", \"of\"): add a word that names \
             what you are looking for, or use episodic_list with filters",
        )
    })?;
    // Every page ranks the hits down to its end, so that follow-ups land on
    // the same page whichever page is asked.
    let depth = page.offset.saturating_add(page.limit);
    let searched = cx
        .app
        .search(SearchQuery {
            since: f.since,
            until: f.until,
            tags: f.tags.clone(),
            min_weight: f.min_importance,
            ..SearchQuery::new(cx.namespace(), vec![RecordKind::Event], matcher, depth)
        })
        .await?;
    let ranked = searched.results.hits;
    let ids = ranked.iter().map(|h| h.id.clone()).collect();
    let followed = cx
        .store()
        .events_with_replies(cx.namespace(), ids, is_question, FOLLOW_UP_WITHIN, f)
        .await?;
    let hits = with_follow_ups(&ranked, followed);
    let more = searched.results.has_more || hits.len() > depth;
    let hits = hits
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    let paged = page.finish(&cx, hits, more);
    Ok(RecallOutput {
        hits: paged.hits,
        degraded: searched.degraded,
        next_cursor: paged.next_cursor,
    })
}

/// A follow-up scores this share of the score of the hit it follows: below
/// 1, so that no follow-up outranks the hit it follows.
const FOLLOW_UP_WEIGHT: f32 = 0.7;
const _: () = assert!(FOLLOW_UP_WEIGHT > 0.0 && FOLLOW_UP_WEIGHT < 1.0);
/// How soon after a question its session's next event counts as its reply.
const FOLLOW_UP_WITHIN: Micros = 10 * 60 * 1_000_000;

/// Whether an event is a question, whose reply follows it: the turns of a
/// conversation an agent stores one by one. A question echoes the words of a
/// query about its subject; the reply, which holds the answer, often does not.
fn is_question(event: &Event) -> bool {
    event
        .content
        .trim_end()
        .ends_with(['?', '\u{ff1f}', '\u{061f}'])
}

/// The hits, ranked with their follow-ups (the replies to questions among
/// them): each event scores the larger of its own score and
/// [`FOLLOW_UP_WEIGHT`] times the own score of the hit it follows, so the reply
/// to a matching question ranks even when it shares no word with the query.
/// Ties go to the newest id, as in the search. `ranked` is the search's order;
/// `followed` the stored events (a hit deleted since the search is missing)
/// with their follow-ups.
///
/// The first n of this ranking are the first n of the whole ranking when
/// `ranked` is the search's first n: an event outside them, following none of
/// them, scores at most the n-th hit's score, and on a tie its id is older
/// (the property test below).
fn with_follow_ups(ranked: &[SearchHit], followed: Vec<(Event, Option<Event>)>) -> Vec<RecallHit> {
    let mut stored: HashMap<String, (Event, Option<Event>)> = followed
        .into_iter()
        .map(|(e, next)| (e.id.clone(), (e, next)))
        .collect();
    let mut hits = Vec::with_capacity(ranked.len() * 2);
    // (own score, reply) of each hit: a reply scores a share of its question's
    // own score, never of a score the question got as a reply itself.
    let mut next_of = Vec::with_capacity(ranked.len());
    for h in ranked {
        if let Some((event, next)) = stored.remove(&h.id) {
            next_of.push((h.score, next));
            hits.push(RecallHit {
                score: h.score,
                event,
                follows: None,
            });
        }
    }
    let mut place: HashMap<String, usize> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| (h.event.id.clone(), i))
        .collect();
    for (i, (own, next)) in next_of.into_iter().enumerate() {
        let Some(next) = next else { continue };
        let (score, follows) = (own * FOLLOW_UP_WEIGHT, hits[i].event.id.clone());
        match place.get(&next.id) {
            Some(&j) if hits[j].score >= score => {}
            Some(&j) => {
                hits[j].score = score;
                hits[j].follows = Some(follows);
            }
            None => {
                place.insert(next.id.clone(), hits.len());
                hits.push(RecallHit {
                    score,
                    event: next,
                    follows: Some(follows),
                });
            }
        }
    }
    // Ties as the search breaks them (newest id first): the order depends on
    // (score, id) alone, not on how deep the search went.
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| b.event.id.cmp(&a.event.id))
    });
    hits
}

// ---------- episodic_get ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetInput {
    /// The event's id.
    pub id: String,
}

operation!(Get = "episodic_get", GetInput => EventOutput, episodic_get);

async fn episodic_get(cx: OpCtx, input: GetInput) -> Result<EventOutput, OpError> {
    check_id("id", &input.id, EVENT_ID)?;
    let event = cx.store().events().get(cx.namespace(), &input.id).await?;
    Ok(EventOutput { event })
}

// ---------- episodic_list ----------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct ListInput {
    #[serde(flatten)]
    pub window: Window,
    /// Only events at least this important (0.0 to 1.0).
    pub min_importance: Option<f64>,
    /// "asc" (oldest first, the default) or "desc" (newest first).
    #[serde(default)]
    pub order: ListOrder,
    #[serde(flatten)]
    pub page: Page,
}

operation!(List = "episodic_list", ListInput => EventsOutput, episodic_list);

async fn episodic_list(cx: OpCtx, mut input: ListInput) -> Result<EventsOutput, OpError> {
    let page = Keyset::start(&cx, &mut input, |i| &mut i.page)?;
    let order = match input.order {
        ListOrder::Asc => Order::Asc,
        ListOrder::Desc => Order::Desc,
    };
    let f = filter(&cx, input.window, input.min_importance)?;
    let (events, next_cursor) = page.fetch(&cx, cx.store().events(), f, order).await?;
    Ok(EventsOutput {
        events,
        next_cursor,
    })
}

// ---------- episodic_recent ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RecentInput {
    /// How many events (default 10).
    pub limit: Option<usize>,
    /// Only events with all these tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

operation!(Recent = "episodic_recent", RecentInput => EventsOutput, episodic_recent);

async fn episodic_recent(cx: OpCtx, input: RecentInput) -> Result<EventsOutput, OpError> {
    let limit = page_size(Some(input.limit.unwrap_or(DEFAULT_RECENT)), cx.limits())?;
    let window = Window {
        tags: input.tags,
        ..Window::default()
    };
    let f = filter(&cx, window, None)?;
    let events = cx
        .store()
        .events()
        .list(cx.namespace(), f, Order::Desc, None, limit)
        .await?;
    Ok(EventsOutput {
        events,
        next_cursor: None,
    })
}

// ---------- episodic_timeline ----------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    #[default]
    Day,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TimelineInput {
    #[serde(flatten)]
    pub window: Window,
    /// "hour" or "day" (UTC; the default).
    #[serde(default)]
    pub bucket: Bucket,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TimelineBucket {
    /// Start of the bucket (UTC).
    pub start: chrono::DateTime<chrono::Utc>,
    pub count: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TimelineOutput {
    pub bucket: Bucket,
    /// Buckets holding at least one event, oldest first.
    pub buckets: Vec<TimelineBucket>,
    pub total: u64,
}

operation!(Timeline = "episodic_timeline", TimelineInput => TimelineOutput, episodic_timeline);

async fn episodic_timeline(cx: OpCtx, input: TimelineInput) -> Result<TimelineOutput, OpError> {
    let width: i64 = match input.bucket {
        Bucket::Hour => 3_600_000_000,
        Bucket::Day => 86_400_000_000,
    };
    let f = filter(&cx, input.window, None)?;
    let rows = cx.store().event_timeline(cx.namespace(), f, width).await?;
    if rows.len() > MAX_TIMELINE_BUCKETS {
        return Err(OpError::invalid(format!(
            "the timeline has {} non-empty buckets, more than {MAX_TIMELINE_BUCKETS}: \
             use bucket \"day\" or a narrower since/until range",
            rows.len()
        )));
    }
    let total = rows.iter().map(|(_, n)| n).sum();
    Ok(TimelineOutput {
        bucket: input.bucket,
        buckets: rows
            .into_iter()
            .map(|(start, count)| TimelineBucket {
                start: crate::model::micros_to_datetime(start),
                count,
            })
            .collect(),
        total,
    })
}

// ---------- episodic_around ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AroundInput {
    /// The event to look around.
    pub id: String,
    /// How many earlier events (default 5).
    pub before: Option<usize>,
    /// How many later events (default 5).
    pub after: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AroundOutput {
    pub event: Event,
    /// Earlier events, oldest first.
    pub before: Vec<Event>,
    /// Later events, oldest first.
    pub after: Vec<Event>,
}

operation!(Around = "episodic_around", AroundInput => AroundOutput, episodic_around);

async fn episodic_around(cx: OpCtx, input: AroundInput) -> Result<AroundOutput, OpError> {
    check_id("id", &input.id, EVENT_ID)?;
    let max = cx.limits().max_page_size;
    let before = input.before.unwrap_or(DEFAULT_AROUND);
    let after = input.after.unwrap_or(DEFAULT_AROUND);
    if before > max || after > max {
        return Err(OpError::invalid(format!(
            "`before` and `after` may be at most {max} each"
        )));
    }
    let (event, before, after) = cx
        .store()
        .events_around(cx.namespace(), &input.id, before, after)
        .await?;
    Ok(AroundOutput {
        event,
        before,
        after,
    })
}

// ---------- episodic_update ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateInput {
    /// The event to change.
    pub id: String,
    /// New text, replacing the old.
    pub content: Option<String>,
    /// New tags, replacing all old tags.
    pub tags: Option<Vec<String>>,
    /// New importance, 0.0 to 1.0.
    pub importance: Option<f64>,
    /// Corrected time of the event (RFC 3339, "yesterday", "2h ago").
    pub occurred_at: Option<TimeSpec>,
    /// New metadata object, replacing the old.
    pub metadata: Option<Map<String, Value>>,
}

operation!(Update = "episodic_update", UpdateInput => EventOutput, episodic_update);

async fn episodic_update(cx: OpCtx, input: UpdateInput) -> Result<EventOutput, OpError> {
    check_id("id", &input.id, EVENT_ID)?;
    let limits = cx.limits();
    some_change!(input, content, tags, importance, occurred_at, metadata)?;
    if let Some(c) = &input.content {
        check_text("content", c, limits.max_content_bytes)?;
    }
    if let Some(i) = input.importance {
        check_unit("importance", i)?;
    }
    if let Some(m) = &input.metadata {
        check_metadata(m, limits)?;
    }
    let patch = EventPatch {
        content: input.content,
        tags: input.tags.map(|t| normalize_tags(t, limits)).transpose()?,
        importance: input.importance,
        occurred_at: input.occurred_at.map(TimeSpec::micros),
        metadata: input.metadata,
    };
    let event = cx
        .store()
        .events()
        .update(cx.namespace(), &input.id, patch)
        .await?;
    Ok(EventOutput { event })
}

// ---------- episodic_forget ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ForgetInput {
    /// Ids of the events to delete.
    pub ids: Vec<String>,
}

operation!(Forget = "episodic_forget", ForgetInput => Deleted, episodic_forget);

async fn episodic_forget(cx: OpCtx, input: ForgetInput) -> Result<Deleted, OpError> {
    let ids = ids_to_delete("ids", input.ids, EVENT_ID, &cx)?;
    let (deleted, not_found) = cx.store().delete_events(cx.namespace(), ids).await?;
    Ok(Deleted { deleted, not_found })
}

// ---------- episodic_forget_where ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ForgetWhereInput {
    #[serde(flatten)]
    pub window: Window,
    /// Events at most this important (0.0 to 1.0): clears trivia, keeps what matters.
    pub max_importance: Option<f64>,
    /// true: only report what would be deleted.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ForgetWhereOutput {
    /// How many events matched.
    pub matched: u64,
    /// Whether they were deleted (false on a dry run).
    pub deleted: bool,
    /// Up to 20 of the matched ids, oldest first.
    pub sample_ids: Vec<String>,
}

operation!(ForgetWhere = "episodic_forget_where", ForgetWhereInput => ForgetWhereOutput, episodic_forget_where);

async fn episodic_forget_where(
    cx: OpCtx,
    input: ForgetWhereInput,
) -> Result<ForgetWhereOutput, OpError> {
    let mut f = filter(&cx, input.window, None)?;
    if let Some(m) = input.max_importance {
        check_unit("max_importance", m)?;
        f.max_importance = Some(m);
    }
    if f.is_empty() {
        return Err(OpError::invalid(
            "no filter given: pass at least one of since, until, tags, max_importance \
             (this never deletes everything by accident)",
        ));
    }
    let (matched, sample_ids) = cx
        .store()
        .delete_events_where(cx.namespace(), f, input.dry_run, FORGET_SAMPLE_IDS)
        .await?;
    Ok(ForgetWhereOutput {
        matched,
        deleted: !input.dry_run && matched > 0,
        sample_ids,
    })
}

// ---------- episodic_count ----------

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CountInput {
    #[serde(flatten)]
    pub window: Window,
    /// Only events at least this important (0.0 to 1.0).
    pub min_importance: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CountOutput {
    pub count: u64,
}

operation!(Count = "episodic_count", CountInput => CountOutput, episodic_count);

async fn episodic_count(cx: OpCtx, input: CountInput) -> Result<CountOutput, OpError> {
    let f = filter(&cx, input.window, input.min_importance)?;
    let count = cx.store().events().count(cx.namespace(), f).await?;
    Ok(CountOutput { count })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::micros_to_datetime;

    fn event(i: usize, question: bool) -> Event {
        let at = micros_to_datetime(i as Micros * 60_000_000);
        Event {
            id: format!("e{i:03}"),
            content: if question { "well?" } else { "well." }.into(),
            tags: Vec::new(),
            importance: 0.5,
            occurred_at: at,
            created_at: at,
            updated_at: at,
            metadata: Map::new(),
            session_id: "s".into(),
        }
    }

    /// Events in a row, each `(score, question)`: a score of 0 does not match
    /// the query, and a question's reply is the event after it. The ranking
    /// `episodic_recall` makes from the search's first `n`: (id, follows).
    fn ranking(events: &[(u16, bool)], n: usize) -> Vec<(String, Option<String>)> {
        let mut matching: Vec<usize> = (0..events.len()).filter(|&i| events[i].0 > 0).collect();
        // Few distinct scores, so that ties are common; the search breaks
        // them by the newest id first.
        let score = |i: usize| f32::from(events[i].0);
        matching.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(b.cmp(&a)));
        matching.truncate(n);
        let ranked: Vec<SearchHit> = matching
            .iter()
            .map(|&i| SearchHit {
                id: event(i, false).id,
                kind: RecordKind::Event,
                score: score(i),
            })
            .collect();
        let followed = matching
            .iter()
            .map(|&i| {
                let question = events[i].1;
                let reply =
                    (question && i + 1 < events.len()).then(|| event(i + 1, events[i + 1].1));
                (event(i, question), reply)
            })
            .collect();
        with_follow_ups(&ranked, followed)
            .into_iter()
            .map(|h| (h.event.id, h.follows))
            .collect()
    }

    proptest! {
        /// Why every page ranks down to its own end: the first n of the
        /// ranking made from the search's first n are the first n of the
        /// ranking made from any deeper search, so pages never skip or repeat.
        #[test]
        fn ranking_deeper_keeps_the_first_n(
            events in prop::collection::vec((0u16..6, any::<bool>()), 1..60),
            n in 1usize..30,
            deeper in 1usize..30,
        ) {
            let shallow = ranking(&events, n);
            let deep = ranking(&events, n + deeper);
            let k = n.min(shallow.len());
            prop_assert_eq!(&shallow[..k], &deep[..k]);
        }
    }

    #[test]
    fn a_reply_scores_a_share_of_its_question_and_says_so() {
        let events = [(0, false), (9, true), (0, false), (5, false), (0, false)];
        assert_eq!(
            ranking(&events, 10),
            [
                ("e001".to_string(), None),
                ("e002".to_string(), Some("e001".to_string())),
                ("e003".to_string(), None),
            ]
        );
    }
}
