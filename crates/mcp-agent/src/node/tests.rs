//! The node over the in-memory runtime: deploy, idempotent redeploy, update, failed
//! updates and their restore, lifecycle, remove (fenced, interrupted), generations,
//! and adoption of instances a previous agent created. Milliseconds, no Docker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use mcp_types::ServiceDef;

use super::*;
use crate::runtime::fake::{FakeRuntime, FakeStep};

/// A node `node-a` on 127.0.0.1 over two fake runtimes, in a temporary directory.
struct Fixture {
    node: Node,
    docker: Arc<FakeRuntime>,
    exec: Arc<FakeRuntime>,
    dir: tempfile::TempDir,
}

/// Writes a certificate file, as the master's CA would.
struct FakeCerts;

#[async_trait::async_trait]
impl CertSource for FakeCerts {
    async fn provision(&self, _service: &str, service_dir: &Path) -> anyhow::Result<(i64, i64)> {
        let dir = service_dir.join("certs");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cert.pem"), "cert")?;
        Ok((now_s(), now_s() + 3600))
    }
}

fn config(dir: &Path) -> Config {
    Config::parse(
        "agent.toml",
        &format!(
            "name = \"node-a\"\nmaster = \"127.0.0.1:7000\"\nlisten = \"127.0.0.1:7443\"\ndata_dir = \"{}\"\nsrv_root = \"{}\"\n",
            dir.join("data").display(),
            dir.join("srv").display()
        ),
    )
    .unwrap()
}

fn fixture_with_db(dir: tempfile::TempDir, db: &Path) -> Fixture {
    let docker = Arc::new(FakeRuntime::new("docker"));
    let exec = Arc::new(FakeRuntime::new("exec"));
    let node = Node::with_cert_source(
        &config(dir.path()),
        Store::open(db).unwrap(),
        Some(docker.clone() as Arc<dyn Runtime>),
        exec.clone(),
        Some(Arc::new(FakeCerts)),
    );
    Fixture {
        node,
        docker,
        exec,
        dir,
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    fixture_with_db(dir, &db)
}

/// Service `name` with one container component `web` from `image`, route `http`.
fn def(name: &str, image: &str) -> ServiceDef {
    mcp_types::parse_definition(
        "t.toml",
        &format!(
            "name = \"{name}\"\n[[components]]\nname = \"web\"\nimage = \"{image}\"\n[[components.routes]]\nname = \"http\"\nport = 8080\n"
        ),
    )
    .unwrap()
}

impl Fixture {
    async fn deploy(
        &self,
        def: ServiceDef,
        generation: u64,
    ) -> Result<wire::ServiceStatus, NodeError> {
        self.node.deploy(def, generation, &no_events()).await
    }

    fn record(&self, service: &str) -> Option<ServiceRecord> {
        self.node.store.get(service).unwrap()
    }

    fn host_port(&self, service: &str) -> u16 {
        self.record(service).unwrap().ports[&("web".to_string(), "http".to_string())]
    }

    fn certs_dir(&self, service: &str) -> std::path::PathBuf {
        self.dir.path().join("srv").join(service).join("certs")
    }
}

#[tokio::test]
async fn deploy_then_redeploy_is_idempotent() {
    let f = fixture();
    let status = f.deploy(def("hello", "x:1"), 0).await.unwrap();
    assert_eq!(status.components[0].observed, "running");
    let web = f.docker.get("hello", "web").unwrap();
    assert!(web.digest.starts_with("v1:"), "{web:?}");
    assert!(f.certs_dir("hello").join("cert.pem").exists());
    let port = f.host_port("hello");
    let instance = f.docker.definition("hello", "web").unwrap();
    assert_eq!(instance.ports, vec![(8080, port)]);

    f.deploy(def("hello", "x:1"), 0).await.unwrap();
    assert_eq!(f.docker.count("create hello/"), 1, "{:?}", f.docker.calls());
    assert_eq!(f.docker.count("remove hello/"), 0);
    assert_eq!(
        f.docker.get("hello", "web").unwrap().started_at,
        web.started_at
    );
    assert_eq!(f.host_port("hello"), port);
}

#[tokio::test]
async fn an_update_replaces_the_changed_instance_on_the_same_port() {
    let f = fixture();
    f.deploy(def("hello", "x:1"), 1).await.unwrap();
    let port = f.host_port("hello");
    f.deploy(def("hello", "x:2"), 2).await.unwrap();
    assert_eq!(f.docker.count("create hello/web"), 2);
    let web = f.docker.get("hello", "web").unwrap();
    assert_eq!((web.image.as_str(), web.state.as_str()), ("x:2", "running"));
    assert_eq!(f.host_port("hello"), port);
}

/// An update whose new instance fails after the old one was removed brings the
/// previous instance back: previous definition, image and host port.
#[tokio::test]
async fn a_failed_update_brings_the_previous_instance_back() {
    for failing in [FakeStep::Create, FakeStep::Start] {
        let f = fixture();
        f.deploy(def("hello", "x:1"), 1).await.unwrap();
        let port = f.host_port("hello");
        f.docker.fail_once(failing, "web");
        let err = f.deploy(def("hello", "x:2"), 2).await.unwrap_err();
        let text = err.to_string();
        let step = if failing == FakeStep::Create {
            "create"
        } else {
            "start"
        };
        assert!(text.contains(&format!("step {step} failed")), "{text}");
        assert!(text.contains("previous definition was restored"), "{text}");
        let web = f
            .docker
            .get("hello", "web")
            .expect("the previous instance runs again");
        assert_eq!((web.image.as_str(), web.state.as_str()), ("x:1", "running"));
        let instance = f.docker.definition("hello", "web").unwrap();
        assert_eq!(instance.ports, vec![(8080, port)]);
        let record = f.record("hello").unwrap();
        assert_eq!(record.def.components[0].image.as_deref(), Some("x:1"));
        assert_eq!(record.generation, 1);
        assert_eq!(f.host_port("hello"), port);
    }
}

#[tokio::test]
async fn a_failed_restore_says_so() {
    let f = fixture();
    f.deploy(def("hello", "x:1"), 1).await.unwrap();
    f.docker.fail(FakeStep::Create, "web");
    let text = f
        .deploy(def("hello", "x:2"), 2)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("step create failed")
            && text.contains("restoring the previous definition also failed"),
        "{text}"
    );
    // The desired state is the previous one: a later start recreates it.
    f.docker.heal();
    f.node.start("hello").await.unwrap();
    assert_eq!(f.docker.get("hello", "web").unwrap().image, "x:1");
}

