//! Each service's internal certificate (`<service>.svc.mcp.<domain>` only), obtained
//! from the master's CA over the node's mutual-TLS channel, written to
//! `<srv_root>/<service>/certs/` (`cert.pem`, `key.pem` mode 0600, `ca.pem`), renewed
//! at two thirds of its lifetime (the node's renewal loop decides when), removed with
//! the service. Knows nothing of the node: the node depends on it, not the reverse.

use std::path::Path;

use anyhow::Context;
use mcp_pki::ca::write_file;
use mcp_proto::master::v1::{nodes_client::NodesClient, IssueCertificateRequest};
use mcp_proto::tonic::transport::Channel;

/// Asks the master for certificates.
#[derive(Clone)]
pub struct CertIssuer {
    pub client: NodesClient<Channel>,
    pub node: String,
}

impl CertIssuer {
    /// Obtains and writes `service`'s certificate into `service_dir/certs/`;
    /// returns (not_before, not_after).
    pub async fn provision(&self, service: &str, service_dir: &Path) -> anyhow::Result<(i64, i64)> {
        let reply = self
            .client
            .clone()
            .issue_certificate(IssueCertificateRequest {
                service: service.to_string(),
                node: self.node.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("the master refused the certificate: {}", s.message()))?
            .into_inner();
        let dir = service_dir.join("certs");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        // Key first, so a reader never pairs a new certificate with an old key for
        // long; each file is replaced atomically.
        write_file(&dir.join("key.pem"), reply.key_pem.as_bytes(), 0o600)?;
        write_file(&dir.join("cert.pem"), reply.cert_pem.as_bytes(), 0o644)?;
        write_file(&dir.join("ca.pem"), reply.ca_pem.as_bytes(), 0o644)?;
        Ok((reply.not_before, reply.not_after))
    }
}

/// When a certificate is due: two thirds into its lifetime.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 2 / 3
}

/// Where a service's internal certificate comes from: the master's CA (`CertIssuer`),
/// or a stand-in in tests.
#[async_trait::async_trait]
pub trait CertSource: Send + Sync {
    /// Writes `service`'s certificate into `service_dir/certs/`; returns (not_before,
    /// not_after) in Unix seconds.
    async fn provision(&self, service: &str, service_dir: &Path) -> anyhow::Result<(i64, i64)>;
}

#[async_trait::async_trait]
impl CertSource for CertIssuer {
    async fn provision(&self, service: &str, service_dir: &Path) -> anyhow::Result<(i64, i64)> {
        CertIssuer::provision(self, service, service_dir).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_thirds() {
        assert_eq!(super::renew_at(0, 90), 60);
        assert_eq!(super::renew_at(100, 130), 120);
    }
}
