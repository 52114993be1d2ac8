//! `<data_dir>/routes.db` (SPEC §13): the routes mc-proxy serves, in SQLite (WAL,
//! mode 0600), so they survive a restart with no help from the agent. A change is
//! committed here before the in-memory table is swapped. The schema is versioned
//! with `PRAGMA user_version`: an older database is migrated, a newer one refused.
//! Version 2 added `unavailable` (rows of version 1 load as available).

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use mcp_proto::mcproxy::admin::v1 as wire;
use rusqlite::{params, Connection, OptionalExtension as _};
use tracing::warn;

use crate::routes::{Pattern, Route, Table};
use crate::wire::{route_from_wire, route_to_wire};

/// The schema version this mc-proxy writes.
pub const VERSION: i64 = 2;
/// The file's name in `data_dir`.
pub const FILE: &str = "routes.db";
/// The schema of version 1; later versions alter it.
const SCHEMA_1: &str = "CREATE TABLE routes (
    hostname TEXT PRIMARY KEY NOT NULL,
    backend TEXT NOT NULL,
    mode TEXT NOT NULL,
    backend_tls INTEGER NOT NULL,
    backend_name TEXT NOT NULL,
    proxy_protocol INTEGER NOT NULL,
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    backend_ca_pem TEXT NOT NULL
);";

