//! L7 termination end to end on loopback (127.0.0.201-203): curl over HTTP/1.1
//! and HTTP/2 through mc-proxy to a hyper backend, plain and over TLS verified
//! against a fleet CA; the forwarded headers the backend sees; a WebSocket echo;
//! a backend whose certificate names another host (502); 100 MB through L7 and
//! L4 while routes change; and the drain at shutdown. Public and fleet
//! certificates come from two `mcp_pki` CAs, as on a real edge.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod common;

use common::inproc::Running;

use common::backend::{backend, client_config, pattern_sha256, Pki, HOST};
use mc_proxy::l4::CopyMode;
use mc_proxy::{Backend, Limits, Route, Table};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROXY_IP: &str = "127.0.0.201";

fn limits() -> Limits {
    Limits {
        max_connections: 256,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(5),
        copy: CopyMode::Splice,
    }
}

async fn start_proxy(limits: Limits, table: Table) -> Running {
    common::inproc::start_proxy(PROXY_IP, limits, table).await
}

fn one(name: &str, route: Route) -> Table {
    let mut t = Table::new();
    t.insert(name, route).expect("route");
    t
}

/// curl to HOST through the proxy with the public CA; (exit ok, stdout, stderr).
async fn curl(pki: &Pki, proxy: SocketAddr, args: &[&str], path: &str) -> (bool, String, String) {
    common::backend::curl(pki, HOST, proxy, args, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_and_http2_reach_a_plain_backend_with_forwarded_headers() {
    let pki = Pki::new();
    let b = backend(&pki, None).await;
    let p = start_proxy(limits(), one(HOST, pki.route(b, None))).await;
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (ok, out, err) = curl(
            &pki,
            p.addr,
            &[flag, "-w", "\nversion=%{http_version} code=%{http_code}"],
            "/headers?x=1",
        )
        .await;
        assert!(ok, "{flag}: curl failed: {err}");
        assert!(
            out.contains(&format!("version={version} code=200")),
            "{flag}: {out}"
        );
        assert!(
            out.starts_with("GET /headers?x=1 HTTP/1.1"),
            "{flag}: {out}"
        );
        for want in [
            "x-forwarded-proto: https\n",
            &format!("x-forwarded-host: {HOST}\n"),
            &format!("host: {HOST}\n"),
            "x-forwarded-for: 127.",
        ] {
            assert!(
                out.contains(want),
                "{flag}: the backend did not see {want:?}:\n{out}"
            );
        }
    }
    // A client's own X-Forwarded-For is replaced, not trusted.
    let (ok, out, _) = curl(
        &pki,
        p.addr,
        &["-H", "X-Forwarded-For: 203.0.113.9"],
        "/headers",
    )
    .await;
    assert!(ok && !out.contains("203.0.113.9"), "{out}");
    // A host this connection's route does not serve: 421.
    let (ok, out, _) = curl(
        &pki,
        p.addr,
        &["-H", "Host: other.example", "-w", "%{http_code}"],
        "/headers",
    )
    .await;
    assert!(ok && out.ends_with("421"), "{out}");
    let counters = p
        .proxy
        .metrics()
        .route(&mc_proxy::routes::Pattern::parse(HOST).expect("p"));
    assert_eq!(counters.responses(2), 3);
    assert_eq!(counters.responses(4), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_is_verified_against_the_fleet_ca_for_its_name() {
    let pki = Pki::new();
    let b = backend(&pki, Some("backend.svc.mcp.example")).await;
    let p = start_proxy(
        limits(),
        one(HOST, pki.route(b, Some("backend.svc.mcp.example"))),
    )
    .await;
    let (ok, out, err) = curl(&pki, p.addr, &["--http2"], "/headers").await;
    assert!(ok, "{err}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");

    // The same backend checked for another name: refused, 502.
    p.proxy
        .set_routes(one(HOST, pki.route(b, Some("other.svc.mcp.example"))));
    let (ok, out, err) = curl(&pki, p.addr, &["-w", "%{http_code}"], "/headers").await;
    assert!(ok, "{err}");
    assert!(out.ends_with("502"), "{out}");

    // A plain route to a TLS backend gets nothing it can use: 502, not a hang.
    p.proxy.set_routes(one(HOST, pki.route(b, None)));
    let (ok, out, err) = curl(&pki, p.addr, &["-w", "%{http_code}"], "/headers").await;
    assert!(ok, "{err}");
    assert!(out.ends_with("502"), "{out}");
}

/// A TLS client to the proxy with ALPN http/1.1, trusting the public CA.
async fn tls_client(pki: &Pki, proxy: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    tokio_rustls::TlsConnector::from(client_config(pki.public.cert_pem()))
        .connect(HOST.try_into().expect("name"), tcp)
        .await
        .expect("TLS to the proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echo_works_through_l7() {
    let pki = Pki::new();
    for tls in [None, Some("ws.svc.mcp.example")] {
        let b = backend(&pki, tls).await;
        let p = start_proxy(limits(), one(HOST, pki.route(b, tls))).await;
        let mut s = tls_client(&pki, p.addr).await;
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        s.write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write upgrade");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.expect("read 101");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{tls:?}: {head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{tls:?}: {head}"
        );
        for msg in ["hello", "through the edge"] {
            let mask = [1u8, 2, 3, 4];
            let mut frame = vec![0x81, 0x80 | msg.len() as u8];
            frame.extend_from_slice(&mask);
            frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            s.write_all(&frame).await.expect("send frame");
            let mut back = vec![0u8; 2 + msg.len()];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
                .await
                .expect("echo in time")
                .expect("read echo");
            assert_eq!(&back[..2], &[0x81, msg.len() as u8]);
            assert_eq!(&back[2..], msg.as_bytes(), "{tls:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_streams_to_the_backend_and_back() {
    let pki = Pki::new();
    let b = backend(&pki, Some("echo.svc.mcp.example")).await;
    let p = start_proxy(
        limits(),
        one(HOST, pki.route(b, Some("echo.svc.mcp.example"))),
    )
    .await;
    let file = pki.dir.path().join("upload.bin");
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &data).expect("write upload");
    for flag in ["--http1.1", "--http2"] {
        let out = pki.dir.path().join("echoed.bin");
        let (ok, _, err) = curl(
            &pki,
            p.addr,
            &[
                flag,
                "--data-binary",
                &format!("@{}", file.display()),
                "-o",
                &out.display().to_string(),
            ],
            "/echo",
        )
        .await;
        assert!(ok, "{flag}: {err}");
        assert!(
            std::fs::read(&out).expect("read") == data,
            "{flag}: the echo differs"
        );
    }
}

fn sha256_file(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path).expect("open");
    std::io::copy(&mut f, &mut h).expect("hash");
    hex::encode(h.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_download_through_l7_and_l4_is_intact_while_routes_change() {
    const N: u64 = 100 * 1024 * 1024;
    let pki = Pki::new();
    let plain = backend(&pki, None).await;
    let tls = backend(&pki, Some(HOST)).await;
    let table = one(HOST, pki.route(plain, None));
    let p = start_proxy(limits(), table.clone()).await;
    let churn = {
        let proxy = Arc::clone(&p.proxy);
        let route = pki.route(plain, None);
        tokio::spawn(async move {
            for i in 0u32.. {
                let mut t = proxy.routes().table.clone();
                let _ = t.remove(&format!("churn{}.example", (i + 3) % 7));
                t.insert(&format!("churn{}.example", i % 7), route.clone())
                    .expect("churn");
                proxy.set_routes(t);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let want = pattern_sha256(N);
    let path = format!("/big?{N}");
    let out = pki.dir.path().join("big-l7.bin");
    for flag in ["--http1.1", "--http2"] {
        let (ok, _, err) = curl(
            &pki,
            p.addr,
            &[flag, "-o", &out.display().to_string()],
            &path,
        )
        .await;
        assert!(ok, "l7 {flag}: {err}");
        assert_eq!(sha256_file(&out), want, "l7 {flag}");
    }
    // L4: HOST now passes through to the TLS backend, whose own certificate
    // (fleet CA) names HOST, while the churn goes on.
    let fleet_ca = pki.dir.path().join("fleet-ca.pem");
    std::fs::write(&fleet_ca, pki.fleet.cert_pem()).expect("write");
    let out4 = pki.dir.path().join("big-l4.bin");
    p.proxy.set_routes(one(HOST, Route::l4(Backend::Addr(tls))));
    let status = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(&fleet_ca)
        .args([
            "--resolve",
            &format!("{HOST}:{}:{}", p.addr.port(), p.addr.ip()),
            "-o",
            &out4.display().to_string(),
            &format!("https://{HOST}:{}{path}", p.addr.port()),
        ])
        .status()
        .await
        .expect("curl l4");
    assert!(status.success(), "l4 download failed");
    assert_eq!(sha256_file(&out4), want, "l4");
    churn.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_open_requests_and_refuses_new_connections() {
    let pki = Pki::new();
    let b = backend(&pki, None).await;
    let p = start_proxy(limits(), one(HOST, pki.route(b, None))).await;
    let slow = {
        let ca = pki.public_ca();
        let addr = p.addr;
        tokio::spawn(async move {
            tokio::process::Command::new("curl")
                .args(["-sS", "--max-time", "20", "--cacert"])
                .arg(ca)
                .args([
                    "--resolve",
                    &format!("{HOST}:{}:{}", addr.port(), addr.ip()),
                    &format!("https://{HOST}:{}/slow", addr.port()),
                ])
                .output()
                .await
                .expect("curl")
        })
    };
    // Let the request reach the backend, then stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.proxy.metrics().open_now() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped_at = Instant::now();
    p.stop.send(true).expect("stop");
    let out = slow.await.expect("join");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("slow done"),
        "the open request was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::timeout(Duration::from_secs(6), p.task)
        .await
        .expect("serve ends within the drain deadline")
        .expect("join");
    assert!(stopped_at.elapsed() < Duration::from_secs(6));
    assert!(
        TcpStream::connect(p.addr).await.is_err(),
        "the listener still accepts after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_after_its_client_hello_is_cut_at_the_handshake_timeout() {
    let pki = Pki::new();
    let b = backend(&pki, None).await;
    let timeout = Duration::from_millis(500);
    // The recorded hello names x.example; route it as l7.
    let p = start_proxy(
        Limits {
            handshake_timeout: timeout,
            ..limits()
        },
        one("x.example", pki.route(b, None)),
    )
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(include_bytes!("../testdata/openssl-s_client.bin"))
        .await
        .expect("hello");
    // The server's flight comes back; then nothing more is sent.
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the stalled handshake was never cut");
    let took = started.elapsed();
    assert!(took >= timeout && took < timeout * 4, "cut after {took:?}");
    assert!(!sink.is_empty(), "the proxy sent no ServerHello");
    assert_eq!(
        p.proxy
            .metrics()
            .refused_total(mc_proxy::metrics::Refusal::HandshakeTimeout),
        1
    );
    assert_eq!(p.proxy.stats().dials, 0);
}
