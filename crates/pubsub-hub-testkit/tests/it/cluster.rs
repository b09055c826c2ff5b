//! Tests of [`RedisCluster`] against real redis-server processes.

use std::time::{Duration, Instant};

use pubsub_hub_testkit::{CLUSTER_SLOTS, RedisCluster};

use crate::util::WAIT;

/// First slot owned by `port`, according to the cluster.
fn a_slot_of(cluster: &RedisCluster, port: u16) -> u16 {
    (0..CLUSTER_SLOTS)
        .step_by(97)
        .find(|&s| cluster.port_for_slot(s) == port)
        .expect("every master owns slots")
}

#[test]
fn three_masters_form_a_cluster() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 0);
    eprintln!("3-master cluster up in {:?}", started.elapsed());
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.node_urls().len(), 3);
    let masters = cluster.master_ports();
    assert_eq!(masters.len(), 3);
    assert_eq!(cluster.port_for_slot(0), masters[0]);
    assert_eq!(cluster.port_for_slot(CLUSTER_SLOTS - 1), masters[2]);
    for node in cluster.nodes() {
        let info = node.cmd(&["CLUSTER", "INFO"]);
        let info: String = redis::from_redis_value(info).unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
    }

    // slot_for_key agrees with the server.
    for key in ["foo", "{user1}.x", "a{b}c", "", "{}x", "ключ"] {
        let slot: i64 =
            redis::from_redis_value(cluster.nodes()[0].cmd(&["CLUSTER", "KEYSLOT", key])).unwrap();
        assert_eq!(i64::from(RedisCluster::slot_for_key(key)), slot, "{key:?}");
    }

    // A key in every master's slots can be written and read through a
    // cluster client, and lands on that master.
    let client = cluster.cluster_client();
    let mut con = client.get_connection().unwrap();
    for &port in &masters {
        let key = RedisCluster::key_for_slot(a_slot_of(&cluster, port), "key-");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(port)
            .query(&mut con)
            .unwrap();
        let v: u16 = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert_eq!(v, port);
        assert_eq!(
            cluster.node(port).cmd(&["EXISTS", &key]),
            redis::Value::Int(1)
        );
    }
}

#[test]
fn wait_healthy_reports_a_stopped_master() {
    let mut cluster = RedisCluster::start(3, 0);
    let victim = cluster.master_ports()[1];
    cluster.stop_node(victim);
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cluster.wait_healthy(Duration::from_millis(300))
    }))
    .unwrap_err();
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("not healthy"), "{msg}");
    assert!(msg.contains(&format!("stopped node {victim}")), "{msg}");
    assert!(msg.contains(&format!("node {victim} (stopped)")), "{msg}");

    // Back on the same port with its nodes.conf: it still owns its slots.
    cluster.start_node(victim);
    cluster.wait_healthy(WAIT);
    assert!(cluster.master_ports().contains(&victim));
}

#[test]
fn killed_master_is_replaced_automatically_and_rejoins_as_replica() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    let old_master = cluster.master_ports()[2];
    let replica = cluster.replica_ports(old_master)[0];
    cluster.stop_node(old_master);
    // Node timeout is 2 s: the replica takes over by itself.
    cluster.wait_healthy(WAIT);
    assert!(cluster.master_ports().contains(&replica));
    assert_eq!(cluster.port_for_slot(CLUSTER_SLOTS - 1), replica);

    cluster.start_node(old_master);
    cluster.wait_healthy(WAIT);
    assert_eq!(cluster.replica_ports(replica), vec![old_master]);
    eprintln!("automatic failover test took {:?}", started.elapsed());
}

#[test]
fn failover_promotes_a_replica_and_nodes_restart() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    eprintln!("3+3 cluster up in {:?}", started.elapsed());
    assert_eq!(cluster.nodes().len(), 6);
    let masters = cluster.master_ports();
    assert_eq!(masters.len(), 3);
    let old_master = masters[0];
    let replicas = cluster.replica_ports(old_master);
    assert_eq!(replicas.len(), 1);

    let key = RedisCluster::key_for_slot(a_slot_of(&cluster, old_master), "fo-");
    let slot = RedisCluster::slot_for_key(&key);
    {
        let mut con = cluster.cluster_client().get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("before")
            .query(&mut con)
            .unwrap();
    }

    let t = Instant::now();
    let new_master = cluster.failover(old_master);
    eprintln!("failover took {:?}", t.elapsed());
    assert_eq!(new_master, replicas[0]);
    assert_eq!(cluster.port_for_slot(slot), new_master);
    let masters_now = cluster.master_ports();
    assert!(masters_now.contains(&new_master));
    assert!(!masters_now.contains(&old_master));
    assert_eq!(cluster.replica_ports(new_master), vec![old_master]);

    // The data survived the failover.
    let mut con = cluster.cluster_client().get_connection().unwrap();
    let v: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(v, "before");

    // Stop the old master (now a replica) and bring it back on its port.
    let t = Instant::now();
    cluster.stop_node(old_master);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", old_master)).is_err(),
        "stopped node still accepts connections"
    );
    cluster.start_node(old_master);
    cluster.wait_healthy(WAIT);
    eprintln!("replica restart took {:?}", t.elapsed());
    assert_eq!(cluster.replica_ports(new_master), vec![old_master]);
    eprintln!("total {:?}", started.elapsed());
}

#[test]
fn one_master_with_a_replica_and_a_password() {
    let cluster = RedisCluster::start_with_args(1, 1, &["--requirepass", "pw"]);
    let master = cluster.master_ports();
    assert_eq!(master.len(), 1);
    assert_eq!(cluster.port_for_slot(0), master[0]);
    assert_eq!(cluster.port_for_slot(CLUSTER_SLOTS - 1), master[0]);
    assert_eq!(cluster.replica_ports(master[0]).len(), 1);
    assert!(cluster.node_urls()[0].starts_with("redis://:pw@127.0.0.1:"));
    let mut con = cluster.cluster_client().get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let replica = cluster.node(cluster.replica_ports(master[0])[0]);
    replica.wait_until(WAIT, "the key is replicated", || {
        replica.cmd(&["DBSIZE"]) == redis::Value::Int(1)
    });
}
