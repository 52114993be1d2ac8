//! The RFC 7662 token introspection client, so the master can accept tokens issued by
//! an external identity service (MCIAS) as well as its own. HTTP is hyper's
//! (hyper-util's pooled client, HTTP/1.1, kept-alive connections) over rustls with
//! ring, the workspace's one TLS stack: `https://` verified against the system's CA
//! bundle or a configured one, or plain `http://` (for an identity service on the
//! same host). Every exchange is bounded by a timeout and its response to 64 KiB. An
//! active answer is cached for a short, configured time (never past the token's own
//! expiry), keyed by the token's SHA-256, so every RPC does not cost a round trip.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcp_pki::rustls;
use mcp_pki::token::{Claims, Role, MAX_TOKEN_LEN};

/// The largest introspection response body read.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// The most answers cached; past it the expired ones go, then all of them.
const MAX_CACHED: usize = 4096;

/// Asks an introspection endpoint whether a token is active and whose it is.
#[derive(Clone)]
pub struct Introspector {
    url: String,
    uri: http::Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    cache_ttl: Duration,
    /// Token id (SHA-256 hex) -> its claims and until when they are reused.
    cache: Arc<Mutex<HashMap<String, (Claims, Instant)>>>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

/// How the client is set up (from `master.toml`).
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// Trust for an `https://` endpoint: this PEM bundle, else the system's.
    pub ca_cert: Option<&'a Path>,
    /// The bound on one exchange, connecting included.
    pub timeout: Duration,
    /// How long an active answer is reused; zero: never.
    pub cache_ttl: Duration,
}

/// Why a token could not be introspected. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("invalid introspection URL {url:?}: {why}")]
    InvalidUrl { url: String, why: String },
    #[error("introspection CA {path}: {why}")]
    Ca { path: String, why: String },
    #[error("the token is longer than 4096 bytes")]
    TokenTooLong,
    #[error("talk to the introspection endpoint {url}: {why}")]
    Http { url: String, why: String },
    #[error("the introspection endpoint {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("the introspection response is larger than 64 KiB")]
    TooLarge,
    #[error("the introspection endpoint answered HTTP {0}")]
    Status(u16),
    #[error("malformed introspection response: {0}")]
    BadJson(String),
    #[error("the token is not active (expired, revoked or unknown); run `mcp login`")]
    Inactive,
    #[error("the introspection response names no user")]
    MissingUsername,
    #[error("the introspection response has role {0:?}; expected \"admin\" or \"viewer\"")]
    UnknownRole(String),
}

