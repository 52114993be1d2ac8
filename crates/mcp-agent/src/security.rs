//! The agent's identity: enrollment with the join token on first start (the
//! master's CA is trusted only if its fingerprint matches the token), then the node
//! certificate kept in the data dir for mutual TLS both ways.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use mcp_pki::ca::write_file;
use mcp_pki::join::JoinToken;
use mcp_pki::tls::{ClientAuth, Identity};
use mcp_pki::MASTER_NAME;
use mcp_proto::master::v1::{nodes_client::NodesClient, EnrollRequest};
use mcp_proto::transport::{ClientTls, ClientTransport, ServerTls};

use crate::config::Config;

pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "node.pem";
pub const KEY_FILE: &str = "node-key.pem";

/// The node's TLS settings, both directions.
#[derive(Clone)]
pub struct NodeTls {
    /// Dialling the master.
    pub master: ClientTls,
    /// The agent's listener: only the master gets in.
    pub server: ServerTls,
}

/// Loads the node certificate, enrolling first if there is none.
pub async fn node_tls(config: &Config, data_dir: &Path) -> anyhow::Result<NodeTls> {
    let (ca_path, cert_path, key_path) = (
        data_dir.join(CA_FILE),
        data_dir.join(CERT_FILE),
        data_dir.join(KEY_FILE),
    );
    if !(ca_path.exists() && cert_path.exists() && key_path.exists()) {
        enroll(config, data_dir).await?;
    }
    let ca_pem =
        std::fs::read_to_string(&ca_path).with_context(|| format!("read {}", ca_path.display()))?;
    let cert_pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("read {}", cert_path.display()))?;
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("read {}", key_path.display()))?;
    let ca = mcp_pki::cert::certs_from_pem(&ca_pem)?.remove(0);
    let own = mcp_pki::cert::certs_from_pem(&cert_pem)?.remove(0);
    if !mcp_pki::cert::cert_is_for(&own, &config.name) {
        bail!(
            "{} is not a certificate for node {}: this data dir belongs to another node",
            cert_path.display(),
            config.name
        );
    }
    let identity = Identity::from_pem(&cert_pem, &key_pem, std::slice::from_ref(&ca))?;
    Ok(NodeTls {
        master: ClientTls {
            config: mcp_pki::tls::client_config(&ca, Some(&identity))?,
            server_name: MASTER_NAME.to_string(),
        },
        server: ServerTls {
            config: mcp_pki::tls::server_config(&identity, ClientAuth::Required(ca))?,
            require_name: Some(MASTER_NAME.to_string()),
        },
    })
}

/// Trades the join token for a node certificate.
async fn enroll(config: &Config, data_dir: &Path) -> anyhow::Result<()> {
    let Some(text) = &config.join_token else {
        bail!(
            "node {} has not enrolled and agent.toml has no join_token: `mcp-master join-token --data-dir DIR` prints it",
            config.name
        );
    };
    let token = JoinToken::parse(text.expose()).map_err(|e| anyhow::anyhow!("join_token: {e}"))?;
    let transport = ClientTransport {
        connect_timeout: Some(Duration::from_secs(5)),
        request_timeout: Some(Duration::from_secs(30)),
        tls: Some(ClientTls {
            config: mcp_pki::tls::enrollment_config(token.ca_fingerprint)?,
            server_name: MASTER_NAME.to_string(),
        }),
    };
    let channel = transport
        .connect(&config.master)
        .await
        .with_context(|| format!("enroll with the master at {}", config.master))?;
    let reply = NodesClient::new(channel)
        .enroll(EnrollRequest {
            name: config.name.clone(),
            secret: token.secret.expose().to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("the master refused enrollment: {}", s.message()))?
        .into_inner();
    let ca = mcp_pki::cert::certs_from_pem(&reply.ca_pem)?.remove(0);
    if mcp_pki::join::fingerprint(&ca) != token.ca_fingerprint {
        bail!("the master sent a CA that does not match the join token");
    }
    std::fs::create_dir_all(data_dir)?;
    write_file(&data_dir.join(KEY_FILE), reply.key_pem.as_bytes(), 0o600)?;
    write_file(&data_dir.join(CERT_FILE), reply.cert_pem.as_bytes(), 0o644)?;
    write_file(&data_dir.join(CA_FILE), reply.ca_pem.as_bytes(), 0o644)?;
    tracing::info!(node = %config.name, "enrolled with the master; node certificate kept in the data dir");
    Ok(())
}