#[tokio::test]
async fn a_failed_fresh_deploy_leaves_nothing() {
    for failing in [FakeStep::Pull, FakeStep::Create, FakeStep::Start] {
        let f = fixture();
        f.docker.fail(
            failing,
            if failing == FakeStep::Pull {
                "x:1"
            } else {
                "web"
            },
        );
        let err = f.deploy(def("hello", "x:1"), 1).await.unwrap_err();
        assert!(matches!(err, NodeError::Step(_)), "{err}");
        assert!(
            f.docker.instances().is_empty(),
            "{:?}",
            f.docker.instances()
        );
        assert!(f.record("hello").is_none());
        assert!(!f.certs_dir("hello").exists(), "certificates left behind");
        assert!(f.node.cert_schedule().unwrap().is_empty());
        assert!(f.node.statuses().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn generations_fence_stale_deploys_and_removes() {
    let f = fixture();
    let status = f.deploy(def("hello", "x:1"), 5).await.unwrap();
    assert_eq!(status.generation, 5);

    let err = f.deploy(def("hello", "x:0"), 3).await.unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::StaleDeploy {
                held: 5,
                offered: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("generation 5 of hello"), "{err}");
    assert_eq!(f.docker.get("hello", "web").unwrap().image, "x:1");

    // No generation (an older master): accepted, the generation stays.
    f.deploy(def("hello", "x:1"), 0).await.unwrap();
    assert_eq!(f.record("hello").unwrap().generation, 5);
    // The same generation again is a retry.
    f.deploy(def("hello", "x:1"), 5).await.unwrap();
    let status = f.deploy(def("hello", "x:2"), 7).await.unwrap();
    assert_eq!(status.generation, 7);
    let listed = f.node.statuses().await.unwrap();
    assert_eq!(listed[0].generation, 7);

    let err = f.node.remove("hello", Some(6)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "node node-a holds generation 7 of hello, newer than 6: not removed"
    );
    assert!(f.docker.get("hello", "web").is_some());
    assert_eq!(f.record("hello").unwrap().desired, Desired::Running);
    f.node.remove("hello", Some(7)).await.unwrap();
    assert!(f.docker.instances().is_empty());
    assert!(f.record("hello").is_none());
}

#[tokio::test]
async fn lifecycle_stop_start_restart() {
    let f = fixture();
    f.deploy(def("hello", "x:1"), 1).await.unwrap();
    let status = f.node.stop("hello").await.unwrap();
    assert_eq!(status.desired, "stopped");
    assert_eq!(status.components[0].observed, "exited");
    assert!(!status.components[0].drift);
    let status = f.node.start("hello").await.unwrap();
    assert_eq!(status.components[0].observed, "running");
    let before = f.docker.get("hello", "web").unwrap().started_at;
    f.node.restart("hello").await.unwrap();
    assert!(f.docker.get("hello", "web").unwrap().started_at > before);
    assert_eq!(f.docker.count("create hello/web"), 1);
    assert!(matches!(
        f.node.stop("nope").await,
        Err(NodeError::NotFound(_))
    ));
    assert!(matches!(
        f.node.remove("nope", None).await,
        Err(NodeError::NotFound(_))
    ));
}

/// Remove commits a tombstone before it acts; a removal the runtime interrupted is
/// reported as "absent" and finished by the next start of the agent.
#[tokio::test]
async fn an_interrupted_remove_is_finished_later() {
    let f = fixture();
    f.deploy(def("hello", "x:1"), 1).await.unwrap();
    f.docker.fail(FakeStep::Remove, "web");
    let err = f.node.remove("hello", None).await.unwrap_err();
    assert!(err.to_string().contains("step remove failed"), "{err}");
    assert_eq!(f.record("hello").unwrap().desired, Desired::Removing);
    let listed = f.node.statuses().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].desired, "absent");
    assert!(matches!(
        f.node.logs("hello", "", false, None).await,
        Err(NodeError::NotFound(_))
    ));

    f.docker.heal();
    f.node.resume().await.unwrap();
    assert!(f.docker.instances().is_empty());
    assert!(f.record("hello").is_none());
    assert!(!f.certs_dir("hello").exists());
}

#[tokio::test]
async fn a_second_remove_finishes_an_interrupted_one() {
    let f = fixture();
    f.deploy(def("hello", "x:1"), 1).await.unwrap();
    f.docker.fail_once(FakeStep::Remove, "web");
    f.node.remove("hello", Some(1)).await.unwrap_err();
    assert_eq!(f.record("hello").unwrap().desired, Desired::Removing);
    f.node.remove("hello", Some(1)).await.unwrap();
    assert!(f.docker.instances().is_empty());
    assert!(f.record("hello").is_none());
    assert!(!f.certs_dir("hello").exists());
}

#[tokio::test]
async fn a_start_finishes_an_interrupted_remove() {
    let f = fixture();
    f.deploy(def("hello", "x:1"), 1).await.unwrap();
    f.docker.fail_once(FakeStep::Remove, "web");
    f.node.remove("hello", None).await.unwrap_err();
    assert!(matches!(
        f.node.start("hello").await,
        Err(NodeError::NotFound(_))
    ));
    assert!(f.docker.instances().is_empty());
    assert!(f.record("hello").is_none());
    // And a deploy after an interrupted removal starts afresh.
    f.deploy(def("hello", "x:1"), 2).await.unwrap();
    f.docker.fail_once(FakeStep::Remove, "web");
    f.node.remove("hello", None).await.unwrap_err();
    f.deploy(def("hello", "x:3"), 3).await.unwrap();
    assert_eq!(f.docker.get("hello", "web").unwrap().image, "x:3");
}

#[tokio::test]
async fn an_unreadable_runtime_is_an_error_not_an_empty_list() {
    let f = fixture();
    f.deploy(def("hello", "x:1"), 1).await.unwrap();
    f.exec.fail(FakeStep::List, "");
    assert!(f.node.statuses().await.is_err());
}

#[tokio::test]
async fn pruned_components_are_removed() {
    let f = fixture();
    let two = mcp_types::parse_definition(
        "t.toml",
        "name = \"pair\"\n[[components]]\nname = \"web\"\nimage = \"x:1\"\n[[components]]\nname = \"tick\"\ndriver = \"exec\"\ncommand = [\"sleep\", \"9\"]\n",
    )
    .unwrap();
    f.deploy(two, 1).await.unwrap();
    assert!(f.exec.get("pair", "tick").is_some());
    f.deploy(def("pair", "x:1"), 2).await.unwrap();
    assert!(f.exec.get("pair", "tick").is_none());
    assert!(f.docker.get("pair", "web").is_some());
}

/// An agent upgraded over a database and instances of the agent before schema
/// versions and identity versions: it migrates, reads the service back, and adopts
/// the running instance (legacy digest label) instead of replacing it.
#[tokio::test]
async fn an_upgraded_agent_adopts_without_replacing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/agent-v0.db"),
        &db,
    )
    .unwrap();
    let f = fixture_with_db(dir, &db);
    // As the agent at 696bf7d created it: its digest label, unprefixed.
    f.docker.seed(Observed {
        service: "hello".to_string(),
        component: "web".to_string(),
        state: "running".to_string(),
        image: "mcp-test/hello:1".to_string(),
        started_at: 42,
        digest: "ddd0b50b23b5be35".to_string(),
        detail: String::new(),
        ..Observed::default()
    });
    let adopted = f.node.resume().await.unwrap();
    assert_eq!(adopted.len(), 1);
    let listed = f.node.statuses().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].desired.as_str(), listed[0].generation),
        ("running", 0)
    );
    assert_eq!(listed[0].components[0].routes[0].address, "127.0.0.1:40123");
    assert!(!listed[0].components[0].drift);

    // Converging (start) and redeploying the same definition reuse it.
    f.node.start("hello").await.unwrap();
    let record = f.record("hello").unwrap();
    f.deploy(record.def.clone(), 9).await.unwrap();
    assert_eq!(f.docker.count("create "), 0, "{:?}", f.docker.calls());
    assert_eq!(f.docker.count("remove "), 0, "{:?}", f.docker.calls());
    let web = f.docker.get("hello", "web").unwrap();
    assert_eq!(
        (web.started_at, web.digest.as_str()),
        (42, "ddd0b50b23b5be35")
    );
    assert_eq!(f.record("hello").unwrap().generation, 9);

    // A changed definition does replace it, now with a versioned identity.
    let mut changed = record.def.clone();
    changed.components[0].image = Some("mcp-test/hello:2".to_string());
    f.deploy(changed, 10).await.unwrap();
    let web = f.docker.get("hello", "web").unwrap();
    assert!(web.digest.starts_with("v1:"), "{web:?}");
    assert_eq!(f.host_port("hello"), 40123);
}

