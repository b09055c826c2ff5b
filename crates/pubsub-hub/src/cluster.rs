//! Redis Cluster topology as the hub needs it: which master owns each hash slot, which
//! nodes answer, and one cached admin connection per node to ask them.
//!
//! The hub keeps this view itself instead of reading redis-rs's cluster connection because
//! its subscriber links must know *where* to subscribe (`SSUBSCRIBE` only works on the
//! master owning the channel's slot, or its replicas) and introspection must ask *every*
//! node for node-local facts (`PUBSUB NUMSUB`, `NUMPAT`, `SHARDNUMSUB`). The view is
//! refreshed when a shard link loses a node or is told `MOVED`, when a plain link cannot
//! reach any node, before introspection once it is older than [`TOPOLOGY_MAX_AGE`], and in
//! the background at that age: a graceful failover tells only shard *subscribers* (with
//! `sunsubscribe`), so a hub that only publishes would otherwise never notice it.
//!
//! Nodes disagree for a moment after a failover; the view asks every node it knows and
//! keeps, for each slot, the claim with the highest config epoch, which is the rule the
//! cluster itself converges on.
//!
//! The topology is behind the `cluster` feature. Hash slots, node addresses and the summing
//! of node replies are not: a single server uses them too (shared mode places shard
//! channels on its links by slot, and introspection sums `NUMSUB`-style replies).

use std::collections::BTreeMap;
use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, Value};

use crate::error::HubError;

#[cfg(feature = "cluster")]
use {
    crate::config::HubConfig,
    crate::error::{bounded, connection_broken},
    crate::locks::lock,
    redis::AsyncConnectionConfig,
    redis::aio::MultiplexedConnection,
    std::collections::{BTreeSet, HashMap},
    std::sync::atomic::{AtomicBool, AtomicU64, Ordering},
    std::sync::{Arc, Mutex},
    std::time::{Duration, Instant},
};

/// Number of hash slots in a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;
/// Introspection refreshes the topology first when it is older than this, so nodes that
/// joined or failed are counted (or skipped) without a refresh on every call.
#[cfg(feature = "cluster")]
const TOPOLOGY_MAX_AGE: Duration = Duration::from_secs(5);

/// A node's address as the cluster announces it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl NodeAddr {
    /// The address of a connection info, if it is a TCP one.
    pub(crate) fn of(info: &ConnectionInfo) -> Option<NodeAddr> {
        match info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Some(NodeAddr {
                    host: host.clone(),
                    port: *port,
                })
            }
            _ => None,
        }
    }
}

/// Hash slot of a key or shard channel: CRC16 of the key, or of its `{hash tag}` when it
/// has a non-empty one (as `CLUSTER KEYSLOT` computes it).
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A copy of `info` pointing at `addr`, speaking RESP3 if asked (shard links need push
/// messages for `smessage`).
pub(crate) fn info_for(
    info: &ConnectionInfo,
    addr: Option<&NodeAddr>,
    resp3: bool,
) -> Result<ConnectionInfo, HubError> {
    let mut info = info.clone();
    if let Some(addr) = addr {
        let new_addr = match info.addr() {
            ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(addr.host.clone(), addr.port),
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: addr.host.clone(),
                port: addr.port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => {
                return Err(HubError::Redis(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cluster nodes must be TCP addresses",
                ))));
            }
        };
        info = info.set_addr(new_addr);
    }
    if resp3 {
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        info = info.set_redis_settings(settings);
    }
    Ok(info)
}

/// One line of `CLUSTER NODES`, as far as the hub cares.
#[cfg(feature = "cluster")]
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeLine {
    addr: NodeAddr,
    is_master: bool,
    /// Flagged `fail` (agreed by the cluster) or `noaddr`: not worth asking.
    is_failed: bool,
    config_epoch: u64,
    /// Owned slot ranges, inclusive.
    slots: Vec<(u16, u16)>,
}

