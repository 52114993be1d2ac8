//! The fleet CA: created once by `mcp-master init` (key mode 0600), loaded by the
//! master at start, and the only issuer of node, master and service certificates.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

use crate::error::io;
use crate::error::PkiError;
use crate::Secret;

/// CA certificate file in the master's data dir.
pub const CA_CERT: &str = "ca.pem";
/// CA key file in the master's data dir (mode 0600).
pub const CA_KEY: &str = "ca-key.pem";

/// Writes a file with the given mode, replacing it atomically.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(data).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "MCP fleet CA");
    dn.push(DnType::OrganizationName, "mcp");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Secret,
    pub not_after: SystemTime,
}

/// The fleet CA.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("key", &"[redacted]").finish()
    }
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl Ca {
    /// Creates the CA in `dir`; refuses to overwrite one.
    pub fn create(dir: &Path) -> Result<Ca, PkiError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        if dir.join(CA_CERT).exists() || dir.join(CA_KEY).exists() {
            return Err(PkiError::AlreadyInitialised {
                dir: dir.display().to_string(),
            });
        }
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(300));
        params.not_after = offset(now + Duration::from_secs(10 * 365 * 86400));
        let cert = params.self_signed(&key)?;
        write_file(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join(CA_CERT), cert.pem().as_bytes(), 0o644)?;
        Ca::load(dir)
    }

    /// Loads the CA from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        if !cert_path.exists() || !key_path.exists() {
            return Err(PkiError::NotInitialised {
                dir: dir.display().to_string(),
            });
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io("read", &cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io("read", &key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let cert_der = crate::cert::cert_from_pem(&cert_pem)
            .map_err(|e| PkiError::Invalid(format!("{}: {e}", cert_path.display())))?;
        // The issuer is rebuilt from the same parameters the CA was made with, so
        // issued certificates name it exactly as its own certificate does.
        let issuer = Issuer::new(ca_params(), key);
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a certificate for `names` (DNS names or IP addresses; the first is the
    /// common name), good for TLS servers and clients, valid for `validity`.
    pub fn issue(&self, names: &[String], validity: Duration) -> Result<Issued, PkiError> {
        let first = names
            .first()
            .ok_or_else(|| PkiError::Invalid("a certificate needs a name".to_string()))?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, first.as_str());
        params.distinguished_name = dn;
        let now = SystemTime::now();
        let not_after = now + validity;
        // Backdated for clock skew between nodes, but by no more than a tenth of
        // the lifetime, so that two thirds of a short lifetime (tests) still come
        // before its end.
        params.not_before = offset(now - (validity / 10).min(Duration::from_secs(300)));
        params.not_after = offset(not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Secret::new(key.serialize_pem()),
            not_after,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cert::{cert_from_pem, cert_is_for, chains_to, validity};
    use std::os::unix::fs::PermissionsExt;

    /// A certificate for `orion` from a throwaway CA.
    pub(crate) fn issue_one(life: Duration) -> CertificateDer<'static> {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path()).unwrap();
        let issued = ca.issue(&["orion".to_string()], life).unwrap();
        cert_from_pem(&issued.cert_pem).unwrap()
    }

    #[test]
    fn validity_is_read_back() {
        let before = SystemTime::now();
        let der = issue_one(Duration::from_secs(600));
        let (not_before, not_after) = validity(&der).unwrap();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert!(secs(not_before) <= secs(before) - 59 && secs(not_before) >= secs(before) - 61);
        assert!(secs(not_after) >= secs(before) + 599 && secs(not_after) <= secs(before) + 601);
        let long = issue_one(Duration::from_secs(90 * 86400));
        let (not_before, not_after) = validity(&long).unwrap();
        assert_eq!(secs(not_after) - secs(not_before), 90 * 86400 + 300);
    }

    #[test]
    fn create_load_issue() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            Ca::create(dir.path()),
            Err(PkiError::AlreadyInitialised { .. })
        ));
        let again = Ca::load(dir.path()).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        let issued = again
            .issue(&["orion".to_string()], Duration::from_secs(3600))
            .unwrap();
        let der = cert_from_pem(&issued.cert_pem).unwrap();
        assert!(cert_is_for(&der, "orion"));
        assert!(!cert_is_for(&der, "rift"));
        assert!(chains_to(&der, ca.cert_der()));
        let other = tempfile::tempdir().unwrap();
        let foreign = Ca::create(other.path()).unwrap();
        assert!(!chains_to(&der, foreign.cert_der()));
        let missing = tempfile::tempdir().unwrap();
        let err = Ca::load(missing.path()).unwrap_err().to_string();
        assert!(err.contains("mcp-master init --data-dir"), "{err}");
    }
}
