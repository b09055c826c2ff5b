//! Private servers started for real: reachable the way they say, private, gone on drop.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use pubsub_hub_launcher::{
    Launch, LaunchError, Listen, PrivateRedis, free_loopback_port, reach_redis,
};

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_unix_socket_server_is_private_and_dies_on_drop() {
    let server = PrivateRedis::start_unix("redis-server").expect("starts");
    let socket = server.socket_path().expect("a socket").to_owned();
    let dir = server.dir().to_owned();
    assert_eq!(server.port(), None);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the directory is the owner's only");
    let socket_mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(socket_mode, 0o700, "so is the socket");
    let socket_arg = socket.to_str().unwrap();
    assert_eq!(redis_cli(&["-s", socket_arg, "PING"]), "PONG");
    // No TCP port at all.
    assert_eq!(
        redis_cli(&["-s", socket_arg, "CONFIG", "GET", "port"]),
        "port\n0"
    );
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    drop(conn);

    let pid = server.pid();
    drop(server);
    assert!(gone(pid), "the process is gone");
    assert!(!dir.exists(), "its directory is removed");
}

#[test]
fn a_tcp_server_takes_extra_arguments() {
    let server = PrivateRedis::start_tcp("redis-server", &["--maxclients", "123"]).expect("starts");
    let port = server.port().expect("a port").to_string();
    assert_eq!(
        redis_cli(&["-p", &port, "CONFIG", "GET", "maxclients"]),
        "maxclients\n123"
    );
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/"));
}

#[test]
fn a_taken_port_is_reported_as_such() {
    let first = PrivateRedis::start_tcp("redis-server", &[]).expect("starts");
    let port = first.port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = Launch::new(Listen::loopback(port), dir.path())
        .ready_timeout(Duration::from_secs(5))
        .start()
        .unwrap_err();
    assert!(e.is_address_in_use(), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn a_missing_binary_is_not_installed() {
    let e = PrivateRedis::start_unix("/nonexistent/redis-server").unwrap_err();
    assert!(e.is_not_installed(), "{e}");
    assert!(matches!(e, LaunchError::NotInstalled { .. }));
}

#[test]
fn bad_arguments_exit_with_the_log() {
    let e = PrivateRedis::start_tcp("redis-server", &["--no-such-option", "1"]).unwrap_err();
    assert!(matches!(e, LaunchError::Exited { .. }), "{e}");
    assert!(e.log().contains("no-such-option"), "{}", e.log());
}

#[tokio::test]
async fn reach_keeps_a_configured_address_and_replaces_only_a_default() {
    let port = free_loopback_port().unwrap();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();

    let kept = reach_redis(client.clone(), false).await.unwrap();
    assert!(!kept.answered && kept.private.is_none());
    assert_eq!(kept.addr(), format!("127.0.0.1:{port}"));
    let warning = kept.not_answering_warning().expect("a warning");
    assert!(
        warning.contains(&format!("127.0.0.1:{port} does not answer")),
        "{warning}"
    );

    let private = reach_redis(client, true).await.unwrap();
    assert!(private.answered);
    let server = private.private.as_ref().expect("a private server");
    let socket = server.socket_path().unwrap().display().to_string();
    assert_eq!(private.addr(), format!("unix:{socket}"));
    let note = private.private_note().unwrap();
    assert!(note.contains(&format!("redis-cli -s {socket}")), "{note}");
    let mut conn = private
        .client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    let up = PrivateRedis::start_tcp("redis-server", &[]).unwrap();
    let answering = reach_redis(redis::Client::open(up.url()).unwrap(), true)
        .await
        .unwrap();
    assert!(answering.answered && answering.private.is_none());
    assert!(answering.private_note().is_none() && answering.not_answering_warning().is_none());
}
