//! Certificates as data: PEM in and out, whom a certificate names, whether it chains
//! to a CA, and its validity period. No I/O; `ca` (issuing) and `tls` (configs)
//! both build on it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::PkiError;

/// The one crypto backend: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::Invalid(
            "no certificate in the PEM text".to_string(),
        ));
    }
    Ok(certs)
}

/// The first certificate in a PEM text.
pub fn cert_from_pem(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Invalid("no certificate in the PEM text".to_string()))
}

/// The private key in a PEM text.
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Invalid(format!("bad private key PEM: {e}")))
}

/// Is this certificate valid for the DNS name `name` (its SAN)?
pub fn cert_is_for(der: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name.to_string()) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// Does this certificate chain to `ca` (signature and validity now)?
pub fn chains_to(der: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(anchor) = webpki::anchor_from_trusted_cert(ca) else {
        return false;
    };
    let provider = provider();
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

/// A certificate's validity period: (not before, not after).
///
/// Read straight from the DER (Certificate → TBSCertificate → Validity): webpki
/// checks validity but does not expose it, and a full X.509 parser is a heavy
/// dependency for two timestamps.
pub fn validity(der: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), PkiError> {
    let bad = |what: &str| PkiError::Invalid(format!("certificate DER: {what}"));
    let (cert, _) = der_element(der.as_ref(), 0x30).ok_or_else(|| bad("no Certificate"))?;
    let (mut tbs, _) = der_element(cert, 0x30).ok_or_else(|| bad("no TBSCertificate"))?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_skip(tbs).ok_or_else(|| bad("bad version"))?;
    }
    for what in ["serial", "signature algorithm", "issuer"] {
        tbs = der_skip(tbs).ok_or_else(|| bad(what))?;
    }
    let (validity, _) = der_element(tbs, 0x30).ok_or_else(|| bad("no Validity"))?;
    let (not_before, rest) = der_time(validity).ok_or_else(|| bad("bad notBefore"))?;
    let (not_after, _) = der_time(rest).ok_or_else(|| bad("bad notAfter"))?;
    Ok((not_before, not_after))
}

/// The validity of the first certificate of a PEM chain, in Unix seconds:
/// (not_before, not_after), as the wire carries it.
pub fn validity_unix(pem: &str) -> Result<(i64, i64), PkiError> {
    let (nb, na) = validity(&cert_from_pem(pem)?)?;
    let unix = |t: SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    };
    Ok((unix(nb), unix(na)))
}

/// One DER element of tag `tag` at the start of `input`: (its content, the rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    der_content(rest)
}

/// The content and the rest, after the tag byte.
fn der_content(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = input.split_first()?;
    let (len, rest) = if len < 0x80 {
        (usize::from(len), rest)
    } else {
        let n = usize::from(len & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Everything after the first element (of any single-byte tag).
fn der_skip(input: &[u8]) -> Option<&[u8]> {
    let (_, rest) = input.split_first()?;
    der_content(rest).map(|(_, rest)| rest)
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(input: &[u8]) -> Option<(SystemTime, &[u8])> {
    let (&tag, after_tag) = input.split_first()?;
    let (content, rest) = der_content(after_tag)?;
    let text = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let (year, text) = match tag {
        0x17 => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if text.len() != 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| text.get(i..i + 2)?.parse::<u8>().ok();
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let clock = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    let secs = time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp();
    let at = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    Some((at, rest))
}

/// When a certificate valid from `not_before` to `not_after` is due for renewal:
/// two thirds into its lifetime (SPEC §7).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + life * 2 / 3
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn der_times() {
        let utc = b"\x17\x0d491231235959Z";
        let (t, rest) = der_time(utc).unwrap();
        assert!(rest.is_empty());
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 2_524_607_999);
        let generalized = b"\x18\x0f20500101000000Z";
        let (t, _) = der_time(generalized).unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 2_524_608_000);
        for bad in [
            &b"\x17\x0d491331235959Z"[..],
            b"\x17\x0c491231235959",
            b"\x02\x01\x00",
            b"\x17\x0e491231235959Z",
            b"",
        ] {
            assert!(der_time(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn truncated_der_is_refused() {
        let cert = crate::ca::tests::issue_one(Duration::from_secs(60));
        let der = cert.as_ref();
        for len in [0, 1, 2, 10, 100, der.len() / 2] {
            let cut = CertificateDer::from(der[..len].to_vec());
            assert!(validity(&cut).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn two_thirds() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(renew_at(t(0), t(90)), t(60));
        assert_eq!(renew_at(t(100), t(130)), t(120));
        assert_eq!(renew_at(t(100), t(50)), t(100));
    }
}
