//! What the in-process benches share: an engine on a data dir of its own,
//! called through its front door as one session.

use std::sync::Arc;

use engram::Engine;
use engram::config::Config;
use engram::session::Session;
use serde_json::Value;

pub struct Bench {
    pub app: Engine,
    pub session: Arc<Session>,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// An engine on a temporary data dir, no rate limit (the bench is the load),
    /// and a query cache of `cache_capacity` answers (0: none).
    pub async fn open(cache_capacity: usize) -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(dir.path());
        config.cache_capacity = cache_capacity;
        config.rate_limit_per_second = 0;
        let app = Engine::open(config).await.expect("open");
        let session = app.new_session();
        Bench {
            app,
            session,
            _dir: dir,
        }
    }

    /// `op` as `session`; panics (naming it) on an error.
    pub async fn call_as(&self, session: &Arc<Session>, op: &str, args: Value) -> Value {
        self.app
            .call(session, op, args)
            .await
            .unwrap_or_else(|e| panic!("{op}: {e}"))
    }

    /// `op` as the bench's own session.
    pub async fn call(&self, op: &str, args: Value) -> Value {
        self.call_as(&self.session, op, args).await
    }
}
