//! The edge agent's ACME client (RFC 8555, SPEC §7 and §12 `[acme]`): public
//! certificates for a route's hostname from an ACME CA, the challenge answered
//! by the local mc-proxy (TLS-ALPN-01 on its public listener, or HTTP-01 on its
//! `http_listen`) through its admin socket.
//!
//! `obtain` creates the account on first use (or reuses the one kept, 0600, in
//! the given directory, one file per ACME directory URL), places an order for
//! the one hostname, hands mc-proxy the challenge (`SetChallenge`), tells the CA
//! it is ready, polls with a bounded backoff, finalizes with a fresh P-256 key
//! (rcgen) and downloads the chain; the challenges are cleared whatever the
//! outcome. HTTP goes through a small hyper client over rustls (ring) whose
//! roots are `ca_cert` or the system's bundle, so no second TLS stack or
//! platform verifier is pulled in.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, Request, Uri};
use hyper_util::rt::TokioIo;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, Order, OrderStatus,
};
use mcp_proto::mcproxy::admin::v1::{self as admin, admin_client::AdminClient};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

/// Time for one HTTP exchange with the ACME server (connect, TLS, answer head).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The first wait between polls of an order; each wait doubles up to `POLL_MAX`.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(5);
/// How long an order may take to become ready, or its certificate to be issued.
const POLL_DEADLINE: Duration = Duration::from_secs(180);
/// The system's CA bundles, where `ca_cert` is not set (`SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// How the CA checks that this edge holds the name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Challenge {
    /// RFC 8737: answered by mc-proxy on its public TLS listener.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3: answered by mc-proxy on `http_listen`.
    #[serde(rename = "http-01")]
    Http01,
}

impl Challenge {
    /// As the ACME and mc-proxy wire spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Http01 => "http-01",
        }
    }

    fn acme_type(self) -> ChallengeType {
        match self {
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Http01 => ChallengeType::Http01,
        }
    }
}

/// agent.toml `[acme]` (SPEC §12).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME directory URL (https).
    pub directory: String,
    /// The account's contact (`mailto:` is added).
    #[serde(default)]
    pub email: Option<String>,
    /// Trust for the ACME server's own TLS (tests: Pebble's CA); else the
    /// system's CA bundle.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// `tls-alpn-01` (default) or `http-01`.
    #[serde(default)]
    pub challenge: Challenge,
}

/// A certificate for `hostname` from the ACME CA of `cfg`: the chain (leaf
/// first) and its fresh private key, both PEM. The account is kept in
/// `account_store_dir`; the challenge is answered by the mc-proxy behind
/// `proxy_admin_socket`.
pub async fn obtain(
    cfg: &AcmeConfig,
    account_store_dir: &Path,
    hostname: &str,
    proxy_admin_socket: &Path,
) -> anyhow::Result<(String, String)> {
    let hostname = check_hostname(hostname)?;
    if !cfg.directory.starts_with("https://") {
        bail!("acme directory {:?}: not an https URL", cfg.directory);
    }
    let http = AcmeHttp::new(cfg.ca_cert.as_deref())?;
    let mut proxy = AdminClient::new(
        mcp_proto::transport::unix::connect(proxy_admin_socket)
            .await
            .with_context(|| format!("mc-proxy admin socket {}", proxy_admin_socket.display()))?,
    );
    let store = AccountStore::new(account_store_dir, &cfg.directory);
    let identifiers = [Identifier::Dns(hostname.clone())];
    let (_account, mut order) = match store.load(&http).await? {
        Some(account) => match account.new_order(&NewOrder::new(&identifiers)).await {
            Ok(order) => (account, order),
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref()
                    == Some("urn:ietf:params:acme:error:accountDoesNotExist") =>
            {
                warn!(directory = %cfg.directory, "the stored ACME account is unknown to the CA: creating another");
                let account = store.create(&http, cfg.email.as_deref()).await?;
                let order = account.new_order(&NewOrder::new(&identifiers)).await?;
                (account, order)
            }
            Err(e) => return Err(e).context("ACME new order"),
        },
        None => {
            let account = store.create(&http, cfg.email.as_deref()).await?;
            let order = account
                .new_order(&NewOrder::new(&identifiers))
                .await
                .context("ACME new order")?;
            (account, order)
        }
    };
    let mut set = Vec::new();
    let authorized = authorize(&mut order, &hostname, cfg.challenge, &mut proxy, &mut set).await;
    for token in &set {
        let cleared = proxy
            .clear_challenge(admin::ClearChallengeRequest {
                hostname: hostname.clone(),
                token: token.clone(),
            })
            .await;
        if let Err(s) = cleared {
            warn!(%hostname, error = %s.message(), "clear the ACME challenge in mc-proxy");
        }
    }
    authorized?;
    let (chain, key) = finalize(&mut order, &hostname).await?;
    info!(%hostname, directory = %cfg.directory, challenge = cfg.challenge.as_str(), "ACME certificate obtained");
    Ok((chain, key))
}

