//! The agent's identity: enrollment with the join token on first start (the
//! master's CA is trusted only if its fingerprint matches the token), then the node
//! certificate kept in the data dir for mutual TLS both ways, renewed at two thirds
//! of its lifetime over the node's own channel and swapped in without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mcp_pki::ca::write_file;
use mcp_pki::join::JoinToken;
use mcp_pki::rustls::pki_types::CertificateDer;
use mcp_pki::tls::{ClientAuth, Identity};
use mcp_pki::MASTER_NAME;
use mcp_proto::master::v1::{
    nodes_client::NodesClient, EnrollReply, EnrollRequest, RenewNodeCertificateRequest,
};
use mcp_proto::tonic::transport::Channel;
use mcp_proto::transport::{ClientTls, ClientTransport, ServerTls};

use crate::config::Config;

pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "node.pem";
pub const KEY_FILE: &str = "node-key.pem";
/// A renewed pair is written under these names first, then renamed key first; a
/// crash between the renames is finished at the next start (`finish_renewal`).
const NEXT_CERT_FILE: &str = "node-next.pem";
const NEXT_KEY_FILE: &str = "node-next-key.pem";

/// The node's TLS settings, both directions, built on one renewable identity.
#[derive(Clone)]
pub struct NodeTls {
    /// Dialling the master.
    pub master: ClientTls,
    /// The agent's listener: only the master gets in.
    pub server: ServerTls,
    /// The node certificate both present, swapped on renewal.
    pub identity: Identity,
    pub ca: CertificateDer<'static>,
}

