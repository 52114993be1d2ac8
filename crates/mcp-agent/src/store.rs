//! The node's desired state in SQLite (WAL): services with their definitions and
//! whether they should run, and the host port published for each route. Every change
//! is committed here before the agent acts on it, so a SIGKILL at any moment loses
//! nothing the agent has acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use mcp_types::ServiceDef;
use rusqlite::{params, Connection, OptionalExtension};

/// Should a service run?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Running,
    Stopped,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }
    fn parse(s: &str) -> Desired {
        if s == "stopped" {
            Desired::Stopped
        } else {
            Desired::Running
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
}

/// The agent database.
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS services (
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
";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (creating) `<data_dir>/agent.db`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let conn =
            Connection::open(path).with_context(|| format!("open agent db {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .context("set WAL mode")?;
        conn.pragma_update(None, "synchronous", "FULL")
            .context("set synchronous")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)
            .context("create agent db schema")?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each write is one
        // transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a service's definition, desired state and ports in one transaction.
    pub fn put(&self, record: &ServiceRecord) -> anyhow::Result<()> {
        let spec = serde_json::to_string(&record.def).context("encode service")?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO services (name, spec, desired, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET spec = ?2, desired = ?3, updated_at = ?4",
            params![record.def.name, spec, record.desired.as_str(), now()],
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
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT spec, desired FROM services WHERE name = ?1",
                params![service],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((spec, desired)) = row else {
            return Ok(None);
        };
        let def: ServiceDef = serde_json::from_str(&spec)
            .with_context(|| format!("decode stored service {service}"))?;
        let ports = ports_of(&conn, service)?;
        Ok(Some(ServiceRecord {
            def,
            desired: Desired::parse(&desired),
            ports,
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
    pub fn used_ports(&self) -> anyhow::Result<Vec<u16>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT host_port FROM ports")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
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
}
