//! The real binary across restarts (127.0.0.203-204): an L7 route added with
//! `mc-proxy route add --mode l7` serves, shows in `/metrics`, and serves again
//! within a second after SIGKILL with no admin call; `http_listen` redirects
//! to HTTPS; bad L7 material is exit 2; and a second mc-proxy started on the
//! same config takes the listening sockets over under load with not one
//! connection refused, while the first drains and exits. Every process is
//! killed by its guard.

mod common;

use common::cli::{mc_proxy, text, BIN};

use common::backend::{backend, client_config, Pki, HOST};
use common::{free_port, Child};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Each test its own address, so their free ports never collide.
const PROXY_IP: &str = "127.0.0.203";
const HANDOVER_IP: &str = "127.0.0.204";
/// The L7 name with its own public certificate (the L4 one is HOST).
const L7_HOST: &str = "web.app.example";

struct Setup {
    config: PathBuf,
    listen: SocketAddr,
    http: SocketAddr,
    metrics: SocketAddr,
    socket: PathBuf,
}

fn setup(dir: &Path, ip: &str) -> Setup {
    let port = |_| free_port(ip);
    let [listen, http, metrics]: [SocketAddr; 3] =
        [0, 1, 2].map(|i| format!("{ip}:{}", port(i)).parse().expect("addr"));
    let socket = dir.join("run").join("admin.sock");
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nhttp_listen = \"{http}\"\nmetrics_listen = \"{metrics}\"\n\
             admin_socket = \"{}\"\ndata_dir = \"{}\"\nhandshake_timeout = \"2s\"\ndrain_timeout = \"3s\"\n",
            socket.display(),
            dir.join("data").display()
        ),
    )
    .expect("write config");
    Setup {
        config,
        listen,
        http,
        metrics,
        socket,
    }
}

