//! One isolated context per MCP session: its id, namespace, enabled tools and
//! working memory. Nothing here is shared between sessions.
//!
//! Must not: know MCP. The server layer creates sessions and resolves their
//! namespace; operations read them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::future::BoxFuture;

use crate::auth::Grant;
use crate::catalog::{Catalog, OperationSpec};
use crate::config::DEFAULT_NAMESPACE;
use crate::model::{Micros, new_id, now_micros};
use crate::resilience::limiter::SessionLimiter;

/// Which tools a session lists: a profile plus any layers enabled on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSelection {
    pub all: bool,
    pub core: bool,
    pub compat: bool,
    pub layers: BTreeSet<String>,
}

impl ToolSelection {
    /// Parses `core`, `all`, `compat`, or a comma-separated list of layers
    /// (which may include `core`).
    pub fn parse(spec: &str, catalog: &Catalog) -> Result<Self, String> {
        let mut sel = ToolSelection {
            all: false,
            core: false,
            compat: false,
            layers: BTreeSet::new(),
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => sel.all = true,
                "core" => sel.core = true,
                "compat" => sel.compat = true,
                layer if catalog.layer(layer).is_some() => {
                    sel.layers.insert(layer.to_string());
                }
                other => {
                    let known: Vec<&str> = catalog.layers.iter().map(|l| l.name.as_str()).collect();
                    return Err(format!(
                        "unknown tool profile or layer {other:?}: use core, all, compat, or layers from {}",
                        known.join(", ")
                    ));
                }
            }
        }
        if sel == ToolSelection::parse_empty() {
            return Err("no tools selected: use core, all, compat, or a list of layers".into());
        }
        Ok(sel)
    }

    /// The selection as `parse` reads it back.
    pub fn spec(&self) -> String {
        let flags = [
            (self.all, "all"),
            (self.core, "core"),
            (self.compat, "compat"),
        ];
        let named = flags
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name);
        named
            .chain(self.layers.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn parse_empty() -> Self {
        ToolSelection {
            all: false,
            core: false,
            compat: false,
            layers: BTreeSet::new(),
        }
    }

    pub fn includes(&self, op: &OperationSpec) -> bool {
        self.all
            || self.layers.contains(&op.layer)
            || (self.core && op.profiles.iter().any(|p| p == "core"))
            || (self.compat && op.profiles.iter().any(|p| p == "compat"))
    }
}

pub struct Session {
    pub id: String,
    pub created_at: Micros,
    /// This session's handle, when it was opened with `session_open`.
    handle: OnceLock<String>,
    /// A request of a stateless protocol (MCP 2026-07-28 over HTTP): the
    /// session lives for one call, so session state needs a handle.
    stateless: AtomicBool,
    namespace: OnceLock<String>,
    /// What the token this session was opened with allows; none for the data
    /// dir's owner (stdio, the command line).
    grant: OnceLock<Grant>,
    tools: Mutex<ToolSelection>,
    /// Working memory: key → the value's JSON text (its size is its length, and
    /// text costs far less memory than a parsed value).
    scratch: Mutex<BTreeMap<String, String>>,
    /// This session's own allowance of calls per second.
    pub limiter: Arc<SessionLimiter>,
}

impl Session {
    pub fn new(tools: ToolSelection, limiter: Arc<SessionLimiter>) -> Self {
        Session::restored(new_id(), now_micros(), tools, limiter)
    }

    /// A session that began earlier (elsewhere): one a shared store keeps
    /// under a handle, brought back for a call.
    pub fn restored(
        id: String,
        created_at: Micros,
        tools: ToolSelection,
        limiter: Arc<SessionLimiter>,
    ) -> Self {
        crate::metrics::metrics().session_opened();
        Session {
            id,
            created_at,
            handle: OnceLock::new(),
            stateless: AtomicBool::new(false),
            namespace: OnceLock::new(),
            grant: OnceLock::new(),
            tools: Mutex::new(tools),
            scratch: Mutex::new(BTreeMap::new()),
            limiter,
        }
    }

    /// Fixes the namespace; a session's namespace never changes once set.
    pub fn set_namespace(&self, ns: String) {
        let _ = self.namespace.set(ns);
    }

    /// Binds the session to the token it was opened with. Every later request
    /// of the session must come with the same token.
    pub fn bind_grant(&self, grant: Grant) -> Result<(), String> {
        let bound = self.grant.get_or_init(|| grant.clone());
        if bound.token_id != grant.token_id {
            return Err(format!(
                "this MCP session was opened with another token ({:?}); a session keeps the \
                 token it started with: open a new session with this one",
                bound.label
            ));
        }
        Ok(())
    }

