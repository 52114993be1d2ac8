//! The `mc-proxy` binary as the tests run it: one command, its output; or the
//! proxy itself, serving from a proxy.toml in a temp dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Child};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mc-proxy");

/// Runs `mc-proxy ARGS` to its end, with no stdin.
pub fn mc_proxy(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mc-proxy")
}

/// A command's stdout and stderr, for messages and assertions.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `mc-proxy route add --socket SOCK ARGS`, which must succeed; its output.
pub fn route_add(sock: &str, args: &[&str]) -> String {
    let out = mc_proxy(&[&["route", "add", "--socket", sock], args].concat());
    assert!(out.status.success(), "route add {args:?}: {}", text(&out));
    text(&out)
}

/// The arguments of an l7 route to a plain `backend` with the pair at
/// `cert` and `key`.
pub fn l7_args<'a>(
    hostname: &'a str,
    backend: &'a str,
    cert: &'a str,
    key: &'a str,
) -> Vec<&'a str> {
    vec![
        "--hostname",
        hostname,
        "--backend",
        backend,
        "--mode",
        "l7",
        "--backend-plain",
        "--cert",
        cert,
        "--key",
        key,
    ]
}

/// A running `mc-proxy --config`: killed when dropped.
pub struct Served {
    pub child: Child,
    /// The public TLS address.
    pub listen: SocketAddr,
    /// `http_listen` (ACME HTTP-01, redirects).
    pub http: SocketAddr,
    /// `metrics_listen`.
    pub metrics: SocketAddr,
    pub socket: PathBuf,
}

impl Served {
    /// The admin socket as the CLI takes it.
    pub fn sock(&self) -> &str {
        self.socket.to_str().expect("utf-8 path")
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(self.metrics).expect("connect metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics");
        out
    }
}

/// Waits until `addr` accepts a TCP connection (10 s at most).
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a proxy.toml in `dir` with every listener on free ports of `ip`,
/// starts mc-proxy on it and waits for its listener and admin socket.
pub fn serve(dir: &Path, ip: &str) -> Served {
    let addr =
        |ip: &str| -> SocketAddr { format!("{ip}:{}", free_port(ip)).parse().expect("address") };
    let (listen, http, metrics) = (addr(ip), addr(ip), addr(ip));
    let socket = dir.join("run").join("admin.sock");
    let config = dir.join("proxy.toml");
    let toml = format!(
        "listen = \"{listen}\"\nhttp_listen = \"{http}\"\nmetrics_listen = \"{metrics}\"\n\
         admin_socket = \"{}\"\ndata_dir = \"{}\"\nhandshake_timeout = \"2s\"\n",
        socket.display(),
        dir.join("data").display()
    );
    std::fs::write(&config, toml).expect("write proxy.toml");
    let child = Child(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("mc-proxy.log")).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start mc-proxy"),
    );
    wait_listening(listen, "mc-proxy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no admin socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    Served {
        child,
        listen,
        http,
        metrics,
        socket,
    }
}
