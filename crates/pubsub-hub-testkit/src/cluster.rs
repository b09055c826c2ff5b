//! A real local Redis Cluster made of private redis-server processes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::server::{RedisServer, info_field};
use crate::wait::poll_until;

/// Number of hash slots in a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// How long [`RedisCluster::start`] waits for the cluster to form.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`RedisCluster::failover`] and `start_node` wait for health.
const HEAL_TIMEOUT: Duration = Duration::from_secs(25);
/// Interval between two health checks.
const HEALTH_POLL: Duration = Duration::from_millis(50);

/// Arguments every cluster node is started with (before user arguments).
const NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
    // Replicas sync immediately instead of after the default 5 s delay.
    "--repl-diskless-sync-delay",
    "0",
];

/// Slot ranges with their owner's port, and each running node with its
/// master's port (if a replica), as seen by one node.
type Topology = (Vec<(u16, u16, u16)>, Vec<(u16, Option<u16>)>);

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// Master id for a replica, `None` for a master.
    master_id: Option<String>,
    /// Owned slot ranges (inclusive), for a master.
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    fn is_master(&self) -> bool {
        self.has_flag("master")
    }
    fn is_failing(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"]
            .iter()
            .any(|f| self.has_flag(f))
    }
}

fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            // ip:port@cport[,hostname]
            let addr = fields[1].split(['@', ',']).next()?;
            let port = addr.rsplit_once(':')?.1.parse().ok()?;
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
                .collect();
            Some(NodeLine {
                id: fields[0].to_string(),
                port,
                flags: fields[2].split(',').map(str::to_string).collect(),
                master_id: (fields[3] != "-").then(|| fields[3].to_string()),
                slots,
            })
        })
        .collect()
}

/// CRC16/XMODEM as used by Redis Cluster.
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