    pub fn grant(&self) -> Option<&Grant> {
        self.grant.get()
    }

    /// Marks this session as one stateless request's (it ends with the call).
    pub fn mark_stateless(&self) {
        self.stateless.store(true, Ordering::Relaxed);
    }

    pub fn is_stateless(&self) -> bool {
        self.stateless.load(Ordering::Relaxed)
    }

    /// Names this session by `handle` (once; later calls change nothing).
    pub fn set_handle(&self, handle: String) {
        let _ = self.handle.set(handle);
    }

    /// The handle `session_open` gave this session, if any.
    pub fn handle(&self) -> Option<&str> {
        self.handle.get().map(String::as_str)
    }

    pub fn namespace_is_set(&self) -> bool {
        self.namespace.get().is_some()
    }

    pub fn namespace(&self) -> &str {
        self.namespace.get_or_init(|| DEFAULT_NAMESPACE.to_string())
    }

    pub fn tools(&self) -> ToolSelection {
        self.tools.lock().expect("session poisoned").clone()
    }

    /// Adds a layer to this session's tools; false if it was already listed.
    pub fn enable_layer(&self, layer: &str) -> bool {
        self.tools
            .lock()
            .expect("session poisoned")
            .layers
            .insert(layer.to_string())
    }

    pub fn scratch(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.scratch.lock().expect("session poisoned")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        crate::metrics::metrics().session_closed();
    }
}

/// Sessions that stateless clients (MCP 2026-07-28) hold by handle: a session's
/// working memory and enabled layers outlive the one request that opened it.
/// In this process ([`LocalHandles`]) or, on a store many nodes share, in the
/// store, so a handle opened on one node works on all of them.
pub trait SessionHandles: Send + Sync + 'static {
    /// Keeps `session` and returns its new handle (unguessable).
    fn open(&self, session: Arc<Session>) -> BoxFuture<'_, Result<String, HandleError>>;
    /// The live session a handle names (its idle clock restarts), or why not.
    fn resolve<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<Held, HandleError>>;
    /// Keeps what a call changed in a resolved session's working memory.
    fn settle(&self, held: Held) -> BoxFuture<'_, Result<(), HandleError>>;
    /// Handles open now (as of the last sweep, for a shared table).
    fn open_count(&self) -> usize;
    /// Forgets expired handles (and their sessions' scratch); how many went.
    fn sweep(&self) -> BoxFuture<'_, usize>;
}

/// A session resolved from its handle for one call.
pub struct Held {
    pub session: Arc<Session>,
    /// The working memory as the store held it when the session was brought
    /// back (`None` for a session kept in this process): what `settle`
    /// compares against to write only what the call changed.
    pub loaded: Option<BTreeMap<String, String>>,
}

impl Held {
    /// The keys the call set or changed, and the keys it removed, since the
    /// session was loaded.
    pub fn changes(&self) -> (Vec<(String, String)>, Vec<String>) {
        let Some(loaded) = &self.loaded else {
            return (Vec::new(), Vec::new());
        };
        let now = self.session.scratch();
        let set = now
            .iter()
            .filter(|(k, v)| loaded.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let removed = loaded
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        (set, removed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error(
        "session handle is unknown or expired (handles close after {idle_secs} s unused): \
         call session_open for a new one"
    )]
    Unknown { idle_secs: u64 },
    #[error(
        "{0} session handles are open, the limit: reuse the one you have (handles close after a \
         while unused)"
    )]
    Full(usize),
    /// The store that keeps handles cannot be reached.
    #[error("session handles are unavailable: {0}")]
    Unavailable(String),
}