/// The open routes database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating, mode 0600) `<data_dir>/routes.db` and migrates it.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("create data_dir {}", data_dir.display()))?;
        let path = data_dir.join(FILE);
        // Created here with 0600 so SQLite (and its -wal and -shm files, which
        // take the database's mode) never holds keys in a looser file.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
        let conn = Connection::open(&path).with_context(|| format!("open {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .with_context(|| format!("{}: set WAL", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("{}: journal mode is {mode}, not wal", path.display());
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut store = Store { conn, path };
        store.migrate()?;
        Ok(store)
    }

    /// Brings the schema to `VERSION`; refuses a database written by a newer
    /// mc-proxy.
    fn migrate(&mut self) -> anyhow::Result<()> {
        let path = self.path.display().to_string();
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .with_context(|| format!("{path}: read user_version"))?;
        if version > VERSION {
            bail!(
                "{path} is at schema version {version}, newer than this mc-proxy's {VERSION}: \
                 refusing to open it (run a newer mc-proxy)"
            );
        }
        let tx = self.conn.transaction()?;
        if version < 1 {
            tx.execute_batch(SCHEMA_1)
                .with_context(|| format!("{path}: migrate to version 1"))?;
        }
        if version < 2 {
            tx.execute_batch(
                "ALTER TABLE routes ADD COLUMN unavailable INTEGER NOT NULL DEFAULT 0;",
            )
            .with_context(|| format!("{path}: migrate to version 2"))?;
        }
        tx.pragma_update(None, "user_version", VERSION)?;
        tx.commit()
            .with_context(|| format!("{path}: commit migration"))?;
        Ok(())
    }

    /// Stores the route of `pattern`, replacing any; whether one was replaced.
    pub fn put(&mut self, pattern: &Pattern, route: &Route) -> anyhow::Result<bool> {
        let w = route_to_wire(pattern, route, true);
        let tx = self.conn.transaction()?;
        let replaced = tx
            .query_row(
                "SELECT 1 FROM routes WHERE hostname = ?1",
                params![w.hostname],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        tx.execute(
            "INSERT OR REPLACE INTO routes (hostname, backend, mode, backend_tls, backend_name,
                proxy_protocol, cert_pem, key_pem, backend_ca_pem, unavailable)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                w.hostname,
                w.backend,
                w.mode,
                w.backend_tls,
                w.backend_name,
                w.proxy_protocol,
                w.cert_pem,
                w.key_pem,
                w.backend_ca_pem,
                w.unavailable
            ],
        )?;
        tx.commit()
            .with_context(|| format!("{}: commit route {pattern}", self.path.display()))?;
        Ok(replaced)
    }

    /// Removes the route of `pattern`; whether there was one.
    pub fn remove(&mut self, pattern: &Pattern) -> anyhow::Result<bool> {
        let n = self
            .conn
            .execute(
                "DELETE FROM routes WHERE hostname = ?1",
                params![pattern.to_string()],
            )
            .with_context(|| format!("{}: remove route {pattern}", self.path.display()))?;
        Ok(n > 0)
    }

    /// Every stored route, sorted by hostname. A row that no longer validates is
    /// left out with a warning rather than keeping every other route down.
    pub fn list(&self) -> anyhow::Result<Vec<(Pattern, Route)>> {
        let mut stmt = self.conn.prepare(
            "SELECT hostname, backend, mode, backend_tls, backend_name, proxy_protocol,
                cert_pem, key_pem, backend_ca_pem, unavailable FROM routes ORDER BY hostname",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(wire::Route {
                hostname: r.get(0)?,
                backend: r.get(1)?,
                mode: r.get(2)?,
                backend_tls: r.get(3)?,
                backend_name: r.get(4)?,
                proxy_protocol: r.get(5)?,
                cert_pem: r.get(6)?,
                key_pem: r.get(7)?,
                backend_ca_pem: r.get(8)?,
                unavailable: r.get(9)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            let w = row.with_context(|| format!("{}: read routes", self.path.display()))?;
            match route_from_wire(&w) {
                Ok(r) => out.push(r),
                Err(e) => warn!(hostname = %w.hostname, error = %e, "stored route skipped"),
            }
        }
        Ok(out)
    }

    /// The stored routes as a table.
    pub fn table(&self) -> anyhow::Result<Table> {
        let mut table = Table::new();
        for (pattern, route) in self.list()? {
            table.insert(&pattern.to_string(), route)?;
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Backend;

    fn route(port: u16) -> Route {
        Route::l4(Backend::Addr(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            port,
        ))))
    }

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).expect("pattern")
    }

    #[test]
    fn put_remove_list_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        assert!(s.list().expect("list").is_empty());
        assert!(!s.put(&pat("b.example.com"), &route(1)).expect("put"));
        assert!(!s.put(&pat("*.example.com"), &route(2)).expect("put"));
        assert!(s.put(&pat("b.example.com"), &route(3)).expect("put"));
        let l4_with_pp = Route {
            proxy_protocol: true,
            ..route(4)
        };
        s.put(&pat("c.example.com"), &l4_with_pp).expect("put");
        assert!(s.remove(&pat("c.example.com")).expect("remove"));
        assert!(!s.remove(&pat("c.example.com")).expect("remove"));
        s.put(&pat("d.example.com"), &l4_with_pp).expect("put");
        let stopped = Route {
            unavailable: true,
            ..route(5)
        };
        s.put(&pat("e.example.com"), &stopped).expect("put");
        drop(s);

        let s = Store::open(dir.path()).expect("reopen");
        let got = s.list().expect("list");
        let want = vec![
            (pat("*.example.com"), route(2)),
            (pat("b.example.com"), route(3)),
            (pat("d.example.com"), l4_with_pp),
            (pat("e.example.com"), stopped),
        ];
        assert_eq!(got, want);
        let t = s.table().expect("table");
        assert_eq!(t.lookup("z.example.com"), Some(&route(2)));
    }

    #[test]
    fn mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(&dir.path().join("sub")).expect("open");
        s.put(&pat("a.example.com"), &route(1)).expect("put");
        for name in ["routes.db", "routes.db-wal", "routes.db-shm"] {
            let path = dir.path().join("sub").join(name);
            let mode = std::fs::metadata(&path).expect(name).permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn newer_version_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("open"));
        let conn = Connection::open(dir.path().join(FILE)).expect("sqlite");
        conn.pragma_update(None, "user_version", 3).expect("bump");
        drop(conn);
        let e = Store::open(dir.path()).err().expect("refused").to_string();
        assert!(
            e.contains("schema version 3, newer than this mc-proxy's 2"),
            "{e}"
        );
    }

    /// A routes.db written by a version-1 mc-proxy (no `unavailable` column)
    /// loads, its routes available, and takes the new column from then on.
    #[test]
    fn version_1_rows_load_as_available() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join(FILE)).expect("sqlite");
        conn.execute_batch(&format!(
            "{SCHEMA_1}
            INSERT INTO routes VALUES ('a.example.com', '127.0.0.1:1', 'l4', 1, '', 0, '', '', '');
            PRAGMA user_version = 1;"
        ))
        .expect("version 1 database");
        drop(conn);
        let mut s = Store::open(dir.path()).expect("migrate");
        assert_eq!(
            s.list().expect("list"),
            vec![(pat("a.example.com"), route(1))]
        );
        let stopped = Route {
            unavailable: true,
            ..route(1)
        };
        assert!(s.put(&pat("a.example.com"), &stopped).expect("put"));
        drop(s);
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            s.list().expect("list"),
            vec![(pat("a.example.com"), stopped)]
        );
    }
}
