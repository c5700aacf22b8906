//! The query cache and read coalescing.
//!
//! Cache: an LRU (the `lru` crate) of read answers keyed by namespace +
//! operation + canonical arguments. Each entry remembers the generation of every
//! tag it read (`ns/semantic`, ...). A write bumps the generations of the tags it
//! invalidates — O(1) per tag, no scan — and an entry whose generations moved is
//! stale: dropped at its next lookup. Generations are read *before* the read runs,
//! so an answer computed across a concurrent write is stored already stale.
//!
//! Coalescing: identical reads in flight at once (same key and same generations)
//! run once; the others wait for that answer. Keying by generations too means a
//! read that starts after a write never joins a read that started before it.
//!
//! Must not: know what operations do. The catalog says which tags each reads and
//! invalidates; the pipeline asks.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::error::OpError;

/// Generations seen by a read, in the order of its tags.
pub type Seen = Vec<u64>;

/// A kept answer, as JSON text: a parsed `Value` tree takes several times the
/// memory of its text, and the text's length makes the byte budget exact.
struct Cached {
    op: &'static str,
    text: Arc<str>,
    tags: Vec<String>,
    seen: Seen,
    /// Bytes this entry counts against the budget (text + key).
    size: usize,
}

/// The LRU and the bytes it holds, under one lock.
struct Entries {
    lru: LruCache<String, Cached>,
    bytes: usize,
}

/// A read in flight: the text of its answer, once it has one.
type Flight = Arc<OnceCell<Result<(Arc<str>, Keep), OpError>>>;

/// An answer as the read that computed it holds it: the tree, and its JSON
/// text, rendered once for the cache and for the callers that joined the read.
pub struct Rendered {
    pub value: Value,
    pub text: Arc<str>,
    pub keep: Keep,
}

/// Whether an answer may be kept in the cache (a degraded one may not).
pub type Keep = bool;

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct OpCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries of this operation pushed out to make room.
    pub evictions: u64,
    /// Entries found stale (a write invalidated a tag they read).
    pub invalidated: u64,
    /// Calls that shared the answer of an identical call already running.
    pub coalesced: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CacheStats {
    /// Most answers kept (0: caching is off; coalescing still works).
    pub capacity: usize,
    pub entries: usize,
    /// Bytes of answers kept, and the most it may keep.
    pub bytes: usize,
    pub max_bytes: usize,
    /// Answers too large to keep (over an eighth of the budget).
    pub too_large: u64,
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses), 0 when there were no cacheable reads.
    pub hit_rate: f64,
    pub evictions: u64,
    /// Tag generations bumped by writes.
    pub invalidations: u64,
    /// Per operation, only those that were called.
    pub operations: std::collections::BTreeMap<String, OpCacheStats>,
}

pub struct QueryCache {
    capacity: usize,
    max_bytes: usize,
    entries: Mutex<Option<Entries>>,
    too_large: std::sync::atomic::AtomicU64,
    generations: Mutex<HashMap<String, u64>>,
    stats: Mutex<HashMap<&'static str, OpCacheStats>>,
    invalidations: Mutex<u64>,
    in_flight: Mutex<HashMap<(String, Seen), Flight>>,
}