/// The fields of an RFC 7662 response that MCP reads; others are ignored.
#[derive(serde::Deserialize)]
struct Answer {
    active: bool,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

impl Introspector {
    /// Checks `url` (`https://` or `http://`, a host, no credentials or fragment) and
    /// loads the trust for it.
    pub fn new(url: &str, options: Options<'_>) -> Result<Introspector, IntrospectError> {
        let invalid = |why: &str| IntrospectError::InvalidUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("http") => {}
            _ => return Err(invalid("it must start with https:// (or http://)")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        if authority.host().is_empty() {
            return Err(invalid("no host"));
        }
        if url.contains('#') {
            return Err(invalid("a URL fragment (#) is not allowed"));
        }
        let tls = tls_config(options.ca_cert)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(Introspector {
            url: url.to_string(),
            uri,
            client,
            timeout: options.timeout,
            cache_ttl: options.cache_ttl,
            cache: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Whether tokens go to the endpoint in clear text.
    pub fn is_plain_http(&self) -> bool {
        self.uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("http"))
    }

    /// The token's claims: from the cache if an active answer for it is fresh, else
    /// POSTed as `token=<urlencoded>` (application/x-www-form-urlencoded) to the
    /// endpoint, whose JSON is `{"active", "username", "role", "exp", "iat"}`. Not
    /// active, or active with an `exp` passed: [`IntrospectError::Inactive`]. No role:
    /// viewer. No `exp`: `expires_at = u64::MAX`. `issued_at` is `iat`, or now.
    pub async fn introspect(&self, token: &str) -> Result<Claims, IntrospectError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(IntrospectError::TokenTooLong);
        }
        let id = mcp_pki::digest::sha256_hex(token.as_bytes());
        if let Some(claims) = self.cached(&id) {
            return Ok(claims);
        }
        let body = format!("token={}", form_urlencode(token));
        let request = http::Request::post(self.uri.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "mcp-master")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.http_error(&e))?;
        let (status, body) = tokio::time::timeout(self.timeout, self.exchange(request))
            .await
            .map_err(|_| IntrospectError::Timeout {
                url: self.url.clone(),
                after: self.timeout,
            })??;
        if status != 200 {
            return Err(IntrospectError::Status(status));
        }
        let claims = claims_from_json(&body, unix_now())?;
        self.remember(id, &claims);
        Ok(claims)
    }

    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), IntrospectError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| self.http_error(&e))?;
        let status = response.status().as_u16();
        if status != 200 {
            // Not read further: the connection is not reused.
            return Ok((status, Bytes::new()));
        }
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    IntrospectError::TooLarge
                } else {
                    self.http_error(&*e)
                }
            })?
            .to_bytes();
        Ok((status, body))
    }

    /// The error with its causes, e.g. "client error (Connect): invalid peer certificate".
    fn http_error(&self, e: &dyn std::error::Error) -> IntrospectError {
        let mut why = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            why.push_str(": ");
            why.push_str(&s.to_string());
            source = s.source();
        }
        IntrospectError::Http {
            url: self.url.clone(),
            why,
        }
    }

    fn cached(&self, id: &str) -> Option<Claims> {
        let cache = self.cache.lock().ok()?;
        let (claims, until) = cache.get(id)?;
        (Instant::now() < *until && unix_now() < claims.expires_at).then(|| claims.clone())
    }

    fn remember(&self, id: String, claims: &Claims) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let left = claims.expires_at.saturating_sub(unix_now());
        let until = Instant::now() + self.cache_ttl.min(Duration::from_secs(left));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                let now = Instant::now();
                cache.retain(|_, (_, until)| now < *until);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(id, (claims.clone(), until));
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// rustls with ring, trusting `ca_cert` (PEM, one certificate or more) or else the
/// system's roots (ALPN is hyper-rustls's: HTTP/1.1).
fn tls_config(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig, IntrospectError> {
    let mut roots = rustls::RootCertStore::empty();
    let from = match ca_cert {
        Some(path) => {
            let ca = |why: String| IntrospectError::Ca {
                path: path.display().to_string(),
                why,
            };
            let pem = std::fs::read_to_string(path).map_err(|e| ca(e.to_string()))?;
            let certs = mcp_pki::cert::certs_from_pem(&pem).map_err(|e| ca(e.to_string()))?;
            roots.add_parsable_certificates(certs);
            path.display().to_string()
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            "the system's CA bundle".to_string()
        }
    };
    if roots.is_empty() {
        return Err(IntrospectError::Ca {
            path: from,
            why: "no usable CA certificate".into(),
        });
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| IntrospectError::Ca {
        path: from,
        why: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Reads the introspection JSON into claims, `now` in unix seconds.
fn claims_from_json(body: &[u8], now: u64) -> Result<Claims, IntrospectError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| IntrospectError::BadJson(e.to_string()))?;
    if !answer.active {
        return Err(IntrospectError::Inactive);
    }
    if answer.exp.is_some_and(|exp| now >= exp) {
        return Err(IntrospectError::Inactive);
    }
    let user = answer.username.unwrap_or_default();
    if user.is_empty() {
        return Err(IntrospectError::MissingUsername);
    }
    let role = match answer.role.as_deref() {
        None => Role::Viewer,
        Some(name) => name
            .parse()
            .map_err(|_| IntrospectError::UnknownRole(name.chars().take(32).collect()))?,
    };
    Ok(Claims {
        user,
        role,
        expires_at: answer.exp.unwrap_or(u64::MAX),
        issued_at: answer.iat.unwrap_or(now),
    })
}

/// `application/x-www-form-urlencoded`: unreserved bytes as they are, space
/// as `+`, everything else `%XX`.
fn form_urlencode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use proptest::prelude::*;
    use tokio::net::TcpListener;

    /// What the test server answers, and how many requests it has seen.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// RFC 7662: "good-admin", "good-viewer" active; "old" active but expired.
        Introspect,
        /// Accepts, and never answers.
        Silent,
        /// 200 with this raw body.
        Body(&'static str),
        /// This status, empty body.
        Status(u16),
        /// 200 with a body over the limit.
        Big,
    }

    struct Server {
        url: String,
        requests: Arc<AtomicUsize>,
        /// The last request's body and content type.
        last: Arc<Mutex<(String, String)>>,
        _task: tokio::task::JoinHandle<()>,
    }

    fn ca_and_server_tls(dir: &Path) -> (std::path::PathBuf, Arc<rustls::ServerConfig>) {
        let ca = mcp_pki::ca::Ca::create(dir).unwrap();
        let issued = ca
            .issue(
                &["localhost".to_string(), "127.0.6.2".to_string()],
                Duration::from_secs(3600),
            )
            .unwrap();
        let chain = mcp_pki::cert::certs_from_pem(&issued.cert_pem).unwrap();
        let key = mcp_pki::cert::key_from_pem(issued.key_pem.expose()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let ca_path = dir.join("idp-ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        (ca_path, Arc::new(config))
    }

    /// An introspection server on 127.0.6.2 (hyper, HTTP/1.1, kept alive), over TLS
    /// when `tls` is given.
    async fn serve(behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.6.2:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let requests = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new((String::new(), String::new())));
        let (count, seen) = (requests.clone(), last.clone());
        let task = tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            while let Ok((tcp, _)) = listener.accept().await {
                let (count, seen, acceptor) = (count.clone(), seen.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (count, seen) = (count.clone(), seen.clone());
                        async move {
                            count.fetch_add(1, Ordering::SeqCst);
                            let kind = req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let body = String::from_utf8_lossy(&body).to_string();
                            *seen.lock().unwrap() = (body.clone(), kind);
                            let (status, answer) = match behaviour {
                                Behaviour::Silent => {
                                    tokio::time::sleep(Duration::from_secs(60)).await;
                                    (200, String::new())
                                }
                                Behaviour::Body(b) => (200, b.to_string()),
                                Behaviour::Big => (200, " ".repeat(MAX_RESPONSE + 1)),
                                Behaviour::Status(s) => (s, String::new()),
                                Behaviour::Introspect => (
                                    200,
                                    match body.as_str() {
                                        "token=good-admin" => r#"{"active":true,"username":"kyle","role":"admin","exp":99999999999}"#,
                                        "token=good-viewer" => r#"{"active":true,"username":"vera"}"#,
                                        "token=old" => r#"{"active":true,"username":"a","exp":1}"#,
                                        _ => r#"{"active":false}"#,
                                    }
                                    .to_string(),
                                ),
                            };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(answer)))
                                    .unwrap(),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Server {
            url: format!("{scheme}://{addr}/oauth2/introspect"),
            requests,
            last,
            _task: task,
        }
    }

    async fn https(behaviour: Behaviour, dir: &Path) -> (Server, std::path::PathBuf) {
        let (ca, tls) = ca_and_server_tls(dir);
        (serve(behaviour, Some(tls)).await, ca)
    }

    async fn http_plain(behaviour: Behaviour) -> Server {
        serve(behaviour, None).await
    }

    fn client(url: &str, ca: Option<&Path>, cache_ttl: Duration) -> Introspector {
        Introspector::new(
            url,
            Options {
                ca_cert: ca,
                timeout: Duration::from_secs(5),
                cache_ttl,
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn https_with_a_configured_ca_accepts_refuses_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (server, ca) = https(Behaviour::Introspect, dir.path()).await;
        let c = client(&server.url, Some(&ca), Duration::ZERO);
        assert_eq!(
            c.introspect("good-admin").await.unwrap(),
            Claims {
                user: "kyle".into(),
                role: Role::Admin,
                expires_at: 99_999_999_999,
                issued_at: c.introspect("good-admin").await.unwrap().issued_at
            }
        );
        let (body, kind) = server.last.lock().unwrap().clone();
        assert_eq!(body, "token=good-admin");
        assert_eq!(kind, "application/x-www-form-urlencoded");
        let viewer = c.introspect("good-viewer").await.unwrap();
        assert_eq!((viewer.role, viewer.expires_at), (Role::Viewer, u64::MAX));
        for token in ["nobody", "old"] {
            let e = c.introspect(token).await.unwrap_err();
            assert!(matches!(e, IntrospectError::Inactive), "{token}: {e}");
        }
        assert_eq!(
            server.requests.load(Ordering::SeqCst),
            5,
            "no cache: one each"
        );
        c.introspect("a b+c/d=é").await.unwrap_err();
        assert_eq!(server.last.lock().unwrap().0, "token=a+b%2Bc%2Fd%3D%C3%A9");
    }

    #[tokio::test]
    async fn https_without_the_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (server, _ca) = https(Behaviour::Introspect, dir.path()).await;
        // Another CA: the server's certificate does not chain to it.
        let other = tempfile::tempdir().unwrap();
        let (other_ca, _) = ca_and_server_tls(other.path());
        let c = client(&server.url, Some(&other_ca), Duration::ZERO);
        let e = c.introspect("good-admin").await.unwrap_err();
        assert!(
            matches!(&e, IntrospectError::Http { why, .. } if why.contains("certificate")),
            "{e}"
        );
        assert_eq!(server.requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn active_answers_are_cached_for_the_configured_time() {
        let dir = tempfile::tempdir().unwrap();
        let (server, ca) = https(Behaviour::Introspect, dir.path()).await;
        let c = client(&server.url, Some(&ca), Duration::from_millis(400));
        for _ in 0..5 {
            assert_eq!(c.introspect("good-admin").await.unwrap().user, "kyle");
        }
        assert_eq!(server.requests.load(Ordering::SeqCst), 1, "cached");
        // Refusals are not cached.
        for _ in 0..2 {
            c.introspect("nobody").await.unwrap_err();
        }
        assert_eq!(server.requests.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.introspect("good-admin").await.unwrap();
        assert_eq!(
            server.requests.load(Ordering::SeqCst),
            4,
            "the cache expired"
        );
    }

    #[tokio::test]
    async fn plain_http_still_works() {
        let server = http_plain(Behaviour::Introspect).await;
        let c = client(&server.url, None, Duration::ZERO);
        assert!(c.is_plain_http());
        assert_eq!(c.introspect("good-viewer").await.unwrap().user, "vera");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let server = http_plain(Behaviour::Silent).await;
        let c = Introspector::new(
            &server.url,
            Options {
                ca_cert: None,
                timeout: Duration::from_millis(300),
                cache_ttl: Duration::from_secs(30),
            },
        )
        .unwrap();
        let started = Instant::now();
        let e = c.introspect("good-admin").await.unwrap_err();
        assert!(matches!(e, IntrospectError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn bad_answers_are_refused() {
        for (behaviour, check) in [
            (
                Behaviour::Status(401),
                (|e: &IntrospectError| matches!(e, IntrospectError::Status(401)))
                    as fn(&IntrospectError) -> bool,
            ),
            (Behaviour::Status(500), |e| {
                matches!(e, IntrospectError::Status(500))
            }),
            (Behaviour::Body("not json"), |e| {
                matches!(e, IntrospectError::BadJson(_))
            }),
            (Behaviour::Body(r#"{"active":true}"#), |e| {
                matches!(e, IntrospectError::MissingUsername)
            }),
            (
                Behaviour::Body(r#"{"active":true,"username":"a","role":"root"}"#),
                |e| matches!(e, IntrospectError::UnknownRole(r) if r == "root"),
            ),
            (Behaviour::Big, |e| matches!(e, IntrospectError::TooLarge)),
        ] {
            let server = http_plain(behaviour).await;
            let c = client(&server.url, None, Duration::ZERO);
            let e = c.introspect("t").await.unwrap_err();
            assert!(check(&e), "{e}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_and_a_long_token() {
        let listener = TcpListener::bind("127.0.6.2:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = client(&format!("http://{addr}/"), None, Duration::ZERO);
        let e = c.introspect("t").await.unwrap_err();
        assert!(matches!(e, IntrospectError::Http { .. }), "{e}");
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            c.introspect(&long).await,
            Err(IntrospectError::TokenTooLong)
        ));
    }

    #[test]
    fn urls() {
        let options = || Options {
            ca_cert: None,
            timeout: Duration::from_secs(1),
            cache_ttl: Duration::ZERO,
        };
        for url in [
            "https://mcias.internal/oauth2/introspect",
            "http://127.0.0.1:8080/introspect",
            "HTTPS://mcias:9000",
            "http://[::1]:7000/a/b?c=d",
        ] {
            Introspector::new(url, options()).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        for (url, want) in [
            ("", ""),
            ("mcias:9000", "https://"),
            ("ftp://mcias/", "https://"),
            ("http://user:pw@mcias/", "credentials"),
            ("http://mcias/a b", ""),
            ("http://mcias/#frag", ""),
        ] {
            match Introspector::new(url, options()) {
                Err(IntrospectError::InvalidUrl { why, .. }) => {
                    assert!(why.contains(want), "{url:?}: {why}")
                }
                other => panic!("{url:?}: {other:?}"),
            }
        }
        let missing = Path::new("/nonexistent/ca.pem");
        let e = Introspector::new(
            "https://mcias/",
            Options {
                ca_cert: Some(missing),
                ..options()
            },
        )
        .unwrap_err();
        assert!(matches!(e, IntrospectError::Ca { .. }), "{e}");
    }

    #[test]
    fn form_urlencoding() {
        assert_eq!(form_urlencode("AZaz09*-._"), "AZaz09*-._");
        assert_eq!(form_urlencode("a b&c=d%~"), "a+b%26c%3Dd%25%7E");
        assert_eq!(form_urlencode(""), "");
    }

    #[test]
    fn claims_from_json_uses_now() {
        let c = claims_from_json(br#"{"active":true,"username":"a","exp":100}"#, 99).unwrap();
        assert_eq!((c.expires_at, c.issued_at), (100, 99));
        assert!(matches!(
            claims_from_json(br#"{"active":true,"username":"a","exp":100}"#, 100),
            Err(IntrospectError::Inactive)
        ));
        for json in [
            "not json",
            "{}",
            r#"{"active":"yes"}"#,
            r#"{"active":true,"username":"a","exp":-1}"#,
        ] {
            assert!(
                matches!(
                    claims_from_json(json.as_bytes(), 0),
                    Err(IntrospectError::BadJson(_))
                ),
                "{json}"
            );
        }
    }

    proptest! {
        #[test]
        fn new_never_panics(s in any::<String>()) {
            let _ = Introspector::new(&s, Options { ca_cert: None, timeout: Duration::from_secs(1), cache_ttl: Duration::ZERO });
        }
    }
}
