//! A minimal HTTP/1.1 client for tests of the dashboard on a real socket: one request per
//! connection (`Connection: close`), timed, the body de-chunked, every exchange bounded by
//! [`WAIT`]. Used by the dashboard's tests and its soak ([`soak`](crate::soak)).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// A buffered HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The header lines, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// From connecting to the end of the answer.
    pub took: Duration,
}

impl Reply {
    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the status and text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the dashboard's error shape, a JSON `{"error": "..."}` with `status`; returns
    /// the message.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "error content type {:?} (status {})",
            self.header("content-type"),
            self.status
        );
        let body = self.json();
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string in {body}"))
            .to_owned();
        assert!(!message.is_empty());
        assert_eq!(body.as_object().unwrap().len(), 1, "only `error`: {body}");
        message
    }
}

/// One request on a new connection (`Connection: close`), timed; panics after [`WAIT`].
pub async fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let connect = async move { TcpStream::connect(addr).await.expect("connect") };
    exchange_on(connect, &closing(head, body), head).await
}

/// Sends `raw`, a whole request exactly as given, on a new connection and reads the answer
/// until the server closes; timed, panics after [`WAIT`].
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let connect = async move { TcpStream::connect(addr).await.expect("connect") };
    exchange_on(connect, raw, &String::from_utf8_lossy(raw)).await
}

/// `head`, the `Connection: close` line, the blank line and `body`.
fn closing(head: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(b"Connection: close\r\n\r\n");
    bytes.extend_from_slice(body);
    bytes
}

/// Writes `raw` on the stream `connect` opens and reads to its end; `what` names the
/// request in the time-out's panic.
async fn exchange_on(
    connect: impl std::future::Future<Output = TcpStream>,
    raw: &[u8],
    what: &str,
) -> Reply {
    let started = Instant::now();
    let io = async {
        let mut stream = connect.await;
        // The server may answer (413) and close before reading everything.
        let _ = stream.write_all(raw).await;
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        out
    };
    let out = tokio::time::timeout(WAIT, io)
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?} to {what:?}"));
    parse_response(&out, started.elapsed())
}

fn parse_response(raw: &[u8], took: Duration) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
        took,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
}

/// [`request`] from the local address `source` (any `127.x.y.z` works on loopback), so a
/// test can be several clients.
pub async fn request_from(source: IpAddr, addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let connect = async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind the source address");
        socket.connect(addr).await.expect("connect")
    };
    exchange_on(connect, &closing(head, body), head).await
}

/// Binds `addr` again after the server on it stopped, for a test that serves again on the
/// same port; panics after 10 s. The port is held by the stopped server's sockets while they
/// close: there is no fact to wait on but the bind itself.
pub async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    let start = Instant::now();
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "cannot bind {addr} again: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
