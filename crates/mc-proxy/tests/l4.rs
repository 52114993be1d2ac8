//! L4 passthrough end to end on loopback (127.0.0.171-173): real TLS clients
//! (openssl s_client) through mc-proxy to a real TLS backend (openssl s_server),
//! refusals before any dial, the handshake timeout, half-close, a large
//! transfer, the connection cap, PROXY headers and route swaps. Every process a
//! test starts is killed by its guard, even when the test fails.

mod common;

use common::inproc::Running;

use common::{free_port, Child};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mc_proxy::l4::CopyMode;
use mc_proxy::{Backend, Limits, Route, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROXY_IP: &str = "127.0.0.171";
const BACKEND_IP: &str = "127.0.0.172";
/// A ClientHello for x.example recorded from openssl s_client.
const HELLO: &[u8] = include_bytes!("../testdata/openssl-s_client.bin");

fn limits(copy: CopyMode) -> Limits {
    Limits {
        max_connections: 64,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(2),
        copy,
    }
}

async fn start_proxy(limits: Limits, table: Table) -> Running {
    common::inproc::start_proxy(PROXY_IP, limits, table).await
}

fn table(routes: &[(&str, SocketAddr)]) -> Table {
    let mut t = Table::new();
    for (name, addr) in routes {
        t.insert(name, Route::l4(Backend::Addr(*addr)))
            .expect("route");
    }
    t
}

/// A raw TCP backend that counts its connections and runs `serve` on each.
async fn backend<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((BACKEND_IP, 0))
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, count)
}

