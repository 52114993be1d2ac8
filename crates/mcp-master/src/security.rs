//! The master's security: the fleet CA and its files, join tokens, the master's own
//! certificate (issued at start with `node_cert_ttl`, renewed at two thirds of its
//! lifetime without a restart), operator tokens (signed here, or checked by an
//! introspection backend), and the TLS settings of its listener and of its calls to
//! agents.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::introspect::{Introspector, Options};
use anyhow::Context;
use mcp_pki::ca::{write_file, Ca, CaKind};
use mcp_pki::join::JoinToken;
use mcp_pki::tls::{ClientAuth, Identity};
use mcp_pki::token::{Claims, Role, TokenKey};
use mcp_pki::{Secret, MASTER_NAME};
use mcp_proto::transport::{ClientTls, ServerTls};

use crate::config::Config;

const JOIN_SECRET: &str = "join-secret";
const TOKEN_KEY: &str = "token-key";
/// The bound on one exchange with the introspection endpoint, connecting included.
const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// `mcp-master init`: creates the fleet CA, the public CA (`public-ca.pem`), the
/// join secret and the token key; returns the join token.
pub fn init(data_dir: &Path) -> anyhow::Result<Secret> {
    let ca = Ca::create(data_dir)?;
    Ca::create_kind(data_dir, CaKind::Public)?;
    let secret = JoinToken::generate_secret()
        .map_err(|_| anyhow::anyhow!("no randomness for the join secret"))?;
    write_file(
        &data_dir.join(JOIN_SECRET),
        secret.expose().as_bytes(),
        0o600,
    )?;
    let key =
        TokenKey::generate().map_err(|_| anyhow::anyhow!("no randomness for the token key"))?;
    write_file(
        &data_dir.join(TOKEN_KEY),
        hex::encode(key.to_bytes()).as_bytes(),
        0o600,
    )?;
    Ok(JoinToken::new(ca.cert_der(), secret).to_text())
}

fn read_secret(data_dir: &Path, name: &str) -> anyhow::Result<Secret> {
    let path = data_dir.join(name);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "read {}: run `mcp-master init --data-dir {}` first",
            path.display(),
            data_dir.display()
        )
    })?;
    Ok(Secret::new(text.trim().to_string()))
}

/// `mcp-master join-token`: the join token again.
pub fn join_token(data_dir: &Path) -> anyhow::Result<Secret> {
    let ca = Ca::load(data_dir)?;
    let secret = read_secret(data_dir, JOIN_SECRET)?;
    Ok(JoinToken::new(ca.cert_der(), secret).to_text())
}

/// Everything the running master needs for TLS, enrollment and operator tokens.
pub struct Security {
    pub ca: Ca,
    /// The embedded issuer of the edge's public certificates.
    pub public_ca: Ca,
    join_secret: Secret,
    token_key: TokenKey,
    introspector: Option<Introspector>,
    /// Tokens `mcp logout` revoked, refused until they expire.
    revoked: crate::revoked::Revoked,
    pub server: ServerTls,
    /// The master's own certificate, presented by `server` and `agent_client`.
    identity: Identity,
    /// The names in it: `mcp-master` and the listen address.
    own_names: Vec<String>,
    own_ttl: Duration,
    /// How the master dials agents (its own certificate as client identity); the
    /// server name is set per node.
    pub agent_client: ClientTls,
}

