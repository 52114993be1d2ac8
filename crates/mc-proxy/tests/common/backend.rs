//! An HTTP backend for mc-proxy's L7 tests (hyper, plain or TLS with a fleet
//! certificate) and the two CAs of an edge: the public one for the proxy's
//! certificates and the fleet one for backends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mc_proxy::routes::L7Tls;
use mc_proxy::{Backend, Mode, Route};
use mcp_pki::ca::Ca;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The public name the tests route.
pub const HOST: &str = "app.example";
/// Where backends listen.
pub const BACKEND_IP: &str = "127.0.0.202";

/// The public CA (for the edge's certificate) and the fleet CA (for backends),
/// in a temp dir, with the public CA's certificate written for curl.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub public: Ca,
    pub fleet: Ca,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = Ca::create(&dir.path().join("public")).expect("public CA");
        let fleet = Ca::create(&dir.path().join("fleet")).expect("fleet CA");
        std::fs::write(dir.path().join("public-ca.pem"), public.cert_pem()).expect("write");
        Pki { dir, public, fleet }
    }
    pub fn public_ca(&self) -> PathBuf {
        self.dir.path().join("public-ca.pem")
    }
    /// A public certificate for HOST and `*.HOST` and its key, written to
    /// `dir` as cert.pem and key.pem for `mc-proxy route add`; their paths.
    pub fn write_public_pair(&self, dir: &std::path::Path) -> (String, String) {
        let tls = self
            .route(SocketAddr::from(([127, 0, 0, 1], 1)), None)
            .tls
            .expect("l7 material");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &tls.cert_pem).expect("write cert");
        std::fs::write(&key, &tls.key_pem).expect("write key");
        let utf8 = |p: PathBuf| p.to_str().expect("utf-8 path").to_string();
        (utf8(cert), utf8(key))
    }

    /// An L7 route to `backend` with a public certificate for HOST.
    pub fn route(&self, backend: SocketAddr, tls_name: Option<&str>) -> Route {
        let cert = self
            .public
            .issue(
                &[HOST.to_string(), format!("*.{HOST}")],
                Duration::from_secs(3600),
            )
            .expect("issue public");
        Route {
            backend: Backend::Addr(backend),
            mode: Mode::L7,
            backend_tls: tls_name.is_some(),
            backend_name: tls_name.map(str::to_string),
            proxy_protocol: false,
            tls: Some(L7Tls {
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem.expose().to_string(),
                backend_ca_pem: tls_name.map(|_| self.fleet.cert_pem().to_string()),
            }),
            unavailable: false,
        }
    }
}

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|e| match e {}).boxed()
}

/// `len` bytes of the /big body from offset `from` (byte i is i mod 251), cut
/// from one shared block so a debug build streams 100 MB quickly.
pub fn pattern_chunk(from: u64, len: usize) -> Bytes {
    static BLOCK: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        (0..251 + 64 * 1024u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    });
    let at = (from % 251) as usize;
    block.slice(at..at + len.min(64 * 1024))
}

pub fn pattern_sha256(n: u64) -> String {
    let mut h = Sha256::new();
    let mut at = 0;
    while at < n {
        let len = (n - at).min(64 * 1024);
        h.update(pattern_chunk(at, len as usize));
        at += len;
    }
    hex::encode(h.finalize())
}

/// The backend's answers: `/headers` echoes the request head; `/big?N` streams
/// N pattern bytes; `/echo` streams the request body back; `/ws` is a
/// WebSocket echo; `/slow` answers after a second.
async fn handle(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    Ok(match path.as_str() {
        "/headers" => {
            let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::new(full(text))
        }
        "/big" => {
            let n: u64 = req.uri().query().and_then(|q| q.parse().ok()).unwrap_or(0);
            let stream = futures_util::stream::unfold(0u64, move |at| async move {
                if at >= n {
                    return None;
                }
                let len = (n - at).min(64 * 1024);
                Some((
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(pattern_chunk(
                        at,
                        len as usize,
                    ))),
                    at + len,
                ))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-length", n.to_string().parse().expect("value"));
            r
        }
        "/echo" => Response::new(req.into_body().map_err(Into::into).boxed()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Response::new(full("slow done\n"))
        }
        "/ws" => {
            let key = req
                .headers()
                .get("sec-websocket-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    ws_echo(TokioIo::new(up)).await;
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", ws_accept(&key))
                .body(full(""))
                .expect("response")
        }
        _ => Response::builder()
            .status(404)
            .body(full("no\n"))
            .expect("response"),
    })
}

/// RFC 6455's Sec-WebSocket-Accept for a key.
fn ws_accept(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64(digest.as_ref())
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads masked client frames (short payloads) and sends each back unmasked.
async fn ws_echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    loop {
        let mut head = [0u8; 2];
        if s.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = usize::from(head[1] & 0x7f);
        if head[1] & 0x80 == 0 || len > 125 {
            return;
        }
        let mut mask = [0u8; 4];
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut mask).await.is_err() || s.read_exact(&mut payload).await.is_err() {
            return;
        }
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        let mut frame = vec![head[0], len as u8];
        frame.extend_from_slice(&payload);
        if s.write_all(&frame).await.is_err() || head[0] & 0x0f == 0x8 {
            return;
        }
    }
}

/// A hyper backend on BACKEND_IP: plain, or TLS with a fleet certificate for
/// `tls_name`. Served until the test's runtime ends.
pub async fn backend(pki: &Pki, tls_name: Option<&str>) -> SocketAddr {
    backend_on(BACKEND_IP, pki, tls_name).await
}

/// `backend` on a free port of `ip`.
pub async fn backend_on(ip: &str, pki: &Pki, tls_name: Option<&str>) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tls_name.map(|name| {
        let issued = pki
            .fleet
            .issue(&[name.to_string()], Duration::from_secs(3600))
            .expect("issue fleet");
        let certs = mcp_pki::cert::certs_from_pem(&issued.cert_pem).expect("certs");
        let key = mcp_pki::cert::key_from_pem(issued.key_pem.expose()).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(handle);
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(s).await {
                            let _ = http
                                .serve_connection(TokioIo::new(tls), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                    None => {
                        let _ = http
                            .serve_connection(TokioIo::new(s), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    addr
}

/// A rustls client config trusting the CA `ca_pem`, offering ALPN http/1.1.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(mcp_pki::cert::cert_from_pem(ca_pem).expect("ca"))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// curl to `host` through the proxy at `proxy` with the public CA; (exit ok,
/// stdout, stderr).
pub async fn curl(
    pki: &Pki,
    host: &str,
    proxy: SocketAddr,
    args: &[&str],
    path: &str,
) -> (bool, String, String) {
    let resolve = format!("{host}:{}:{}", proxy.port(), proxy.ip());
    let url = format!("https://{host}:{}{path}", proxy.port());
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(pki.public_ca())
        .args(["--resolve", &resolve])
        .args(args)
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl over HTTP/1.1 and HTTP/2 to `host` through the proxy reaches the
/// plain backend of `backend_on` (its `/headers` answer, 200).
pub async fn assert_served(pki: &Pki, host: &str, proxy: SocketAddr) {
    for flag in ["--http1.1", "--http2"] {
        let (ok, out, err) =
            curl(pki, host, proxy, &[flag, "-w", "%{http_code}"], "/headers").await;
        assert!(ok, "{flag}: {err}");
        assert!(out.starts_with("GET /headers HTTP/1.1"), "{flag}: {out}");
        assert!(out.ends_with("200"), "{flag}: {out}");
    }
}
