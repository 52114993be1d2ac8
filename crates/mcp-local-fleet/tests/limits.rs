//! `[resources]` enforced as limits (SPEC §3), end to end on the real binaries:
//! Docker gets the memory (swap equal to it) and NanoCPUs; a component allocating
//! past its limit is OOM-killed, `mcp status` shows the event and its neighbour keeps
//! serving; a changed limit replaces the container. Exec gets a cgroup where the host
//! allows it, else a warning, decided here by the same probe the agent makes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mcp_types::{ByteSize, Limits};
use support::*;

const MIB: u64 = 1 << 20;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A service of one hello component on `route` 8080 (plain HTTP), with `resources`
/// and `component` lines added.
fn hello(name: &str, resources: &str, component: &str) -> String {
    format!(
        "name = \"{name}\"\n\n[resources]\n{resources}\n\n[[components]]\nname = \"web\"\n{component}\n\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n"
    )
}

fn inspect(id: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The first component of `service` in `mcp status SERVICE --json`.
fn component(fleet: &Fleet, service: &str) -> serde_json::Value {
    let status = fleet.mcp_json(&["status", service]).unwrap();
    status["services"][0]["components"][0].clone()
}

/// Waits until `mcp status SERVICE` counts an OOM kill and lists it as an event;
/// returns the status.
fn wait_for_oom(fleet: &Fleet, service: &str) -> serde_json::Value {
    let seen = eventually(Duration::from_secs(30), || {
        let status = fleet.mcp_json(&["status", service]).ok()?;
        let kills = status["services"][0]["components"][0]["oom_kills"].as_u64()?;
        let event = status["events"].as_array()?.iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains(service) && m.contains("killed at its memory limit"))
        });
        (kills >= 1 && event).then_some(status)
    });
    seen.unwrap_or_else(|| {
        panic!(
            "no OOM kill of {service} shown: {}",
            fleet.mcp_json(&["status", service]).unwrap()
        )
    })
}

#[test]
fn docker_limits_oom_and_updates() {
    fixture(None);
    purge(&["lim-web", "lim-hog"]);
    let tmp = tempfile::tempdir().unwrap();
    let node = "lim1";
    let mut fleet =
        Fleet::start(FleetSpec::single(tmp.path(), node, "127.0.8.1", "docker")).unwrap();

    // The limits reach the container.
    let web = write(
        tmp.path(),
        "lim-web",
        &hello(
            "lim-web",
            "memory = \"64MiB\"\ncpu = 0.5",
            "image = \"mcp-test/hello:1\"",
        ),
    );
    mcp_ok(&fleet, &["deploy", &web]);
    let address = address_of(&fleet, "lim-web");
    assert!(serves(&address, "hello from lim-web"));
    let id = containers("lim-web", None).remove(0);
    assert_eq!(
        inspect(
            &id,
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}}"
        ),
        "67108864 67108864 500000000"
    );
    let c = component(&fleet, "lim-web");
    assert_eq!(c["memory_limit"], 64 * MIB, "{c}");
    assert_eq!(c["cpu_limit"], 0.5, "{c}");
    assert_eq!(c["limits_enforced"], true, "{c}");
    assert_eq!(c["oom_kills"], 0, "{c}");
    let table = mcp_ok(&fleet, &["status", "lim-web"]);
    assert!(
        table.contains("LIMITS") && table.contains("64MiB 0.5cpu"),
        "{table}"
    );

    // A neighbour that allocates past its limit is killed; the event shows; lim-web
    // keeps serving.
    let hog = write(
        tmp.path(),
        "lim-hog",
        &hello(
            "lim-hog",
            "memory = \"16MiB\"",
            "image = \"mcp-test/hello:1\"\ncommand = [\"--alloc-mib\", \"64\"]\nrestart = \"no\"",
        ),
    );
    mcp_ok(&fleet, &["deploy", &hog]);
    let status = wait_for_oom(&fleet, "lim-hog");
    let hog_id = containers("lim-hog", None).remove(0);
    assert_eq!(inspect(&hog_id, "{{.State.OOMKilled}}"), "true");
    let c = &status["services"][0]["components"][0];
    assert!(c["last_oom_at"].is_string(), "{c}");
    let human = mcp_ok(&fleet, &["status", "lim-hog"]);
    assert!(
        human.contains("killed at its memory limit of 16MiB"),
        "{human}"
    );
    assert!(
        serves(&address, "hello from lim-web"),
        "the neighbour must keep serving"
    );
    assert_eq!(
        containers("lim-web", None),
        vec![id.clone()],
        "the neighbour was not touched"
    );

    // A limit change is an update: the container is replaced, with the new limits.
    let web = write(
        tmp.path(),
        "lim-web",
        &hello(
            "lim-web",
            "memory = \"96MiB\"\ncpu = 0.25",
            "image = \"mcp-test/hello:1\"",
        ),
    );
    let out = mcp_ok(&fleet, &["deploy", &web]);
    let _ = out;
    let ids = containers("lim-web", None);
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], id, "a changed limit replaces the container");
    assert_eq!(
        inspect(
            &ids[0],
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}}"
        ),
        format!("{} {} 250000000", 96 * MIB, 96 * MIB)
    );
    assert!(serves(&address_of(&fleet, "lim-web"), "hello from lim-web"));
    // The same limits again change nothing.
    mcp_ok(&fleet, &["deploy", &web]);
    assert_eq!(containers("lim-web", None), ids);

    mcp_ok(&fleet, &["remove", "lim-web"]);
    mcp_ok(&fleet, &["remove", "lim-hog"]);
    fleet.stop();
}

