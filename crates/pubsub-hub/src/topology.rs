//! Where the hub's subscriber connections go: one Redis server, or a Redis Cluster.
//!
//! Plain links (channels and patterns) need *a* node: on a cluster any node will do, since
//! a PUBLISH on one node reaches subscribers on every node over the cluster bus. Shard
//! links need *the* node owning a shard channel's hash slot. [`Topology`] answers both for
//! either kind of deployment, so no link and no part of the hub keeps its own
//! server-or-cluster switch. (The publisher's two variants are redis-rs's two kinds of
//! connection; a cluster publisher shares the same view.)

#[cfg(feature = "cluster")]
use std::sync::Arc;

#[cfg(feature = "cluster")]
use crate::cluster::{ClusterView, slot_of};
use crate::cluster::{NodeAddr, info_for};
use crate::error::HubError;

/// One Redis server or a cluster; shared by the hub and every link.
// With redis' TLS features on (the dashboard's `rediss://`), `redis::Client` is ~240 bytes;
// there is one such value per hub, behind an `Arc`, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Topology {
    /// One server, which owns every shard channel too.
    Server {
        /// The hub's client, as configured (plain links use it).
        client: redis::Client,
        /// The same client switched to RESP3: shard links need push messages (`smessage`).
        resp3: redis::Client,
        /// The server's address, to key shard connections by.
        addr: NodeAddr,
    },
    /// The hub's view of a cluster: slot owners and the nodes that answer.
    #[cfg(feature = "cluster")]
    Cluster(Arc<ClusterView>),
}

impl Topology {
    /// The single server `client` connects to.
    pub(crate) fn server(client: redis::Client) -> Result<Topology, HubError> {
        let info = client.get_connection_info();
        let resp3 = redis::Client::open(info_for(info, None, true)?)?;
        // A Unix socket has no host and port; a shard link then keys its one connection by
        // this placeholder, since a single server owns every slot anyway.
        let addr = NodeAddr::of(info).unwrap_or_else(|| NodeAddr {
            host: "local".into(),
            port: 0,
        });
        Ok(Topology::Server {
            client,
            resp3,
            addr,
        })
    }

    /// True for a cluster (never without the `cluster` feature).
    pub(crate) fn is_cluster(&self) -> bool {
        match self {
            Topology::Server { .. } => false,
            #[cfg(feature = "cluster")]
            Topology::Cluster(_) => true,
        }
    }

    /// A subscriber connection for a plain link, opened by `open` with a client for the
    /// server, or for the first node that accepts one (`spread` rotates the candidates so
    /// that links do not all pick the same node). The client speaks RESP3 if `resp3`, else
    /// the protocol the hub was configured with. `open` bounds its own time.
    // Without the cluster feature only the single server's arm is left, which does not
    // spread.
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
    pub(crate) async fn open_subscriber<T, F, Fut>(
        &self,
        resp3: bool,
        spread: u64,
        open: F,
    ) -> Result<T, HubError>
    where
        F: Fn(redis::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, HubError>>,
    {
        match self {
            Topology::Server {
                client,
                resp3: resp3_client,
                ..
            } => open(if resp3 { resp3_client } else { client }.clone()).await,
            #[cfg(feature = "cluster")]
            Topology::Cluster(view) => view.open_subscriber(resp3, spread, open).await,
        }
    }

    /// The node owning shard channel `channel`.
    // Without the cluster feature only the single server's arm is left, which needs no
    // argument.
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
    pub(crate) fn shard_owner(&self, channel: &str) -> Result<NodeAddr, HubError> {
        match self {
            Topology::Server { addr, .. } => Ok(addr.clone()),
            #[cfg(feature = "cluster")]
            Topology::Cluster(view) => {
                let slot = slot_of(channel.as_bytes());
                view.owner(slot).ok_or_else(|| {
                    HubError::Unavailable(format!("no master owns slot {slot} of {channel:?}"))
                })
            }
        }
    }

    /// A RESP3 client for node `addr` (a shard link's connection).
    // Without the cluster feature only the single server's arm is left, which needs no
    // argument.
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
    pub(crate) fn shard_client(&self, addr: &NodeAddr) -> Result<redis::Client, HubError> {
        match self {
            Topology::Server { resp3, .. } => Ok(resp3.clone()),
            #[cfg(feature = "cluster")]
            Topology::Cluster(view) => view.client(addr, true),
        }
    }

    /// Learns the current slot owners (a cluster's `CLUSTER NODES`; nothing to learn on one
    /// server).
    pub(crate) async fn refresh(&self) -> Result<(), HubError> {
        match self {
            Topology::Server { .. } => Ok(()),
            #[cfg(feature = "cluster")]
            Topology::Cluster(view) => view.refresh().await,
        }
    }

    /// Closes what the topology itself holds open (a cluster view's admin connections); the
    /// hub's shutdown.
    pub(crate) fn close(&self) {
        match self {
            Topology::Server { .. } => {}
            #[cfg(feature = "cluster")]
            Topology::Cluster(view) => view.close(),
        }
    }
}
