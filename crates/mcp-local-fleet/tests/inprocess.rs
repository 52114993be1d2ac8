//! The control loop, generations, moves and rollbacks on a whole fleet inside the test
//! process (real master, real agents, mutual TLS, in-memory runtimes): each scenario
//! runs in well under a second of fleet time, without Docker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inprocess_fleet;

use std::time::Duration;

use inprocess_fleet::{eventually, InProcess};
use mcp_agent::runtime::fake::FakeStep;

fn definition(name: &str, node: &str, env: &str) -> String {
    format!(
        "name = \"{name}\"\nnode = \"{node}\"\n[[components]]\nname = \"web\"\nimage = \"mcp-test/hello:1\"\nenv = {{ V = \"{env}\" }}\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_removes_the_old_copy_and_generations_grow() {
    let fleet = InProcess::start(101, &["alpha", "beta"]).await;
    fleet
        .deploy(&[&definition("mover", "alpha", "1")])
        .await
        .unwrap();
    let first = fleet.copies("mover").await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, "alpha");
    assert!(first[0].1 > 0, "a deploy carries a generation: {first:?}");
    fleet
        .deploy(&[&definition("mover", "beta", "1")])
        .await
        .unwrap();
    // The deploy waits for the loop's pass: the old copy is gone when it returns.
    assert_eq!(fleet.hosts("mover"), ["beta"]);
    let second = fleet.copies("mover").await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(second[0].1 > first[0].1, "{first:?} then {second:?}");
    let events = fleet.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("removed mover") && e.contains("superseded")),
        "{events:#?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_on_a_node_that_comes_back_is_removed() {
    let mut fleet = InProcess::start(111, &["alpha", "beta"]).await;
    fleet
        .deploy(&[&definition("stale", "alpha", "1")])
        .await
        .unwrap();
    // alpha's agent goes away (its host keeps the instance); the service moves.
    fleet.stop_agent("alpha").await;
    fleet
        .deploy(&[&definition("stale", "beta", "1")])
        .await
        .unwrap();
    assert_eq!(fleet.hosts("stale"), ["alpha", "beta"]);
    // Every command reaches the newest copy.
    let stopped = fleet
        .client()
        .stop(fleet.request(mcp_proto::master::v1::ServiceRequest {
            service: "stale".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.status.unwrap().node, "beta");
    // alpha comes back: the loop removes its older copy, once.
    fleet.start_agent("alpha").await;
    let one = eventually(Duration::from_secs(10), || async {
        (fleet.hosts("stale") == ["beta"] && fleet.copies("stale").await.len() == 1).then_some(())
    })
    .await;
    assert!(
        one.is_some(),
        "hosts {:?}, copies {:?}, events {:#?}",
        fleet.hosts("stale"),
        fleet.copies("stale").await,
        fleet.events().await
    );
    assert_eq!(
        fleet.runtimes["beta"].count("remove"),
        0,
        "the newest copy stays"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_update_brings_the_previous_instance_back() {
    let fleet = InProcess::start(121, &["alpha"]).await;
    fleet
        .deploy(&[&definition("upd", "alpha", "old")])
        .await
        .unwrap();
    let runtime = fleet.runtimes["alpha"].clone();
    runtime.fail_once(FakeStep::Start, "web");
    let error = fleet
        .deploy(&[&definition("upd", "alpha", "new")])
        .await
        .unwrap_err();
    assert!(
        error.message().contains("step start failed"),
        "{}",
        error.message()
    );
    let restored = runtime.definition("upd", "web").expect("an instance");
    assert!(
        restored.env.iter().any(|(k, v)| k == "V" && v == "old"),
        "{:?}",
        restored.env
    );
    assert!(runtime.get("upd", "web").unwrap().running());
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_holds_placements_until_the_fleet_is_back() {
    let mut fleet = InProcess::start(131, &["alpha", "beta"]).await;
    let any = "name = \"held\"\n[[components]]\nname = \"web\"\nimage = \"mcp-test/hello:1\"\n";
    fleet.deploy(&[any]).await.unwrap();
    let before = fleet.hosts("held");
    assert_eq!(before.len(), 1);
    fleet.stop_master().await;
    fleet.start_master().await;
    // At once: the master must not place before the node holding it is back.
    fleet.deploy(&[any]).await.unwrap();
    assert_eq!(fleet.hosts("held"), before, "a second copy was started");
    assert_eq!(fleet.copies("held").await.len(), 1);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_never_makes_a_healthy_node_look_dead() {
    let fleet = InProcess::start(141, &["alpha"]).await;
    let service = |name: &str| mcp_proto::master::v1::ServiceRequest {
        service: name.into(),
    };
    for round in 0..3 {
        fleet
            .deploy(&[&definition("calm", "alpha", &round.to_string())])
            .await
            .unwrap();
        let c = fleet.client();
        c.clone()
            .stop(fleet.request(service("calm")))
            .await
            .unwrap();
        c.clone()
            .start(fleet.request(service("calm")))
            .await
            .unwrap();
        c.clone()
            .restart(fleet.request(service("calm")))
            .await
            .unwrap();
    }
    // Several heartbeats later, with every digest change answered.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let events = fleet.events().await;
    assert!(
        !events.iter().any(|e| e.contains("probing")),
        "a healthy node was probed: {events:#?}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_runtime_is_state_unknown_not_an_empty_node() {
    let fleet = InProcess::start(151, &["alpha"]).await;
    fleet
        .deploy(&[&definition("kept", "alpha", "1")])
        .await
        .unwrap();
    let runtime = fleet.runtimes["alpha"].clone();
    runtime.fail(FakeStep::List, "");
    // A slow Docker or a database error: several heartbeats go by in doubt.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fleet.copies("kept").await.len(),
        1,
        "the master forgot the node's services"
    );
    runtime.heal();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fleet.copies("kept").await.len(), 1);
    assert_eq!(fleet.hosts("kept"), ["alpha"]);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_no_longer_runs_a_service_gets_no_certificate_for_it() {
    let fleet = InProcess::start(161, &["alpha", "beta"]).await;
    fleet
        .deploy(&[&definition("certy", "alpha", "1")])
        .await
        .unwrap();
    let ask = |node: &'static str| {
        let fleet = &fleet;
        async move {
            fleet
                .as_node(node)
                .await
                .issue_certificate(mcp_proto::master::v1::IssueCertificateRequest {
                    service: "certy".into(),
                    node: node.into(),
                })
                .await
        }
    };
    assert!(ask("alpha").await.is_ok(), "the node running it may");
    assert_eq!(
        ask("beta").await.unwrap_err().code(),
        mcp_proto::tonic::Code::PermissionDenied
    );
    fleet
        .deploy(&[&definition("certy", "beta", "1")])
        .await
        .unwrap();
    // After the move (and the deploy's placement is over), only beta may.
    assert!(ask("beta").await.is_ok());
    let refused = ask("alpha").await.unwrap_err();
    assert_eq!(
        refused.code(),
        mcp_proto::tonic::Code::PermissionDenied,
        "{refused:?}"
    );
    // Removed: nobody may, not even the node that ran it last.
    fleet
        .client()
        .remove(fleet.request(mcp_proto::master::v1::ServiceRequest {
            service: "certy".into(),
        }))
        .await
        .unwrap();
    assert_eq!(
        ask("beta").await.unwrap_err().code(),
        mcp_proto::tonic::Code::PermissionDenied
    );
    fleet.shutdown().await;
}

fn public(name: &str, hostname: &str) -> String {
    format!(
        "name = \"{name}\"\nnode = \"alpha\"\n[[components]]\nname = \"web\"\nimage = \"mcp-test/hello:1\"\n[[components.routes]]\nname = \"https\"\nport = 8443\npublic = true\nhostname = \"{hostname}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_hostnames_are_allowed_unique_and_never_internal() {
    let fleet = InProcess::start(211, &["alpha"]).await;
    fleet
        .deploy(&[&public("photos", "photos.metacircular.net")])
        .await
        .expect("an allowed hostname deploys");
    // A redeploy of the same service keeps its hostname.
    fleet
        .deploy(&[&public("photos", "photos.metacircular.net")])
        .await
        .expect("a redeploy keeps its own hostname");
    let refused = |def: &[String], want: &'static str| {
        let defs: Vec<String> = def.to_vec();
        let fleet = &fleet;
        async move {
            let refs: Vec<&str> = defs.iter().map(String::as_str).collect();
            let e = fleet.deploy(&refs).await.expect_err(want);
            assert_eq!(e.code(), mcp_proto::tonic::Code::InvalidArgument, "{e}");
            assert!(e.message().contains(want), "{} lacks {want}", e.message());
        }
    };
    refused(
        &[public("other", "photos.metacircular.net")],
        "photos.metacircular.net is already the public hostname of service \"photos\"",
    )
    .await;
    refused(
        &[public("a", "same.metacircular.net"), public("b", "same.metacircular.net")],
        "b: components.web.routes.https.hostname: same.metacircular.net is already the public hostname of service \"a\"",
    )
    .await;
    refused(
        &[public("inner", "photos.svc.mcp.metacircular.net")],
        "is an internal name (*.svc.mcp.metacircular.net), never a public one",
    )
    .await;
    refused(
        &[public("evil", "evil.example.org")],
        "evil.example.org is not in allowed_domains [metacircular.net]",
    )
    .await;
}

/// A service asking for `cpu` cores, placed by the master (no node named) unless
/// `node` pins it.
fn with_cpu(name: &str, node: Option<&str>, cpu: f64) -> String {
    let pin = node.map_or(String::new(), |n| format!("node = \"{n}\"\n"));
    format!(
        "name = \"{name}\"\n{pin}[resources]\ncpu = {cpu:?}\n[[components]]\nname = \"web\"\nimage = \"mcp-test/hello:1\"\n"
    )
}

/// SPEC §4 and issue 14: a redeploy whose larger requests no longer fit its node
/// moves (started on the new node before the old copy goes); one that fits
/// nowhere fails naming every node, and the running copy stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_that_outgrows_its_node_moves_or_fails_naming_every_node() {
    // Every in-process agent reports this host's cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(cores >= 2.0, "needs two cores, has {cores}");
    let fleet = InProcess::start(85, &["alpha", "beta"]).await;
    // Equal nodes: alpha by name.
    fleet.deploy(&[&with_cpu("grow", None, 0.5)]).await.unwrap();
    assert_eq!(fleet.hosts("grow"), ["alpha"]);
    // alpha is then nearly full: cores - 0.5 requested.
    fleet
        .deploy(&[&with_cpu("filler", Some("alpha"), cores - 1.0)])
        .await
        .unwrap();
    // 1.5 cores no longer fit beside the filler on alpha: it moves to beta.
    fleet.deploy(&[&with_cpu("grow", None, 1.5)]).await.unwrap();
    assert_eq!(fleet.hosts("grow"), ["beta"]);
    let events = fleet.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("removed grow") && e.contains("superseded")),
        "{events:#?}"
    );
    // More than any node has: refused with each node's reason; beta keeps its copy.
    let err = fleet
        .deploy(&[&with_cpu("grow", None, cores + 1.0)])
        .await
        .expect_err("no node has that many cores");
    let text = err.message();
    assert!(text.contains("alpha: cpu"), "{text}");
    assert!(text.contains("beta: cpu"), "{text}");
    assert_eq!(fleet.hosts("grow"), ["beta"]);
    fleet.shutdown().await;
}
