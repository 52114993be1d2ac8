//! The Docker runtime against the real engine (`/var/run/docker.sock`, image
//! `mcp-test/hello:1` from tests/fixtures/hello-http/build.sh): `list` reports a
//! running container's start time correctly from the first heartbeat on, keeps it
//! without change while the container runs, and sees a restart. Fails loudly when
//! Docker is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mcp_agent::runtime::docker::{parse_rfc3339, DockerRuntime};
use mcp_agent::runtime::{container_name, Instance, Runtime};
use mcp_types::RestartPolicy;

/// Removes the test's container, even when the test fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn build_image() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hello-http/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run build.sh");
    assert!(
        out.status.success(),
        "build.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Docker's own view of the container's start time.
fn inspected_start(name: &str) -> i64 {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.StartedAt}}", name])
        .output()
        .expect("run docker inspect");
    parse_rfc3339(String::from_utf8_lossy(&out.stdout).trim())
}

#[tokio::test]
async fn list_reports_start_times_across_heartbeats_and_restarts() {
    build_image();
    let node = format!("agent-docker-test-{}", std::process::id());
    let docker = DockerRuntime::connect(Path::new("/var/run/docker.sock"), &node, "docker")
        .await
        .expect("this test needs Docker at /var/run/docker.sock");
    let name = container_name(&node, "clock", "web");
    let _cleanup = Cleanup(name.clone());
    let instance = Instance {
        service: "clock".to_string(),
        component: "web".to_string(),
        node: node.clone(),
        digest: "v1:test".to_string(),
        image: Some("mcp-test/hello:1".to_string()),
        command: Vec::new(),
        env: Vec::new(),
        ports: Vec::new(),
        host_ip: "127.0.0.1".parse().unwrap(),
        volumes: Vec::new(),
        restart: RestartPolicy::No,
        workdir: None,
        limits: Default::default(),
    };
    docker.create(&instance).await.unwrap();
    let listed = docker.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].state.as_str(), listed[0].started_at),
        ("created", 0)
    );

    docker.start("clock", "web").await.unwrap();
    let first = docker.list().await.unwrap();
    assert_eq!(first[0].state, "running");
    assert!(first[0].started_at > 0);
    assert_eq!(first[0].started_at, inspected_start(&name));
    assert_eq!(first[0].digest, "v1:test");
    let again = docker.list().await.unwrap();
    assert_eq!(again[0].started_at, first[0].started_at);

    // A restart in a later second: the new start time shows.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    docker.stop("clock", "web").await.unwrap();
    assert_eq!(docker.list().await.unwrap()[0].started_at, 0);
    docker.start("clock", "web").await.unwrap();
    let restarted = docker.list().await.unwrap();
    assert!(
        restarted[0].started_at > first[0].started_at,
        "{restarted:?}"
    );
    assert_eq!(restarted[0].started_at, inspected_start(&name));

    docker.remove("clock", "web").await.unwrap();
    assert!(docker.list().await.unwrap().is_empty());
}