/// Parses `CLUSTER NODES` as answered by `asked` (whose own line may lack a host).
#[cfg(feature = "cluster")]
fn parse_cluster_nodes(text: &str, asked: &NodeAddr) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let flags: Vec<&str> = fields[2].split(',').collect();
            let has = |f: &str| flags.contains(&f);
            // ip:port@cport[,hostname]
            let hostport = fields[1].split(['@', ',']).next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            let host = if host.is_empty() && has("myself") {
                asked.host.clone()
            } else {
                host.to_owned()
            };
            if host.is_empty() || port == 0 {
                return None;
            }
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => {
                        let n = s.parse().ok()?;
                        Some((n, n))
                    }
                })
                .filter(|&(a, b): &(u16, u16)| a <= b && b < SLOTS)
                .collect();
            Some(NodeLine {
                addr: NodeAddr { host, port },
                is_master: has("master"),
                is_failed: has("fail") || has("noaddr") || has("handshake"),
                config_epoch: fields[6].parse().unwrap_or(0),
                slots,
            })
        })
        .collect()
}

/// The merged view of the cluster.
#[cfg(feature = "cluster")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SlotMap {
    /// Slot ranges (inclusive) and the master owning them, sorted by first slot.
    slots: Vec<(u16, u16, NodeAddr)>,
    /// Every node no answer flags as failed, masters and replicas alike: what introspection
    /// asks. A node that is down but not yet agreed failed stays here, so introspection
    /// fails rather than quietly leaving its subscribers out.
    live: Vec<NodeAddr>,
    /// The live nodes that answered the last refresh: where plain links subscribe first.
    answered: Vec<NodeAddr>,
    /// Every node any answer mentioned: who the next refresh asks.
    known: BTreeSet<NodeAddr>,
}

/// Builds the topology from the answers of several nodes: per slot, the claim of the
/// master with the highest config epoch wins.
#[cfg(feature = "cluster")]
fn merge(answers: &[(NodeAddr, Vec<NodeLine>)]) -> SlotMap {
    let mut owner: Vec<Option<(u64, &NodeAddr)>> = vec![None; usize::from(SLOTS)];
    let mut known = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for (_, lines) in answers {
        for line in lines {
            known.insert(line.addr.clone());
            if line.is_failed {
                failed.insert(line.addr.clone());
            }
            if !line.is_master {
                continue;
            }
            for &(a, b) in &line.slots {
                for slot in a..=b {
                    let cell = &mut owner[usize::from(slot)];
                    if cell.is_none_or(|(epoch, _)| line.config_epoch > epoch) {
                        *cell = Some((line.config_epoch, &line.addr));
                    }
                }
            }
        }
    }
    let mut slots: Vec<(u16, u16, NodeAddr)> = Vec::new();
    for (slot, cell) in owner.iter().enumerate() {
        let Some((_, addr)) = cell else { continue };
        let slot = slot as u16;
        match slots.last_mut() {
            Some((_, end, last)) if *end + 1 == slot && last == *addr => *end = slot,
            _ => slots.push((slot, slot, (*addr).clone())),
        }
    }
    let answered: Vec<NodeAddr> = answers
        .iter()
        .map(|(addr, _)| addr.clone())
        .filter(|addr| !failed.contains(addr))
        .collect();
    let mut live = answered.clone();
    live.extend(
        known
            .iter()
            .filter(|addr| !failed.contains(*addr) && !answered.contains(*addr))
            .cloned(),
    );
    SlotMap {
        slots,
        live,
        answered,
        known,
    }
}

/// The hub's view of a Redis Cluster, shared by the hub and its links.
#[cfg(feature = "cluster")]
pub(crate) struct ClusterView {
    /// The addresses the hub was configured with; always asked on refresh, so the view can
    /// recover even if every node it learnt about has gone.
    seeds: Vec<NodeAddr>,
    /// Credentials, database and protocol for every node connection (from the first seed).
    base: ConnectionInfo,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// Slot owners and nodes as merged at the last refresh.
    map: Mutex<SlotMap>,
    refreshed_at: Mutex<Option<Instant>>,
    /// Admin connections (RESP as configured), one per node, dropped on I/O errors.
    admin: Mutex<HashMap<NodeAddr, MultiplexedConnection>>,
    /// Serialises refreshes; callers that waited behind a refresh reuse its result.
    refreshing: tokio::sync::Mutex<()>,
    /// Completed refreshes, to tell whether one finished while a caller waited.
    generation: AtomicU64,
    /// Set by the hub's shutdown: no admin connection is opened afterwards.
    closed: AtomicBool,
}