fn start(config: &Path) -> Child {
    Child(
        Command::new(BIN)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mc-proxy"),
    )
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// PEM files of a public certificate for `names`: (cert, key).
fn public_cert(pki: &Pki, names: &[&str], tag: &str) -> (PathBuf, PathBuf) {
    let issued = pki
        .public
        .issue(
            &names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            Duration::from_secs(3600),
        )
        .expect("issue");
    let cert = pki.dir.path().join(format!("{tag}-cert.pem"));
    let key = pki.dir.path().join(format!("{tag}-key.pem"));
    std::fs::write(&cert, &issued.cert_pem).expect("write cert");
    std::fs::write(&key, issued.key_pem.expose()).expect("write key");
    (cert, key)
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// curl to L7_HOST through the proxy at `listen`, trusting `ca`.
fn curl_l7(ca: &Path, listen: SocketAddr, path: &str) -> Output {
    let ca = ca.display().to_string();
    curl(&[
        "--max-time",
        "2",
        "--cacert",
        &ca,
        "--resolve",
        &format!("{L7_HOST}:{}:{}", listen.port(), listen.ip()),
        &format!("https://{L7_HOST}:{}{path}", listen.port()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l7_route_from_the_cli_serves_again_after_sigkill_with_metrics_and_redirect() {
    let pki = Pki::new();
    let b = backend(&pki, None).await;
    let s = setup(pki.dir.path(), PROXY_IP);
    let (cert, key) = public_cert(&pki, &[L7_HOST], "web");
    let (other_cert, other_key) = public_cert(&pki, &["other.example"], "other");
    let mut proxy = start(&s.config);
    let sock = s.socket.display().to_string();
    wait_for("no admin socket", || s.socket.exists());
    let add = |cert: &Path, key: &Path| {
        let (sock, b, cert, key) = (
            sock.clone(),
            b.to_string(),
            cert.display().to_string(),
            key.display().to_string(),
        );
        mc_proxy(&[
            "route",
            "add",
            "--socket",
            &sock,
            "--hostname",
            L7_HOST,
            "--backend",
            &b,
            "--mode",
            "l7",
            "--cert",
            &cert,
            "--key",
            &key,
            "--backend-plain",
        ])
    };
    // Bad L7 material is refused (exit 2) and changes nothing.
    for (c, k, want) in [
        (&cert, &other_key, "cert_pem and key_pem"),
        (&cert, &cert, "key_pem"),
        (&other_cert, &other_key, ""),
    ] {
        let out = add(c, k);
        if want.is_empty() {
            // A valid pair for another name is accepted: the operator's choice.
            assert!(out.status.success(), "{}", text(&out));
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(want), "{}", text(&out));
    }
    let out = add(&cert, &key);
    assert!(out.status.success(), "{}", text(&out));

    let out = tokio::task::spawn_blocking({
        let (ca, listen) = (pki.public_ca(), s.listen);
        move || curl_l7(&ca, listen, "/headers")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("x-forwarded-proto: https"),
        "{}",
        text(&out)
    );

    let metrics = curl(&[&format!("http://{}/metrics", s.metrics)]);
    let m = text(&metrics);
    assert!(
        m.contains(&format!(
            "mc_proxy_requests_total{{route=\"{L7_HOST}\",class=\"2xx\"}} 1\n"
        )),
        "{m}"
    );
    assert!(m.contains("mc_proxy_connections_accepted_total 1\n"), "{m}");

    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        &format!("Host: {L7_HOST}"),
        &format!("http://{}/a/b?c=d", s.http),
    ]);
    assert_eq!(
        text(&redirect),
        format!("308 https://{L7_HOST}:{}/a/b?c=d", s.listen.port())
    );

    // SIGKILL, start again: the route serves from routes.db, with no admin call.
    proxy.0.kill().expect("kill");
    proxy.0.wait().expect("reap");
    let started = Instant::now();
    let _again = start(&s.config);
    let (ca, listen) = (pki.public_ca(), s.listen);
    let served = tokio::task::spawn_blocking(move || loop {
        let out = curl_l7(&ca, listen, "/headers");
        if out.status.success() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never served again"
        );
        std::thread::sleep(Duration::from_millis(10));
    })
    .await
    .expect("join");
    assert!(
        served < Duration::from_secs(1),
        "the L7 route served again only after {served:?}"
    );
}

/// One request on a new connection (TLS with `roots` for `name`, then
/// HTTP/1.1 with `Connection: close`): whether it got a 200.
async fn one_request(
    addr: SocketAddr,
    name: &'static str,
    roots: Arc<rustls::ClientConfig>,
) -> bool {
    let go = async {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let mut tls = tokio_rustls::TlsConnector::from(roots)
            .connect(name.try_into().ok()?, tcp)
            .await
            .ok()?;
        tls.write_all(
            format!("GET /headers HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        Some(out.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), go).await,
        Ok(Some(true))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mc_proxy_takes_the_sockets_over_under_load_and_refuses_none() {
    let pki = Pki::new();
    let plain = backend(&pki, None).await;
    // The L4 backend holds its own certificate (fleet CA) for HOST.
    let tls = backend(&pki, Some(HOST)).await;
    let s = setup(pki.dir.path(), HANDOVER_IP);
    let (cert, key) = public_cert(&pki, &[L7_HOST], "web");
    let _first_guard;
    let mut first = start(&s.config);
    wait_for("no admin socket", || s.socket.exists());
    let sock = s.socket.display().to_string();
    for args in [
        vec!["--hostname", HOST, "--backend", &tls.to_string()],
        vec![
            "--hostname",
            L7_HOST,
            "--backend",
            &plain.to_string(),
            "--mode",
            "l7",
            "--cert",
            cert.to_str().expect("utf-8"),
            "--key",
            key.to_str().expect("utf-8"),
            "--backend-plain",
        ],
    ] {
        let out = mc_proxy(&[&["route", "add", "--socket", &sock][..], &args].concat());
        assert!(out.status.success(), "{}", text(&out));
    }
    let l4 = client_config(pki.fleet.cert_pem());
    let l7 = client_config(pki.public.cert_pem());
    assert!(
        one_request(s.listen, HOST, Arc::clone(&l4)).await,
        "l4 before"
    );
    assert!(
        one_request(s.listen, L7_HOST, Arc::clone(&l7)).await,
        "l7 before"
    );

    // Load: 4 clients, each one request per connection, L4 and L7.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let (name, config) = if i % 2 == 0 {
            (HOST, Arc::clone(&l4))
        } else {
            (L7_HOST, Arc::clone(&l7))
        };
        let addr = s.listen;
        clients.push(tokio::spawn(async move {
            // Bounded: the test stops it, and at most 100,000 requests.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if one_request(addr, name, Arc::clone(&config)).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = ok.load(Ordering::Relaxed);

    // The replacement, on the same config: it takes the sockets; the first exits.
    let handover_at = Instant::now();
    let second = start(&s.config);
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = first.0.try_wait() {
                return (status, handover_at.elapsed(), first);
            }
            assert!(Instant::now() < deadline, "the first mc-proxy did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .expect("join");
    let (status, took, first) = exited;
    _first_guard = first;
    assert!(status.success(), "the first mc-proxy exited with {status}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "handover under load: {ok} requests ({before} before the second proxy started), \
         {failed} failed; the first exited {took:?} after the second started"
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across the handover",
        ok + failed
    );
    assert!(ok > before, "no request was served after the handover");

    // The second one serves alone now, admin API included, and the first's
    // metrics listener is the second's.
    let list = mc_proxy(&["route", "list", "--socket", &sock, "--json"]);
    assert!(list.status.success(), "{}", text(&list));
    let list = text(&list);
    assert!(list.contains(L7_HOST) && list.contains(HOST), "{list}");
    let m = text(&curl(&[&format!("http://{}/metrics", s.metrics)]));
    assert!(m.contains("mc_proxy_connections_open"), "{m}");
    let out = tokio::task::spawn_blocking({
        let (ca, listen) = (pki.public_ca(), s.listen);
        move || curl_l7(&ca, listen, "/headers")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", text(&out));
    drop(second);
}
