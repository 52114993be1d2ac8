//! Placement in `mcp dev` on a real engine (SPEC §3, §4): an image must match its
//! node, so an amd64-only image is never placed on hyperborea (which reports arm64
//! on this amd64 host) and pinned there fails naming both platforms; and a batch of
//! request-less services spreads over rift, orion and hyperborea.
//!
//! Docker's classic image store (Debian's Docker 20.10 here) keeps one platform per
//! image, so no single tag runs on both archs: the spread uses the exec driver, which
//! has no image and runs on every node, with the fixture's static binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use support::*;

const AMD64: &str = "mcp-test/hello:1";
const ARM64: &str = "mcp-test/hello-arm64:1";

/// `mcp --config DIR/mcp.toml ARGS...`.
fn mcp(dir: &Path, args: &[&str]) -> Output {
    let bin = mcp_local_fleet::Binaries::find().unwrap();
    Command::new(bin.path("mcp"))
        .arg("--config")
        .arg(dir.join("mcp.toml"))
        .args(args)
        .env_remove("MCP_MASTER")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `DIR/NAME.toml`: one component `web` (`component` holds its image or
/// driver lines) with a plain-HTTP route.
fn write(dir: &Path, name: &str, component: &str, extra: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n{extra}\n[[components]]\nname = \"web\"\n{component}\n\
             [[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn image(image: &str) -> String {
    format!("image = \"{image}\"")
}

/// `mcp list --json`, by service name.
fn services(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let out = mcp(dir, &["--json", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

fn node_of(list: &BTreeMap<String, serde_json::Value>, service: &str) -> String {
    list.get(service)
        .map(|s| s["node"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn assert_running(list: &BTreeMap<String, serde_json::Value>, service: &str) {
    let s = &list[service];
    assert!(
        s["desired"].as_u64().unwrap() > 0 && s["desired"] == s["running"],
        "{service} not running: {s}"
    );
}

const PLATFORM_SERVICES: &[&str] = &[
    "pf-a1",
    "pf-a2",
    "pf-a3",
    "pf-b1",
    "pf-b2",
    "pf-b3",
    "pf-pinned",
    "pf-arch",
    "pf-pi",
    "pf-c1",
    "pf-c2",
    "pf-c3",
];

#[test]
fn an_amd64_image_never_lands_on_hyperborea_and_pinned_there_fails() {
    fixture(None);
    let _addresses = dev_addresses();
    purge(PLATFORM_SERVICES);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let (_dev, _stdout, _stderr) = start_dev(&dir, "docker");
    let defs = tmp.path().join("defs");

    // One batch on an empty fleet: equal nodes tie by name, so hyperborea ranks
    // first; it refuses the image and the service is placed again elsewhere.
    let batch = defs.join("batch");
    for name in ["pf-a1", "pf-a2", "pf-a3"] {
        write(&batch, name, &image(AMD64), "");
    }
    let out = mcp(&dir, &["deploy", batch.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("{said}");
    assert!(
        said.contains("hyperborea refused image mcp-test/hello:1 (linux/amd64, node arm64)"),
        "the operator is not told why: {said}"
    );
    // Then, one at a time: hyperborea is remembered and not tried first again.
    for name in ["pf-b1", "pf-b2", "pf-b3"] {
        let out = mcp(&dir, &["deploy", &write(&defs, name, &image(AMD64), "")]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let list = services(&dir);
    for name in ["pf-a1", "pf-a2", "pf-a3", "pf-b1", "pf-b2", "pf-b3"] {
        let node = node_of(&list, name);
        assert!(
            node == "rift" || node == "orion",
            "{name} on {node:?}: {list:?}"
        );
        assert_running(&list, name);
    }
    let ps = mcp(&dir, &["--json", "ps"]);
    let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(
        !ps.as_array()
            .unwrap()
            .iter()
            .any(|c| c["node"] == "hyperborea" && c["image"] == AMD64),
        "an amd64 container on hyperborea: {ps}"
    );

    // Pinned to hyperborea: exit 1, both platforms named, nothing created.
    let pinned = write(&defs, "pf-pinned", &image(AMD64), "node = \"hyperborea\"");
    let out = mcp(&dir, &["--json", "deploy", &pinned]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["code"], 1, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("image mcp-test/hello:1 is linux/amd64; node hyperborea is arm64"),
        "{message}"
    );
    assert!(containers("pf-pinned", None).is_empty());
    assert!(!services(&dir).contains_key("pf-pinned"));

    // An arch named that the image lacks: the deploy fails too, never elsewhere.
    let arch = write(
        &defs,
        "pf-arch",
        &image(AMD64),
        "[resources]\narch = [\"arm64\"]",
    );
    let out = mcp(&dir, &["deploy", &arch]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("image mcp-test/hello:1 is linux/amd64; node hyperborea is arm64"),
        "{said}"
    );
    assert!(containers("pf-arch", None).is_empty());

    // The pool's services run with an image labelled for arm64 (the same static
    // binary, so it runs on this host too).
    let pi = write(&defs, "pf-pi", &image(ARM64), "node = \"pi-pool\"");
    let out = mcp(&dir, &["deploy", &pi]);
    assert!(out.status.success(), "{}", text(&out));
    let list = services(&dir);
    assert_eq!(node_of(&list, "pf-pi"), "hyperborea");
    assert_running(&list, "pf-pi");
    let address = list["pf-pi"]["routes"][0]["address"].as_str().unwrap();
    assert!(serves(address, "hello from pf-pi on hyperborea"));

    // And the other way round: an arm64-only image lands only on hyperborea.
    let arm = defs.join("arm");
    for name in ["pf-c1", "pf-c2", "pf-c3"] {
        write(&arm, name, &image(ARM64), "");
    }
    let out = mcp(&dir, &["deploy", arm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let list = services(&dir);
    for name in ["pf-c1", "pf-c2", "pf-c3"] {
        assert_eq!(node_of(&list, name), "hyperborea", "{name}: {list:?}");
        assert_running(&list, name);
    }

    for name in PLATFORM_SERVICES {
        let _ = mcp(&dir, &["remove", name]);
    }
}

#[test]
fn twenty_request_less_services_deployed_together_spread_over_the_workers() {
    let binary = fixture(None);
    let _addresses = dev_addresses();
    let names: Vec<String> = (1..=20).map(|i| format!("sp-{i:02}")).collect();
    for name in &names {
        purge_exec(name, &binary);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let (_dev, _stdout, _stderr) = start_dev(&dir, "docker");
    let batch = tmp.path().join("batch");
    let component = format!("driver = \"exec\"\ncommand = [\"{}\"]", binary.display());
    for name in &names {
        write(&batch, name, &component, "");
    }

    let out = mcp(&dir, &["deploy", batch.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let list = services(&dir);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for name in &names {
        assert_running(&list, name);
        *counts.entry(node_of(&list, name)).or_default() += 1;
        let address = list[name]["routes"][0]["address"].as_str().unwrap();
        assert!(
            serves(address, &format!("hello from {name} on ")),
            "{name} does not answer at {address}"
        );
    }
    let nodes: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(nodes, ["hyperborea", "orion", "rift"], "{counts:?}");
    let (least, most) = (
        counts.values().min().copied().unwrap(),
        counts.values().max().copied().unwrap(),
    );
    assert!(most - least <= 1, "not spread: {counts:?}");
    eprintln!("spread: {counts:?}");

    for name in &names {
        let out = mcp(&dir, &["remove", name]);
        assert!(out.status.success(), "{}", text(&out));
    }
}
