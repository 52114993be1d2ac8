//! Operator tokens revoked by `mcp logout` (SPEC §13: the master keeps them until they
//! expire). A token is known by its id, the SHA-256 of the token in hex, so the file
//! never holds a usable token. The list lives in `<data_dir>/revoked-tokens.json`,
//! rewritten atomically (mode 0600) on every revocation, so a restarted master still
//! refuses them; entries whose token has expired are dropped on load and on every
//! write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};

/// The file in the data dir.
pub const FILE: &str = "revoked-tokens.json";
const VERSION: u32 = 1;

/// The revocation list, shared by every call that checks a token.
#[derive(Debug)]
pub struct Revoked {
    path: PathBuf,
    /// Token id -> unix second from which the token is expired anyway.
    entries: Mutex<BTreeMap<String, u64>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    v: u32,
    tokens: Vec<Entry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    expires_at: u64,
}

/// A token's id: SHA-256 of its text, lowercase hex.
pub fn token_id(token: &str) -> String {
    mcp_pki::digest::sha256_hex(token.as_bytes())
}

impl Revoked {
    /// The list in `data_dir` (empty if there is none yet), without the entries
    /// expired at `now` (unix seconds).
    pub fn load(data_dir: &Path, now: u64) -> anyhow::Result<Revoked> {
        let path = data_dir.join(FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes, now).with_context(|| format!("read {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        Ok(Revoked {
            path,
            entries: Mutex::new(entries),
        })
    }

    /// Was `token` revoked (and is its revocation still kept at `now`)?
    pub fn contains(&self, token: &str, now: u64) -> bool {
        let id = token_id(token);
        self.entries
            .lock()
            .map(|e| e.get(&id).is_some_and(|&until| now < until))
            .unwrap_or(true) // A poisoned list fails closed.
    }

    /// Revokes `token`, kept until `expires_at` (its own expiry; `u64::MAX` for a
    /// token that has none), and writes the list before returning.
    pub fn revoke(&self, token: &str, expires_at: u64, now: u64) -> anyhow::Result<()> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| anyhow::anyhow!("the revocation list is poisoned"))?;
        let mut next = entries.clone();
        next.retain(|_, until| now < *until);
        next.insert(token_id(token), expires_at);
        let disk = OnDisk {
            v: VERSION,
            tokens: next
                .iter()
                .map(|(id, &expires_at)| Entry {
                    id: id.clone(),
                    expires_at,
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&disk).context("encode the revocation list")?;
        mcp_pki::ca::write_file(&self.path, &json, 0o600)
            .with_context(|| format!("write {}", self.path.display()))?;
        *entries = next;
        Ok(())
    }

    /// How many revocations are kept (tests and logs).
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse(bytes: &[u8], now: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    let version: Version = serde_json::from_slice(bytes).context("not a revocation list")?;
    if version.v != VERSION {
        bail!(
            "revocation list version {} is not {VERSION}, the one this build reads",
            version.v
        );
    }
    let disk: OnDisk = serde_json::from_slice(bytes).context("not a revocation list")?;
    Ok(disk
        .tokens
        .into_iter()
        .filter(|e| now < e.expires_at)
        .map(|e| (e.id, e.expires_at))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn revoked_until_expiry_and_across_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let list = Revoked::load(dir.path(), 100).unwrap();
        assert!(!list.contains("tok-a", 100));
        list.revoke("tok-a", 200, 100).unwrap();
        list.revoke("tok-b", 150, 100).unwrap();
        assert!(list.contains("tok-a", 100));
        assert!(!list.contains("tok-c", 100));
        assert!(
            !list.contains("tok-a", 200),
            "expired: refused for that anyway"
        );
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("tok-a"), "the file holds ids, not tokens");
        assert!(text.contains(&token_id("tok-a")));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A restart keeps what has not expired.
        let again = Revoked::load(dir.path(), 160).unwrap();
        assert!(again.contains("tok-a", 160));
        assert_eq!(again.len(), 1, "tok-b expired at 150 and is dropped");
        // A write drops expired entries too.
        let list = Revoked::load(dir.path(), 100).unwrap();
        assert_eq!(list.len(), 2);
        list.revoke("tok-c", u64::MAX, 180).unwrap();
        assert_eq!(list.len(), 2, "tok-b dropped, tok-c added");
        assert!(list.contains("tok-c", u64::MAX - 1));
    }

    #[test]
    fn a_bad_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("not json", "not a revocation list"),
            (r#"{"v":2,"tokens":[]}"#, "version 2"),
            (r#"{"v":1,"tokens":[{"id":"x"}]}"#, "not a revocation list"),
        ] {
            std::fs::write(dir.path().join(FILE), text).unwrap();
            let e = format!("{:#}", Revoked::load(dir.path(), 0).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn ids_are_sha256_hex() {
        assert_eq!(
            token_id(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