/// Echoes everything, then ends its write when the client ends its.
async fn echo(s: TcpStream) {
    let (mut r, mut w) = s.into_split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// A self-signed EC certificate for `cn` in `dir`: (cert, key).
fn certificate(dir: &Path, cn: &str) -> (String, String) {
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key,
            "-out",
            &cert,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// `openssl s_server` on BACKEND_IP with its own certificate for `cn`.
async fn tls_backend(dir: &Path, cn: &str) -> (Child, SocketAddr) {
    let (cert, key) = certificate(dir, cn);
    let addr: SocketAddr = format!("{BACKEND_IP}:{}", free_port(BACKEND_IP))
        .parse()
        .expect("addr");
    let child = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &addr.to_string(),
            "-cert",
            &cert,
            "-key",
            &key,
            "-www",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let child = Child(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "openssl s_server did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

/// Runs `openssl s_client` against `addr` with `args`; stdout and stderr.
async fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let addr = addr.to_string();
    run(
        "openssl",
        &[&["s_client"], args, &["-connect", &addr]].concat(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_client_sees_the_backends_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, backend) = tls_backend(dir.path(), "backend.mc-proxy.test").await;
    for copy in [CopyMode::Splice, CopyMode::Plain] {
        let p = start_proxy(limits(copy), table(&[("app.mc-proxy.test", backend)])).await;
        let out = s_client(p.addr, &["-servername", "app.mc-proxy.test"]).await;
        assert!(
            out.contains("CN = backend.mc-proxy.test"),
            "{copy:?}: s_client did not see the backend's certificate:\n{out}"
        );
        assert!(
            out.contains("Verify return code") && !out.contains("alert"),
            "{copy:?}: {out}"
        );
        assert_eq!(p.proxy.stats().dials, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_name_gets_unrecognized_name_and_no_dial() {
    let (addr, count) = backend(echo).await;
    let p = start_proxy(
        limits(CopyMode::Splice),
        table(&[("known.mc-proxy.test", addr), ("*.wild.test", addr)]),
    )
    .await;
    for args in [
        &["-servername", "unknown.mc-proxy.test"][..],
        &["-servername", "a.b.wild.test"][..],
        &["-noservername"][..],
    ] {
        let out = s_client(p.addr, args).await;
        assert!(
            out.contains("unrecognized name") && out.contains("alert number 112"),
            "{args:?}:\n{out}"
        );
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a backend connection was made"
    );
    let stats = p.proxy.stats();
    assert_eq!((stats.dials, stats.refused), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_tls_gets_decode_error() {
    let (addr, count) = backend(echo).await;
    let p = start_proxy(limits(CopyMode::Splice), table(&[("x.example", addr)])).await;
    let mut c = TcpStream::connect(p.addr).await.expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\nHost: x.example\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, [21, 3, 3, 0, 2, 2, 50]);
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_or_dribbling_client_is_cut_at_handshake_timeout() {
    let (addr, count) = backend(echo).await;
    let mut l = limits(CopyMode::Splice);
    l.handshake_timeout = Duration::from_millis(300);
    let p = start_proxy(l, table(&[("x.example", addr)])).await;

    // Silent.
    let start = Instant::now();
    let mut c = TcpStream::connect(p.addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("not cut");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "silent cut after {took:?}"
    );

    // Dribbling: one byte every 20 ms would need 6 s for the whole hello.
    let start = Instant::now();
    let c = TcpStream::connect(p.addr).await.expect("connect");
    let (mut r, mut w) = c.into_split();
    let dribble = tokio::spawn(async move {
        for b in HELLO {
            if w.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut got))
        .await
        .expect("not cut");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "dribbler cut after {took:?}"
    );
    assert!(got.is_empty(), "{got:?}");
    dribble.abort();

    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a backend connection was made"
    );
    let stats = p.proxy.stats();
    assert_eq!((stats.dials, stats.handshake_timeouts), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_still_delivers_the_backends_reply() {
    // The backend reads until the client's EOF, then answers and closes.
    let (addr, _) = backend(|mut s: TcpStream| async move {
        let mut got = Vec::new();
        if s.read_to_end(&mut got).await.is_ok() {
            let _ = s
                .write_all(format!("got {} bytes", got.len()).as_bytes())
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = s.write_all(b"; bye").await;
        }
    })
    .await;
    for copy in [CopyMode::Splice, CopyMode::Plain] {
        let p = start_proxy(limits(copy), table(&[("x.example", addr)])).await;
        let mut c = TcpStream::connect(p.addr).await.expect("connect");
        c.write_all(HELLO).await.expect("write hello");
        c.write_all(b"request").await.expect("write request");
        c.shutdown().await.expect("shutdown write");
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut reply))
            .await
            .expect("reply in time")
            .expect("read reply");
        assert_eq!(
            reply,
            format!("got {} bytes; bye", HELLO.len() + 7),
            "{copy:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_round_trip_unchanged() {
    const BLOCK: usize = 1 << 20;
    const BLOCKS: usize = 50;
    let (addr, _) = backend(echo).await;
    // Pseudo-random bytes (xorshift), so a shifted or dropped chunk shows.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let block: Arc<Vec<u8>> = Arc::new(
        (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect(),
    );
    for copy in [CopyMode::Splice, CopyMode::Plain] {
        let p = start_proxy(limits(copy), table(&[("x.example", addr)])).await;
        let c = TcpStream::connect(p.addr).await.expect("connect");
        let (mut r, mut w) = c.into_split();
        let b = Arc::clone(&block);
        let writer = tokio::spawn(async move {
            w.write_all(HELLO).await.expect("write hello");
            for _ in 0..BLOCKS {
                w.write_all(&b).await.expect("write block");
            }
            w.shutdown().await.expect("shutdown");
        });
        // Compare what comes back with what went, position by position.
        let expected = |pos: usize| -> &[u8] {
            if pos < HELLO.len() {
                &HELLO[pos..]
            } else {
                let at = (pos - HELLO.len()) % BLOCK;
                &block[at..]
            }
        };
        let total = HELLO.len() + BLOCK * BLOCKS;
        let mut pos = 0;
        let mut buf = vec![0u8; 256 * 1024];
        let start = Instant::now();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(30), r.read(&mut buf))
                .await
                .expect("stalled")
                .expect("read");
            if n == 0 {
                break;
            }
            let mut at = 0;
            while at < n {
                let want = expected(pos);
                let len = want.len().min(n - at);
                assert!(
                    buf[at..at + len] == want[..len],
                    "{copy:?}: bytes differ near offset {pos}"
                );
                at += len;
                pos += len;
            }
        }
        writer.await.expect("writer");
        assert_eq!(pos, total, "{copy:?}: length");
        eprintln!(
            "{copy:?}: {} MB both ways in {:?}",
            total >> 20,
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_the_next_client_until_a_slot_frees() {
    let (addr, count) = backend(echo).await;
    let mut l = limits(CopyMode::Splice);
    l.max_connections = 1;
    let p = start_proxy(l, table(&[("x.example", addr)])).await;
    let holder = TcpStream::connect(p.addr).await.expect("connect holder");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = TcpStream::connect(p.addr)
        .await
        .expect("connect second (kernel backlog)");
    second.write_all(HELLO).await.expect("write hello");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "the second client was served above the cap"
    );
    drop(holder);
    let mut back = vec![0u8; HELLO.len()];
    tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut back))
        .await
        .expect("served once a slot freed")
        .expect("read");
    assert_eq!(back, HELLO);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_header_comes_first() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (addr, _) = backend(move |mut s: TcpStream| {
        let tx = tx.clone();
        async move {
            let mut head = vec![0u8; 28 + HELLO.len()];
            if s.read_exact(&mut head).await.is_ok() {
                let _ = tx.send(head);
            }
        }
    })
    .await;
    let mut t = Table::new();
    let mut route = Route::l4(Backend::Addr(addr));
    route.proxy_protocol = true;
    t.insert("x.example", route).expect("route");
    let p = start_proxy(limits(CopyMode::Splice), t).await;
    let mut c = TcpStream::connect(p.addr).await.expect("connect");
    let client = c.local_addr().expect("client addr");
    c.write_all(HELLO).await.expect("write");
    let head = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("backend got it")
        .expect("head");
    assert_eq!(
        head[..28],
        mc_proxy::l4::proxy_v2_header(client, p.addr)[..]
    );
    assert_eq!(&head[28..], HELLO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_change_applies_to_new_connections_only() {
    let tagged = |tag: &'static [u8]| {
        move |s: TcpStream| async move {
            let (mut r, mut w) = s.into_split();
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || w.write_all(tag).await.is_err() {
                    break;
                }
            }
        }
    };
    let (one, _) = backend(tagged(b"one")).await;
    let (two, _) = backend(tagged(b"two")).await;
    let p = start_proxy(limits(CopyMode::Splice), table(&[("x.example", one)])).await;
    let mut old = TcpStream::connect(p.addr).await.expect("connect");
    old.write_all(HELLO).await.expect("write");
    let mut tag = [0u8; 3];
    old.read_exact(&mut tag).await.expect("read");
    assert_eq!(&tag, b"one");
    p.proxy.set_routes(table(&[("x.example", two)]));
    let mut new = TcpStream::connect(p.addr).await.expect("connect");
    new.write_all(HELLO).await.expect("write");
    new.read_exact(&mut tag).await.expect("read");
    assert_eq!(&tag, b"two");
    old.write_all(b"still there").await.expect("write");
    old.read_exact(&mut tag).await.expect("read");
    assert_eq!(&tag, b"one", "the open connection moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_at_idle_timeout() {
    let (addr, _) = backend(echo).await;
    for copy in [CopyMode::Splice, CopyMode::Plain] {
        let mut l = limits(copy);
        l.idle_timeout = Duration::from_millis(400);
        let p = start_proxy(l, table(&[("x.example", addr)])).await;
        let mut c = TcpStream::connect(p.addr).await.expect("connect");
        c.write_all(HELLO).await.expect("write");
        let mut back = vec![0u8; HELLO.len()];
        c.read_exact(&mut back).await.expect("echo");
        // Traffic keeps it open past the timeout...
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.write_all(b"ping").await.expect("write");
            let mut pong = [0u8; 4];
            c.read_exact(&mut pong)
                .await
                .expect("still open while busy");
        }
        // ...silence closes it.
        let start = Instant::now();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("not closed");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{copy:?}: closed after {took:?}"
        );
    }
}

/// Runs `program` with `args`; stdout and stderr.
async fn run(program: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} timed out"))
    .unwrap_or_else(|e| panic!("run {program}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_gnutls_reach_the_backend_through_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, backend) = tls_backend(dir.path(), "backend.mc-proxy.test").await;
    let p = start_proxy(
        limits(CopyMode::Splice),
        table(&[("*.mc-proxy.test", backend)]),
    )
    .await;
    let port = p.addr.port().to_string();
    let resolve = format!("web.mc-proxy.test:{port}:{PROXY_IP}");
    let url = format!("https://web.mc-proxy.test:{port}/");
    let out = run("curl", &["-skv", "--resolve", &resolve, &url]).await;
    assert!(
        out.contains("CN=backend.mc-proxy.test") && out.contains("HTTP/1.0 200 ok"),
        "curl:\n{out}"
    );
    let out = run(
        "gnutls-cli",
        &[
            "--insecure",
            "--sni-hostname",
            "gnutls.mc-proxy.test",
            "-p",
            &port,
            PROXY_IP,
        ],
    )
    .await;
    assert!(
        out.contains("CN=backend.mc-proxy.test") && out.contains("Handshake was completed"),
        "gnutls-cli:\n{out}"
    );
    assert_eq!(p.proxy.stats().dials, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_in_several_segments_and_records_is_forwarded_whole() {
    let (addr, _) = backend(echo).await;
    let p = start_proxy(limits(CopyMode::Splice), table(&[("x.example", addr)])).await;
    // Re-frame the recorded hello into 40-byte records, sent in 7-byte segments.
    let message = &HELLO[5..];
    let mut framed = Vec::new();
    for chunk in message.chunks(40) {
        framed.extend_from_slice(&[22, 3, 1, 0, chunk.len() as u8]);
        framed.extend_from_slice(chunk);
    }
    let mut c = TcpStream::connect(p.addr).await.expect("connect");
    c.set_nodelay(true).expect("nodelay");
    for segment in framed.chunks(7) {
        c.write_all(segment).await.expect("write");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut back = vec![0u8; framed.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(back, framed);
}
