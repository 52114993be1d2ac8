//! The node's desired state in SQLite (WAL): services with their definitions and
//! whether they should run, and the host port published for each route. Every change
//! is committed here before the agent acts on it, so a SIGKILL at any moment loses
//! nothing the agent has acknowledged.
//!
//! The schema is versioned (`PRAGMA user_version`, SPEC §13): `open` runs the ordered
//! migrations a database lacks and refuses one written by a newer agent. Stored
//! definitions carry their own format version (`{"v":1,"service":...}`); a bare
//! definition is the format agents wrote before versions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context};
use mcp_types::ServiceDef;
use rusqlite::{params, Connection, OptionalExtension};

/// Should a service run?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Running,
    Stopped,
    /// Removal committed, not yet finished (a tombstone): the agent removes its
    /// instances, then forgets the service. A crash in between leaves this, and the
    /// next start of the agent (or remove of the service) finishes the removal.
    Removing,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Removing => "removing",
        }
    }
    fn parse(s: &str) -> anyhow::Result<Desired> {
        match s {
            "running" => Ok(Desired::Running),
            "stopped" => Ok(Desired::Stopped),
            "removing" => Ok(Desired::Removing),
            other => bail!("unknown desired state {other:?}"),
        }
    }
}

/// One service as the node should have it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub def: ServiceDef,
    pub desired: Desired,
    /// Host port of each route: (component, route) -> port.
    pub ports: BTreeMap<(String, String), u16>,
    /// The generation of the deploy this record comes from; 0 for deploys that
    /// carried none (masters, and databases, from before generations).
    pub generation: u64,
}

impl ServiceRecord {
    /// The host port recorded for `route` of `component`.
    pub fn host_port(&self, component: &str, route: &str) -> Option<u16> {
        self.ports
            .get(&(component.to_string(), route.to_string()))
            .copied()
    }
}

/// The agent database.
pub struct Store {
    conn: Mutex<Connection>,
}

/// The schema this agent writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: u32 = 2;

/// The format of the stored definition JSON this agent writes.
pub const SPEC_FORMAT: u64 = 1;

