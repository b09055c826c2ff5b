//! What Redis says about pub/sub: `PUBSUB CHANNELS / NUMSUB / NUMPAT / SHARDCHANNELS /
//! SHARDNUMSUB`, asked through the hub's publishing connection and, in a cluster, merged
//! over every reachable node (channel lists are unions, counts are sums, because each node
//! only knows the clients connected to it).
//!
//! [`PubSubHub`](crate::PubSubHub)'s introspection methods are thin calls into this module.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::sum_pairs;
use crate::error::HubError;
use crate::publisher::Publisher;

/// What Redis reports about pub/sub, fetched in one round trip (per node, in a cluster).
///
/// In a cluster every field is merged over all reachable nodes: channel lists are unions,
/// counts are sums, because each node only knows the subscribers connected to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Introspection {
    /// `PUBSUB CHANNELS <pattern>`, sorted.
    pub active_channels: Vec<String>,
    /// `PUBSUB NUMSUB` for the channels asked about.
    pub numsub: BTreeMap<String, i64>,
    /// `PUBSUB NUMPAT`.
    pub numpat: i64,
    /// `PUBSUB SHARDCHANNELS <pattern>` (same pattern), sorted; empty before Redis 7.
    pub shard_channels: Vec<String>,
    /// `PUBSUB SHARDNUMSUB` for the same channels; empty before Redis 7.
    pub shard_numsub: BTreeMap<String, i64>,
}

/// The publishing connection and the bound on each question.
pub(crate) struct Asker {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) timeout: Duration,
}

impl Asker {
    /// `PUBSUB CHANNELS` or `PUBSUB SHARDCHANNELS` (`subcommand`) with `pattern`: the
    /// union of the names, sorted.
    pub(crate) async fn names(
        &self,
        subcommand: &str,
        operation: &'static str,
        pattern: &str,
    ) -> Result<Vec<String>, HubError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg(subcommand).arg(pattern);
        let mut names = BTreeSet::new();
        for mut replies in self.ask(operation, &pipe, 1).await? {
            add_names(&mut names, take(&mut replies, 0))?;
        }
        Ok(names.into_iter().collect())
    }

    /// `PUBSUB NUMSUB` or `PUBSUB SHARDNUMSUB` (`subcommand`) for `channels`, summed.
    pub(crate) async fn counts(
        &self,
        subcommand: &str,
        operation: &'static str,
        channels: &[String],
    ) -> Result<BTreeMap<String, i64>, HubError> {
        if channels.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg(subcommand).arg(channels);
        let mut out = BTreeMap::new();
        for mut replies in self.ask(operation, &pipe, 1).await? {
            sum_pairs(&mut out, array(take(&mut replies, 0))?)?;
        }
        Ok(out)
    }

    /// `PUBSUB NUMPAT`, summed.
    pub(crate) async fn numpat(&self) -> Result<i64, HubError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg("NUMPAT");
        let mut total = 0;
        for mut replies in self.ask("PUBSUB NUMPAT", &pipe, 1).await? {
            total += int(take(&mut replies, 0))?;
        }
        Ok(total)
    }

    /// All five questions in one pipelined round trip (per node).
    pub(crate) async fn introspect(
        &self,
        channels_pattern: &str,
        numsub_channels: &[String],
    ) -> Result<Introspection, HubError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBSUB").arg("CHANNELS").arg(channels_pattern);
        pipe.cmd("PUBSUB").arg("NUMSUB").arg(numsub_channels);
        pipe.cmd("PUBSUB").arg("NUMPAT");
        pipe.cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .arg(channels_pattern);
        pipe.cmd("PUBSUB").arg("SHARDNUMSUB").arg(numsub_channels);
        let mut channels = BTreeSet::new();
        let mut shard_channels = BTreeSet::new();
        let mut out = Introspection::default();
        for mut replies in self.ask("PUBSUB", &pipe, 5).await? {
            add_names(&mut channels, take(&mut replies, 0))?;
            sum_pairs(&mut out.numsub, array(take(&mut replies, 1))?)?;
            out.numpat += int(take(&mut replies, 2))?;
            // Servers before Redis 7 answer "unknown subcommand": no shard channels there.
            if !matches!(replies[3], redis::Value::ServerError(_)) {
                add_names(&mut shard_channels, take(&mut replies, 3))?;
            }
            if !matches!(replies[4], redis::Value::ServerError(_)) {
                sum_pairs(&mut out.shard_numsub, array(take(&mut replies, 4))?)?;
            }
        }
        out.active_channels = channels.into_iter().collect();
        out.shard_channels = shard_channels.into_iter().collect();
        Ok(out)
    }

    async fn ask(
        &self,
        operation: &'static str,
        pipe: &redis::Pipeline,
        count: usize,
    ) -> Result<Vec<Vec<redis::Value>>, HubError> {
        self.publisher
            .ask(operation, pipe, count, self.timeout)
            .await
    }
}

/// Moves reply `i` out of a node's replies.
fn take(replies: &mut [redis::Value], i: usize) -> redis::Value {
    std::mem::replace(&mut replies[i], redis::Value::Nil)
}

/// A reply that must not be a server error.
fn ok(value: redis::Value) -> Result<redis::Value, HubError> {
    match value {
        redis::Value::ServerError(e) => Err(HubError::Redis(e.into())),
        value => Ok(value),
    }
}

fn array(value: redis::Value) -> Result<Vec<redis::Value>, HubError> {
    Ok(redis::from_redis_value(ok(value)?).map_err(redis::RedisError::from)?)
}

fn int(value: redis::Value) -> Result<i64, HubError> {
    Ok(redis::from_redis_value(ok(value)?).map_err(redis::RedisError::from)?)
}

/// Adds a `PUBSUB CHANNELS`-style reply to a set of names (lossy UTF-8).
fn add_names(into: &mut BTreeSet<String>, value: redis::Value) -> Result<(), HubError> {
    let names: Vec<Vec<u8>> =
        redis::from_redis_value(ok(value)?).map_err(redis::RedisError::from)?;
    into.extend(
        names
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned()),
    );
    Ok(())
}
