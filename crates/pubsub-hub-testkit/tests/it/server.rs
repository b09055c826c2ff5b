//! Tests of the single-server part of the kit, against real redis-server
//! processes.

use std::net::TcpStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use pubsub_hub_testkit::{ADMIN_CLIENT_NAME, RedisServer, wait_until, wait_until_async};
use redis::{Commands, Value};

use crate::util::WAIT;

fn refuses(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_err()
}

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn starts_and_answers_ping() {
    let server = RedisServer::start();
    assert_eq!(server.host(), "127.0.0.1");
    assert_ne!(server.port(), 6379);
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    let mut con = server.connection();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(server.cmd(&["PING"]), Value::SimpleString("PONG".into()));
    let info = server.info("server");
    assert!(
        info.contains(&format!("tcp_port:{}", server.port())),
        "{info}"
    );
    assert!(server.log().contains("Ready to accept connections"));
    assert!(!server.log_tail(2).is_empty());
    assert_eq!(server.log_tail(3).lines().count(), 3);
    // Persistence is off.
    let save = server.cmd(&["CONFIG", "GET", "save"]);
    assert_eq!(
        redis::from_redis_value::<Vec<String>>(save).unwrap(),
        vec!["save".to_string(), String::new()]
    );
}

#[test]
fn stop_refuses_and_restart_reuses_the_port_with_empty_data() {
    let mut server = RedisServer::start();
    let port = server.port();
    let mut con = server.connection();
    let _: () = con.set("k", "v").unwrap();
    assert!(server.is_running());

    server.stop();
    assert!(!server.is_running());
    assert!(refuses(port));
    let err = redis::cmd("GET").arg("k").query::<Option<String>>(&mut con);
    assert!(err.is_err());
    server.stop(); // idempotent

    server.start_again();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    let mut con = server.connection();
    let v: Option<String> = con.get("k").unwrap();
    assert_eq!(v, None, "data must be gone after a restart");
    let _: () = con.set("k2", "v").unwrap();

    // restart() works on a running server too, and the admin connection
    // reconnects by itself.
    let pid = server.pid();
    server.restart();
    assert_ne!(server.pid(), pid);
    assert_eq!(server.port(), port);
    assert_eq!(server.cmd(&["EXISTS", "k2"]), Value::Int(0));
    assert_eq!(
        server.log().matches("Ready to accept connections").count(),
        3
    );
}

#[test]
fn start_again_while_running_panics() {
    let mut server = RedisServer::start();
    let e = catch_unwind(AssertUnwindSafe(|| server.start_again())).unwrap_err();
    assert!(panic_message(e).contains("use restart()"));
    assert!(server.is_running());
}

#[test]
fn requirepass_server() {
    let password = "s3cr:t@pw";
    let mut server = RedisServer::start_with_args(&["--requirepass", password]);
    assert_eq!(server.password(), Some(password));
    assert_eq!(
        server.url(),
        format!("redis://:s3cr%3At%40pw@127.0.0.1:{}/", server.port())
    );
    let mut con = server.connection();
    let _: () = con.set("a", 1).unwrap();
    assert_eq!(server.cmd(&["GET", "a"]), Value::BulkString(b"1".to_vec()));

    // Without the password the server refuses.
    let anon = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port())).unwrap();
    let mut anon = anon.get_connection_with_timeout(WAIT).unwrap();
    let err = redis::cmd("GET")
        .arg("a")
        .query::<Option<String>>(&mut anon)
        .unwrap_err();
    assert!(err.to_string().contains("NOAUTH"), "{err}");

    server.restart();
    assert_eq!(server.numsub("x"), 0);
    server.stop();
    assert!(refuses(server.port()));
}

#[test]
fn extra_args_are_applied() {
    let server =
        RedisServer::start_with_args(&["--client-output-buffer-limit", "pubsub 1kb 1kb 0"]);
    let v: Vec<String> =
        redis::from_redis_value(server.cmd(&["CONFIG", "GET", "client-output-buffer-limit"]))
            .unwrap();
    assert!(v[1].contains("pubsub 1024 1024 0"), "{v:?}");
    assert_eq!(server.extra_args().len(), 2);
}

#[test]
fn bad_arguments_panic_with_the_server_output() {
    let e =
        catch_unwind(|| RedisServer::start_with_args(&["--no-such-directive", "x"])).unwrap_err();
    let msg = panic_message(e);
    assert!(msg.contains("exited during startup"), "{msg}");
    assert!(msg.contains("no-such-directive"), "{msg}");
}

#[test]
fn client_list_sees_connections() {
    let server = RedisServer::start();
    let mut con = server.connection();
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("probe")
        .query::<()>(&mut con)
        .unwrap();
    let list = server.client_list();
    let probe = list
        .iter()
        .find(|c| c.name == "probe")
        .expect("probe listed");
    assert!(probe.id > 0);
    assert!(probe.addr.starts_with("127.0.0.1:"));
    assert_eq!(probe.cmd, "client|setname");
    assert!(!probe.is_pubsub());
    assert_eq!((probe.sub, probe.psub, probe.ssub), (0, 0, 0));
    assert!(probe.field("omem").is_some());
    assert!(list.iter().any(|c| c.name == ADMIN_CLIENT_NAME));

    // A subscriber shows up with its subscription counts.
    let mut sub = server.connection();
    let mut ps = sub.as_pubsub();
    ps.subscribe(&["a", "b"]).unwrap();
    ps.psubscribe("p*").unwrap();
    server.wait_until(WAIT, "the subscriber is listed", || {
        server
            .client_list()
            .iter()
            .any(|c| c.sub == 2 && c.psub == 1)
    });
    let c = server
        .client_list()
        .into_iter()
        .find(|c| c.sub == 2)
        .unwrap();
    assert!(c.flags.contains('P') && c.is_pubsub(), "{c:?}");
}

