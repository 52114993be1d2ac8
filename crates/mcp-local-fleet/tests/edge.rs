//! The edge agent with its real mc-proxy (seed fleet on 127.0.0.221-224, exec
//! driver): SetupEdgeRoute, RemoveEdgeRoute and ListEdgeRoutes called as the
//! master (mutual TLS with a master certificate from the fleet CA); routes
//! committed to the agent's database and programmed into mc-proxy; material
//! mc-proxy refuses is refused and not kept; a worker refuses edge RPCs; a
//! mc-proxy that restarts with an empty routes.db gets the agent's table back,
//! and a route added behind the agent's back is taken out.
//! The routes' backends are on no node (127.0.0.229), so the master, which
//! takes a route off only when it knows it stale, leaves them alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mcp_local_fleet::{eventually, Fleet, FleetSpec};
use mcp_pki::ca::{Ca, CaKind};
use mcp_pki::tls::Identity;
use mcp_proto::agent::v1::{
    agent_client::AgentClient, EdgeRoute, ListEdgeRoutesRequest, RemoveEdgeRouteRequest,
    SetupEdgeRouteRequest,
};
use mcp_proto::tonic::Code;
use mcp_proto::transport::{ClientTls, ClientTransport};

/// mc-proxy's routes as `route list --json` prints them: (hostname, backend, mode).
fn proxy_routes(bin: &Path, socket: &Path) -> Vec<(String, String, String)> {
    let out = Command::new(bin)
        .args(["route", "list", "--json", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["hostname"].as_str().unwrap().to_string(),
                r["backend"].as_str().unwrap().to_string(),
                r["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn edge_routes_are_committed_programmed_and_reapplied() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = FleetSpec::seed_at(&tmp.path().join("fleet"), "exec", 221);
    let mut fleet = Fleet::start(spec).unwrap();
    let dir = fleet.spec.dir.clone();
    let mc_proxy = fleet.bin.path("mc-proxy");
    let socket = fleet.spec.proxy_admin_socket("svc");

    // A client with the master's identity, as the master dials agents.
    let ca = Ca::load(&dir.join("master")).unwrap();
    let issued = ca
        .issue(
            &[mcp_pki::MASTER_NAME.to_string()],
            Duration::from_secs(3600),
        )
        .unwrap();
    let id = Identity::from_pem(&issued.cert_pem, issued.key_pem.expose(), &[]).unwrap();
    let transport = |node: &str| ClientTransport {
        connect_timeout: Some(Duration::from_secs(3)),
        request_timeout: Some(Duration::from_secs(10)),
        tls: Some(ClientTls {
            config: mcp_pki::tls::client_config(ca.cert_der(), Some(&id)).unwrap(),
            server_name: node.to_string(),
        }),
    };
    let public = Ca::load_kind(&dir.join("master"), CaKind::Public).unwrap();
    let web_cert = public
        .issue(
            &["web.metacircular.net".to_string()],
            Duration::from_secs(3600),
        )
        .unwrap();
    let other_cert = public
        .issue(
            &["other.metacircular.net".to_string()],
            Duration::from_secs(3600),
        )
        .unwrap();
    let l4 = EdgeRoute {
        hostname: "auth.metacircular.net".into(),
        service: "mcias".into(),
        component: "api".into(),
        route: "tls".into(),
        backend: "127.0.0.229:41001".into(),
        mode: "l4".into(),
        ..Default::default()
    };
    let l7 = EdgeRoute {
        hostname: "web.metacircular.net".into(),
        service: "web".into(),
        component: "site".into(),
        route: "https".into(),
        backend: "127.0.0.229:41002".into(),
        mode: "l7".into(),
        backend_tls: true,
        backend_name: "web.svc.mcp.metacircular.net".into(),
        cert_pem: web_cert.cert_pem.clone(),
        key_pem: web_cert.key_pem.expose().to_string(),
        ..Default::default()
    };

    // mc-proxy's table as the agent should keep it: (hostname, backend, mode).
    let mut want = vec![
        (
            "auth.metacircular.net".to_string(),
            l4.backend.clone(),
            "l4".to_string(),
        ),
        (
            "web.metacircular.net".to_string(),
            l7.backend.clone(),
            "l7".to_string(),
        ),
    ];
    want.sort();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut svc = AgentClient::new(transport("svc").connect("127.0.0.224:9444").await.unwrap());
        for r in [&l4, &l7] {
            let reply = svc
                .setup_edge_route(SetupEdgeRouteRequest {
                    route: Some(r.clone()),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(!reply.replaced);
        }
        let listed = svc
            .list_edge_routes(ListEdgeRoutesRequest {})
            .await
            .unwrap()
            .into_inner()
            .routes;
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|r| r.key_pem.is_empty()), "keys listed");
        assert_eq!(proxy_routes(&mc_proxy, &socket), want);

        // A key that is not the certificate's: mc-proxy refuses, nothing is kept.
        let bad = EdgeRoute {
            hostname: "other.metacircular.net".into(),
            key_pem: web_cert.key_pem.expose().to_string(),
            cert_pem: other_cert.cert_pem.clone(),
            ..l7.clone()
        };
        let e = svc
            .setup_edge_route(SetupEdgeRouteRequest { route: Some(bad) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("mc-proxy refused"), "{}", e.message());
        let listed = svc
            .list_edge_routes(ListEdgeRoutesRequest {})
            .await
            .unwrap()
            .into_inner()
            .routes;
        assert_eq!(listed.len(), 2, "a refused route was kept");

        // A worker refuses edge RPCs with a clear error.
        let mut rift =
            AgentClient::new(transport("rift").connect("127.0.0.221:9444").await.unwrap());
        let e = rift
            .setup_edge_route(SetupEdgeRouteRequest {
                route: Some(l4.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        assert!(e.message().contains("rift is a worker"), "{}", e.message());
    });

    // mc-proxy comes back with an empty routes.db: the agent re-applies its table.
    fleet.signal("mc-proxy", libc::SIGKILL).unwrap();
    for f in ["routes.db", "routes.db-wal", "routes.db-shm"] {
        let _ = std::fs::remove_file(dir.join("svc/proxy").join(f));
    }
    fleet.start_proxy("svc").unwrap();
    let back = eventually(Duration::from_secs(10), || {
        (proxy_routes(&mc_proxy, &socket) == want).then_some(())
    });
    assert!(
        back.is_some(),
        "the routes did not come back: {:?}",
        proxy_routes(&mc_proxy, &socket)
    );

    // A route added behind the agent's back is taken out again.
    let out = Command::new(&mc_proxy)
        .args(["route", "add", "--socket"])
        .arg(&socket)
        .args([
            "--hostname",
            "stray.metacircular.net",
            "--backend",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let gone = eventually(Duration::from_secs(10), || {
        (proxy_routes(&mc_proxy, &socket) == want).then_some(())
    });
    assert!(gone.is_some(), "the stray route stayed");

    // Remove: gone from the agent and from mc-proxy.
    runtime.block_on(async {
        let mut svc = AgentClient::new(transport("svc").connect("127.0.0.224:9444").await.unwrap());
        let removed = svc
            .remove_edge_route(RemoveEdgeRouteRequest {
                hostname: l4.hostname.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .removed;
        assert!(removed);
    });
    assert_eq!(proxy_routes(&mc_proxy, &socket), vec![want[1].clone()]);
}