/// A lowercase DNS name with no wildcard (TLS-ALPN-01 and HTTP-01 cannot
/// validate one).
fn check_hostname(hostname: &str) -> anyhow::Result<String> {
    let h = hostname.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if h.len() > 253 || !h.contains('.') || !h.split('.').all(label_ok) {
        bail!("hostname {hostname:?}: not a DNS name of two labels or more (no wildcard)");
    }
    Ok(h)
}

/// Hands mc-proxy each pending authorization's challenge, tells the CA, and
/// waits for the order to be ready. Every token given to mc-proxy is pushed
/// to `set`, for the caller to clear.
async fn authorize(
    order: &mut Order,
    hostname: &str,
    kind: Challenge,
    proxy: &mut AdminClient<mcp_proto::tonic::transport::Channel>,
    set: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.context("ACME authorization")?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => bail!("ACME authorization for {hostname} is {other:?}"),
        }
        let mut challenge = authz.challenge(kind.acme_type()).with_context(|| {
            format!(
                "the ACME CA offers no {} challenge for {hostname}",
                kind.as_str()
            )
        })?;
        let token = challenge.token.clone();
        proxy
            .set_challenge(admin::SetChallengeRequest {
                hostname: hostname.to_string(),
                kind: kind.as_str().to_string(),
                token: token.clone(),
                key_authorization: challenge.key_authorization().as_str().to_string(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("mc-proxy SetChallenge: {}", s.message()))?;
        set.push(token);
        challenge
            .set_ready()
            .await
            .context("ACME: tell the CA the challenge is ready")?;
        debug!(hostname, kind = kind.as_str(), "ACME challenge ready");
    }
    match poll(order, |s| {
        matches!(
            s,
            OrderStatus::Ready | OrderStatus::Invalid | OrderStatus::Valid
        )
    })
    .await?
    {
        OrderStatus::Invalid => Err(invalid(order, hostname).await),
        _ => Ok(()),
    }
}

/// Why an order is invalid, from its authorizations' challenge errors.
async fn invalid(order: &mut Order, hostname: &str) -> anyhow::Error {
    let mut why = Vec::new();
    if let Some(e) = &order.state().error {
        why.push(e.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            for c in &state.challenges {
                if let Some(e) = &c.error {
                    why.push(format!("{:?}: {e}", c.r#type));
                }
            }
        }
    }
    anyhow::anyhow!(
        "the ACME CA refused the order for {hostname}: {}",
        if why.is_empty() {
            "no reason given".to_string()
        } else {
            why.join("; ")
        }
    )
}

/// Polls the order until `done` holds for its status, waiting `POLL_FIRST`
/// doubling to `POLL_MAX` between polls, at most `POLL_DEADLINE` in all.
async fn poll(
    order: &mut Order,
    done: impl Fn(OrderStatus) -> bool,
) -> anyhow::Result<OrderStatus> {
    let deadline = tokio::time::Instant::now() + POLL_DEADLINE;
    let mut wait = POLL_FIRST;
    loop {
        let state = order.refresh().await.context("ACME: poll the order")?;
        if done(state.status) {
            return Ok(state.status);
        }
        if tokio::time::Instant::now() + wait > deadline {
            bail!(
                "ACME order still {:?} after {POLL_DEADLINE:?}",
                state.status
            );
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(POLL_MAX);
    }
}

/// Finalizes a ready order with a fresh P-256 key and downloads the chain;
/// checks that the leaf is for `hostname`.
async fn finalize(order: &mut Order, hostname: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("generate the certificate key")?;
    let mut params =
        rcgen::CertificateParams::new(vec![hostname.to_string()]).context("certificate request")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .context("sign the certificate request")?;
    if order.state().status == OrderStatus::Ready {
        order
            .finalize_csr(csr.der())
            .await
            .context("ACME finalize")?;
    }
    match poll(order, |s| {
        matches!(s, OrderStatus::Valid | OrderStatus::Invalid)
    })
    .await?
    {
        OrderStatus::Valid => {}
        _ => return Err(invalid(order, hostname).await),
    }
    let chain = order
        .certificate()
        .await
        .context("ACME: download the certificate")?
        .context("ACME: the order has no certificate")?;
    let certs = mcp_pki::cert::certs_from_pem(&chain).context("the ACME certificate chain")?;
    match certs.first() {
        Some(leaf) if mcp_pki::cert::cert_is_for(leaf, hostname) => {}
        _ => bail!("the ACME CA's certificate is not for {hostname}"),
    }
    Ok((chain, key.serialize_pem()))
}

/// The account credentials of one ACME directory, in
/// `<dir>/acme-account-<hash of the directory URL>.json` (0600).
struct AccountStore {
    path: PathBuf,
    directory: String,
}

impl AccountStore {
    fn new(dir: &Path, directory: &str) -> AccountStore {
        let digest = hex::encode(Sha256::digest(directory.as_bytes()));
        AccountStore {
            path: dir.join(format!("acme-account-{}.json", &digest[..16])),
            directory: directory.to_string(),
        }
    }

    /// The stored account, if any.
    async fn load(&self, http: &AcmeHttp) -> anyhow::Result<Option<Account>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.path.display())),
        };
        let credentials: AccountCredentials = serde_json::from_str(&text)
            .with_context(|| format!("{}: not ACME account credentials", self.path.display()))?;
        let account = Account::builder_with_http(Box::new(http.clone()))
            .from_credentials(credentials)
            .await
            .with_context(|| format!("ACME directory {}", self.directory))?;
        debug!(path = %self.path.display(), id = account.id(), "ACME account reused");
        Ok(Some(account))
    }

    /// Registers a new account and keeps its credentials.
    async fn create(&self, http: &AcmeHttp, email: Option<&str>) -> anyhow::Result<Account> {
        let contact = email.map(|e| format!("mailto:{e}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(Box::new(http.clone()))
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                None,
            )
            .await
            .with_context(|| format!("ACME new account at {}", self.directory))?;
        let text = serde_json::to_string(&credentials)?;
        write_private(&self.path, text.as_bytes())?;
        info!(path = %self.path.display(), id = account.id(), "ACME account created");
        Ok(account)
    }
}