#[test]
fn numsub_numpat_and_publish() {
    let server = RedisServer::start();
    assert_eq!(server.numsub("news"), 0);
    assert_eq!(server.publish("news", b"nobody"), 0);

    let mut con = server.connection();
    let mut ps = con.as_pubsub();
    ps.subscribe("news").unwrap();
    ps.psubscribe("ne*").unwrap();
    server.wait_numsub("news", 1, WAIT);
    server.wait_numpat(1, WAIT);
    assert_eq!(server.numpat(), 1);

    assert_eq!(server.publish("news", b"\x00hello"), 2);
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let msg = ps.get_message().unwrap();
        assert_eq!(msg.get_channel_name(), "news");
        payloads.push(msg.get_payload_bytes().to_vec());
    }
    assert_eq!(payloads, vec![b"\x00hello".to_vec(); 2]);

    ps.unsubscribe("news").unwrap();
    server.wait_numsub("news", 0, WAIT);
}

#[test]
fn kill_pubsub_clients_disconnects_subscribers() {
    let server = RedisServer::start();
    let mut a = server.connection();
    let mut b = server.connection();
    // (Dropping a `PubSub` unsubscribes, so keep both alive.)
    let mut ps_a = a.as_pubsub();
    let mut ps_b = b.as_pubsub();
    ps_a.subscribe("ch").unwrap();
    ps_b.subscribe("ch").unwrap();
    server.wait_numsub("ch", 2, WAIT);
    assert_eq!(server.kill_pubsub_clients(), 2);
    server.wait_numsub("ch", 0, WAIT);
    // The admin connection was not killed.
    assert_eq!(server.kill_pubsub_clients(), 0);
    assert_eq!(server.cmd(&["PING"]), Value::SimpleString("PONG".into()));
    ps_a.set_read_timeout(Some(WAIT)).unwrap();
    assert!(ps_a.get_message().is_err());
}

#[test]
fn admin_connection_survives_being_killed() {
    let server = RedisServer::start();
    assert_eq!(server.cmd(&["DBSIZE"]), Value::Int(0));
    // Kill the admin connection from another one.
    let mut con = server.connection();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 1);
    assert_eq!(server.cmd(&["DBSIZE"]), Value::Int(0));
    let err = server.try_cmd(&["NOSUCHCOMMAND"]).unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
    let e = catch_unwind(AssertUnwindSafe(|| server.cmd(&["NOSUCHCOMMAND"]))).unwrap_err();
    let msg = panic_message(e);
    assert!(
        msg.contains("NOSUCHCOMMAND") && msg.contains("lines of"),
        "{msg}"
    );
}

#[test]
fn drop_kills_the_process_and_removes_the_dir() {
    let server = RedisServer::start();
    let pid = server.pid().unwrap();
    let port = server.port();
    let dir = server.dir().to_path_buf();
    assert!(dir.join("redis.log").exists());
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
    assert!(refuses(port));
}

#[test]
fn drop_during_a_panic_kills_the_process() {
    let mut pid = 0;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let server = RedisServer::start();
        pid = server.pid().unwrap();
        panic!("test failure");
    }));
    assert!(r.is_err());
    assert!(pid != 0);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn many_servers_in_parallel_get_distinct_ports() {
    let servers: Vec<RedisServer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6).map(|_| s.spawn(RedisServer::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6);
    for s in &servers {
        assert_eq!(s.cmd(&["PING"]), Value::SimpleString("PONG".into()));
    }
}

#[test]
fn wait_until_panics_after_the_timeout() {
    let e = catch_unwind(|| wait_until(Duration::from_millis(50), "never", || false)).unwrap_err();
    let msg = panic_message(e);
    assert!(msg.contains("waiting until never"), "{msg}");

    let mut n = 0;
    wait_until(WAIT, "third call", || {
        n += 1;
        n == 3
    });
    assert_eq!(n, 3);

    let server = RedisServer::start();
    let e = catch_unwind(AssertUnwindSafe(|| {
        server.wait_numsub("nobody", 1, Duration::from_millis(50))
    }))
    .unwrap_err();
    let msg = panic_message(e);
    assert!(
        msg.contains("NUMSUB") && msg.contains("Ready to accept"),
        "{msg}"
    );
}

#[tokio::test]
async fn wait_until_async_polls_and_times_out() {
    let server = RedisServer::start();
    let client = server.client();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe("async").await.unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    wait_until_async(WAIT, "the async subscriber is counted", || {
        let mut con = con.clone();
        async move {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("async")
                .query_async(&mut con)
                .await
                .unwrap();
            n == 1
        }
    })
    .await;
    let n: i64 = redis::cmd("PUBLISH")
        .arg("async")
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 1);

    let r = tokio::spawn(wait_until_async(
        Duration::from_millis(50),
        "never (async)",
        || async { false },
    ))
    .await;
    let msg = panic_message(r.unwrap_err().into_panic());
    assert!(msg.contains("never (async)"), "{msg}");
}
