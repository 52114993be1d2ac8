//! The `rfc2136` DNS backend (SPEC §8): keeps a real primary's copy of the internal
//! zone equal to `MasterState.zone` with TSIG-signed (hmac-sha256) dynamic updates.
//!
//! On start, after any failure and on a periodic resync it reads back what the server
//! holds (a signed AXFR), then sends the difference: what is missing is added, what
//! is stale is deleted. MCP marks every name it owns with a TXT record
//! ([`OWNER_TXT`], as external-dns does) in the same UPDATE that creates the name, and
//! changes or deletes records only at names carrying it: a hand-made record at any
//! other name is never touched, and a name someone else holds is left alone (an
//! event says so). Each UPDATE carries prerequisites (a new name must not be in use,
//! an owned name must still carry its TXT), so a concurrent change by hand makes the
//! update fail and the next pass read the zone again, rather than overwrite it.
//!
//! Nothing is sent while the zone is None (the fleet has not settled after a master
//! start): a restarted master never empties the zone it finds. A refused update (a
//! bad key: NOTAUTH, a wrong zone: NOTZONE, REFUSED) is an event once per reason and a
//! warning naming the server and the RCODE, retried with a doubling backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hickory_proto::rr::{Name, Record, TSigner};
use mcp_pki::Secret;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[path = "rfc2136_client.rs"]
pub mod client;

use crate::config::DnsConfig;
use crate::reconcile::plan::dns::{RData, Zone};
use crate::state::MasterState;
pub use client::OWNER_TXT;
use client::{Change, Conn, Failure, Held, Rr};

/// Names changed by one UPDATE message (each a few records: well under 64 KiB).
const NAMES_PER_UPDATE: usize = 64;

/// The largest secret file read (a BIND key clause is about 100 bytes).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Where and how to update.
pub struct Target {
    pub server: SocketAddr,
    /// The zone, lowercase, without the trailing dot.
    pub zone: String,
    pub key_name: String,
    /// TTL of every record MCP adds.
    pub ttl: Duration,
    signer: TSigner,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// `secret` is the TSIG secret in base64 (hmac-sha256).
    pub fn new(
        server: SocketAddr,
        zone: &str,
        key_name: &str,
        secret: &Secret,
        ttl: Duration,
    ) -> anyhow::Result<Target> {
        let key = data_encoding::BASE64
            .decode(secret.expose().as_bytes())
            .map_err(|_| anyhow::anyhow!("the TSIG secret is not base64"))?;
        if key.is_empty() {
            bail!("the TSIG secret is empty");
        }
        let zone = zone.strip_suffix('.').unwrap_or(zone).to_ascii_lowercase();
        client::fqdn(&zone).map_err(|e| anyhow::anyhow!("zone: {e}"))?;
        Ok(Target {
            server,
            signer: client::signer(key_name, key)?,
            zone,
            key_name: key_name.to_string(),
            ttl,
        })
    }

    /// From `[dns]` (backend = "rfc2136"), reading the secret file; the zone defaults
    /// to `internal_zone`.
    pub fn from_config(dns: &DnsConfig, internal_zone: &str) -> anyhow::Result<Target> {
        let server = dns.server.context("dns.server: required for rfc2136")?;
        let key_name = dns
            .tsig_key_name
            .as_deref()
            .context("dns.tsig_key_name: required for rfc2136")?;
        let file = dns
            .tsig_secret_file
            .as_deref()
            .context("dns.tsig_secret_file: required for rfc2136")?;
        let secret = read_secret(file)?;
        let zone = dns.zone.as_deref().unwrap_or(internal_zone);
        Target::new(server, zone, key_name, &secret, dns.ttl)
            .with_context(|| format!("dns.tsig_secret_file {}", file.display()))
    }

    fn ttl_secs(&self) -> u32 {
        u32::try_from(self.ttl.as_secs()).unwrap_or(u32::MAX)
    }
}

