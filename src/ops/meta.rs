//! Meta: engram about itself — health of its backends and the query cache.

use schemars::JsonSchema;
use serde::Deserialize;

use super::OpCtx;
use crate::app::Health;
use crate::error::OpError;
use crate::resilience::cache::CacheStats;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NoInput {}

operation!(HealthOp = "meta_health", NoInput => Health, meta_health);

async fn meta_health(cx: OpCtx, _: NoInput) -> Result<Health, OpError> {
    Ok(cx.app.health())
}

operation!(CacheStatsOp = "meta_cache_stats", NoInput => CacheStats, meta_cache_stats);

async fn meta_cache_stats(cx: OpCtx, _: NoInput) -> Result<CacheStats, OpError> {
    Ok(cx.app.cache_stats())
}