/// Writes `data` to `path` atomically, mode 0600 from the start.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("account file has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    mcp_pki::ca::write_file(path, data, 0o600)?;
    Ok(())
}

/// instant-acme's HTTP: one HTTP/1.1 exchange per connection, over TLS
/// verified against the configured roots.
#[derive(Clone)]
struct AcmeHttp {
    tls: tokio_rustls::TlsConnector,
}

impl AcmeHttp {
    fn new(ca_cert: Option<&Path>) -> anyhow::Result<AcmeHttp> {
        let (pem, from) = match ca_cert {
            Some(p) => (
                std::fs::read_to_string(p).with_context(|| format!("ca_cert {}", p.display()))?,
                p.to_path_buf(),
            ),
            None => system_bundle()?,
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = mcp_pki::cert::certs_from_pem(&pem)
            .with_context(|| format!("{}: certificates", from.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            bail!("{}: no usable CA certificate", from.display());
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(AcmeHttp {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    async fn exchange(
        self,
        mut req: Request<BodyWrapper<Bytes>>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let uri = req.uri().clone();
        if uri.scheme_str() != Some("https") {
            bail!("{uri}: ACME is spoken over https only");
        }
        let host = uri.host().context("no host in the URL")?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = rustls::pki_types::ServerName::try_from(bare.clone())
            .with_context(|| format!("{uri}: host"))?;
        let tcp = TcpStream::connect((bare.as_str(), port))
            .await
            .with_context(|| format!("connect {host}:{port}"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS to {host}:{port}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "ACME connection ended");
            }
        });
        // Origin form and Host, as an HTTP/1.1 server expects.
        let authority = uri.authority().map(|a| a.as_str().to_string());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = path.parse::<Uri>()?;
        if let Some(a) = authority {
            req.headers_mut()
                .insert(header::HOST, http::HeaderValue::from_str(&a)?);
        }
        Ok(send.send_request(req).await?)
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            match tokio::time::timeout(HTTP_TIMEOUT, this.exchange(req)).await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(e.into())),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("no answer from the ACME server within {HTTP_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}

/// The system's CA bundle: `SSL_CERT_FILE`, else the first of `SYSTEM_BUNDLES`.
fn system_bundle() -> anyhow::Result<(String, PathBuf)> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    for path in env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
    {
        if let Ok(pem) = std::fs::read_to_string(&path) {
            return Ok((pem, path));
        }
    }
    bail!(
        "no system CA bundle (SSL_CERT_FILE, {}): set [acme] ca_cert",
        SYSTEM_BUNDLES.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn config_as_agent_toml_spells_it() {
        let cfg: AcmeConfig = toml::from_str(
            r#"
            directory = "https://acme-v02.api.letsencrypt.org/directory"
            email = "ops@metacircular.net"
            ca_cert = "/etc/ssl/pebble.pem"
            challenge = "http-01"
            "#,
        )
        .expect("parse");
        assert_eq!(cfg.challenge, Challenge::Http01);
        assert_eq!(cfg.email.as_deref(), Some("ops@metacircular.net"));
        let cfg: AcmeConfig =
            toml::from_str(r#"directory = "https://ca.example/dir""#).expect("minimal");
        assert_eq!(cfg.challenge, Challenge::TlsAlpn01);
        assert_eq!(cfg.ca_cert, None);
        for bad in [
            "directory = \"https://x/\"\nchallenge = \"dns-01\"",
            "directory = \"https://x/\"\nemails = \"a@b\"",
            "email = \"a@b\"",
        ] {
            assert!(toml::from_str::<AcmeConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            check_hostname("App.Example.COM.").expect("ok"),
            "app.example.com"
        );
        for bad in ["*.example.com", "example", "a..b", "-a.b", "a b.c", ""] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn account_file_is_0600_and_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = AccountStore::new(dir.path(), "https://a.example/dir");
        let b = AccountStore::new(dir.path(), "https://b.example/dir");
        assert_ne!(a.path, b.path);
        write_private(&a.path, b"{}").expect("write");
        write_private(&a.path, b"{\"x\":1}").expect("rewrite");
        let mode = std::fs::metadata(&a.path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&a.path).expect("read"), b"{\"x\":1}");
    }
}