#[tokio::test]
async fn exec_only_nodes_refuse_containers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::with_cert_source(
        &config(dir.path()),
        Store::open(&dir.path().join("agent.db")).unwrap(),
        None,
        Arc::new(FakeRuntime::new("exec")),
        None,
    );
    let err = node
        .deploy(def("hello", "x:1"), 1, &no_events())
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Invalid(_)), "{err}");
    assert!(node.store.get("hello").unwrap().is_none());
}

#[tokio::test]
async fn certificates_renew_only_for_services_the_node_holds() {
    let f = fixture();
    f.deploy(def("hello", "x:1"), 1).await.unwrap();
    f.node.renew_cert("hello").await.unwrap();
    assert!(f.certs_dir("hello").join("cert.pem").exists());
    f.node.remove("hello", None).await.unwrap();
    let err = f.node.renew_cert("hello").await.unwrap_err();
    assert!(
        err.to_string().contains("no longer on node node-a"),
        "{err}"
    );
    assert!(!f.certs_dir("hello").exists());
    assert!(f.node.cert_schedule().unwrap().is_empty());
}

#[tokio::test]
async fn an_image_without_the_nodes_platform_is_refused_before_anything_is_made() {
    use crate::runtime::platform::Platform;
    let f = fixture();
    let arch = config(f.dir.path()).arch();
    let (other, other_name) = match arch {
        mcp_types::Arch::Amd64 => (Platform::new("linux", "arm64", "v8"), "linux/arm64/v8"),
        mcp_types::Arch::Arm64 => (Platform::new("linux", "amd64", ""), "linux/amd64"),
    };
    let own = Platform::new("linux", arch.as_str(), "");
    f.docker.set_platforms("foreign:1", vec![other.clone()]);
    f.docker
        .set_platforms("multi:1", vec![other.clone(), own.clone()]);
    f.docker.set_platforms("own:1", vec![own]);

    // A fresh deploy: refused with both named; no record, no certificate, no instance.
    let err = f.deploy(def("hello", "foreign:1"), 0).await.unwrap_err();
    assert!(matches!(err, NodeError::Platform(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("image foreign:1 is {other_name}; node node-a is {arch}")
    );
    assert!(f.record("hello").is_none());
    assert!(!f.certs_dir("hello").exists());
    assert_eq!(f.docker.count("create"), 0, "{:?}", f.docker.calls());
    let status = crate::server::status_of(err);
    assert_eq!(
        mcp_proto::refusal::image_platform_of(&status).map(|r| r.platforms),
        Some(other_name.to_string())
    );

    // A multi-platform image that has the node's platform passes.
    f.deploy(def("multi", "multi:1"), 0).await.unwrap();

    // An update to a foreign image leaves the running service as it was.
    f.deploy(def("svc", "own:1"), 0).await.unwrap();
    let before = f.docker.get("svc", "web").unwrap();
    let creates = f.docker.count("create");
    let err = f.deploy(def("svc", "foreign:1"), 0).await.unwrap_err();
    assert!(matches!(err, NodeError::Platform(_)), "{err:?}");
    assert_eq!(f.docker.get("svc", "web").unwrap(), before);
    assert_eq!(f.docker.count("create"), creates);
    let kept = f.record("svc").unwrap();
    assert_eq!(kept.def.components[0].image.as_deref(), Some("own:1"));
}

/// `def` of service `name` with `[resources]` `resources`.
fn limited(name: &str, resources: &str) -> ServiceDef {
    mcp_types::parse_definition(
        "t.toml",
        &format!(
            "name = \"{name}\"\n[resources]\n{resources}\n[[components]]\nname = \"web\"\nimage = \"x:1\"\n"
        ),
    )
    .unwrap()
}

#[tokio::test]
async fn limits_reach_the_runtime_and_a_change_replaces_the_instance() {
    let f = fixture();
    let status = f
        .deploy(limited("lim", "memory = \"64MiB\"\ncpu = 0.5"), 0)
        .await
        .unwrap();
    let c = &status.components[0];
    assert_eq!((c.memory_limit, c.cpu_limit), (64 << 20, 0.5));
    assert!(c.limits_enforced && c.limits_warning.is_empty(), "{c:?}");
    let instance = f.docker.definition("lim", "web").unwrap();
    assert_eq!(instance.limits.memory, Some(mcp_types::ByteSize::mib(64)));
    assert_eq!(instance.limits.cpu, Some(0.5));

    // The same limits: kept. Other limits: replaced.
    f.deploy(limited("lim", "memory = \"64MiB\"\ncpu = 0.5"), 0)
        .await
        .unwrap();
    assert_eq!(f.docker.count("create lim/"), 1, "{:?}", f.docker.calls());
    f.deploy(limited("lim", "memory = \"128MiB\"\ncpu = 0.5"), 0)
        .await
        .unwrap();
    assert_eq!(f.docker.count("remove lim/"), 1, "{:?}", f.docker.calls());
    assert_eq!(f.docker.count("create lim/"), 2);
}

#[tokio::test]
async fn limits_a_runtime_cannot_enforce_are_a_warning_not_a_failure() {
    let f = fixture();
    f.docker
        .set_limits_warning("limits not enforced: cannot create cgroup x: permission denied");
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let status = f
        .node
        .deploy(limited("warned", "memory = \"64MiB\""), 0, &tx)
        .await
        .unwrap();
    drop(tx);
    let c = &status.components[0];
    assert!(!c.limits_enforced, "{c:?}");
    assert!(c.limits_warning.contains("permission denied"), "{c:?}");
    let mut said = Vec::new();
    while let Some(e) = rx.recv().await {
        if let Some(wire::deploy_event::Event::Step(s)) = e.event {
            said.push(format!("{} {} {}", s.step, s.component, s.message));
        }
    }
    assert!(
        said.iter()
            .any(|l| l.starts_with("limits web warning: limits not enforced")),
        "{said:?}"
    );
    assert!(said.last().unwrap().starts_with("done"), "{said:?}");
}
