//! Meta: engram about itself — health of its backends and the query cache.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{OpCtx, Operation};
use crate::app::Health;
use crate::error::OpError;
use crate::resilience::cache::CacheStats;


#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

pub struct HealthOp;

impl Operation for HealthOp {
    const NAME: &'static str = "meta_health";
    type Input = NoInput;
    type Output = Health;

    async fn run(cx: OpCtx, _: NoInput) -> Result<Health, OpError> {
        Ok(cx.app.health())
    }
}

pub struct CacheStatsOp;

impl Operation for CacheStatsOp {
    const NAME: &'static str = "meta_cache_stats";
    type Input = NoInput;
    type Output = CacheStats;

    async fn run(cx: OpCtx, _: NoInput) -> Result<CacheStats, OpError> {
        Ok(cx.app.cache_stats())
    }
}
