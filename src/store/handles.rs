//! Session handles kept in a store that many nodes share (PostgreSQL), so a
//! handle `session_open` gave on one node works on every other: the handle's
//! session (namespace, token, tools, times) and its working memory, one row
//! per scratch key. Rows are found by the SHA-256 of the handle, never the
//! handle itself, so reading the table does not hand out sessions.
//!
//! These are not records: no change is logged and no derived view hears of
//! them. Each call is its own short statement (or transaction) on a pooled
//! connection, committed synchronously like every other write. Idle time is
//! counted with the clocks of the nodes, which must agree to a second or so.

use std::collections::BTreeMap;

use sha2::Digest;

use super::sql::{Conn, Row, args};
use super::{Store, StoreError};
use crate::auth::Scope;
use crate::model::Micros;

/// A session as its handle row keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub session_id: String,
    pub namespace: String,
    /// The session's tool selection, as `--tools` spells it.
    pub tools: String,
    /// The token the handle was opened with: id, label, scope.
    pub token: Option<(String, String, Scope)>,
    pub created_at: Micros,
}

/// What a handle holds: its session and working memory (key → JSON text).
pub type HeldSession = (StoredSession, BTreeMap<String, String>);

/// The key a handle's rows are found by: the hex SHA-256 of the handle.
fn key_of(handle: &str) -> String {
    let digest = sha2::Sha256::digest(handle.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn stored_session(r: &Row<'_>) -> Result<StoredSession, StoreError> {
    let token = match r.get::<Option<String>>(3)? {
        None => None,
        Some(id) => {
            let scope: String = r.get(5)?;
            let scope = Scope::parse(&scope).ok_or_else(|| {
                StoreError::Corrupt(format!("a session handle has scope {scope:?}"))
            })?;
            Some((id, r.get(4)?, scope))
        }
    };
    Ok(StoredSession {
        session_id: r.get(0)?,
        namespace: r.get(1)?,
        tools: r.get(2)?,
        token,
        created_at: r.get(6)?,
    })
}

/// Forgets handles unused since `cutoff`; how many stay open.
fn sweep(conn: Conn<'_>, cutoff: Micros) -> Result<usize, StoreError> {
    conn.execute(
        "DELETE FROM session_handles WHERE used_at < ?1",
        &args![cutoff],
    )?;
    let open: i64 = conn.value("SELECT count(*) FROM session_handles", &[])?;
    Ok(open as usize)
}

/// Tries a transaction this many times when PostgreSQL aborts it for a
/// deadlock or a serialization failure (two nodes saving one handle at once).
const CONFLICT_ATTEMPTS: u32 = 4;

/// Runs `body` in a transaction of its own on a pooled connection, again
/// (after 5 ms, 10 ms, 20 ms, jittered) when it lost a conflict.
fn transaction<T>(
    conn: Conn<'_>,
    body: impl Fn(Conn<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        conn.begin()?;
        let out = body(conn).and_then(|out| conn.end(true).map(|()| out));
        match out {
            Ok(out) => return Ok(out),
            Err(e) => {
                // On a lost connection this fails too, and the pool drops it.
                let _ = conn.end(false);
                attempt += 1;
                if !e.is_conflict() || attempt == CONFLICT_ATTEMPTS {
                    return Err(e);
                }
                let mut jitter = [0u8; 1];
                let _ = getrandom::fill(&mut jitter);
                let wait = (5u64 << (attempt - 1)) * (128 + u64::from(jitter[0])) / 256;
                std::thread::sleep(std::time::Duration::from_millis(wait.max(1)));
            }
        }
    }
}

impl Store {
    /// Keeps a new handle's session unless `max` handles used since `cutoff`
    /// are open already (expired ones are forgotten first); whether it was kept.
    pub async fn handle_open(
        &self,
        handle: &str,
        session: StoredSession,
        now: Micros,
        cutoff: Micros,
        max: usize,
    ) -> Result<bool, StoreError> {
        let key = key_of(handle);
        self.readers
            .read(move |conn| {
                if sweep(conn, cutoff)? >= max {
                    return Ok(false);
                }
                let (token_id, label, scope) = match &session.token {
                    Some((id, label, scope)) => (
                        Some(id.as_str()),
                        Some(label.as_str()),
                        Some(scope.as_str()),
                    ),
                    None => (None, None, None),
                };
                conn.execute(
                    "INSERT INTO session_handles (key, session_id, namespace, tools, token_id,
                         token_label, token_scope, created_at, used_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    &args![
                        key,
                        session.session_id,
                        session.namespace,
                        session.tools,
                        token_id,
                        label,
                        scope,
                        session.created_at,
                        now
                    ],
                )?;
                Ok(true)
            })
            .await
    }

    /// The session and working memory of a handle used since `cutoff`,
    /// marking it used at `now`; `None` for an unknown or expired handle.
    pub async fn handle_resolve(
        &self,
        handle: &str,
        now: Micros,
        cutoff: Micros,
    ) -> Result<Option<HeldSession>, StoreError> {
        let key = key_of(handle);
        self.readers
            .read(move |conn| {
                let session = conn.first(
                    "UPDATE session_handles SET used_at = ?3 WHERE key = ?1 AND used_at >= ?2
                     RETURNING session_id, namespace, tools, token_id, token_label, token_scope,
                               created_at",
                    &args![key, cutoff, now],
                    stored_session,
                )?;
                let Some(session) = session else {
                    return Ok(None);
                };
                let scratch = conn.rows(
                    "SELECT key, value FROM session_scratch WHERE handle = ?1",
                    &args![key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                Ok(Some((session, scratch.into_iter().collect())))
            })
            .await
    }

    /// Writes what changed in a handle's working memory: `set` keys take
    /// their new values, `removed` keys go. One transaction.
    pub async fn handle_save(
        &self,
        handle: &str,
        set: Vec<(String, String)>,
        removed: Vec<String>,
    ) -> Result<(), StoreError> {
        let key = key_of(handle);
        self.readers
            .read(move |conn| {
                transaction(conn, |conn| {
                    // Locked, so a sweep cannot take the handle away meanwhile.
                    let held: Option<i64> = conn.first(
                        "SELECT 1 FROM session_handles WHERE key = ?1 FOR UPDATE",
                        &args![key],
                        |r| r.get(0),
                    )?;
                    if held.is_none() {
                        return Err(StoreError::NotFound("the session handle expired".into()));
                    }
                    for k in &removed {
                        conn.execute(
                            "DELETE FROM session_scratch WHERE handle = ?1 AND key = ?2",
                            &args![key, k],
                        )?;
                    }
                    for (k, v) in &set {
                        conn.execute(
                            "INSERT INTO session_scratch (handle, key, value) VALUES (?1, ?2, ?3)
                             ON CONFLICT (handle, key) DO UPDATE SET value = excluded.value",
                            &args![key, k, v],
                        )?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Forgets handles unused since `cutoff` (and their working memory);
    /// how many handles stay open.
    pub async fn handle_sweep(&self, cutoff: Micros) -> Result<usize, StoreError> {
        self.readers.read(move |conn| sweep(conn, cutoff)).await
    }
}
