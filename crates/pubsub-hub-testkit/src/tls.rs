//! A private redis-server that also speaks TLS, with a throwaway certificate authority.
//!
//! The certificates are made by the `openssl` command (Debian package `openssl`) in a
//! temporary directory: a CA valid for two days and a server certificate it signs for
//! `127.0.0.1` and `localhost`. Clients must be given the CA (for redis-rs,
//! `redis::Client::build_with_tls` with `TlsCertificates::root_cert`); nothing on the
//! machine trusts it otherwise, so a client that connects without it fails the handshake.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ports::{self, PortReservation};
use crate::server::RedisServer;

/// A [`RedisServer`] listening for TLS on a second loopback port
/// ([`tls_port`](Self::tls_port)).
///
/// The plain port stays open for the kit's admin connection, so every method of
/// [`server`](Self::server) works as usual; connect through [`tls_url`](Self::tls_url) to be
/// sure a connection is encrypted, since the TLS port accepts nothing else. Client
/// certificates are not asked for.
pub struct TlsRedisServer {
    // Dropped first: the server stops before its TLS port is released.
    server: RedisServer,
    tls_port: PortReservation,
    certs: tempfile::TempDir,
}

impl TlsRedisServer {
    /// Makes the certificates and starts the server; returns once it answers PING.
    ///
    /// # Panics
    ///
    /// If `openssl` or `redis-server` is missing or fails (redis-server needs TLS support,
    /// which Debian's has), quoting its output.
    pub fn start() -> TlsRedisServer {
        let certs = tempfile::Builder::new()
            .prefix("pubsub-hub-testkit-tls-")
            .tempdir()
            .expect("pubsub-hub-testkit: cannot create a temporary directory");
        make_certificates(certs.path());
        let tls_port = ports::reserve(false);
        let path = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
        let server = RedisServer::start_with_args(&[
            "--tls-port",
            &tls_port.port().to_string(),
            "--tls-cert-file",
            &path("server.crt"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]);
        TlsRedisServer {
            server,
            tls_port,
            certs,
        }
    }

    /// The server, for its admin commands and waits (they use the plain port).
    pub fn server(&self) -> &RedisServer {
        &self.server
    }

    /// The port that speaks TLS only.
    pub fn tls_port(&self) -> u16 {
        self.tls_port.port()
    }

    /// `rediss://127.0.0.1:PORT/` on the TLS port.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.tls_port())
    }

    /// The CA certificate file (PEM).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.certs.path().join("ca.crt")
    }

    /// The CA certificate (PEM), as `redis::TlsCertificates::root_cert` takes it.
    pub fn ca_cert_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_cert_path()).expect("pubsub-hub-testkit: the CA certificate")
    }
}

/// Runs the `openssl` command in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect(
            "pubsub-hub-testkit: the openssl command is needed for TLS (apt-get install openssl)",
        );
    assert!(
        out.status.success(),
        "pubsub-hub-testkit: openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.crt`/`ca.key` and a `server.crt`/`server.key` signed by it for 127.0.0.1.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=pubsub-hub-testkit CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("pubsub-hub-testkit: cannot write san.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
    );
}