/// Ordered migrations: `MIGRATIONS[n]` takes a database from version n to n + 1.
/// Append only: a released migration never changes.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // 0 -> 1. Version 0 is both an empty file and the unversioned schema of the first
    // agents (their tables, `IF NOT EXISTS`), to which 1 adds each service's generation.
    "CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    desired TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS certs (
    service TEXT PRIMARY KEY,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ports (
    service TEXT NOT NULL,
    component TEXT NOT NULL,
    route TEXT NOT NULL,
    host_port INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (service, component, route)
);
ALTER TABLE services ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;",
    // 1 -> 2. An edge node's public routes (`route`: versioned JSON, see `edge`).
    "CREATE TABLE edge_routes (
    hostname TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);",
];

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (creating) `<data_dir>/agent.db`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let mut conn =
            Connection::open(path).with_context(|| format!("open agent db {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .context("set WAL mode")?;
        conn.pragma_update(None, "synchronous", "FULL")
            .context("set synchronous")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn).with_context(|| format!("open agent db {}", path.display()))?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each write is one
        // transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a service's definition, desired state, generation and ports in one
    /// transaction.
    pub fn put(&self, record: &ServiceRecord) -> anyhow::Result<()> {
        let spec = encode_spec(&record.def)?;
        let generation = i64::try_from(record.generation)
            .with_context(|| format!("generation {} is out of range", record.generation))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO services (name, spec, desired, updated_at, generation)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET spec = ?2, desired = ?3, updated_at = ?4,
                 generation = ?5",
            params![
                record.def.name,
                spec,
                record.desired.as_str(),
                now(),
                generation
            ],
        )?;
        tx.execute(
            "DELETE FROM ports WHERE service = ?1",
            params![record.def.name],
        )?;
        for ((component, route), port) in &record.ports {
            tx.execute(
                "INSERT INTO ports (service, component, route, host_port) VALUES (?1, ?2, ?3, ?4)",
                params![record.def.name, component, route, port],
            )
            .with_context(|| {
                format!(
                    "record port {port} for {}/{component}/{route}",
                    record.def.name
                )
            })?;
        }
        tx.commit().context("commit service")?;
        Ok(())
    }

    /// Changes only the desired state.
    pub fn set_desired(&self, service: &str, desired: Desired) -> anyhow::Result<bool> {
        let n = self.conn().execute(
            "UPDATE services SET desired = ?2, updated_at = ?3 WHERE name = ?1",
            params![service, desired.as_str(), now()],
        )?;
        Ok(n > 0)
    }

    /// Forgets a service and its ports.
    pub fn delete(&self, service: &str) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM ports WHERE service = ?1", params![service])?;
        tx.execute("DELETE FROM certs WHERE service = ?1", params![service])?;
        tx.execute("DELETE FROM services WHERE name = ?1", params![service])?;
        tx.commit().context("commit removal")?;
        Ok(())
    }

    pub fn get(&self, service: &str) -> anyhow::Result<Option<ServiceRecord>> {
        let conn = self.conn();
        let row: Option<(String, String, i64)> = conn
            .query_row(
                "SELECT spec, desired, generation FROM services WHERE name = ?1",
                params![service],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .with_context(|| format!("read stored service {service}"))?;
        let Some((spec, desired, generation)) = row else {
            return Ok(None);
        };
        let def = decode_spec(&spec).with_context(|| format!("decode stored service {service}"))?;
        let desired =
            Desired::parse(&desired).with_context(|| format!("decode stored service {service}"))?;
        let ports = ports_of(&conn, service)?;
        Ok(Some(ServiceRecord {
            def,
            desired,
            ports,
            generation: u64::try_from(generation).unwrap_or(0),
        }))
    }

    /// Every service, by name.
    pub fn all(&self) -> anyhow::Result<Vec<ServiceRecord>> {
        let names: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT name FROM services ORDER BY name")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(record) = self.get(&name)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Records a service's internal certificate lifetime (Unix seconds).
    pub fn put_cert(&self, service: &str, not_before: i64, not_after: i64) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO certs (service, not_before, not_after) VALUES (?1, ?2, ?3)
             ON CONFLICT(service) DO UPDATE SET not_before = ?2, not_after = ?3",
            params![service, not_before, not_after],
        )?;
        Ok(())
    }

    /// Every service certificate: (service, not_before, not_after).
    pub fn certs(&self) -> anyhow::Result<Vec<(String, i64, i64)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT service, not_before, not_after FROM certs ORDER BY service")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every host port recorded for any service.
    /// Stores an edge route (its JSON); whether it replaced one.
    pub fn put_edge_route(&self, hostname: &str, route: &str) -> anyhow::Result<bool> {
        let conn = self.conn();
        let had: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM edge_routes WHERE hostname = ?1",
                [hostname],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)?;
        conn.execute(
            "INSERT INTO edge_routes (hostname, route, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(hostname) DO UPDATE SET route = excluded.route, updated_at = excluded.updated_at",
            rusqlite::params![hostname, route, now()],
        )?;
        Ok(had)
    }

    /// Removes an edge route; whether there was one.
    pub fn remove_edge_route(&self, hostname: &str) -> anyhow::Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM edge_routes WHERE hostname = ?1", [hostname])?
            > 0)
    }

    /// Every edge route's JSON, by hostname.
    pub fn edge_routes(&self) -> anyhow::Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT hostname, route FROM edge_routes ORDER BY hostname")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<(String, String)>, _>>()?;
        Ok(rows)
    }

    pub fn used_ports(&self) -> anyhow::Result<Vec<u16>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT host_port FROM ports")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Brings the database to `SCHEMA_VERSION`, one migration (and one transaction) at a
/// time; refuses a database from a newer agent.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .context("read the schema version")?;
    if found > SCHEMA_VERSION {
        bail!(
            "the database has schema version {found}, written by a newer agent; this agent \
             ({}) knows versions up to {SCHEMA_VERSION}: run a newer mcp-agent",
            crate::VERSION
        );
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = i64::try_from(from + 1).context("schema version")?;
        let tx = conn.transaction()?;
        tx.execute_batch(migration)
            .with_context(|| format!("migrate the schema from version {from} to {to}"))?;
        tx.pragma_update(None, "user_version", to)
            .with_context(|| format!("record schema version {to}"))?;
        tx.commit()
            .with_context(|| format!("commit schema version {to}"))?;
    }
    Ok(())
}

/// A stored definition: `{"v":SPEC_FORMAT,"service":{...}}`.
fn encode_spec(def: &ServiceDef) -> anyhow::Result<String> {
    let service = serde_json::to_value(def).context("encode service")?;
    Ok(serde_json::json!({ "v": SPEC_FORMAT, "service": service }).to_string())
}

/// Reads a stored definition in any format this agent knows: versioned, or the bare
/// definition of the first agents (format 0).
fn decode_spec(text: &str) -> anyhow::Result<ServiceDef> {
    let mut value: serde_json::Value = serde_json::from_str(text).context("parse JSON")?;
    let format = match value.get("v") {
        None => 0,
        Some(v) => v
            .as_u64()
            .with_context(|| format!("format version {v} is not a number"))?,
    };
    if format > SPEC_FORMAT {
        bail!(
            "stored in format {format} by a newer agent; this agent ({}) knows formats up to \
             {SPEC_FORMAT}",
            crate::VERSION
        );
    }
    let def = if format == 0 {
        value
    } else {
        value
            .get_mut("service")
            .map(serde_json::Value::take)
            .context("no \"service\" in the stored definition")?
    };
    serde_json::from_value(def).context("decode the definition")
}