/// Reads a TSIG secret file: the base64 secret alone, or a BIND key clause as
/// `tsig-keygen` prints it (`secret "...";`, algorithm hmac-sha256). A file that its
/// group or others may access is refused; the secret never appears in an error.
pub fn read_secret(path: &Path) -> anyhow::Result<Secret> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.display();
    let mut file =
        std::fs::File::open(path).with_context(|| format!("dns.tsig_secret_file {name}"))?;
    let mode = file
        .metadata()
        .with_context(|| format!("dns.tsig_secret_file {name}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "dns.tsig_secret_file {name}: mode {:04o} lets its group or others read it; it must be 0600 (chmod 600 {name})",
            mode & 0o7777
        );
    }
    let mut text = String::new();
    (&mut file)
        .take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .with_context(|| format!("dns.tsig_secret_file {name}: not readable text"))?;
    let text = Secret::new(text);
    let secret = match text.expose().find("secret") {
        None => text.expose().trim().to_string(),
        Some(at) => {
            if let Some(alg) = text.expose().find("algorithm") {
                let rest = text.expose()[alg + "algorithm".len()..].trim_start();
                let alg = rest.split(|c: char| c == ';' || c.is_whitespace()).next();
                if alg
                    .map(|a| a.trim_matches('"').to_ascii_lowercase())
                    .as_deref()
                    != Some("hmac-sha256")
                {
                    bail!("dns.tsig_secret_file {name}: the key's algorithm must be hmac-sha256");
                }
            }
            let rest = &text.expose()[at + "secret".len()..];
            let mut quoted = rest.split('"');
            match (quoted.next(), quoted.next()) {
                (Some(before), Some(value)) if before.trim().is_empty() => value.trim().to_string(),
                _ => bail!("dns.tsig_secret_file {name}: expected secret \"<base64>\";"),
            }
        }
    };
    if secret.is_empty() {
        bail!("dns.tsig_secret_file {name}: empty");
    }
    Ok(Secret::new(secret))
}

/// Timings of the loop.
#[derive(Debug, Clone)]
pub struct Options {
    /// Read the server's zone back this often even when nothing changed.
    pub resync: Duration,
    /// After a change, wait this long for more before sending (bursts coalesce).
    pub debounce: Duration,
    /// Retry after a failure: doubling from `backoff_min` to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Connecting and each answer.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            resync: Duration::from_secs(60),
            debounce: Duration::from_millis(200),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Where the loop's events go (`mcp status`).
pub type Events = Arc<dyn Fn(String) + Send + Sync>;

/// Starts the backend; Err when it cannot (before the master serves anything): the
/// secret file missing, open to others or not base64.
pub async fn start(
    state: Arc<MasterState>,
    dns: &DnsConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let target = Target::from_config(dns, &state.config.internal_zone())?;
    tracing::info!(
        server = %target.server,
        zone = %target.zone,
        key = %target.key_name,
        "[dns] backend rfc2136: dynamic updates signed with TSIG hmac-sha256"
    );
    let zone = state.zone.subscribe();
    let events: Events = {
        let state = state.clone();
        Arc::new(move |message| state.registry.event("dns", message))
    };
    Ok(tokio::spawn(run(
        target,
        Options::default(),
        zone,
        events,
        shutdown,
    )))
}

/// What the server holds: every name in the zone, with the records MCP manages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holding {
    names: BTreeMap<String, HeldName>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct HeldName {
    /// Records of the kinds MCP manages, with their TTLs.
    rrs: BTreeMap<Rr, u32>,
}

impl HeldName {
    fn owned(&self) -> bool {
        self.rrs.contains_key(&Rr::Owner)
    }
}

impl Holding {
    pub fn from_records(records: &[Record]) -> Holding {
        let mut names: BTreeMap<String, HeldName> = BTreeMap::new();
        for record in records {
            let entry = names.entry(client::owner(record)).or_default();
            if let Held::Rr(rr, ttl) = client::held(record) {
                entry.rrs.insert(rr, ttl);
            }
        }
        Holding { names }
    }