/// A real local Redis Cluster of private [`RedisServer`] nodes on free
/// 127.0.0.1 ports (each with its cluster bus on `port + 10000`).
///
/// Every node runs with `--cluster-enabled yes --cluster-config-file
/// nodes.conf --cluster-node-timeout 2000` in its own temporary directory.
/// All nodes are killed when the cluster is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas_per_master` replicas each and
    /// waits (up to ~30 s) until every node reports `cluster_state:ok`, all
    /// 16384 slots are assigned and every node agrees on who owns them, and
    /// every replica's link to its master is up.
    ///
    /// Nodes `0..masters` are the masters (slots split evenly, in order) and
    /// the others their replicas, `replicas_per_master` each. With 3 masters or more the
    /// cluster is formed by `redis-cli --cluster create` (with
    /// `--cluster-replicas`), as an operator would; redis-cli refuses fewer
    /// masters, so 1 or 2 are formed with `CLUSTER ADDSLOTSRANGE` / `MEET` /
    /// `REPLICATE` instead.
    ///
    /// # Panics
    ///
    /// If `masters == 0`, or the cluster does not become healthy in time.
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        Self::start_with_args(masters, replicas_per_master, &[])
    }

    /// Like [`start`](Self::start), with extra arguments for every node, e.g.
    /// `&["--client-output-buffer-limit", "pubsub 1kb 1kb 0"]`. With
    /// `--requirepass`, `--masterauth` is added so replicas can sync.
    pub fn start_with_args(
        masters: usize,
        replicas_per_master: usize,
        args: &[&str],
    ) -> RedisCluster {
        assert!(masters > 0, "a cluster needs at least one master");
        let started = Instant::now();
        let total = masters * (1 + replicas_per_master);
        let mut node_args: Vec<&str> = NODE_ARGS.to_vec();
        node_args.extend_from_slice(args);
        let password = args
            .windows(2)
            .rev()
            .find(|w| w[0].eq_ignore_ascii_case("--requirepass"))
            .map(|w| w[1]);
        let has_masterauth = args.iter().any(|a| a.eq_ignore_ascii_case("--masterauth"));
        if let (Some(pw), false) = (password, has_masterauth) {
            node_args.extend_from_slice(&["--masterauth", pw]);
        }

        // Start the processes in parallel; a panic in one drops (kills) the
        // others.
        let nodes: Vec<RedisServer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..total)
                .map(|_| s.spawn(|| RedisServer::start_with_args(&node_args)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let cluster = RedisCluster { nodes };
        if masters >= 3 {
            cluster.create_with_redis_cli(replicas_per_master, password);
            cluster.wait_healthy(FORM_TIMEOUT.saturating_sub(started.elapsed()));
            return cluster;
        }

        let ids: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| n.query(redis::cmd("CLUSTER").arg("MYID")))
            .collect();
        for (i, node) in cluster.nodes.iter().enumerate() {
            node.cmd(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]);
        }
        let slots = usize::from(CLUSTER_SLOTS);
        for (m, node) in cluster.nodes[..masters].iter().enumerate() {
            let first = m * slots / masters;
            let last = (m + 1) * slots / masters - 1;
            node.cmd(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &first.to_string(),
                &last.to_string(),
            ]);
        }
        let first_port = cluster.nodes[0].port().to_string();
        for node in &cluster.nodes[1..] {
            node.cmd(&["CLUSTER", "MEET", node.host(), &first_port]);
        }

        // Wait until every node knows every other node by its real id.
        let all_ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut waiting_on = String::new();
        let met = poll_until(FORM_TIMEOUT.saturating_sub(started.elapsed()), || {
            for node in &cluster.nodes {
                let Ok(text) = node.try_query::<String>(redis::cmd("CLUSTER").arg("NODES")) else {
                    waiting_on = format!("CLUSTER NODES on {} failed", node.port());
                    return false;
                };
                let known: HashSet<String> = parse_cluster_nodes(&text)
                    .into_iter()
                    .filter(|n| !n.has_flag("handshake"))
                    .map(|n| n.id)
                    .collect();
                if !all_ids.iter().all(|id| known.contains(*id)) {
                    waiting_on = format!("node {} knows only:\n{text}", node.port());
                    return false;
                }
            }
            true
        });
        if met.is_err() {
            cluster.fail(&format!(
                "nodes did not meet within {FORM_TIMEOUT:?}: {waiting_on}"
            ));
        }

        for (m, master_id) in ids[..masters].iter().enumerate() {
            let first = masters + m * replicas_per_master;
            for replica in &cluster.nodes[first..first + replicas_per_master] {
                replica.cmd(&["CLUSTER", "REPLICATE", master_id]);
            }
        }

        cluster.wait_healthy(FORM_TIMEOUT.saturating_sub(started.elapsed()));
        cluster
    }

    /// Joins every node with `redis-cli --cluster create`: the first `masters` nodes
    /// become masters and redis-cli gives each `replicas_per_master` of the others.
    fn create_with_redis_cli(&self, replicas_per_master: usize, password: Option<&str>) {
        let mut cmd = std::process::Command::new("redis-cli");
        if let Some(pw) = password {
            cmd.args(["--no-auth-warning", "-a", pw]);
        }
        cmd.args(["--cluster", "create"]);
        for node in &self.nodes {
            cmd.arg(format!("{}:{}", node.host(), node.port()));
        }
        cmd.args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .stdin(std::process::Stdio::null());
        let output = cmd.output().unwrap_or_else(|e| {
            self.fail(&format!(
                "cannot run redis-cli ({e}); it comes with redis-server (Debian: redis-tools)"
            ))
        });
        if !output.status.success() {
            self.fail(&format!(
                "redis-cli --cluster create failed with {}:\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }

    /// All nodes, in creation order (masters first), running or stopped.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node listening on `port`.
    ///
    /// # Panics
    ///
    /// If no node of this cluster uses `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on port {port}"))
    }

    fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on port {port}"))
    }

    /// `redis://127.0.0.1:PORT/` for every node (running or not).
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A [`redis::cluster::ClusterClient`] seeded with the running nodes,
    /// with 5 s connection and response timeouts.
    pub fn cluster_client(&self) -> redis::cluster::ClusterClient {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_started())
            .map(RedisServer::url)
            .collect();
        redis::cluster::ClusterClient::builder(urls)
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(5))
            .build()
            .expect("pubsub-hub-testkit: cannot build a ClusterClient")
    }

    /// The cluster topology as seen by the first running node that answers.
    fn view(&self) -> Vec<NodeLine> {
        for node in self.nodes.iter().filter(|n| n.is_started()) {
            if let Ok(text) = node.try_query::<String>(redis::cmd("CLUSTER").arg("NODES")) {
                return parse_cluster_nodes(&text);
            }
        }
        self.fail("no running node answers CLUSTER NODES")
    }

    /// Ports of the current masters (asked with `CLUSTER NODES`), excluding
    /// masters flagged as failing, ordered by their first slot (masters
    /// without slots last).
    pub fn master_ports(&self) -> Vec<u16> {
        let mut masters: Vec<NodeLine> = self
            .view()
            .into_iter()
            .filter(|n| n.is_master() && !n.is_failing())
            .collect();
        masters.sort_by_key(|n| {
            (
                n.slots.iter().map(|r| r.0).min().unwrap_or(u16::MAX),
                n.port,
            )
        });
        masters.into_iter().map(|n| n.port).collect()
    }

    /// Ports of the current replicas of the master on `master_port`.
    pub fn replica_ports(&self, master_port: u16) -> Vec<u16> {
        let view = self.view();
        let Some(master) = view.iter().find(|n| n.port == master_port) else {
            return Vec::new();
        };
        view.iter()
            .filter(|n| n.master_id.as_deref() == Some(master.id.as_str()))
            .map(|n| n.port)
            .collect()
    }

    /// Port of the master owning `slot` (asked with `CLUSTER NODES`).
    ///
    /// # Panics
    ///
    /// If `slot >= 16384` or no master owns it.
    pub fn port_for_slot(&self, slot: u16) -> u16 {
        assert!(slot < CLUSTER_SLOTS, "slot {slot} out of range");
        self.view()
            .into_iter()
            .find(|n| n.is_master() && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| self.fail(&format!("no master owns slot {slot}")))
    }

    /// Hash slot of `key` (CRC16 of the key, or of its `{hash tag}` if it
    /// has a non-empty one), as `CLUSTER KEYSLOT` computes it.
    pub fn slot_for_key(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let hashed = bytes
            .iter()
            .position(|&b| b == b'{')
            .and_then(|open| {
                let rest = &bytes[open + 1..];
                rest.iter()
                    .position(|&b| b == b'}')
                    .filter(|&close| close > 0)
                    .map(|close| &rest[..close])
            })
            .unwrap_or(bytes);
        crc16(hashed) % CLUSTER_SLOTS
    }

    /// A key that hashes to `slot` (`"{tag}"`-free, found by counting).
    pub fn key_for_slot(slot: u16, prefix: &str) -> String {
        assert!(slot < CLUSTER_SLOTS, "slot {slot} out of range");
        (0u64..)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| Self::slot_for_key(k) == slot)
            .expect("every slot is reachable")
    }

    /// Stops (SIGKILL) the node on `port`; see [`RedisServer::stop`].
    pub fn stop_node(&mut self, port: u16) {
        self.node_mut(port).stop();
    }

    /// Starts the node on `port` again on the same port and directory, so it
    /// rejoins with its `nodes.conf`. Returns once it answers PING; call
    /// [`wait_healthy`](Self::wait_healthy) to wait for the cluster.
    pub fn start_node(&mut self, port: u16) {
        self.node_mut(port).start_again();
    }

    /// Makes a replica of the master on `master_port` take over with
    /// `CLUSTER FAILOVER` (`FORCE` if that master is stopped), then waits
    /// until the replica is a master and the cluster is healthy again.
    /// Returns the new master's port.
    ///
    /// # Panics
    ///
    /// If `master_port` is not a master, it has no running replica, or the
    /// failover does not complete within ~25 s.
    pub fn failover(&mut self, master_port: u16) -> u16 {
        let started = Instant::now();
        let view = self.view();
        let Some(master) = view.iter().find(|n| n.port == master_port && n.is_master()) else {
            self.fail(&format!("port {master_port} is not a master"));
        };
        let Some(replica) = view.iter().find(|n| {
            n.master_id.as_deref() == Some(master.id.as_str())
                && !n.is_failing()
                && self
                    .nodes
                    .iter()
                    .any(|s| s.port() == n.port && s.is_started())
        }) else {
            self.fail(&format!("master {master_port} has no running replica"));
        };
        let replica_port = replica.port;
        let master_running = self.node(master_port).is_started();
        let rnode = self.node(replica_port);

        if master_running {
            rnode.wait_until(
                HEAL_TIMEOUT,
                "the replica's link to its master is up before failover",
                || {
                    rnode
                        .try_query::<String>(redis::cmd("INFO").arg("replication"))
                        .is_ok_and(|i| info_field(&i, "master_link_status") == Some("up"))
                },
            );
        }
        let is_master = || {
            rnode
                .try_query::<String>(redis::cmd("CLUSTER").arg("NODES"))
                .is_ok_and(|text| {
                    parse_cluster_nodes(&text)
                        .iter()
                        .any(|n| n.has_flag("myself") && n.is_master())
                })
        };
        // A manual failover times out after 5 s on the server side; retry
        // until our own deadline.
        loop {
            let mut args = vec!["CLUSTER", "FAILOVER"];
            if !master_running {
                args.push("FORCE");
            }
            rnode.cmd(&args);
            if poll_until(Duration::from_secs(6), is_master).is_ok() {
                break;
            }
            if started.elapsed() >= HEAL_TIMEOUT {
                rnode.fail(&format!(
                    "replica {replica_port} did not take over from {master_port} within {HEAL_TIMEOUT:?}"
                ));
            }
        }
        self.wait_healthy(HEAL_TIMEOUT.saturating_sub(started.elapsed()));
        replica_port
    }

    /// Waits until the cluster is healthy as seen by every running node:
    /// `cluster_state:ok`, 16384 slots assigned and ok, all nodes agree on
    /// the owner of every slot and on the role (master, or replica of whom)
    /// of every running node, every slot owner is running, no running node
    /// is flagged failing by another, and every replica's link to its master
    /// is up.
    ///
    /// # Panics
    ///
    /// After `timeout`, with the reason and the tail of every node's log.
    pub fn wait_healthy(&self, timeout: Duration) {
        let start = Instant::now();
        let mut reason;
        loop {
            match self.check_health() {
                Ok(()) => return,
                Err(r) => reason = r,
            }
            if start.elapsed() >= timeout {
                break;
            }
            std::thread::sleep(HEALTH_POLL);
        }
        self.fail(&format!(
            "not healthy after {:?} (timeout {timeout:?}): {reason}",
            start.elapsed()
        ));
    }

    /// `Ok` if healthy, else why not.
    fn check_health(&self) -> Result<(), String> {
        let running: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.is_started()).collect();
        let running_ports: HashSet<u16> = running.iter().map(|n| n.port()).collect();
        let mut reference: Option<(u16, Topology)> = None;
        for node in &running {
            let port = node.port();
            let q = |args: &[&str]| -> Result<String, String> {
                let mut cmd = redis::Cmd::new();
                for a in args {
                    cmd.arg(*a);
                }
                node.try_query::<String>(&cmd)
                    .map_err(|e| format!("node {port}: {args:?} failed: {e}"))
            };
            let info = q(&["CLUSTER", "INFO"])?;
            for (key, want) in [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", "16384"),
                ("cluster_slots_ok", "16384"),
            ] {
                let got = info_field(&info, key).unwrap_or("<missing>");
                if got != want {
                    return Err(format!("node {port}: {key}:{got}"));
                }
            }
            let view = parse_cluster_nodes(&q(&["CLUSTER", "NODES"])?);
            let mut seen = 0;
            for n in &view {
                if running_ports.contains(&n.port) {
                    seen += 1;
                    if n.is_failing() {
                        return Err(format!(
                            "node {port} sees node {} as {}",
                            n.port,
                            n.flags.join(",")
                        ));
                    }
                }
            }
            if seen < running.len() {
                return Err(format!(
                    "node {port} knows {seen} of {} running nodes",
                    running.len()
                ));
            }
            let mut map: Vec<(u16, u16, u16)> = view
                .iter()
                .filter(|n| n.is_master())
                .flat_map(|n| n.slots.iter().map(move |&(a, b)| (a, b, n.port)))
                .collect();
            map.sort_unstable();
            if let Some(&(a, b, owner)) = map.iter().find(|s| !running_ports.contains(&s.2)) {
                return Err(format!(
                    "node {port}: slots {a}-{b} are owned by stopped node {owner}"
                ));
            }
            // Role of every running node: `None` for a master, else the
            // port of its master.
            let mut roles: Vec<(u16, Option<u16>)> = view
                .iter()
                .filter(|n| running_ports.contains(&n.port))
                .map(|n| {
                    let master_port = n
                        .master_id
                        .as_ref()
                        .map(|id| view.iter().find(|m| &m.id == id).map_or(0, |m| m.port));
                    (n.port, master_port)
                })
                .collect();
            roles.sort_unstable();
            let topology = (map, roles);
            match &reference {
                None => reference = Some((port, topology)),
                Some((ref_port, ref_topology)) if *ref_topology != topology => {
                    return Err(format!(
                        "nodes {ref_port} and {port} disagree on the topology \
                         ((slot ranges, owner), (node, master)): {ref_topology:?} vs {topology:?}"
                    ));
                }
                Some(_) => {}
            }
            let me = view.iter().find(|n| n.has_flag("myself"));
            if me.is_some_and(|n| n.has_flag("slave")) {
                let repl = q(&["INFO", "replication"])?;
                let link = info_field(&repl, "master_link_status").unwrap_or("<missing>");
                if link != "up" {
                    return Err(format!("replica {port}: master_link_status:{link}"));
                }
            }
        }
        if running.is_empty() {
            return Err("no node is running".into());
        }
        Ok(())
    }

    /// Panics with `msg` and the tail of every node's log.
    #[track_caller]
    fn fail(&self, msg: &str) -> ! {
        let mut out = format!("pubsub-hub-testkit: cluster: {msg}");
        for node in &self.nodes {
            out.push_str(&format!(
                "\n--- node {} ({}) last 15 log lines ---\n{}",
                node.port(),
                if node.is_started() {
                    "running"
                } else {
                    "stopped"
                },
                node.log_tail(15)
            ));
        }
        panic!("{out}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_reference_values() {
        // Values from the Redis Cluster specification / CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(RedisCluster::slot_for_key("foo"), 12182);
        assert_eq!(RedisCluster::slot_for_key("somekey"), 11058);
        assert_eq!(
            RedisCluster::slot_for_key("{user1000}.following"),
            RedisCluster::slot_for_key("user1000")
        );
        assert_eq!(
            RedisCluster::slot_for_key("foo{}{bar}"),
            crc16(b"foo{}{bar}") % 16384
        );
        assert_eq!(
            RedisCluster::slot_for_key("foo{{bar}}zap"),
            RedisCluster::slot_for_key("{bar")
        );
        let k = RedisCluster::key_for_slot(42, "k");
        assert_eq!(RedisCluster::slot_for_key(&k), 42);
    }

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,hostname4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 :0@0 master,fail?,noaddr - 0 0 5 disconnected 16000
";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].port, 30004);
        assert_eq!(
            nodes[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(!nodes[0].is_master());
        assert_eq!(nodes[1].slots, vec![(5461, 10922)]);
        assert!(nodes[2].has_flag("myself") && nodes[2].is_master());
        assert_eq!(nodes[2].slots, vec![(0, 5460)]);
        assert!(nodes[3].is_failing());
        assert_eq!(nodes[3].slots, vec![(16000, 16000)]);
    }
}