impl QueryCache {
    /// At most `capacity` answers and `max_bytes` of them (0 for either: off).
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        let on = NonZeroUsize::new(capacity).filter(|_| max_bytes > 0);
        QueryCache {
            capacity,
            max_bytes,
            entries: Mutex::new(on.map(|cap| Entries {
                lru: LruCache::new(cap),
                bytes: 0,
            })),
            too_large: std::sync::atomic::AtomicU64::new(0),
            generations: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            invalidations: Mutex::new(0),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The cache key of a call: namespace, operation and canonical arguments.
    pub fn key(namespace: &str, op: &str, args: &Value) -> String {
        let mut key = String::with_capacity(64);
        key.push_str(namespace);
        key.push('\u{1f}');
        key.push_str(op);
        key.push('\u{1f}');
        canonical(args, &mut key);
        key
    }

    /// The current generation of each tag.
    pub fn generations(&self, tags: &[String]) -> Seen {
        let gens = self.generations.lock().expect("cache poisoned");
        tags.iter()
            .map(|t| gens.get(t).copied().unwrap_or(0))
            .collect()
    }

    /// Makes every entry that read one of `tags` stale.
    pub fn invalidate(&self, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        let mut gens = self.generations.lock().expect("cache poisoned");
        for t in tags {
            *gens.entry(t.clone()).or_insert(0) += 1;
        }
        drop(gens);
        *self.invalidations.lock().expect("cache poisoned") += tags.len() as u64;
    }

    fn count(&self, op: &'static str, f: impl FnOnce(&mut OpCacheStats)) {
        f(self
            .stats
            .lock()
            .expect("cache poisoned")
            .entry(op)
            .or_default());
    }

    /// The cached answer and its text, if there is one and no tag it read has
    /// changed since.
    pub fn get(&self, op: &'static str, key: &str, tags: &[String]) -> Option<(Value, Arc<str>)> {
        let mut guard = self.entries.lock().expect("cache poisoned");
        let entries = guard.as_mut()?;
        let fresh = entries
            .lru
            .get(key)
            .map(|c| c.tags == tags && self.generations(&c.tags) == c.seen);
        match fresh {
            Some(true) => {
                let text = entries.lru.get(key).map(|c| c.text.clone());
                drop(guard);
                self.count(op, |s| s.hits += 1);
                let text = text?;
                serde_json::from_str(&text).ok().map(|value| (value, text))
            }
            Some(false) => {
                if let Some(old) = entries.lru.pop(key) {
                    entries.bytes -= old.size;
                }
                drop(guard);
                self.count(op, |s| {
                    s.invalidated += 1;
                    s.misses += 1;
                });
                None
            }
            None => {
                drop(guard);
                self.count(op, |s| s.misses += 1);
                None
            }
        }
    }

    /// Keeps an answer (its JSON text) under `key`, with the generations of
    /// its tags read before it was computed.
    pub fn put(
        &self,
        op: &'static str,
        key: String,
        text: Arc<str>,
        tags: Vec<String>,
        seen: Seen,
    ) {
        if self.entries.lock().expect("cache poisoned").is_none() {
            return;
        }
        let size = text.len() + key.len();
        if size > self.max_bytes / 8 {
            // One huge answer would push out hundreds of small ones.
            self.too_large
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let mut evicted_ops = Vec::new();
        let mut guard = self.entries.lock().expect("cache poisoned");
        let Some(entries) = guard.as_mut() else {
            return;
        };
        let entry = Cached {
            op,
            text,
            tags,
            seen,
            size,
        };
        entries.bytes += size;
        if let Some((old_key, old)) = entries.lru.push(key.clone(), entry) {
            entries.bytes -= old.size;
            if old_key != key {
                evicted_ops.push(old.op);
            }
        }
        while entries.bytes > self.max_bytes {
            let Some((_, old)) = entries.lru.pop_lru() else {
                break;
            };
            entries.bytes -= old.size;
            evicted_ops.push(old.op);
        }
        drop(guard);
        for op in evicted_ops {
            self.count(op, |s| s.evictions += 1);
        }
    }

    /// Runs `read` once for all identical concurrent callers. The caller that
    /// ran it keeps the answer it computed; the others get theirs from its
    /// text. (The answer's tree is never copied: a deep copy of a large
    /// `Value` costs as much as rendering it.)
    pub async fn coalesce<F>(
        &self,
        op: &'static str,
        key: &str,
        seen: &Seen,
        read: F,
    ) -> Result<Rendered, OpError>
    where
        F: std::future::Future<Output = Result<(Value, Keep), OpError>>,
    {
        let flight_key = (key.to_string(), seen.clone());
        let (flight, joined) = {
            let mut in_flight = self.in_flight.lock().expect("cache poisoned");
            match in_flight.get(&flight_key) {
                Some(f) => (f.clone(), true),
                None => {
                    let f: Flight = Arc::new(OnceCell::new());
                    in_flight.insert(flight_key.clone(), f.clone());
                    (f, false)
                }
            }
        };
        if joined {
            self.count(op, |s| s.coalesced += 1);
        }
        // Whoever runs `read` (this caller, or a joined one whose leader went
        // away) keeps its tree here.
        let mut computed: Option<Value> = None;
        let shared = flight
            .get_or_init(|| async {
                let (value, keep) = read.await?;
                let text: Arc<str> = value.to_string().into();
                computed = Some(value);
                Ok((text, keep))
            })
            .await
            .clone();
        let mut in_flight = self.in_flight.lock().expect("cache poisoned");
        if in_flight
            .get(&flight_key)
            .is_some_and(|f| Arc::ptr_eq(f, &flight))
        {
            in_flight.remove(&flight_key);
        }
        drop(in_flight);
        let (text, keep) = shared?;
        let value = match computed {
            Some(value) => value,
            None => serde_json::from_str(&text).map_err(|e| {
                OpError::Internal(format!("a shared answer could not be read back: {e}"))
            })?,
        };
        Ok(Rendered { value, text, keep })
    }

    pub fn stats(&self) -> CacheStats {
        let (entries, bytes) = self
            .entries
            .lock()
            .expect("cache poisoned")
            .as_ref()
            .map_or((0, 0), |e| (e.lru.len(), e.bytes));
        let per_op = self.stats.lock().expect("cache poisoned").clone();
        let (hits, misses, evictions) = per_op.values().fold((0, 0, 0), |acc, s| {
            (acc.0 + s.hits, acc.1 + s.misses, acc.2 + s.evictions)
        });
        CacheStats {
            capacity: self.capacity,
            entries,
            bytes,
            max_bytes: self.max_bytes,
            too_large: self.too_large.load(std::sync::atomic::Ordering::Relaxed),
            hits,
            misses,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            evictions,
            invalidations: *self.invalidations.lock().expect("cache poisoned"),
            operations: per_op
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

/// Writes `v` as JSON with object keys sorted, so argument order never splits
/// the cache.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_ignore_argument_order() {
        let a = QueryCache::key(
            "ns",
            "op",
            &json!({"b": 1, "a": {"y": 2, "x": [1, {"d": 0, "c": 1}]}}),
        );
        let b = QueryCache::key(
            "ns",
            "op",
            &json!({"a": {"x": [1, {"c": 1, "d": 0}], "y": 2}, "b": 1}),
        );
        assert_eq!(a, b);
        assert_ne!(a, QueryCache::key("other", "op", &json!({"b": 1})));
    }

    fn text(value: Value) -> Arc<str> {
        value.to_string().into()
    }

    /// The answer of a hit, checked against its text.
    fn value(hit: Option<(Value, Arc<str>)>) -> Option<Value> {
        hit.map(|(value, text)| {
            assert_eq!(value.to_string(), *text);
            value
        })
    }

    #[test]
    fn a_bumped_tag_makes_entries_stale_and_evictions_are_counted() {
        let c = QueryCache::new(2, 1 << 20);
        let tags = vec!["ns/semantic".to_string()];
        let seen = c.generations(&tags);
        c.put(
            "op",
            "k1".into(),
            text(json!(1)),
            tags.clone(),
            seen.clone(),
        );
        assert_eq!(value(c.get("op", "k1", &tags)), Some(json!(1)));
        c.invalidate(&tags);
        assert_eq!(c.get("op", "k1", &tags), None);
        // Stored with generations read before a write: stale at once.
        c.put("op", "k2".into(), text(json!(2)), tags.clone(), seen);
        assert_eq!(c.get("op", "k2", &tags), None);
        let now = c.generations(&tags);
        for k in ["a", "b", "c"] {
            c.put("op", k.into(), text(json!(k)), tags.clone(), now.clone());
        }
        let s = c.stats();
        assert_eq!((s.hits, s.evictions, s.entries), (1, 1, 2));
        assert_eq!(s.operations["op"].invalidated, 2);
    }

    #[test]
    fn the_byte_budget_evicts_oldest_first_and_refuses_giants() {
        let c = QueryCache::new(1000, 800);
        let tags: Vec<String> = vec![];
        let big = json!("x".repeat(60));
        for k in 0..20 {
            c.put(
                "op",
                format!("k{k}"),
                text(big.clone()),
                tags.clone(),
                vec![],
            );
        }
        let s = c.stats();
        assert!(s.bytes <= 800 && s.entries < 20, "{s:?}");
        assert_eq!(value(c.get("op", "k19", &tags)), Some(big));
        assert_eq!(c.get("op", "k0", &tags), None);
        c.put(
            "op",
            "huge".into(),
            text(json!("y".repeat(500))),
            tags.clone(),
            vec![],
        );
        assert_eq!(c.stats().too_large, 1);
        assert_eq!(c.get("op", "huge", &tags), None);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = QueryCache::new(0, 1 << 20);
        c.put("op", "k".into(), text(json!(1)), vec![], vec![]);
        assert_eq!(c.get("op", "k", &[]), None);
    }
}
