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
        crate::metrics::metrics().session_opened();
        Session {
            id: new_id(),
            created_at: now_micros(),
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
/// Behind a trait so a store shared by many nodes can back it later.
pub trait SessionHandles: Send + Sync + 'static {
    /// Keeps `session` and returns its new handle (unguessable).
    fn open(&self, session: Arc<Session>) -> Result<String, HandleError>;
    /// The live session a handle names (its idle clock restarts), or why not.
    fn resolve(&self, handle: &str) -> Result<Arc<Session>, HandleError>;
    /// Handles open now.
    fn open_count(&self) -> usize;
    /// Forgets expired handles (and their sessions' scratch); how many went.
    fn sweep(&self) -> usize;
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

impl SessionHandles for LocalHandles {
    fn open(&self, session: Arc<Session>) -> Result<String, HandleError> {
        let mut bytes = [0u8; HANDLE_BYTES];
        getrandom::fill(&mut bytes).expect("the OS has randomness");
        let handle = format!(
            "{HANDLE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let mut sessions = self.sessions.lock().expect("handles poisoned");
        if sessions.len() >= self.max {
            let idle = self.idle;
            sessions.retain(|_, (_, used)| used.elapsed() < idle);
            if sessions.len() >= self.max {
                return Err(HandleError::Full(self.max));
            }
        }
        let _ = session.handle.set(handle.clone());
        sessions.insert(handle.clone(), (session, Instant::now()));
        Ok(handle)
    }

    fn resolve(&self, handle: &str) -> Result<Arc<Session>, HandleError> {
        let mut sessions = self.sessions.lock().expect("handles poisoned");
        match sessions.get_mut(handle) {
            Some((session, used)) if used.elapsed() < self.idle => {
                *used = Instant::now();
                Ok(session.clone())
            }
            Some(_) => {
                sessions.remove(handle);
                Err(self.unknown())
            }
            None => Err(self.unknown()),
        }
    }

    fn open_count(&self) -> usize {
        self.sessions.lock().expect("handles poisoned").len()
    }

    fn sweep(&self) -> usize {
        let mut sessions = self.sessions.lock().expect("handles poisoned");
        let before = sessions.len();
        let idle = self.idle;
        sessions.retain(|_, (_, used)| used.elapsed() < idle);
        before - sessions.len()
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
        let h = handles.open(s.clone()).unwrap();
        assert!(h.starts_with(HANDLE_PREFIX) && h.len() > 40, "{h}");
        assert_eq!(s.handle(), Some(h.as_str()));
        assert!(Arc::ptr_eq(&handles.resolve(&h).unwrap(), &s));
        assert!(matches!(
            handles.resolve("sh_nope"),
            Err(HandleError::Unknown { .. })
        ));
        handles.open(session()).unwrap();
        assert_eq!(handles.open(session()), Err(HandleError::Full(2)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(handles.sweep(), 2, "both expired handles are forgotten");
        assert_eq!(handles.open_count(), 0);
        assert!(handles.resolve(&h).is_err(), "expired");
        // Expired handles make room for new ones.
        handles.open(session()).unwrap();
    }
}