/// A fresh handle: 256 random bits, URL-safe, with the handle prefix.
pub fn new_handle() -> String {
    let mut bytes = [0u8; HANDLE_BYTES];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    format!(
        "{HANDLE_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Bytes of randomness in a handle (256 bits).
const HANDLE_BYTES: usize = 32;
/// What handles start with, so they are recognisable in logs and arguments.
pub const HANDLE_PREFIX: &str = "sh_";

/// The in-process handle table: handles expire after `idle` without use.
pub struct LocalHandles {
    sessions: Mutex<HashMap<String, (Arc<Session>, Instant)>>,
    idle: Duration,
    max: usize,
}

impl LocalHandles {
    pub fn new(idle: Duration, max: usize) -> Self {
        LocalHandles {
            sessions: Mutex::new(HashMap::new()),
            idle,
            max: max.max(1),
        }
    }

    fn unknown(&self) -> HandleError {
        HandleError::Unknown {
            idle_secs: self.idle.as_secs(),
        }
    }
}

impl LocalHandles {
    fn open_now(&self, session: Arc<Session>) -> Result<String, HandleError> {
        let handle = new_handle();
        let mut sessions = self.sessions.lock().expect("handles poisoned");
        if sessions.len() >= self.max {
            let idle = self.idle;
            sessions.retain(|_, (_, used)| used.elapsed() < idle);
            if sessions.len() >= self.max {
                return Err(HandleError::Full(self.max));
            }
        }
        session.set_handle(handle.clone());
        sessions.insert(handle.clone(), (session, Instant::now()));
        Ok(handle)
    }

    fn resolve_now(&self, handle: &str) -> Result<Held, HandleError> {
        let mut sessions = self.sessions.lock().expect("handles poisoned");
        match sessions.get_mut(handle) {
            Some((session, used)) if used.elapsed() < self.idle => {
                *used = Instant::now();
                Ok(Held {
                    session: session.clone(),
                    loaded: None,
                })
            }
            Some(_) => {
                sessions.remove(handle);
                Err(self.unknown())
            }
            None => Err(self.unknown()),
        }
    }

    fn sweep_now(&self) -> usize {
        let mut sessions = self.sessions.lock().expect("handles poisoned");
        let before = sessions.len();
        let idle = self.idle;
        sessions.retain(|_, (_, used)| used.elapsed() < idle);
        before - sessions.len()
    }
}

impl SessionHandles for LocalHandles {
    fn open(&self, session: Arc<Session>) -> BoxFuture<'_, Result<String, HandleError>> {
        Box::pin(std::future::ready(self.open_now(session)))
    }

    fn resolve<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<Held, HandleError>> {
        Box::pin(std::future::ready(self.resolve_now(handle)))
    }

    /// The session itself is kept here: nothing to write back.
    fn settle(&self, _: Held) -> BoxFuture<'_, Result<(), HandleError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn open_count(&self) -> usize {
        self.sessions.lock().expect("handles poisoned").len()
    }

    fn sweep(&self) -> BoxFuture<'_, usize> {
        Box::pin(std::future::ready(self.sweep_now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Arc<Session> {
        let tools = ToolSelection {
            all: false,
            core: true,
            compat: false,
            layers: BTreeSet::new(),
        };
        Arc::new(Session::new(tools, Arc::new(SessionLimiter::new(0, 0))))
    }

    #[test]
    fn handles_resolve_until_idle_then_expire() {
        let handles = LocalHandles::new(Duration::from_millis(50), 2);
        let s = session();
        let h = handles.open_now(s.clone()).unwrap();
        assert!(h.starts_with(HANDLE_PREFIX) && h.len() > 40, "{h}");
        assert_eq!(s.handle(), Some(h.as_str()));
        assert!(Arc::ptr_eq(&handles.resolve_now(&h).unwrap().session, &s));
        assert!(matches!(
            handles.resolve_now("sh_nope"),
            Err(HandleError::Unknown { .. })
        ));
        handles.open_now(session()).unwrap();
        assert_eq!(handles.open_now(session()), Err(HandleError::Full(2)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(handles.sweep_now(), 2, "both expired handles are forgotten");
        assert_eq!(handles.open_count(), 0);
        assert!(handles.resolve_now(&h).is_err(), "expired");
        // Expired handles make room for new ones.
        handles.open_now(session()).unwrap();
    }

    #[test]
    fn a_loaded_session_reports_only_what_the_call_changed() {
        let s = session();
        let loaded: BTreeMap<String, String> = [("a", "1"), ("b", "2"), ("c", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        *s.scratch() = loaded.clone();
        let held = Held {
            session: s.clone(),
            loaded: Some(loaded),
        };
        assert_eq!(held.changes(), (vec![], vec![]));
        s.scratch().insert("b".into(), "20".into());
        s.scratch().insert("d".into(), "4".into());
        s.scratch().remove("a");
        let (set, removed) = held.changes();
        assert_eq!(
            set,
            vec![("b".into(), "20".into()), ("d".into(), "4".into())]
        );
        assert_eq!(removed, vec!["a".to_string()]);
    }

    #[test]
    fn a_tool_selection_reads_back_from_its_spec() {
        let catalog = crate::catalog::catalog();
        for spec in ["core", "all", "compat", "core,graph", "graph,session"] {
            let sel = ToolSelection::parse(spec, catalog).unwrap();
            assert_eq!(ToolSelection::parse(&sel.spec(), catalog).unwrap(), sel);
        }
    }
}