impl Security {
    pub fn load(config: &Config) -> anyhow::Result<Security> {
        let dir = &config.data_dir;
        let ca = Ca::load(dir)?;
        // A data dir made before the public CA existed gets one now.
        let public_ca = match Ca::load_kind(dir, CaKind::Public) {
            Ok(ca) => ca,
            Err(mcp_pki::PkiError::NotInitialised { .. }) => {
                tracing::info!(dir = %dir.display(), "creating the public CA (public-ca.pem)");
                Ca::create_kind(dir, CaKind::Public)?
            }
            Err(e) => return Err(e.into()),
        };
        let join_secret = read_secret(dir, JOIN_SECRET)?;
        let key_hex = read_secret(dir, TOKEN_KEY)?;
        let key_bytes = hex::decode(key_hex.expose()).context("token-key is not hex")?;
        let token_key = TokenKey::from_bytes(&key_bytes);
        let own_names = vec![MASTER_NAME.to_string(), config.listen.ip().to_string()];
        let own_ttl = config.node_cert_ttl;
        let issued = ca.issue(&own_names, own_ttl)?;
        let identity = Identity::from_pem(
            &issued.cert_pem,
            issued.key_pem.expose(),
            &[ca.cert_der().clone()],
        )?;
        let server = ServerTls {
            config: mcp_pki::tls::server_config(
                &identity,
                ClientAuth::Optional(ca.cert_der().clone()),
            )?,
            require_name: None,
        };
        let agent_client = ClientTls {
            config: mcp_pki::tls::client_config(ca.cert_der(), Some(&identity))?,
            server_name: String::new(),
        };
        let introspector = match &config.introspection_url {
            Some(url) => {
                let introspector = Introspector::new(
                    url,
                    Options {
                        ca_cert: config.introspection_ca_cert.as_deref(),
                        timeout: INTROSPECTION_TIMEOUT,
                        cache_ttl: config.introspection_cache_ttl,
                    },
                )
                .map_err(|e| anyhow::anyhow!("introspection_url: {e}"))?;
                if introspector.is_plain_http() {
                    tracing::warn!(
                        url = %url,
                        "introspection_url is http://: tokens go to it in clear text; use https://"
                    );
                }
                Some(introspector)
            }
            None => None,
        };
        let revoked = crate::revoked::Revoked::load(dir, now())?;
        Ok(Security {
            ca,
            public_ca,
            join_secret,
            token_key,
            introspector,
            revoked,
            server,
            identity,
            own_names,
            own_ttl,
            agent_client,
        })
    }

    /// Issues the master a new certificate and presents it from the next handshake.
    pub fn renew_own(&self) -> Result<(), mcp_pki::PkiError> {
        let issued = self.ca.issue(&self.own_names, self.own_ttl)?;
        self.identity.replace(
            &issued.cert_pem,
            issued.key_pem.expose(),
            &[self.ca.cert_der().clone()],
        )
    }

    /// Checks a join secret in constant time.
    pub fn join_secret_ok(&self, secret: &str) -> bool {
        let token = JoinToken {
            ca_fingerprint: [0; 32],
            secret: Secret::new(secret.to_string()),
        };
        token.secret_matches(&self.join_secret)
    }

    /// Signs a token for `user` with `role`, valid for `ttl`.
    pub fn sign(&self, user: &str, role: Role, ttl: Duration) -> (Secret, u64) {
        let now = now();
        let claims = Claims {
            user: user.to_string(),
            role,
            issued_at: now,
            expires_at: now + ttl.as_secs(),
        };
        (self.token_key.sign(&claims), claims.expires_at)
    }

    /// The claims of a bearer token: checked here, or by the introspection backend;
    /// a revoked token is refused before either.
    pub async fn check(&self, token: &str) -> Result<Claims, String> {
        if self.revoked.contains(token, now()) {
            return Err("the token was revoked (`mcp logout`); run `mcp login`".to_string());
        }
        match &self.introspector {
            Some(i) => i.introspect(token).await.map_err(|e| e.to_string()),
            None => self
                .token_key
                .verify(token, now())
                .map_err(|e| e.to_string()),
        }
    }

    /// Revokes `token`, whose claims [`Security::check`] returned: kept in the data
    /// dir until it expires (an introspected token without `exp`: for good).
    pub fn revoke(&self, token: &str, claims: &Claims) -> anyhow::Result<()> {
        self.revoked.revoke(token, claims.expires_at, now())
    }

    pub fn uses_introspection(&self) -> bool {
        self.introspector.is_some()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Renews the master's own certificate whenever it comes due, until `shutdown`.
pub async fn renew_loop(
    state: Arc<crate::state::MasterState>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let identity = state.security.identity.clone();
    mcp_pki::renew::keep_renewed(
        "the master's certificate",
        identity,
        || {
            let state = state.clone();
            async move { state.security.renew_own().map_err(|e| e.to_string()) }
        },
        shutdown,
    )
    .await;
}