#[cfg(feature = "cluster")]
impl ClusterView {
    /// A view seeded with `nodes`, not yet refreshed.
    pub(crate) fn new(nodes: &[ConnectionInfo], config: &HubConfig) -> Result<Self, HubError> {
        let base = nodes.first().cloned().ok_or_else(|| {
            HubError::Redis(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no cluster node addresses given",
            )))
        })?;
        let seeds = nodes
            .iter()
            .map(|info| {
                NodeAddr::of(info).ok_or_else(|| {
                    HubError::Redis(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "cluster nodes must be TCP addresses",
                    )))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClusterView {
            seeds,
            base,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            map: Mutex::new(SlotMap::default()),
            refreshed_at: Mutex::new(None),
            admin: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// A client for `addr` with the seeds' credentials, in RESP3 if `resp3`.
    pub(crate) fn client(&self, addr: &NodeAddr, resp3: bool) -> Result<redis::Client, HubError> {
        Ok(redis::Client::open(info_for(
            &self.base,
            Some(addr),
            resp3,
        )?)?)
    }

    /// The master owning `slot`, if the view knows one.
    pub(crate) fn owner(&self, slot: u16) -> Option<NodeAddr> {
        let topology = lock(&self.map);
        let i = topology.slots.partition_point(|(_, end, _)| *end < slot);
        topology
            .slots
            .get(i)
            .filter(|(start, _, _)| *start <= slot)
            .map(|(_, _, addr)| addr.clone())
    }

    /// Nodes to subscribe plain channels on, best first: those that answered last, rotated
    /// by `spread` so that links do not all pick the same node, then the other live ones,
    /// then the seeds.
    pub(crate) fn subscribe_candidates(&self, spread: u64) -> Vec<NodeAddr> {
        let topology = lock(&self.map);
        let mut nodes = topology.answered.clone();
        if !nodes.is_empty() {
            let k = (spread % nodes.len() as u64) as usize;
            nodes.rotate_left(k);
        }
        for addr in topology.live.iter().chain(&self.seeds) {
            if !nodes.contains(addr) {
                nodes.push(addr.clone());
            }
        }
        nodes
    }

    /// Opens a subscriber connection with `open` on the first candidate node that accepts
    /// one (a client for the node in RESP3 if `resp3`, else in the seeds' protocol). Bounded
    /// by about twice the connect time-out in total, if `open` is bounded by it.
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
        let started = Instant::now();
        let mut last = HubError::Unavailable("no cluster node known".into());
        for addr in self.subscribe_candidates(spread) {
            if started.elapsed() >= self.connect_timeout {
                break;
            }
            match open(self.client(&addr, resp3)?).await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    tracing::debug!(node = %addr, error = %e, "cluster node refused a subscriber connection");
                    last = e;
                }
            }
        }
        // Every node we knew failed: learn the current topology for the next attempt.
        let _ = self.refresh().await;
        Err(last)
    }

    /// Asks every known node for `CLUSTER NODES` and rebuilds the view. Concurrent callers
    /// share one refresh. Fails only if no node answers.
    pub(crate) async fn refresh(&self) -> Result<(), HubError> {
        let seen = self.generation.load(Ordering::Acquire);
        let _guard = self.refreshing.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        let mut candidates: BTreeSet<NodeAddr> = lock(&self.map).known.clone();
        candidates.extend(self.seeds.iter().cloned());
        let cmd = redis::cmd("CLUSTER").arg("NODES").to_owned();
        let asks = candidates.into_iter().map(|addr| {
            let cmd = &cmd;
            async move {
                let result = self.query::<String>(&addr, "CLUSTER NODES", cmd).await;
                (addr, result)
            }
        });
        let mut answers = Vec::new();
        let mut last_error = None;
        for (addr, result) in futures_util::future::join_all(asks).await {
            match result {
                Ok(text) => {
                    let lines = parse_cluster_nodes(&text, &addr);
                    answers.push((addr, lines));
                }
                Err(e) => last_error = Some(e),
            }
        }
        if answers.is_empty() {
            return Err(last_error
                .unwrap_or_else(|| HubError::Unavailable("no cluster node answered".into())));
        }
        let topology = merge(&answers);
        if topology.slots.is_empty() {
            return Err(HubError::Unavailable(
                "the cluster nodes report no slot owners (is cluster mode enabled?)".into(),
            ));
        }
        tracing::debug!(
            ranges = topology.slots.len(),
            live = topology.live.len(),
            answered = topology.answered.len(),
            "cluster topology refreshed"
        );
        *lock(&self.map) = topology;
        *lock(&self.refreshed_at) = Some(Instant::now());
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Refreshes if the view is older than [`TOPOLOGY_MAX_AGE`]; a failed refresh keeps the
    /// old view (the queries that follow will report what is wrong).
    async fn refresh_if_stale(&self) {
        let stale = lock(&self.refreshed_at).is_none_or(|at| at.elapsed() >= TOPOLOGY_MAX_AGE);
        if stale && let Err(e) = self.refresh().await {
            tracing::debug!(error = %e, "cluster topology refresh failed");
        }
    }

    /// Runs `cmd` on `addr` over the cached admin connection, opening it if needed.
    async fn query<T: redis::FromRedisValue>(
        &self,
        addr: &NodeAddr,
        operation: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, HubError> {
        let mut conn = self.admin(addr).await?;
        let result = bounded(operation, self.command_timeout, cmd.query_async(&mut conn)).await;
        if let Err(e) = &result
            && connection_broken(e)
        {
            lock(&self.admin).remove(addr);
        }
        result
    }

    /// Runs `pipe` on `addr`, returning one value per command (server errors included as
    /// [`Value::ServerError`]).
    async fn pipeline(
        &self,
        addr: &NodeAddr,
        operation: &'static str,
        pipe: &redis::Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, HubError> {
        use redis::aio::ConnectionLike;
        let mut conn = self.admin(addr).await?;
        let result = bounded(
            operation,
            self.command_timeout,
            conn.req_packed_commands(pipe, 0, count),
        )
        .await;
        if let Err(e) = &result
            && connection_broken(e)
        {
            lock(&self.admin).remove(addr);
        }
        result
    }

    async fn admin(&self, addr: &NodeAddr) -> Result<MultiplexedConnection, HubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(HubError::Closed);
        }
        if let Some(conn) = lock(&self.admin).get(addr) {
            return Ok(conn.clone());
        }
        let client = self.client(addr, false)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let conn = bounded(
            "connect",
            self.connect_timeout + self.command_timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        let mut admin = lock(&self.admin);
        if self.closed.load(Ordering::Acquire) {
            return Err(HubError::Closed);
        }
        admin.insert(addr.clone(), conn.clone());
        Ok(conn)
    }

    /// Closes the admin connections for good (the hub's shutdown).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.admin).clear();
    }

    /// Runs `pipe` on every reachable node at once and returns each node's answers. Fails if
    /// any of them fails: a merged count that silently misses a node would be wrong.
    pub(crate) async fn on_every_node(
        &self,
        operation: &'static str,
        pipe: &redis::Pipeline,
        count: usize,
    ) -> Result<Vec<(NodeAddr, Vec<Value>)>, HubError> {
        self.refresh_if_stale().await;
        let nodes = lock(&self.map).live.clone();
        if nodes.is_empty() {
            return Err(HubError::Unavailable("no cluster node is reachable".into()));
        }
        let asks = nodes.into_iter().map(|addr| async move {
            let result = self.pipeline(&addr, operation, pipe, count).await;
            (addr, result)
        });
        let mut out = Vec::new();
        for (addr, result) in futures_util::future::join_all(asks).await {
            match result {
                Ok(values) => out.push((addr, values)),
                Err(e) => {
                    // The node may have failed: make the next call see the new topology.
                    *lock(&self.refreshed_at) = None;
                    tracing::debug!(node = %addr, error = %e, "cluster node did not answer");
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}

/// Sums `PUBSUB NUMSUB`-style replies (`name, count, name, count, ...`) from several nodes.
pub(crate) fn sum_pairs(
    into: &mut BTreeMap<String, i64>,
    flat: Vec<Value>,
) -> Result<(), HubError> {
    let mut it = flat.into_iter();
    while let (Some(name), Some(count)) = (it.next(), it.next()) {
        let name: Vec<u8> = redis::from_redis_value(name).map_err(redis::RedisError::from)?;
        let count: i64 = redis::from_redis_value(count).map_err(redis::RedisError::from)?;
        *into
            .entry(String::from_utf8_lossy(&name).into_owned())
            .or_insert(0) += count;
    }
    Ok(())
}

/// Shared by the hub's constructor: a view refreshed once, so that the hub starts with
/// slot owners known, and kept fresh in the background until it is closed or dropped.
#[cfg(feature = "cluster")]
pub(crate) async fn connect(
    nodes: &[ConnectionInfo],
    config: &HubConfig,
) -> Result<Arc<ClusterView>, HubError> {
    let view = Arc::new(ClusterView::new(nodes, config)?);
    view.refresh().await?;
    let weak = Arc::downgrade(&view);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TOPOLOGY_MAX_AGE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(view) = weak.upgrade() else { break };
            if view.closed.load(Ordering::Acquire) {
                break;
            }
            view.refresh_if_stale().await;
        }
    });
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "cluster")]
    fn addr(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn slots_match_redis() {
        // Reference values from the cluster specification and CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"somekey"), 11058);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn parses_cluster_nodes_lines() {
        let text = "\
07c3 127.0.0.1:30004@31004,host4 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1 :30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed]
6ec2 :0@0 master,fail?,noaddr - 0 0 5 disconnected 16000
";
        let lines = parse_cluster_nodes(text, &addr(30001));
        assert_eq!(lines.len(), 3, "the noaddr line has no usable address");
        assert_eq!(lines[0].addr, addr(30004));
        assert!(!lines[0].is_master);
        assert_eq!(lines[1].slots, vec![(5461, 10922)]);
        assert_eq!(lines[1].config_epoch, 2);
        assert_eq!(
            lines[2].addr,
            addr(30001),
            "myself without a host is the asked node"
        );
        assert_eq!(lines[2].slots, vec![(0, 5460)]);
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn merge_prefers_the_highest_epoch() {
        let line = |port, master, epoch, slots: Vec<(u16, u16)>| NodeLine {
            addr: addr(port),
            is_master: master,
            is_failed: false,
            config_epoch: epoch,
            slots,
        };
        // Node 1 still believes it owns 0-99; node 2 took over with a newer epoch.
        let stale = vec![
            line(1, true, 1, vec![(0, 99)]),
            line(3, true, 3, vec![(100, SLOTS - 1)]),
        ];
        let fresh = vec![
            line(1, false, 1, vec![]),
            line(2, true, 7, vec![(0, 99)]),
            line(3, true, 3, vec![(100, SLOTS - 1)]),
        ];
        let topology = merge(&[(addr(1), stale), (addr(2), fresh)]);
        assert_eq!(
            topology.slots,
            vec![(0, 99, addr(2)), (100, SLOTS - 1, addr(3))]
        );
        assert_eq!(topology.answered, vec![addr(1), addr(2)]);
        assert_eq!(topology.live, vec![addr(1), addr(2), addr(3)]);
        assert_eq!(topology.known.len(), 3);
    }

    #[test]
    fn sums_numsub_pairs() {
        let mut out = BTreeMap::new();
        let reply = |n| {
            vec![
                Value::BulkString(b"a".to_vec()),
                Value::Int(n),
                Value::BulkString(b"b".to_vec()),
                Value::Int(0),
            ]
        };
        sum_pairs(&mut out, reply(1)).unwrap();
        sum_pairs(&mut out, reply(2)).unwrap();
        assert_eq!(out, BTreeMap::from([("a".into(), 3), ("b".into(), 0)]));
    }
}
