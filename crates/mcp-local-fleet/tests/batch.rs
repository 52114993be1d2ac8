//! A batch deploy, end to end on the real binaries with Docker (two workers, b1 on
//! 127.0.7.1 with the master, b2 on 127.0.7.2): `mcp deploy DIR` places the whole
//! batch, then deploys on both nodes at the same time, a dependent only once its
//! dependency runs; a failed service fails alone with its dependents (not tried),
//! the others deploy, and the exit code and `--json` error say so. Asserted on the
//! order of the progress lines the CLI streams (one ordered stream from the master),
//! not on wall time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::*;

const SERVICES: &[&str] = &[
    "bt-a1",
    "bt-a2",
    "bt-db",
    "bt-app",
    "bt-c1",
    "bt-c2",
    "bt-bad",
    "bt-bad-dep",
    "bt-good",
];

fn write(dir: &Path, name: &str, image: &str, extra: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\n{extra}\n[[components]]\nname = \"web\"\nimage = \"{image}\"\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n"
        ),
    )
    .unwrap();
}

/// The CLI's step lines (`  SERVICE@NODE  STEP  message`, service-wide steps only),
/// in the order it printed them: (service, node, step).
fn steps(stderr: &str) -> Vec<(String, String, String)> {
    stderr
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (target, step) = (words.next()?, words.next()?);
            let (service, node) = target.split_once('@')?;
            (!service.contains('/')).then(|| (service.into(), node.into(), step.into()))
        })
        .collect()
}

fn position(steps: &[(String, String, String)], service: &str, step: &str) -> usize {
    steps
        .iter()
        .position(|(s, _, st)| s == service && st == step)
        .unwrap_or_else(|| panic!("no {step} line for {service} in {steps:?}"))
}

#[test]
fn a_batch_deploys_on_nodes_at_once_in_dependency_order_and_failures_stay_isolated() {
    fixture(None);
    purge(SERVICES);
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::single(tmp.path(), "b1", "127.0.7.1", "docker");
    spec.nodes
        .push(mcp_local_fleet::NodeSpec::worker("b2", "127.0.7.2"));
    let fleet = Fleet::start(spec).unwrap();
    fleet
        .wait_registered(
            &["b1".to_string(), "b2".to_string()],
            std::time::Duration::from_secs(20),
        )
        .unwrap();

    // One batch: three services on b1 (bt-db among them), three on b2, one of which
    // (bt-app) depends on bt-db.
    let ok = tmp.path().join("ok");
    std::fs::create_dir(&ok).unwrap();
    for name in ["bt-a1", "bt-a2", "bt-db"] {
        write(&ok, name, "mcp-test/hello:1", "node = \"b1\"");
    }
    for name in ["bt-c1", "bt-c2"] {
        write(&ok, name, "mcp-test/hello:1", "node = \"b2\"");
    }
    write(
        &ok,
        "bt-app",
        "mcp-test/hello:1",
        "node = \"b2\"\ndepends_on = [\"bt-db\"]",
    );
    let out = fleet.mcp(&["deploy", ok.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let lines = steps(&stderr);
    // Every service was placed before any started deploying.
    let first_record = lines.iter().position(|(_, _, st)| st == "record").unwrap();
    for name in ["bt-a1", "bt-a2", "bt-db", "bt-app", "bt-c1", "bt-c2"] {
        let placed = stderr
            .lines()
            .position(|l| l.starts_with(&format!("{name}: on ")))
            .unwrap_or_else(|| panic!("no placement line for {name}\n{stderr}"));
        let record = stderr
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{name}@")) && l.contains(" record "))
            .unwrap();
        assert!(placed < record, "{name} placed after it started\n{stderr}");
        let _ = position(&lines, name, "done");
        assert!(stdout.contains(name), "{name} in the table\n{stdout}");
    }
    assert!(first_record < lines.len());
    // The dependent started only once its dependency ran.
    assert!(
        position(&lines, "bt-db", "done") < position(&lines, "bt-app", "record"),
        "bt-app started before bt-db was running\n{stderr}"
    );
    // The nodes deployed at the same time: some service on one node started while one
    // on the other was between its start and its end.
    let overlap = lines
        .iter()
        .filter(|(_, _, st)| st == "record")
        .any(|(x, xn, _)| {
            let (start, end) = (position(&lines, x, "record"), position(&lines, x, "done"));
            lines[start..end]
                .iter()
                .any(|(_, yn, st)| yn != xn && st == "record")
        });
    assert!(overlap, "no two nodes deployed at the same time\n{stderr}");
    // And one node, one at a time (the agent deploys one service at a time).
    for node in ["b1", "b2"] {
        let mut open = 0;
        for (_, n, st) in &lines {
            if n == node && st == "record" {
                open += 1;
                assert_eq!(open, 1, "two deploys at once on {node}\n{stderr}");
            } else if n == node && st == "done" {
                open -= 1;
            }
        }
    }
    for name in ["bt-app", "bt-c1", "bt-a1"] {
        assert!(serves(&address_of(&fleet, name), "hello"), "{name} serves");
    }

    // A failure stays with its service and what depends on it.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    write(&bad, "bt-bad", "mcp-test/does-not-exist:1", "node = \"b1\"");
    write(
        &bad,
        "bt-bad-dep",
        "mcp-test/hello:1",
        "node = \"b2\"\ndepends_on = [\"bt-bad\"]",
    );
    write(&bad, "bt-good", "mcp-test/hello:1", "node = \"b2\"");
    let out = fleet.mcp(&["deploy", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let lines = steps(&stderr);
    let _ = position(&lines, "bt-good", "done");
    let _ = position(&lines, "bt-bad", "failed");
    let _ = position(&lines, "bt-bad-dep", "failed");
    assert!(
        !lines
            .iter()
            .any(|(s, _, st)| s == "bt-bad-dep" && st == "record"),
        "bt-bad-dep was tried\n{stderr}"
    );
    assert!(
        stdout.contains("bt-good"),
        "the table shows what did deploy\n{stdout}"
    );
    assert!(
        stderr.contains("deploy bt-bad: ") && stderr.contains("step pull failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("deploy bt-bad-dep: not deployed: it depends on bt-bad"),
        "{stderr}"
    );
    assert!(serves(&address_of(&fleet, "bt-good"), "hello"));
    assert!(containers("bt-bad", None).is_empty());
    assert!(containers("bt-bad-dep", None).is_empty());
    assert_eq!(db_rows(&fleet, "b2", "bt-bad-dep"), 0);

    // The same with --json: the SPEC §10 error object, code 1, naming both.
    let out = fleet.mcp(&["--json", "deploy", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(error["code"], 1, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("deploy bt-bad: ") && message.contains("deploy bt-bad-dep: not deployed"),
        "{error}"
    );
    assert!(!message.contains("bt-good"), "{error}");
}