/// The cgroup directory of `pid` in the v1 memory hierarchy or the v2 one.
fn memory_cgroup_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts = mcp_agent::runtime::cgroup::parse_mountinfo(&mounts);
    let members = mcp_agent::runtime::cgroup::parse_proc_cgroup(&text);
    let v1 = members
        .iter()
        .find(|m| m.controllers.iter().any(|c| c == "memory"));
    let (mount, member) = match v1 {
        Some(m) => (
            mounts
                .iter()
                .find(|x| x.v == 1 && x.controllers.iter().any(|c| c == "memory"))?,
            m,
        ),
        None => (
            mounts.iter().find(|x| x.v == 2)?,
            members.iter().find(|m| m.controllers.is_empty())?,
        ),
    };
    Some(mount.point.join(member.path.trim_start_matches('/')))
}

#[test]
fn exec_limits_are_a_cgroup_or_a_warning() {
    let binary = fixture(None);
    let tmp = tempfile::tempdir().unwrap();
    let node = "lim2";
    let mut fleet = Fleet::start(FleetSpec::single(tmp.path(), node, "127.0.8.2", "exec")).unwrap();
    let limits = Limits {
        memory: Some(ByteSize::mib(64)),
        cpu: Some(0.5),
    };
    // The agent's own test: can a group be made here?
    let probe = mcp_agent::runtime::cgroup::Group::create(
        &format!("mcp-limits-probe-{}", std::process::id()),
        &limits,
    );
    let enforced = match &probe {
        Ok(group) => {
            group.remove();
            None
        }
        Err(why) => Some(why.clone()),
    };
    eprintln!(
        "this host: {}",
        enforced.as_deref().unwrap_or("cgroups can be made")
    );

    let program = binary.display().to_string();
    let def = write(
        tmp.path(),
        "lim-exec",
        &hello(
            "lim-exec",
            "memory = \"64MiB\"\ncpu = 0.5",
            &format!("driver = \"exec\"\ncommand = [\"{program}\"]"),
        ),
    );
    let out = fleet.mcp(&["deploy", &def]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    let address = address_of(&fleet, "lim-exec");
    assert!(serves(&address, "hello from lim-exec"), "{said}");
    let c = component(&fleet, "lim-exec");
    assert_eq!(c["memory_limit"], 64 * MIB, "{c}");
    assert_eq!(c["cpu_limit"], 0.5, "{c}");
    let pids = processes_of("lim-exec", &binary);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let group = memory_cgroup_of(pids[0]).expect("the process's memory cgroup");

    match &enforced {
        None => {
            // Applied: the process runs in its own group with the limit, and says so.
            assert_eq!(c["limits_enforced"], true, "{c}");
            assert!(c["limits_warning"].is_null(), "{c}");
            assert!(
                group.ends_with(format!("mcp.lim-exec.web.{node}")),
                "{} is not the instance's group",
                group.display()
            );
            let limit = ["memory.limit_in_bytes", "memory.max"]
                .iter()
                .find_map(|f| std::fs::read_to_string(group.join(f)).ok())
                .expect("a memory limit file");
            assert_eq!(limit.trim(), (64 * MIB).to_string());
            assert!(!said.contains("limits not enforced"), "{said}");

            // Past its limit, an exec process is OOM-killed too, and it shows.
            let hog = write(
                tmp.path(),
                "lim-exec-hog",
                &hello(
                    "lim-exec-hog",
                    "memory = \"16MiB\"",
                    &format!("driver = \"exec\"\ncommand = [\"{program}\", \"--alloc-mib\", \"64\"]\nrestart = \"on-failure\""),
                ),
            );
            mcp_ok(&fleet, &["deploy", &hog]);
            // The count and the master's event (wait_for_oom checks both). The
            // component's detail says it only while the process is down, and the
            // supervisor restarts it at once (on-failure): not checked, it races.
            wait_for_oom(&fleet, "lim-exec-hog");
            assert!(
                serves(&address, "hello from lim-exec"),
                "the neighbour must keep serving"
            );
            mcp_ok(&fleet, &["remove", "lim-exec-hog"]);
        }
        Some(why) => {
            // Not possible here: the deploy said so, and status keeps saying it.
            assert_eq!(c["limits_enforced"], false, "{c}");
            let warning = c["limits_warning"].as_str().unwrap_or_default();
            assert!(
                warning.contains(why.as_str()),
                "{warning} does not name {why}"
            );
            assert!(
                said.contains("limits not enforced") && said.contains(why.as_str()),
                "{said}"
            );
            let human = mcp_ok(&fleet, &["status", "lim-exec"]);
            assert!(
                human.contains("(not enforced)") && human.contains(why.as_str()),
                "{human}"
            );
        }
    }

    mcp_ok(&fleet, &["remove", "lim-exec"]);
    if enforced.is_none() {
        assert!(
            eventually(Duration::from_secs(5), || (!group.exists()).then_some(())).is_some(),
            "{} left after remove",
            group.display()
        );
    }
    fleet.stop();
}
