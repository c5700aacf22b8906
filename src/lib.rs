//! engram: a memory server for AI agents.
//!
//! The library holds everything but the command line: the catalog of operations,
//! their typed handlers, the request pipeline, the backends (sqlite store, tantivy
//! search) and the MCP surface. See ARCHITECTURE.md for the invariants.

pub mod app;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod error;
pub mod graph;
pub mod heap;
pub mod interop;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod resilience;
pub mod search;
pub mod server;
pub mod session;
pub mod store;
pub mod timespec;

pub use app::AppState;
pub use config::Config;
pub use error::OpError;
pub use pipeline::Engine;
