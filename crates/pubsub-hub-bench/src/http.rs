//! A minimal keep-alive HTTP/1.1 client for the dashboard scenario: one request at a time
//! per connection, body read and discarded. Enough for our own server on loopback, and it
//! keeps the bench free of an HTTP client stack whose cost would be measured too.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct HttpConnection {
    stream: BufReader<TcpStream>,
}

/// A response's status and body size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Body bytes (after de-chunking).
    pub body_len: usize,
}

impl HttpConnection {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<HttpConnection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConnection {
            stream: BufReader::new(stream),
        })
    }

    /// Sends a complete request (as built by [`get`] or [`post_form`]) and reads the
    /// response.
    pub async fn send(&mut self, request: &[u8]) -> std::io::Result<Response> {
        self.stream.get_mut().write_all(request).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> std::io::Result<Response> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed before a response"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("malformed status line"))?;
        let mut content_length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(bad("connection closed in the headers"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let body_len = if chunked {
            self.skip_chunked().await?
        } else {
            let n = content_length.ok_or_else(|| bad("no content-length"))?;
            self.skip(n).await?;
            n
        };
        Ok(Response { status, body_len })
    }

    async fn skip(&mut self, n: usize) -> std::io::Result<()> {
        let copied = tokio::io::copy(
            &mut (&mut self.stream).take(n as u64),
            &mut tokio::io::sink(),
        )
        .await?;
        if copied as usize != n {
            return Err(bad("body shorter than announced"));
        }
        Ok(())
    }

    async fn skip_chunked(&mut self) -> std::io::Result<usize> {
        let mut total = 0;
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                loop {
                    line.clear();
                    self.stream.read_line(&mut line).await?;
                    if line.trim().is_empty() {
                        return Ok(total);
                    }
                }
            }
            self.skip(size + 2).await?;
            total += size;
        }
    }
}

/// `GET path`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// `GET path` as a browser asks for it: gzip accepted.
pub fn get_gzip(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip, deflate\r\n\r\n")
        .into_bytes()
}

/// `POST path` with a form body.
pub fn post_form(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}
