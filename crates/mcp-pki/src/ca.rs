//! The master's two CAs, each created once by `mcp-master init` (key mode 0600)
//! and loaded at start: the fleet CA, the only issuer of node, master and
//! service certificates, and the public CA, the embedded issuer of the edge's
//! public certificates (SPEC §7), kept apart so a client can trust the edge
//! without trusting the fleet.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
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

/// Public CA certificate file in the master's data dir.
pub const PUBLIC_CA_CERT: &str = "public-ca.pem";
/// Public CA key file in the master's data dir (mode 0600).
pub const PUBLIC_CA_KEY: &str = "public-ca-key.pem";

/// Which of the master's CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaKind {
    /// Node, master and service certificates.
    Fleet,
    /// The edge's public certificates.
    Public,
}

impl CaKind {
    /// (certificate file, key file) in the data dir.
    pub fn files(self) -> (&'static str, &'static str) {
        match self {
            CaKind::Fleet => (CA_CERT, CA_KEY),
            CaKind::Public => (PUBLIC_CA_CERT, PUBLIC_CA_KEY),
        }
    }

    fn common_name(self) -> &'static str {
        match self {
            CaKind::Fleet => "MCP fleet CA",
            CaKind::Public => "MCP public CA",
        }
    }
}

/// Writes a file with the given mode, replacing it atomically: a temporary file
/// (tempfile's, created with `mode` from the start, in the same directory) is
/// written, synced and renamed over `path`, so a reader sees the old contents or
/// the new, never part of either.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(data).map_err(io("write", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io("sync", path))?;
    tmp.persist(path)
        .map_err(|e| io("rename a temporary file to", path)(e.error))?;
    Ok(())
}

fn ca_params(kind: CaKind) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, kind.common_name());
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
    /// Creates the fleet CA in `dir`; refuses to overwrite one.
    pub fn create(dir: &Path) -> Result<Ca, PkiError> {
        Ca::create_kind(dir, CaKind::Fleet)
    }

    /// Loads the fleet CA from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        Ca::load_kind(dir, CaKind::Fleet)
    }

    /// Creates a CA of `kind` in `dir`; refuses to overwrite one.
    pub fn create_kind(dir: &Path, kind: CaKind) -> Result<Ca, PkiError> {
        let (cert_file, key_file) = kind.files();
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        if dir.join(cert_file).exists() || dir.join(key_file).exists() {
            return Err(PkiError::AlreadyInitialised {
                dir: dir.display().to_string(),
            });
        }
        let key = KeyPair::generate()?;
        let mut params = ca_params(kind);
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(300));
        params.not_after = offset(now + Duration::from_secs(10 * 365 * 86400));
        let cert = params.self_signed(&key)?;
        write_file(&dir.join(key_file), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join(cert_file), cert.pem().as_bytes(), 0o644)?;
        Ca::load_kind(dir, kind)
    }

    /// Loads the CA of `kind` from `dir`.
    pub fn load_kind(dir: &Path, kind: CaKind) -> Result<Ca, PkiError> {
        let (cert_file, key_file) = kind.files();
        let cert_path = dir.join(cert_file);
        let key_path = dir.join(key_file);
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
        let issuer = Issuer::new(ca_params(kind), key);
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

    /// A certificate for `orion` from a throwaway CA.
    pub(crate) fn issue_one(life: Duration) -> CertificateDer<'static> {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path()).unwrap();
        let issued = ca.issue(&["orion".to_string()], life).unwrap();
        cert_from_pem(&issued.cert_pem).unwrap()
    }

    #[test]
    fn write_file_replaces_whole_files_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        write_file(&path, b"first", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(mode(&path), 0o600);
        write_file(&path, b"second, longer", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(mode(&path), 0o644);
        // Nothing else is left in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
        // A missing directory is an error naming it, not a panic.
        let err = write_file(&dir.path().join("no/such/file"), b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("no/such"), "{err}");
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
    fn the_public_ca_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Ca::create(dir.path()).unwrap();
        let public = Ca::create_kind(dir.path(), CaKind::Public).unwrap();
        assert!(dir.path().join(PUBLIC_CA_CERT).is_file());
        let mode = std::fs::metadata(dir.path().join(PUBLIC_CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(fleet.cert_pem(), public.cert_pem());
        let edge = public
            .issue(&["photos.example".to_string()], Duration::from_secs(600))
            .unwrap();
        let der = cert_from_pem(&edge.cert_pem).unwrap();
        assert!(chains_to(&der, public.cert_der()));
        assert!(!chains_to(&der, fleet.cert_der()));
        assert!(Ca::create_kind(dir.path(), CaKind::Public).is_err());
        let again = Ca::load_kind(dir.path(), CaKind::Public).unwrap();
        assert_eq!(again.cert_pem(), public.cert_pem());
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
