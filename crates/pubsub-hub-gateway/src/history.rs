//! [`RedisHistory`]: channel history in Redis through the library's durable publish
//! ([`pubsub_hub::PubSubHub::publish_with_history`]), so every gateway process on the same
//! Redis (or Cluster) sees one history per channel.
//!
//! # Live publications and offsets
//! A publication to a channel whose namespace keeps history (`history_size` > 0) is
//! appended to the channel's capped Stream and published in one Lua script; the live copy
//! on the Redis channel is wrapped in the library's envelope
//! ([`pubsub_hub::LiveEnvelope`]: `\x1fph1:<offset>:<epoch>\x1f<payload>`), which each
//! gateway process strips before pushing the publication with its `offset`. Plain Redis
//! subscribers of such a channel therefore see the envelope, not the bare payload.
//!
//! A plain `PUBLISH` from another Redis client to a history channel still reaches live
//! clients, without an `offset`, and it is not part of history: a client that reconnects
//! does not get it back. Such a publication does not move any client's position, so a
//! client cannot tell from its position that it missed one. To make an outside publication
//! durable, run the library's [`PUBLISH_SCRIPT`](pubsub_hub::history::PUBLISH_SCRIPT) with
//! `EVAL` (keys from [`history_keys`](pubsub_hub::history::history_keys)) instead of
//! `PUBLISH`; run with an empty publish command, it stores without publishing, and every
//! positioned client notices the hole in offsets at the next live publication and recovers
//! the stored one.

use pubsub_hub::{HistoryOptions, HistoryRequest, PubSubHub};

use crate::features::{
    BoxFuture, FeatureError, HistoryPage, HistoryQuery, HistoryRules, HistoryStore, Stored,
};
use crate::protocol::StreamPosition;

/// History kept in Redis Streams by the hub's durable publish. Channels whose rules keep
/// no history (`size` 0) answer "not available".
#[derive(Clone, Debug)]
pub struct RedisHistory {
    hub: PubSubHub,
}

impl RedisHistory {
    /// History on the Redis (or Cluster) of `hub`.
    pub fn new(hub: PubSubHub) -> Self {
        RedisHistory { hub }
    }
}

fn unavailable(e: pubsub_hub::HubError) -> FeatureError {
    FeatureError::Unavailable(e.to_string())
}

impl HistoryStore for RedisHistory {
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, FeatureError>> {
        Box::pin(async move {
            if query.size == 0 {
                return Err(FeatureError::NotAvailable);
            }
            let limit = (query.limit != usize::MAX).then_some(query.limit);
            let request = HistoryRequest::default()
                .with_limit(limit)
                .with_since(query.since.as_ref().map(|p| p.offset))
                .with_reverse(query.reverse);
            let page = self
                .hub
                .history(channel, &request, query.ttl)
                .await
                .map_err(unavailable)?;
            Ok(HistoryPage {
                publications: page.publications,
                position: StreamPosition {
                    offset: page.position.offset,
                    epoch: page.position.epoch,
                },
                oldest: page.oldest,
            })
        })
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: &'a [u8],
        rules: HistoryRules,
    ) -> BoxFuture<'a, Result<Stored, FeatureError>> {
        Box::pin(async move {
            if rules.size == 0 {
                return Err(FeatureError::NotAvailable);
            }
            let options = HistoryOptions::new(rules.size, rules.ttl).with_sharded(rules.sharded);
            let done = self
                .hub
                .publish_with_history(channel, data, &options)
                .await
                .map_err(unavailable)?;
            Ok(Stored {
                position: StreamPosition {
                    offset: done.position.offset,
                    epoch: done.position.epoch,
                },
                receivers: done.receivers,
            })
        })
    }

    fn remove<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), FeatureError>> {
        Box::pin(async move { self.hub.remove_history(channel).await.map_err(unavailable) })
    }
}
