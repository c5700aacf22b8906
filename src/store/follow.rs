//! How a node hears of the writes other nodes make to the PostgreSQL store
//! they share: their changes reach this node's derived views (search index,
//! graph snapshots, query cache) through the same change listener its own
//! writer calls.
//!
//! - **Pushed**: every write transaction that logs changes sends
//!   `NOTIFY engram_changes` (delivered at commit). A thread per node listens
//!   on a connection of its own and, woken, fetches the changes it has not
//!   seen. It also looks every [`POLL`] without a notification, so a lost
//!   notification (the listening connection dropped) only delays.
//! - **Pulled before a read** ([`Store::sync`]): a notification can arrive
//!   after a client that was told "written" by node A asks node B. So every
//!   read on a shared store first reads the store's newest change number (one
//!   round trip, `SELECT max(seq)`) and, when this node is behind, fetches and
//!   applies the changes up to it before answering. That is read-your-writes
//!   across nodes; its cost is that round trip on every read.
//!
//! Change numbers are handed out in commit order across nodes (`pg.rs`: the
//! write lock), so "every change above the last one fetched" never skips a
//! change that commits late. The writer's own changes are delivered by the
//! writer at commit, and skipped here. Deliveries are made under one lock, in
//! change order, each change carrying its record's document as read at
//! delivery, so an older document never overwrites a newer one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::StoreError;
use super::sql::{Conn, Database, args};
use super::writer::ChangeListener;
use crate::model::Change;

/// The notification channel writes announce themselves on.
pub(super) const CHANNEL: &str = "engram_changes";
/// How long the listening thread waits for a notification before it looks anyway.
const POLL: Duration = Duration::from_secs(2);

/// What this node has delivered of the change log.
pub(crate) struct Follower {
    listener: ChangeListener,
    state: Mutex<Followed>,
    stopped: AtomicBool,
}

struct Followed {
    /// Every change up to this number has been delivered (or skipped as this
    /// node's own).
    fetched: i64,
    /// This node's own changes above `fetched`, delivered by its writer.
    own: BTreeSet<i64>,
    /// Nothing is fetched until the node's search index has caught up
    /// ([`Follower::release`]): a delivery racing the catch-up could be
    /// overtaken by the catch-up's older copy of a document.
    held: bool,
}

impl Follower {
    /// A follower that has delivered everything up to change `head`.
    pub(super) fn new(listener: ChangeListener, head: i64) -> Arc<Follower> {
        Arc::new(Follower {
            listener,
            state: Mutex::new(Followed {
                fetched: head,
                own: BTreeSet::new(),
                held: true,
            }),
            stopped: AtomicBool::new(false),
        })
    }

    /// The listener the writer calls with its own committed changes.
    pub(super) fn writer_listener(self: &Arc<Self>) -> ChangeListener {
        let follower = self.clone();
        Arc::new(move |changes| follower.own(changes))
    }

    /// The writer's changes: delivered unless fetched already (a fetch after
    /// their commit read newer documents, which must not be overwritten).
    fn own(&self, changes: Vec<Change>) {
        let mut state = self.state.lock().expect("follower poisoned");
        let fresh: Vec<Change> = changes
            .into_iter()
            .filter(|c| c.seq > state.fetched)
            .collect();
        state.own.extend(fresh.iter().map(|c| c.seq));
        if !fresh.is_empty() {
            (self.listener)(fresh);
        }
    }

    /// Fetches and delivers the changes above the last fetched, when `head`
    /// (the store's newest change, if known) says there are any.
    pub(super) fn follow(&self, conn: Conn<'_>, head: Option<i64>) -> Result<(), StoreError> {
        let mut state = self.state.lock().expect("follower poisoned");
        if state.held || head.is_some_and(|h| h <= state.fetched) {
            return Ok(());
        }
        // The newest number logged, own changes included: what was fetched.
        let last: i64 = conn.value(
            "SELECT coalesce(max(seq), 0) FROM changes WHERE seq > ?1",
            &args![state.fetched],
        )?;
        if last == 0 {
            return Ok(());
        }
        let own = &state.own;
        let foreign: Vec<Change> =
            super::changes_after(conn, state.fetched, |seq| seq > last || own.contains(&seq))?;
        state.fetched = last;
        state.own.retain(|&s| s > last);
        if !foreign.is_empty() {
            tracing::debug!(changes = foreign.len(), upto = last, "followed other nodes");
            (self.listener)(foreign);
        }
        Ok(())
    }

    /// Starts fetching, from the store's head when the follower was made: the
    /// changes the index's catch-up already applied come again, in order and
    /// with their documents as they are now, so the newest version wins.
    pub(super) fn release(&self, conn: Conn<'_>) -> Result<(), StoreError> {
        self.state.lock().expect("follower poisoned").held = false;
        self.follow(conn, None)
    }

    /// Catches up to the store's newest change before a read.
    pub(super) fn sync(&self, conn: Conn<'_>) -> Result<(), StoreError> {
        let head: i64 = conn.value("SELECT coalesce(max(seq), 0) FROM changes", &[])?;
        self.follow(conn, Some(head))
    }

    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Starts the thread that listens for other nodes' writes, connecting with
/// `connect` (and again, with backoff, whenever its connection is lost).
/// It ends when the follower is dropped or stopped.
pub(super) fn listen(
    follower: &Arc<Follower>,
    connect: impl Fn() -> Result<Database, StoreError> + Send + 'static,
) -> Result<(), StoreError> {
    let weak: Weak<Follower> = Arc::downgrade(follower);
    std::thread::Builder::new()
        .name("engram-follow".into())
        .spawn(move || {
            let mut wait = Duration::from_millis(100);
            while let Some(f) = weak
                .upgrade()
                .filter(|f| !f.stopped.load(Ordering::Relaxed))
            {
                drop(f);
                match connect().and_then(|db| listen_on(&db, &weak)) {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "following other nodes: reconnecting");
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the follower: {e}")))?;
    Ok(())
}

/// Listens on `db` until the follower goes (`Ok`) or the connection fails.
fn listen_on(db: &Database, follower: &Weak<Follower>) -> Result<(), StoreError> {
    let Database::Postgres(pg) = db else {
        return Ok(());
    };
    db.conn().batch(&format!("LISTEN {CHANNEL}"))?;
    loop {
        let Some(f) = follower
            .upgrade()
            .filter(|f| !f.stopped.load(Ordering::Relaxed))
        else {
            return Ok(());
        };
        // Woken or not, look: a poll finds what a lost notification hid.
        let _woken = pg.wait_for_notification(POLL)?;
        f.follow(db.conn(), None)?;
    }
}