fn ports_of(conn: &Connection, service: &str) -> anyhow::Result<BTreeMap<(String, String), u16>> {
    let mut stmt =
        conn.prepare("SELECT component, route, host_port FROM ports WHERE service = ?1")?;
    let rows = stmt.query_map(params![service], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            r.get::<_, u16>(2)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn def(name: &str) -> ServiceDef {
        mcp_types::parse_definition(
            "t.toml",
            &format!(
                "name = \"{name}\"\n[[components]]\nname = \"web\"\nimage = \"x:1\"\n[[components.routes]]\nname = \"http\"\nport = 8080\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn put_get_delete_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let record = ServiceRecord {
            def: def("hello"),
            desired: Desired::Running,
            ports: [(("web".to_string(), "http".to_string()), 40001)].into(),
            generation: 7,
        };
        {
            let store = Store::open(&path).unwrap();
            store.put(&record).unwrap();
            assert!(store.set_desired("hello", Desired::Stopped).unwrap());
        }
        let store = Store::open(&path).unwrap();
        let got = store.get("hello").unwrap().unwrap();
        assert_eq!(got.def, record.def);
        assert_eq!(got.desired, Desired::Stopped);
        assert_eq!(got.ports, record.ports);
        assert_eq!(got.generation, 7);
        assert_eq!(store.used_ports().unwrap(), vec![40001]);
        // A second service may not take a port already recorded.
        let clash = ServiceRecord {
            def: def("other"),
            ..record.clone()
        };
        assert!(store.put(&clash).is_err());
        assert!(
            store.get("other").unwrap().is_none(),
            "a failed put leaves nothing"
        );
        store.delete("hello").unwrap();
        assert!(store.all().unwrap().is_empty());
        assert!(store.used_ports().unwrap().is_empty());
    }

    /// A copy of `tests/data/agent-v0.db`, written by the agent before schema versions.
    fn v0_copy(dir: &Path) -> std::path::PathBuf {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/agent-v0.db");
        let to = dir.join("agent.db");
        std::fs::copy(&from, &to).unwrap();
        to
    }

    fn user_version(path: &Path) -> u32 {
        let conn = Connection::open(path).unwrap();
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_v0_database_migrates_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = v0_copy(dir.path());
        assert_eq!(user_version(&path), 0);
        {
            let store = Store::open(&path).unwrap();
            let got = store.get("hello").unwrap().unwrap();
            assert_eq!(got.def.name, "hello");
            assert_eq!(
                got.def.components[0].image.as_deref(),
                Some("mcp-test/hello:1")
            );
            assert_eq!(got.desired, Desired::Running);
            assert_eq!(got.generation, 0, "deployed before generations");
            assert_eq!(
                got.ports,
                [(("web".to_string(), "http".to_string()), 40123)].into()
            );
            assert_eq!(
                store.certs().unwrap(),
                vec![("hello".to_string(), 1_700_000_000, 1_800_000_000)]
            );
            // Written again, it takes the new format and keeps its generation.
            store
                .put(&ServiceRecord {
                    generation: 3,
                    ..got
                })
                .unwrap();
        }
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        // Opening an up-to-date database migrates nothing and loses nothing.
        let store = Store::open(&path).unwrap();
        assert!(
            store.edge_routes().unwrap().is_empty(),
            "1 -> 2 made the edge routes' table"
        );
        let got = store.get("hello").unwrap().unwrap();
        assert_eq!(got.generation, 3);
        let conn = store.conn();
        let spec: String = conn
            .query_row("SELECT spec FROM services WHERE name = 'hello'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
        assert_eq!(spec["v"], SPEC_FORMAT, "{spec}");
    }

    #[test]
    fn a_database_from_a_newer_agent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = format!("{:#}", Store::open(&path).err().unwrap());
        assert!(
            err.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
                && err.contains(&format!("up to {SCHEMA_VERSION}"))
                && err.contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn stored_definitions_read_in_every_known_format() {
        let d = def("hello");
        let bare = serde_json::to_string(&d).unwrap();
        assert_eq!(decode_spec(&bare).unwrap(), d);
        let versioned = encode_spec(&d).unwrap();
        assert!(versioned.contains("\"v\":1"), "{versioned}");
        assert_eq!(decode_spec(&versioned).unwrap(), d);
        let newer = format!("{{\"v\":{},\"service\":{bare}}}", SPEC_FORMAT + 1);
        let err = format!("{:#}", decode_spec(&newer).unwrap_err());
        assert!(err.contains("format 2 by a newer agent"), "{err}");
    }

    #[test]
    fn tombstones_keep_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("agent.db")).unwrap();
        let record = ServiceRecord {
            def: def("hello"),
            desired: Desired::Running,
            ports: BTreeMap::new(),
            generation: 2,
        };
        store.put(&record).unwrap();
        assert!(store.set_desired("hello", Desired::Removing).unwrap());
        let got = store.get("hello").unwrap().unwrap();
        assert_eq!(got.desired, Desired::Removing);
        assert_eq!(got.generation, 2);
    }
}