    fn apply(&mut self, change: &Change, ttl: u32) {
        let entry = self.names.entry(change.name.clone()).or_default();
        for rr in &change.delete {
            entry.rrs.remove(rr);
        }
        for rr in &change.add {
            entry.rrs.insert(rr.clone(), ttl);
        }
        if entry.rrs.is_empty() {
            // Only MCP's records were there (it owned the name): it is empty now.
            self.names.remove(&change.name);
        }
    }
}

/// The records MCP wants, by name (each with its TXT marker), for names in `origin`.
pub fn wanted(zone: &Zone, origin: &str) -> BTreeMap<String, BTreeSet<Rr>> {
    let suffix = format!(".{origin}");
    let mut want: BTreeMap<String, BTreeSet<Rr>> = BTreeMap::new();
    for record in zone {
        let name = record.name.to_ascii_lowercase();
        if !name.ends_with(&suffix) {
            continue;
        }
        let rr = match &record.data {
            RData::Addr(IpAddr::V4(ip)) => Rr::A(*ip),
            RData::Addr(IpAddr::V6(ip)) => Rr::Aaaa(*ip),
            RData::Srv { port, target } => Rr::Srv {
                priority: 0,
                weight: 0,
                port: *port,
                target: target.to_ascii_lowercase(),
            },
        };
        let set = want.entry(name).or_default();
        set.insert(Rr::Owner);
        set.insert(rr);
    }
    want
}

/// The changes that make `held` hold `want` (adds with `ttl`), and the names MCP
/// wants but someone else holds (left alone).
pub fn diff(
    held: &Holding,
    want: &BTreeMap<String, BTreeSet<Rr>>,
    ttl: u32,
) -> (Vec<Change>, Vec<String>) {
    let empty = BTreeSet::new();
    let mut changes = Vec::new();
    let mut conflicts = Vec::new();
    let owned = held
        .names
        .iter()
        .filter(|(_, n)| n.owned())
        .map(|(name, _)| name);
    let names: BTreeSet<&String> = want.keys().chain(owned).collect();
    for name in names {
        let want = want.get(name).unwrap_or(&empty);
        let held = held.names.get(name);
        if let Some(h) = held {
            if !h.owned() {
                conflicts.push(name.clone());
                continue;
            }
        }
        let rrs = held.map(|h| &h.rrs);
        let delete: Vec<Rr> = rrs
            .into_iter()
            .flat_map(|r| r.keys())
            .filter(|rr| !want.contains(*rr))
            .cloned()
            .collect();
        let add: Vec<Rr> = want
            .iter()
            .filter(|rr| rrs.and_then(|r| r.get(*rr)) != Some(&ttl))
            .cloned()
            .collect();
        if delete.is_empty() && add.is_empty() {
            continue;
        }
        // Owner last among the deletions, first among the additions: within one
        // message the order does not matter to the server, but it reads as intended.
        let (mut delete, mut add) = (delete, add);
        delete.sort_by_key(|rr| *rr == Rr::Owner);
        add.sort_by_key(|rr| *rr != Rr::Owner);
        changes.push(Change {
            name: name.clone(),
            fresh: held.is_none(),
            delete,
            add,
        });
    }
    (changes, conflicts)
}

/// The loop's memory between passes.
struct Syncer {
    target: Target,
    origin: Name,
    options: Options,
    events: Events,
    /// What the server holds, as last read back and updated since; None: read it.
    held: Option<Holding>,
    /// Failures reported since the last success (an event once per reason).
    failing: BTreeSet<String>,
    /// Names MCP wants that someone else holds (reported once each).
    conflicts: BTreeSet<String>,
}

impl Syncer {
    /// One pass: read back if needed, then send the difference.
    async fn pass(&mut self, zone: &Zone) -> Result<(), Failure> {
        let want = wanted(zone, &self.target.zone);
        let ttl = self.target.ttl_secs();
        let mut conn = None;
        if self.held.is_none() {
            let c = conn.insert(Conn::connect(self.target.server, self.options.timeout).await?);
            let records = c.transfer(&self.origin, &self.target.signer).await?;
            let held = Holding::from_records(&records);
            tracing::debug!(
                server = %self.target.server,
                names = held.names.len(),
                "[dns] rfc2136: read the zone back"
            );
            self.held = Some(held);
        }
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        let (changes, conflicts) = diff(held, &want, ttl);
        let conflicts: BTreeSet<String> = conflicts.into_iter().collect();
        for name in conflicts.difference(&self.conflicts) {
            let message = format!(
                "{name} holds records MCP does not own (no TXT \"{OWNER_TXT}\"): left alone"
            );
            tracing::warn!(server = %self.target.server, "{message}");
            (self.events)(message);
        }
        self.conflicts = conflicts;
        if changes.is_empty() {
            return Ok(());
        }
        let conn = match conn {
            Some(c) => c,
            None => Conn::connect(self.target.server, self.options.timeout).await?,
        };
        let mut conn = conn;
        let (mut added, mut deleted) = (0, 0);
        for batch in changes.chunks(NAMES_PER_UPDATE) {
            let message = client::update(&self.origin, batch, ttl)?;
            conn.update(message, &self.target.signer).await?;
            for change in batch {
                added += change.add.iter().filter(|rr| **rr != Rr::Owner).count();
                deleted += change.delete.iter().filter(|rr| **rr != Rr::Owner).count();
                held.apply(change, ttl);
            }
        }
        tracing::info!(
            server = %self.target.server,
            zone = %self.target.zone,
            names = changes.len(),
            added,
            deleted,
            "[dns] rfc2136: zone updated"
        );
        Ok(())
    }

