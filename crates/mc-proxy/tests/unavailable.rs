//! Unavailable routes end to end with the real binary (127.0.0.231-232): an
//! l7 route marked `--unavailable` completes the TLS handshake with its own
//! certificate and answers 503 with `Retry-After: 5` over HTTP/1.1 and HTTP/2
//! (counted as 5xx for the route); an unavailable l4 route closes after the
//! ClientHello (a refusal, reason `unavailable`); `route list` shows the flag;
//! adding the route again without it serves the backend, while a kept-alive
//! connection on another route goes on untouched. The proxy is killed by its
//! guard even when the test fails.

mod common;

use bytes::Bytes;
use common::backend::{assert_served, backend_on, client_config, curl, Pki, HOST};
use common::cli::{l7_args, mc_proxy, route_add, serve, text};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const PROXY_IP: &str = "127.0.0.231";
const BACKEND_IP: &str = "127.0.0.232";

/// A kept-alive HTTP/1.1 connection over TLS to `name` through the proxy.
async fn keep_alive(
    pki: &Pki,
    proxy: std::net::SocketAddr,
    name: &str,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(client_config(pki.public.cert_pem()))
        .connect(name.to_string().try_into().expect("name"), tcp)
        .await
        .expect("TLS to the proxy");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    send
}

/// GET /headers on a kept connection: the status and body.
async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    name: &str,
) -> (u16, String) {
    send.ready().await.expect("connection still open");
    let req = hyper::Request::get("/headers")
        .header("host", name)
        .body(Empty::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_route_answers_503_and_serves_again_when_replaced() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backend_on(BACKEND_IP, &pki, None).await.to_string();
    let (cert, key) = pki.write_public_pair(dir.path());
    let p = serve(dir.path(), PROXY_IP);
    let add = |args: &[&str]| route_add(p.sock(), args);
    let l7 = |hostname: &'static str| l7_args(hostname, &backend, &cert, &key);

    // A kept-alive connection on another route, open through every change.
    let keep = format!("keep.{HOST}");
    add(&l7("keep.app.example"));
    let mut kept = keep_alive(&pki, p.listen, &keep).await;
    assert_eq!(get(&mut kept, &keep).await.0, 200);

    let out = add(&[l7(HOST), vec!["--unavailable"]].concat());
    assert!(out.contains("(l7, unavailable) added"), "{out}");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (ok, out, err) = curl(
            &pki,
            HOST,
            p.listen,
            &[flag, "-i", "-w", "\nversion=%{http_version}"],
            "/headers",
        )
        .await;
        // curl checked the certificate against the public CA for HOST: the
        // route's own, though no backend serves.
        assert!(ok, "{flag}: {err}");
        let head = out.to_ascii_lowercase();
        assert!(
            head.starts_with(&format!("http/{version} 503")),
            "{flag}: {out}"
        );
        assert!(head.contains("\nretry-after: 5\r\n"), "{flag}: {out}");
        assert!(out.contains("service unavailable"), "{flag}: {out}");
        assert!(!out.contains("x-forwarded-for"), "{flag}: forwarded: {out}");
        assert!(
            out.ends_with(&format!("version={version}")),
            "{flag}: {out}"
        );
    }
    assert_eq!(get(&mut kept, &keep).await.0, 200);

    // An unavailable l4 route: closed after the ClientHello, nothing dialled.
    add(&[
        "--hostname",
        "l4.example",
        "--backend",
        &backend,
        "--unavailable",
    ]);
    let tcp = TcpStream::connect(p.listen).await.expect("connect");
    let refused = tokio_rustls::TlsConnector::from(client_config(pki.public.cert_pem()))
        .connect("l4.example".try_into().expect("name"), tcp)
        .await
        .expect_err("an unavailable l4 route completes no handshake");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::UnexpectedEof,
        "{refused}"
    );

    let metrics = p.metrics_text();
    for want in [
        format!("mc_proxy_requests_total{{route=\"{HOST}\",class=\"5xx\"}} 2\n"),
        format!("mc_proxy_requests_total{{route=\"{HOST}\",class=\"2xx\"}} 0\n"),
        "mc_proxy_handshake_failures_total{reason=\"unavailable\"} 1\n".to_string(),
        "mc_proxy_backend_connections_total 0\n".to_string(),
    ] {
        assert!(metrics.contains(&want), "{want:?} not in\n{metrics}");
    }

    let out = mc_proxy(&["route", "list", "--socket", p.sock(), "--json"]);
    assert!(out.status.success(), "route list: {}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let flags: Vec<(String, bool)> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["hostname"].as_str().expect("hostname").to_string(),
                r["unavailable"].as_bool().expect("unavailable"),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (HOST.to_string(), true),
            (keep.clone(), false),
            ("l4.example".to_string(), true)
        ]
    );
    let table = text(&mc_proxy(&["route", "list", "--socket", p.sock()]));
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.ends_with("UNAVAILABLE")),
        "{table}"
    );

    // Available again: AddRoute replaces, and the backend serves.
    let out = add(&l7(HOST));
    assert!(out.contains("(l7) replaced"), "{out}");
    assert_served(&pki, HOST, p.listen).await;
    let (status, body) = get(&mut kept, &keep).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("x-forwarded-host: {keep}")),
        "{body}"
    );
}