/// Completes a renewal interrupted between its renames. The next key is written
/// before the next certificate, and both before the first rename (the key's): a
/// lone next key is an unfinished write and is dropped; otherwise whatever of the
/// next pair remains replaces the current.
fn finish_renewal(data_dir: &Path) -> anyhow::Result<()> {
    let (next_key, next_cert) = (data_dir.join(NEXT_KEY_FILE), data_dir.join(NEXT_CERT_FILE));
    if next_key.exists() && !next_cert.exists() {
        std::fs::remove_file(&next_key).with_context(|| {
            format!("drop an unfinished renewal: remove {}", next_key.display())
        })?;
    }
    for (next, current) in [(NEXT_KEY_FILE, KEY_FILE), (NEXT_CERT_FILE, CERT_FILE)] {
        let next = data_dir.join(next);
        if next.exists() {
            let current = data_dir.join(current);
            std::fs::rename(&next, &current).with_context(|| {
                format!(
                    "finish an interrupted renewal: rename {} to {}",
                    next.display(),
                    current.display()
                )
            })?;
            tracing::info!(file = %current.display(), "finished an interrupted certificate renewal");
        }
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// Has the certificate in `path` expired (the node was down past its end)?
fn expired(path: &Path) -> anyhow::Result<bool> {
    let cert = mcp_pki::cert::cert_from_pem(&read(path)?)
        .with_context(|| format!("read the node certificate in {}", path.display()))?;
    let (_, not_after) = mcp_pki::cert::validity(&cert)
        .with_context(|| format!("read the validity of {}", path.display()))?;
    Ok(not_after <= std::time::SystemTime::now())
}

/// Loads the node certificate, enrolling first if there is none, or again with the
/// join token if it expired while the node was down (it cannot be renewed then).
pub async fn node_tls(config: &Config, data_dir: &Path) -> anyhow::Result<NodeTls> {
    finish_renewal(data_dir)?;
    let (ca_path, cert_path, key_path) = (
        data_dir.join(CA_FILE),
        data_dir.join(CERT_FILE),
        data_dir.join(KEY_FILE),
    );
    if !(ca_path.exists() && cert_path.exists() && key_path.exists()) {
        enroll(config, data_dir).await?;
    } else if expired(&cert_path)? {
        if config.join_token.is_none() {
            bail!(
                "the node certificate {} has expired and agent.toml has no join_token to enroll again: `mcp-master join-token --data-dir DIR` prints it",
                cert_path.display()
            );
        }
        tracing::warn!(node = %config.name, "the node certificate expired while the agent was down: enrolling again");
        enroll(config, data_dir).await?;
    }
    let ca_pem = read(&ca_path)?;
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let ca = mcp_pki::cert::cert_from_pem(&ca_pem)
        .with_context(|| format!("read the CA in {}", ca_path.display()))?;
    let own = mcp_pki::cert::cert_from_pem(&cert_pem)
        .with_context(|| format!("read the node certificate in {}", cert_path.display()))?;
    if !mcp_pki::cert::cert_is_for(&own, &config.name) {
        bail!(
            "{} is not a certificate for node {}: this data dir belongs to another node",
            cert_path.display(),
            config.name
        );
    }
    let identity = Identity::from_pem(&cert_pem, &key_pem, std::slice::from_ref(&ca))
        .with_context(|| format!("load {} and {}", cert_path.display(), key_path.display()))?;
    Ok(NodeTls {
        master: ClientTls {
            config: mcp_pki::tls::client_config(&ca, Some(&identity))?,
            server_name: MASTER_NAME.to_string(),
        },
        server: ServerTls {
            config: mcp_pki::tls::server_config(&identity, ClientAuth::Required(ca.clone()))?,
            require_name: Some(MASTER_NAME.to_string()),
        },
        identity,
        ca,
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
    let ca = mcp_pki::cert::cert_from_pem(&reply.ca_pem).context("the master's CA")?;
    if mcp_pki::join::fingerprint(&ca) != token.ca_fingerprint {
        bail!("the master sent a CA that does not match the join token");
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data dir {}", data_dir.display()))?;
    write_file(&data_dir.join(KEY_FILE), reply.key_pem.as_bytes(), 0o600)?;
    write_file(&data_dir.join(CERT_FILE), reply.cert_pem.as_bytes(), 0o644)?;
    write_file(&data_dir.join(CA_FILE), reply.ca_pem.as_bytes(), 0o644)?;
    tracing::info!(node = %config.name, "enrolled with the master; node certificate kept in the data dir");
    Ok(())
}

/// Renews the node certificate whenever it comes due, until `shutdown`.
pub async fn renew_loop(
    node: String,
    data_dir: PathBuf,
    tls: NodeTls,
    client: NodesClient<Channel>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let identity = tls.identity.clone();
    mcp_pki::renew::keep_renewed(
        "node certificate",
        identity,
        || {
            let (node, data_dir, tls, client) =
                (node.clone(), data_dir.clone(), tls.clone(), client.clone());
            async move {
                renew(&node, &data_dir, &tls, client)
                    .await
                    .map_err(|e| format!("{e:#}"))
            }
        },
        shutdown,
    )
    .await;
}

/// One renewal: ask the master over the node's own mutual-TLS channel, check the
/// answer, write it to the data dir, then present it.
async fn renew(
    node: &str,
    data_dir: &Path,
    tls: &NodeTls,
    mut client: NodesClient<Channel>,
) -> anyhow::Result<()> {
    let mut request = mcp_proto::tonic::Request::new(RenewNodeCertificateRequest {
        node: node.to_string(),
    });
    request.set_timeout(Duration::from_secs(30));
    let reply = client
        .renew_node_certificate(request)
        .await
        .map_err(|s| anyhow::anyhow!("the master refused: {}", s.message()))?
        .into_inner();
    check_renewal(node, tls, &reply)?;
    persist(data_dir, &reply)?;
    tls.identity
        .replace(
            &reply.cert_pem,
            &reply.key_pem,
            std::slice::from_ref(&tls.ca),
        )
        .context("present the renewed certificate")?;
    Ok(())
}

/// The new certificate must be this node's, from the fleet CA the node trusts.
fn check_renewal(node: &str, tls: &NodeTls, reply: &EnrollReply) -> anyhow::Result<()> {
    let ca = mcp_pki::cert::cert_from_pem(&reply.ca_pem).context("the reply's CA")?;
    if ca != tls.ca {
        bail!("the master answered with another CA than the fleet's: refused");
    }
    let cert = mcp_pki::cert::cert_from_pem(&reply.cert_pem).context("the renewed certificate")?;
    if !mcp_pki::cert::cert_is_for(&cert, node) || !mcp_pki::cert::chains_to(&cert, &tls.ca) {
        bail!("the renewed certificate is not node {node}'s from the fleet CA: refused");
    }
    Ok(())
}

/// Writes the pair so that a crash at any point leaves a matching pair on disk, or
/// one that `finish_renewal` completes.
fn persist(data_dir: &Path, reply: &EnrollReply) -> anyhow::Result<()> {
    let next_key = data_dir.join(NEXT_KEY_FILE);
    let next_cert = data_dir.join(NEXT_CERT_FILE);
    write_file(&next_key, reply.key_pem.as_bytes(), 0o600)?;
    write_file(&next_cert, reply.cert_pem.as_bytes(), 0o644)?;
    finish_renewal(data_dir)?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", data_dir.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_interrupted_renewal_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(CERT_FILE), "old cert").unwrap();
        std::fs::write(d.join(KEY_FILE), "new key").unwrap();
        // Crashed after renaming the key, before the certificate.
        std::fs::write(d.join(NEXT_CERT_FILE), "new cert").unwrap();
        finish_renewal(d).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join(CERT_FILE)).unwrap(),
            "new cert"
        );
        assert_eq!(
            std::fs::read_to_string(d.join(KEY_FILE)).unwrap(),
            "new key"
        );
        assert!(!d.join(NEXT_CERT_FILE).exists());
        // Crashed before either rename.
        std::fs::write(d.join(NEXT_KEY_FILE), "newer key").unwrap();
        std::fs::write(d.join(NEXT_CERT_FILE), "newer cert").unwrap();
        finish_renewal(d).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join(CERT_FILE)).unwrap(),
            "newer cert"
        );
        assert_eq!(
            std::fs::read_to_string(d.join(KEY_FILE)).unwrap(),
            "newer key"
        );
        // Crashed while writing the pair: the current one stays.
        std::fs::write(d.join(NEXT_KEY_FILE), "half").unwrap();
        finish_renewal(d).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join(KEY_FILE)).unwrap(),
            "newer key"
        );
        assert!(!d.join(NEXT_KEY_FILE).exists());
        // Nothing pending: nothing changes.
        finish_renewal(d).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join(KEY_FILE)).unwrap(),
            "newer key"
        );
    }
}