    fn failed(&mut self, failure: &Failure) {
        self.held = None;
        let reason = format!(
            "rfc2136 server {} (zone {}): {failure}; retrying",
            self.target.server, self.target.zone
        );
        if self.failing.contains(&reason) {
            tracing::debug!("{reason}");
            return;
        }
        match failure.rcode() {
            Some(rcode) => tracing::warn!(server = %self.target.server, rcode, "{reason}"),
            None => tracing::warn!(server = %self.target.server, "{reason}"),
        }
        (self.events)(reason.clone());
        self.failing.insert(reason);
    }

    fn succeeded(&mut self) {
        if !std::mem::take(&mut self.failing).is_empty() {
            let message = format!(
                "rfc2136 server {} (zone {}) in sync again",
                self.target.server, self.target.zone
            );
            tracing::info!("{message}");
            (self.events)(message);
        }
    }
}

/// Keeps `target`'s zone equal to `zone` until `shutdown` becomes true (or its sender
/// goes away). Public so that a test can drive it without a whole master.
pub async fn run(
    target: Target,
    options: Options,
    mut zone: watch::Receiver<Option<Arc<Zone>>>,
    events: Events,
    mut shutdown: watch::Receiver<bool>,
) {
    let origin = match client::fqdn(&target.zone) {
        Ok(o) => o,
        Err(e) => {
            events(format!("rfc2136 zone {}: {e}", target.zone));
            return;
        }
    };
    let mut sync = Syncer {
        target,
        origin,
        options,
        events,
        held: None,
        failing: BTreeSet::new(),
        conflicts: BTreeSet::new(),
    };
    let mut backoff = sync.options.backoff_min;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let current = zone.borrow_and_update().clone();
        if let Some(current) = current {
            let outcome = tokio::select! {
                r = sync.pass(&current) => r,
                _ = shutdown.changed() => return,
            };
            match outcome {
                Ok(()) => {
                    sync.succeeded();
                    backoff = sync.options.backoff_min;
                }
                Err(failure) => {
                    sync.failed(&failure);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(sync.options.backoff_max);
                    continue;
                }
            }
        }
        // Settled (or nothing to hold yet): wait for a change, the resync or the end.
        tokio::select! {
            changed = zone.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(sync.options.debounce) => {}
                    _ = shutdown.changed() => return,
                }
            }
            _ = tokio::time::sleep(sync.options.resync) => sync.held = None,
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::reconcile::plan::dns::DnsRecord;

    const ORIGIN: &str = "svc.mcp.example.net";

    fn a(service: &str, ip: &str) -> DnsRecord {
        DnsRecord {
            name: format!("{service}.{ORIGIN}"),
            data: RData::Addr(ip.parse().unwrap()),
        }
    }

    fn srv(route: &str, service: &str, port: u16) -> DnsRecord {
        let target = format!("{service}.{ORIGIN}");
        DnsRecord {
            name: format!("_{route}._tcp.{target}"),
            data: RData::Srv { port, target },
        }
    }

    /// The server after `changes`, from `held`.
    fn after(mut held: Holding, changes: &[Change]) -> Holding {
        for c in changes {
            held.apply(c, 30);
        }
        held
    }

    #[test]
    fn a_fresh_zone_gets_every_name_with_its_marker_and_then_nothing() {
        let zone: Zone = [a("hello", "10.0.0.1"), srv("http", "hello", 8080)].into();
        let want = wanted(&zone, ORIGIN);
        let (changes, conflicts) = diff(&Holding::default(), &want, 30);
        assert!(conflicts.is_empty());
        assert_eq!(changes.len(), 2);
        assert!(changes
            .iter()
            .all(|c| c.fresh && c.add[0] == Rr::Owner && c.delete.is_empty()));
        let held = after(Holding::default(), &changes);
        assert_eq!(diff(&held, &want, 30).0, vec![]);
    }

