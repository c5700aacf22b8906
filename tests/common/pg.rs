//! A real PostgreSQL for the tests: one throwaway cluster per test process
//! (`engram_bench::postgres`, in `target/pg-test/<pid>`), started on first use,
//! a fresh database per caller. A test that needs PostgreSQL and cannot find it
//! fails, saying how to install it: it never skips.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use engram_bench::postgres::Cluster;

/// Whether the in-process suites run on PostgreSQL (`ENGRAM_TEST_STORE=postgres`)
/// rather than sqlite.
pub fn selected() -> bool {
    match std::env::var("ENGRAM_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("ENGRAM_TEST_STORE={other:?}: expected sqlite or postgres"),
    }
}

/// The URL of a new, empty database in this process's cluster.
pub fn fresh_database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    cluster().create_database(&format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// The cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        Cluster::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pg-test"))
    })
}
