//! Everything the CLI prints as data: tables for people and the stable `--json` shapes
//! of SPEC §10, built from the wire types in one place.

use mcp_proto::agent::v1::ServiceStatus;
use mcp_proto::master::v1 as wire;
use serde_json::{json, Value};

/// A plain text table with a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Unix seconds as RFC 3339 UTC (`2024-05-01T10:11:12Z`).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        // Outside years 1..9999 (a garbled timestamp from the wire).
        .unwrap_or_else(|| format!("@{unix}"))
}

/// How long ago, for people: `3s`, `5m`, `2h`, `4d`.
pub fn ago(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "0s".to_string(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn tier_of(s: &ServiceStatus) -> String {
    s.spec.as_ref().map_or_else(
        || "worker".to_string(),
        |spec| {
            if spec.tier.is_empty() {
                "worker".to_string()
            } else {
                spec.tier.clone()
            }
        },
    )
}

fn desired_count(s: &ServiceStatus) -> usize {
    s.components
        .iter()
        .filter(|c| c.desired == "running")
        .count()
}

fn running_count(s: &ServiceStatus) -> usize {
    s.components
        .iter()
        .filter(|c| c.observed == "running")
        .count()
}

/// Adds `"stale": true|false` to each object of a `list`/`ps` array: true when its
/// `node` did not answer the read, so the entry is as that node last reported it.
pub fn mark_stale(value: &mut Value, unanswered: &[String]) {
    for entry in value.as_array_mut().into_iter().flatten() {
        let stale = entry["node"]
            .as_str()
            .is_some_and(|n| unanswered.iter().any(|u| u == n));
        if let Some(map) = entry.as_object_mut() {
            map.insert("stale".to_string(), Value::Bool(stale));
        }
    }
}

/// For the tables: one line per node whose rows are as it last reported them.
pub fn unanswered_note(unanswered: &[String]) -> Option<String> {
    (!unanswered.is_empty()).then(|| {
        format!(
            "note: {} did not answer now; {} services are shown as last reported",
            unanswered.join(", "),
            if unanswered.len() == 1 {
                "its"
            } else {
                "their"
            }
        )
    })
}

/// `list --json`: one object per service.
pub fn list_json(services: &[ServiceStatus]) -> Value {
    Value::Array(
        services
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "node": s.node,
                    "tier": tier_of(s),
                    "desired": desired_count(s),
                    "running": running_count(s),
                    "state": s.desired,
                    "routes": s.components.iter().flat_map(|c| c.routes.iter().map(move |r| json!({
                        "component": c.name,
                        "name": r.name,
                        "address": r.address,
                        "public": r.public,
                        "hostname": r.hostname,
                        "mode": r.mode,
                        "port": r.port,
                        "url": r.url,
                    }))).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

pub fn list_table(services: &[ServiceStatus]) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let routes: Vec<String> = s
                .components
                .iter()
                .flat_map(|c| c.routes.iter())
                .map(|r| match (&r.url, &r.hostname, r.public) {
                    (Some(url), _, true) => format!("{url} -> {}", r.address),
                    (None, Some(h), true) => format!("https://{h}/ -> {}", r.address),
                    _ => format!("{} {}", r.name, r.address),
                })
                .collect();
            vec![
                s.name.clone(),
                s.node.clone(),
                tier_of(s),
                format!("{}/{}", running_count(s), desired_count(s)),
                routes.join(", "),
            ]
        })
        .collect();
    table(&["SERVICE", "NODE", "TIER", "RUNNING", "ROUTES"], &rows)
}

/// `ps --json`: one object per component instance.
pub fn ps_json(services: &[ServiceStatus]) -> Value {
    Value::Array(
        services
            .iter()
            .flat_map(|s| {
                s.components.iter().map(move |c| {
                    json!({
                        "service": s.name,
                        "component": c.name,
                        "node": s.node,
                        "state": c.observed,
                        "desired": c.desired,
                        "image": c.image,
                        "started_at": (c.started_at > 0).then(|| rfc3339(c.started_at)),
                        "driver": c.driver,
                    })
                })
            })
            .collect(),
    )
}

pub fn ps_table(services: &[ServiceStatus]) -> String {
    let now = now_unix();
    let rows: Vec<Vec<String>> = services
        .iter()
        .flat_map(|s| {
            s.components.iter().map(move |c| {
                vec![
                    s.name.clone(),
                    c.name.clone(),
                    s.node.clone(),
                    c.observed.clone(),
                    c.image.clone(),
                    if c.started_at > 0 {
                        ago(now - c.started_at)
                    } else {
                        "-".to_string()
                    },
                ]
            })
        })
        .collect();
    table(
        &["SERVICE", "COMPONENT", "NODE", "STATE", "IMAGE", "UPTIME"],
        &rows,
    )
}

/// `node list --json`: one object per node.
pub fn node_json(n: &wire::Node) -> Value {
    let r = n.resources.unwrap_or_default();
    json!({
        "name": n.name,
        "role": n.role,
        "arch": n.arch,
        "version": n.version,
        "state": n.state,
        "address": n.address,
        "pools": n.pools,
        "last_heartbeat_ms_ago": n.last_heartbeat_ms_ago,
        "cpu": r.cpu_used,
        "cpu_cores": r.cpu_cores,
        "memory": {"total": r.memory_total, "free": r.memory_free},
        "disk": {"total": r.disk_total, "free": r.disk_free},
        "containers": n.containers,
        "rpcs": n.rpcs,
        "binary_sha256": n.binary_sha256,
    })
}

fn gib(bytes: u64) -> String {
    format!("{:.1}GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn nodes_table(nodes: &[wire::Node]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let r = n.resources.unwrap_or_default();
            vec![
                n.name.clone(),
                n.role.clone(),
                n.arch.clone(),
                n.version.clone(),
                n.state.clone(),
                n.address.clone(),
                format!("{}ms", n.last_heartbeat_ms_ago),
                format!("{:.0}% of {}", r.cpu_used * 100.0, r.cpu_cores),
                format!("{} free of {}", gib(r.memory_free), gib(r.memory_total)),
                format!("{} free of {}", gib(r.disk_free), gib(r.disk_total)),
                n.pools.join(","),
                short_sha(&n.binary_sha256),
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "ROLE",
            "ARCH",
            "VERSION",
            "STATE",
            "ADDRESS",
            "HEARTBEAT",
            "CPU",
            "MEMORY",
            "DISK",
            "POOLS",
            "BINARY",
        ],
        &rows,
    )
}

/// One node's line of `mcp agent upgrade` (SPEC §9).
#[derive(Debug, Clone)]
pub struct UpgradeReport {
    pub node: String,
    /// The binary_sha256 the node ran before (empty when unknown).
    pub from: String,
    /// The binary_sha256 it was to run.
    pub to: String,
    /// `upgraded`, `unchanged`, `rolled back` or `not tried`.
    pub result: &'static str,
    /// Why, for `rolled back` and `not tried`; empty otherwise.
    pub reason: String,
}

/// `mcp agent upgrade --json`: `[{"node", "from", "to", "result", "reason"}]`.
pub fn upgrade_json(reports: &[UpgradeReport]) -> Value {
    Value::Array(
        reports
            .iter()
            .map(|r| {
                json!({
                    "node": r.node,
                    "from": r.from,
                    "to": r.to,
                    "result": r.result,
                    "reason": r.reason,
                })
            })
            .collect(),
    )
}

pub fn upgrade_table(reports: &[UpgradeReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                short_sha(&r.from),
                short_sha(&r.to),
                r.result.to_string(),
                r.reason.lines().next().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    table(&["NODE", "FROM", "TO", "RESULT", "REASON"], &rows)
}

/// The first 12 hex digits of a SHA-256, as tables show it (`-` when unknown).
pub fn short_sha(sha: &str) -> String {
    match sha.get(..12) {
        Some(short) => short.to_string(),
        None if sha.is_empty() => "-".to_string(),
        None => sha.to_string(),
    }
}

/// One service in detail, with drift.
pub fn service_json(s: &ServiceStatus) -> Value {
    json!({
        "name": s.name,
        "node": s.node,
        "tier": tier_of(s),
        "desired": s.desired,
        "drift": s.components.iter().any(|c| c.drift),
        "components": s.components.iter().map(|c| json!({
            "name": c.name,
            "driver": c.driver,
            "desired": c.desired,
            "observed": c.observed,
            "drift": c.drift,
            "image": c.image,
            "started_at": (c.started_at > 0).then(|| rfc3339(c.started_at)),
            "detail": c.detail,
            "memory_limit": (c.memory_limit > 0).then_some(c.memory_limit),
            "cpu_limit": (c.cpu_limit > 0.0).then_some(c.cpu_limit),
            "limits_enforced": c.limits_enforced,
            "limits_warning": (!c.limits_warning.is_empty()).then_some(&c.limits_warning),
            "oom_kills": c.oom_kills,
            "last_oom_at": (c.last_oom_at > 0).then(|| rfc3339(c.last_oom_at)),
            "routes": c.routes.iter().map(|r| json!({
                "name": r.name, "port": r.port, "address": r.address, "mode": r.mode,
                "public": r.public, "hostname": r.hostname,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// A component's limits for people: `64MiB 0.5cpu`, `-` without any, and
/// `(not enforced)` after limits the runtime does not enforce.
pub fn limits_cell(c: &mcp_proto::agent::v1::ComponentStatus) -> String {
    let mut parts = Vec::new();
    if c.memory_limit > 0 {
        parts.push(mcp_types::ByteSize(c.memory_limit).to_string());
    }
    if c.cpu_limit > 0.0 {
        parts.push(format!("{}cpu", c.cpu_limit));
    }
    if parts.is_empty() {
        return "-".to_string();
    }
    if !c.limits_enforced {
        parts.push("(not enforced)".to_string());
    }
    parts.join(" ")
}

pub fn event_json(e: &wire::Event) -> Value {
    json!({"at": rfc3339(e.at_ms / 1000), "at_ms": e.at_ms, "node": e.node, "message": e.message})
}

/// `route list --json`: one object per route and edge (SPEC §7).
pub fn routes_json(routes: &[wire::RouteView]) -> Value {
    Value::Array(
        routes
            .iter()
            .map(|r| {
                json!({
                    "hostname": r.hostname,
                    "service": r.service,
                    "component": r.component,
                    "route": r.route,
                    "mode": r.mode,
                    "edge": r.edge,
                    "backend": r.backend,
                    "cert_not_after": r.cert_not_after.map(rfc3339),
                    "state": r.state,
                    "error": (!r.error.is_empty()).then_some(&r.error),
                })
            })
            .collect(),
    )
}

pub fn routes_table(routes: &[wire::RouteView]) -> String {
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            vec![
                r.hostname.clone(),
                format!("{}/{}/{}", r.service, r.component, r.route),
                r.mode.clone(),
                if r.edge.is_empty() {
                    "-".to_string()
                } else {
                    r.edge.clone()
                },
                r.backend.clone(),
                r.cert_not_after.map_or("-".to_string(), rfc3339),
                if r.error.is_empty() {
                    r.state.clone()
                } else {
                    format!("{}: {}", r.state, r.error)
                },
            ]
        })
        .collect();
    table(
        &[
            "HOSTNAME",
            "SERVICE",
            "MODE",
            "EDGE",
            "BACKEND",
            "CERT EXPIRES",
            "STATE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1714558272), "2024-05-01T10:11:12Z");
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(600), "10m");
    }

    #[test]
    fn short_sha_is_twelve_hex_digits() {
        let sha = "ab".repeat(32);
        assert_eq!(short_sha(&sha), "abababababab");
        assert_eq!(short_sha(""), "-");
        assert_eq!(short_sha("abc"), "abc");
    }

    #[test]
    fn tables_pad() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