    #[test]
    fn a_move_swaps_the_address_in_one_change_and_a_removal_empties_the_name() {
        let before: Zone = [a("hello", "10.0.0.1"), a("other", "10.0.0.3")].into();
        let held = after(
            Holding::default(),
            &diff(&Holding::default(), &wanted(&before, ORIGIN), 30).0,
        );
        let moved: Zone = [a("hello", "10.0.0.2"), a("other", "10.0.0.3")].into();
        let (changes, _) = diff(&held, &wanted(&moved, ORIGIN), 30);
        assert_eq!(
            changes,
            vec![Change {
                name: format!("hello.{ORIGIN}"),
                fresh: false,
                delete: vec![Rr::A("10.0.0.1".parse().unwrap())],
                add: vec![Rr::A("10.0.0.2".parse().unwrap())],
            }]
        );
        let held = after(held, &changes);
        let removed: Zone = [a("other", "10.0.0.3")].into();
        let (changes, _) = diff(&held, &wanted(&removed, ORIGIN), 30);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].add, vec![]);
        assert_eq!(*changes[0].delete.last().unwrap(), Rr::Owner);
        let held = after(held, &changes);
        assert!(!held.names.contains_key(&format!("hello.{ORIGIN}")));
    }

    #[test]
    fn names_mcp_does_not_own_are_never_touched() {
        let hand = Holding {
            names: [
                (
                    format!("hand.{ORIGIN}"),
                    HeldName {
                        rrs: [(Rr::A("10.9.9.9".parse().unwrap()), 60)].into(),
                    },
                ),
                (format!("hello.{ORIGIN}"), HeldName::default()),
            ]
            .into(),
        };
        let zone: Zone = [a("hello", "10.0.0.1"), a("new", "10.0.0.2")].into();
        let (changes, conflicts) = diff(&hand, &wanted(&zone, ORIGIN), 30);
        assert_eq!(conflicts, vec![format!("hello.{ORIGIN}")]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].name, format!("new.{ORIGIN}"));
        // An empty zone deletes nothing that is not MCP's.
        assert_eq!(diff(&hand, &BTreeMap::new(), 30), (vec![], vec![]));
    }

    #[test]
    fn a_new_ttl_is_an_add_and_names_outside_the_zone_are_ignored() {
        let zone: Zone = [
            a("hello", "10.0.0.1"),
            DnsRecord {
                name: "hello.elsewhere.org".into(),
                data: RData::Addr("10.0.0.9".parse().unwrap()),
            },
        ]
        .into();
        let want = wanted(&zone, ORIGIN);
        assert_eq!(want.len(), 1);
        let held = after(Holding::default(), &diff(&Holding::default(), &want, 30).0);
        let (changes, _) = diff(&held, &want, 60);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].add.len(), 2);
        assert!(changes[0].delete.is_empty());
    }

    #[test]
    fn the_secret_file_must_be_private_and_base64() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tsig.key");
        let secret = "Dam/j0ff3ELKT/Injg2BcaOtyOPpU1LlBzz2HaE29hQ=";
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&path).unwrap_err().to_string();
        assert!(e.contains("tsig.key") && e.contains("0640"), "{e}");
        assert!(!e.contains(secret));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&path).unwrap().expose(), secret);
        std::fs::write(
            &path,
            format!("key \"mcp\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"),
        )
        .unwrap();
        assert_eq!(read_secret(&path).unwrap().expose(), secret);
        std::fs::write(
            &path,
            "key \"mcp\" { algorithm hmac-md5; secret \"eA==\"; };",
        )
        .unwrap();
        assert!(read_secret(&path)
            .unwrap_err()
            .to_string()
            .contains("hmac-sha256"));
        let bad = Secret::new("not base64!");
        let e = Target::new(
            "127.0.0.1:53".parse().unwrap(),
            ORIGIN,
            "mcp",
            &bad,
            Duration::from_secs(30),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not base64") && !e.contains("not base64!"),
            "{e}"
        );
    }
}
