//! Password hashes for the users in master.toml: argon2id in PHC string form
//! (`$argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>`), what
//! `mcp-master hash-password` prints and `mcp login` is checked against.
//! Hashing is deliberately slow (tens of milliseconds): async callers should
//! run these in `tokio::task::spawn_blocking`.

use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::SecureRandom;

use crate::Secret;

/// Why a password could not be hashed or checked. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("could not read random bytes for the salt")]
    Random,
    #[error("malformed password hash (expected \"$argon2id$v=19$...\", as `mcp-master hash-password` prints): {0}")]
    Malformed(String),
    #[error("the password hash uses {0}; only argon2id is accepted")]
    UnsupportedAlgorithm(String),
    #[error("hash the password: {0}")]
    Hash(String),
}

/// An argon2id PHC string for `password`, with a fresh 16-byte random salt and
/// argon2's default (OWASP-recommended) cost.
pub fn hash_password(password: &Secret) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    // The salt comes from ring's SystemRandom, the crate's one random source
    // (the same OS generator as argon2's OsRng, without extra features).
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| PasswordError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let hash = Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`: `Ok(false)` on a
/// mismatch, `Err` when `phc` is not a complete argon2id hash. The cost
/// parameters are read from `phc`; the comparison is constant-time.
pub fn verify_password(password: &Secret, phc: &str) -> Result<bool, PasswordError> {
    let parsed =
        PasswordHash::new(phc.trim()).map_err(|e| PasswordError::Malformed(e.to_string()))?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(PasswordError::UnsupportedAlgorithm(
            parsed.algorithm.to_string(),
        ));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(PasswordError::Malformed("no salt or no hash".into()));
    }
    match Argon2::default().verify_password(password.expose().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let pw = Secret::new("correct horse battery staple");
        let phc = hash_password(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify_password(&pw, &phc).unwrap());
        assert!(verify_password(&pw, &format!(" {phc}\n")).unwrap());
        assert!(!verify_password(&Secret::new("correct horse battery stapler"), &phc).unwrap());
        assert!(!verify_password(&Secret::new(""), &phc).unwrap());
        // A fresh salt each time.
        assert_ne!(hash_password(&pw).unwrap(), phc);
    }

    #[test]
    fn cost_parameters_are_read_from_the_hash() {
        // A cheaper hash than the default, as an operator might have made with other tools.
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let cheap = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = cheap.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(verify_password(&Secret::new("pw"), &phc).unwrap());
        assert!(!verify_password(&Secret::new("pW"), &phc).unwrap());
    }

    #[test]
    fn empty_password_is_refused() {
        assert!(matches!(
            hash_password(&Secret::default()),
            Err(PasswordError::Empty)
        ));
    }

    #[test]
    fn malformed_hashes_are_errors() {
        let pw = Secret::new("pw");
        let cases = [
            "",
            "password",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1",
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ",
            "$argon2id$v=19$m=abc,t=2,p=1$c29tZXNhbHQ$ZFsdNNdvrSSeZeBtbqOp82mv5GF/ss5+zEN9bHf4jDA",
            "$argon2id$v=19$m=1,t=2,p=1$c29tZXNhbHQ$ZFsdNNdvrSSeZeBtbqOp82mv5GF/ss5+zEN9bHf4jDA",
            "$argon2i$v=19$m=1024,t=2,p=1$c29tZXNhbHQ$ZFsdNNdvrSSeZeBtbqOp82mv5GF/ss5+zEN9bHf4jDA",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            "$pbkdf2-sha256$i=1000$c29tZXNhbHQ$ZFsdNNdvrSSeZeBtbqOp82mv5GF/ss5+zEN9bHf4jDA",
        ];
        for phc in cases {
            let err = verify_password(&pw, phc).expect_err(phc);
            assert!(!err.to_string().is_empty());
        }
    }
}
