//! Session handles on a store many nodes share: the handle table lives in the
//! store (`store/handles.rs`), so `session_open` on one node gives a handle
//! every node resolves. A call brings the session back from its row (tools,
//! token, working memory), and afterwards writes back only the scratch keys
//! it changed, so two nodes working on different keys of one handle do not
//! undo each other; on one key the last write wins.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::auth::Grant;
use crate::catalog::catalog;
use crate::model::{Micros, now_micros};
use crate::resilience::limiter::SessionLimiter;
use crate::session::{HandleError, Held, Session, SessionHandles, ToolSelection, new_handle};
use crate::store::{Store, StoreError, StoredSession};

/// How often a node sweeps the shared table (every node sweeps; once a
/// second each would be needless traffic).
const SWEEP_EVERY_MICROS: Micros = 10_000_000;

pub struct StoredHandles {
    store: Store,
    idle: Duration,
    max: usize,
    /// Each brought-back session's own rate allowance (unused: a call draws
    /// on its caller's), as a new session's.
    rate: (u32, u32),
    open: AtomicUsize,
    swept_at: AtomicI64,
}

impl StoredHandles {
    pub fn new(store: Store, idle: Duration, max: usize, rate: (u32, u32)) -> Self {
        StoredHandles {
            store,
            idle,
            max: max.max(1),
            rate,
            open: AtomicUsize::new(0),
            swept_at: AtomicI64::new(0),
        }
    }

    fn cutoff(&self, now: Micros) -> Micros {
        now - i64::try_from(self.idle.as_micros()).unwrap_or(i64::MAX)
    }

    fn unknown(&self) -> HandleError {
        HandleError::Unknown {
            idle_secs: self.idle.as_secs(),
        }
    }

    async fn open_now(&self, session: Arc<Session>) -> Result<String, HandleError> {
        let handle = new_handle();
        let row = StoredSession {
            session_id: session.id.clone(),
            namespace: session.namespace().to_string(),
            tools: session.tools().spec(),
            token: session
                .grant()
                .map(|g| (g.token_id.clone(), g.label.clone(), g.scope)),
            created_at: session.created_at,
        };
        let now = now_micros();
        let kept = self
            .store
            .handle_open(&handle, row, now, self.cutoff(now), self.max)
            .await
            .map_err(unavailable)?;
        if !kept {
            return Err(HandleError::Full(self.max));
        }
        session.set_handle(handle.clone());
        Ok(handle)
    }

    async fn resolve_now(&self, handle: &str) -> Result<Held, HandleError> {
        let now = now_micros();
        let Some((row, scratch)) = self
            .store
            .handle_resolve(handle, now, self.cutoff(now))
            .await
            .map_err(unavailable)?
        else {
            return Err(self.unknown());
        };
        let tools = ToolSelection::parse(&row.tools, catalog()).map_err(|e| {
            HandleError::Unavailable(format!("a stored handle's tools cannot be read: {e}"))
        })?;
        let session = Session::restored(
            row.session_id,
            row.created_at,
            tools,
            Arc::new(SessionLimiter::new(self.rate.0, self.rate.1)),
        );
        session.set_namespace(row.namespace.clone());
        session.set_handle(handle.to_string());
        if let Some((token_id, label, scope)) = row.token {
            let grant = Grant {
                token_id,
                label,
                namespace: row.namespace,
                scope,
            };
            session
                .bind_grant(grant)
                .map_err(HandleError::Unavailable)?;
        }
        *session.scratch() = scratch.clone();
        Ok(Held {
            session: Arc::new(session),
            loaded: Some(scratch),
        })
    }

    async fn settle_now(&self, held: Held) -> Result<(), HandleError> {
        let (set, removed) = held.changes();
        if set.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let handle = held.session.handle().ok_or_else(|| self.unknown())?;
        match self.store.handle_save(handle, set, removed).await {
            // Swept while the call ran: the handle is gone, as for the next call.
            Err(StoreError::NotFound(_)) => Err(self.unknown()),
            other => other.map_err(unavailable),
        }
    }

    async fn sweep_now(&self) -> usize {
        let now = now_micros();
        if now - self.swept_at.load(Ordering::Relaxed) < SWEEP_EVERY_MICROS {
            return 0;
        }
        self.swept_at.store(now, Ordering::Relaxed);
        match self.store.handle_sweep(self.cutoff(now)).await {
            Ok(open) => {
                let before = self.open.swap(open, Ordering::Relaxed);
                before.saturating_sub(open)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not sweep session handles");
                0
            }
        }
    }
}

fn unavailable(e: StoreError) -> HandleError {
    HandleError::Unavailable(e.to_string())
}

impl SessionHandles for StoredHandles {
    fn open(&self, session: Arc<Session>) -> BoxFuture<'_, Result<String, HandleError>> {
        Box::pin(self.open_now(session))
    }

    fn resolve<'a>(&'a self, handle: &'a str) -> BoxFuture<'a, Result<Held, HandleError>> {
        Box::pin(self.resolve_now(handle))
    }

    fn settle(&self, held: Held) -> BoxFuture<'_, Result<(), HandleError>> {
        Box::pin(self.settle_now(held))
    }

    fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn sweep(&self) -> BoxFuture<'_, usize> {
        Box::pin(self.sweep_now())
    }
}
