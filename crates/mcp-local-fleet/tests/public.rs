//! Public routes end to end (SPEC §6 steps 4-5, §7), on the real binaries: the seed
//! fleet on 127.0.0.241-244 with svc's mc-proxy on 127.0.0.244:8443, clients that are
//! real `curl` and `openssl` processes trusting the embedded public CA
//! (`DIR/public-ca.pem`) or, for l4, the fleet CA.
//!
//! - an l7 route answers HTTP/1.1 and HTTP/2 through the edge with a certificate
//!   naming the public hostname only; `mcp route list` shows it;
//! - an l4 route passes TLS through to the service's own internal certificate;
//! - an off-list hostname and a duplicate hostname are refused with exit 2;
//! - stop answers 503, start serves again, remove takes the route off `mcp route
//!   list` and mc-proxy, and the hostname is refused again;
//! - availability under faults, with a bounded request loop through the edge: the
//!   master, the worker's agent and the edge agent SIGKILLed (0 failed requests;
//!   the restarted master re-pushes nothing), mc-proxy SIGKILLed and started again
//!   (its routes back within a second), and a move to another node (0 failed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// How a test runs its components: the exec driver, or containers of the test
/// images.
#[derive(Clone, Copy, PartialEq)]
enum Runtime {
    Exec,
    Docker,
}

/// Writes a one-component service with one public route and returns its path.
fn definition(
    dir: &Path,
    service: &str,
    component: &str,
    route: &str,
    node: Option<&str>,
) -> String {
    let node = node
        .map(|n| format!("node = \"{n}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "name = \"{service}\"\n{node}\n[[components]]\nname = \"web\"\n{component}\n[[components.routes]]\n{route}"
    );
    let path = dir.join(format!("{service}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A public l7 service of the hello server (plain HTTP backend), on `node` when given.
fn web(
    dir: &Path,
    runtime: Runtime,
    service: &str,
    host: &str,
    binary: &Path,
    node: Option<&str>,
) -> String {
    let component = match runtime {
        Runtime::Exec => format!("driver = \"exec\"\ncommand = [\"{}\"]\n", binary.display()),
        Runtime::Docker => "image = \"mcp-test/hello:1\"\n".to_string(),
    };
    let route = format!(
        "name = \"http\"\nport = 8080\nbackend_tls = false\npublic = true\nhostname = \"{host}\"\n"
    );
    definition(dir, service, &component, &route, node)
}

/// A public service serving TLS itself with its internal certificate: `l4`
/// passes it through, `l7` ends the client's TLS and verifies the backend's.
fn tls(dir: &Path, runtime: Runtime, service: &str, host: &str, mode: &str) -> String {
    let command: Vec<String> = TLS_COMMAND.iter().map(|c| format!("{c:?}")).collect();
    let command = command.join(", ");
    let component = match runtime {
        Runtime::Exec => format!("driver = \"exec\"\ncommand = [{command}]\n"),
        Runtime::Docker => format!(
            "image = \"mcp-test/tls:1\"\ncommand = [{command}]\nvolumes = [\"/srv/{service}/certs:/certs:ro\"]\n"
        ),
    };
    let route = format!(
        "name = \"https\"\nport = 8443\nmode = \"{mode}\"\npublic = true\nhostname = \"{host}\"\n"
    );
    definition(dir, service, &component, &route, None)
}

/// mc-proxy's own table: hostnames.
fn proxy_hosts(fleet: &Fleet) -> Vec<String> {
    let out = Command::new(fleet.bin.path("mc-proxy"))
        .args(["route", "list", "--json", "--socket"])
        .arg(fleet.spec.proxy_admin_socket("svc"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["hostname"].as_str().map(str::to_string))
        .collect()
}

/// Lines of the edge agent's log saying it set up a route.
fn setups(fleet: &Fleet) -> usize {
    fleet.log("svc").matches("edge route set up").count()
}

/// A fleet of the seed nodes on 127.0.0.`base`.. with `extra` in master.toml.
fn fleet(tmp: &Path, runtime: Runtime, base: u8, extra: &str) -> Fleet {
    let name = if runtime == Runtime::Docker {
        "docker"
    } else {
        "exec"
    };
    let mut spec = FleetSpec::seed_at(&tmp.join("fleet"), name, base);
    spec.master_extra = extra.to_string();
    Fleet::start(spec).unwrap()
}

/// Public l7 (plain and TLS backends) and l4 routes through the edge, refusals,
/// stop/start/remove. Services are named `<prefix>-...`.
fn routes_follow_the_service(fleet: &Fleet, runtime: Runtime, prefix: &str, binary: &Path) {
    let defs = fleet.spec.dir.parent().unwrap().to_path_buf();
    let defs = defs.as_path();
    let web_name = format!("{prefix}-web");
    let host = format!("{web_name}.metacircular.net");
    let host = host.as_str();
    let public_ca = fleet.spec.dir.join("public-ca.pem");
    let fleet_ca = fleet.spec.dir.join("master/ca.pem");
    let edge = edge_ip(fleet);

    // l7: the deploy ends with the hostname answering and its URL in the table.
    let out = mcp_ok(
        fleet,
        &[
            "deploy",
            &web(defs, runtime, &web_name, host, binary, Some("rift")),
        ],
    );
    assert!(
        out.contains(&format!("https://{host}:8443/")),
        "no public URL at the end of the deploy: {out}"
    );
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, body) = curl(fleet, host, &[flag]);
        assert_eq!(code, 200, "{flag}: {body}\n{}", fleet.log("mc-proxy"));
        assert!(
            body.contains(&format!("hello from {web_name} on rift")),
            "{body}"
        );
        assert!(body.ends_with(&format!(" {version}]")), "{flag}: {body}");
    }
    let route = route_of(fleet, host).expect("the route in mcp route list");
    assert_eq!(route["edge"], "svc", "{route}");
    assert_eq!(route["mode"], "l7", "{route}");
    assert_eq!(route["service"], web_name.as_str(), "{route}");
    assert_eq!(route["state"], "serving", "{route}");
    assert!(route["cert_not_after"].is_string(), "{route}");
    let rift = &fleet.spec.nodes[0].ip;
    assert!(
        route["backend"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{rift}:")),
        "{route}"
    );

    // The edge certificate names the public hostname only.
    let (text, client) = edge_cert(fleet, host, &public_ca);
    assert!(client.contains("Verify return code: 0 (ok)"), "{client}");
    assert!(text.contains(&format!("DNS:{host}")), "{text}");
    assert!(
        !text.contains("svc.mcp"),
        "an internal name on the edge cert: {text}"
    );
    assert_eq!(text.matches("DNS:").count(), 1, "{text}");

    // Refusals: off-list and duplicate hostnames.
    let dup_name = format!("{prefix}-dup");
    let off = fleet.mcp(&[
        "deploy",
        &web(defs, runtime, &dup_name, "x.example.org", binary, None),
    ]);
    assert_eq!(off.status.code(), Some(2), "{off:?}");
    let dup = fleet.mcp(&["deploy", &web(defs, runtime, &dup_name, host, binary, None)]);
    assert_eq!(dup.status.code(), Some(2), "{dup:?}");
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains(&web_name),
        "the refusal names the holder: {dup:?}"
    );

    // l7 to a TLS backend: verified against the fleet CA for its internal name.
    let sec_name = format!("{prefix}-sec");
    let sec_host = format!("{sec_name}.metacircular.net");
    mcp_ok(
        fleet,
        &["deploy", &tls(defs, runtime, &sec_name, &sec_host, "l7")],
    );
    let served = eventually(Duration::from_secs(10), || {
        let (code, body) = curl(fleet, &sec_host, &[]);
        (code == 200 && body.contains(TLS_PAGE)).then_some(())
    });
    assert!(
        served.is_some(),
        "l7 to a TLS backend: {:?}\n{}",
        curl(fleet, &sec_host, &[]),
        fleet.log("mc-proxy")
    );

    // l4: TLS passes through to the service's own internal certificate.
    let id_name = format!("{prefix}-id");
    let id_host = format!("{id_name}.metacircular.net");
    let id_host = id_host.as_str();
    mcp_ok(
        fleet,
        &["deploy", &tls(defs, runtime, &id_name, id_host, "l4")],
    );
    let internal = format!("DNS:{id_name}.svc.mcp.metacircular.net");
    let l4 = eventually(Duration::from_secs(10), || {
        let (text, client) = edge_cert(fleet, id_host, &fleet_ca);
        (text.contains(&internal) && client.contains("Verify return code: 0 (ok)")).then_some(text)
    });
    assert!(
        l4.is_some(),
        "the l4 route does not show the internal certificate: {:?}\n{}",
        edge_cert(fleet, id_host, &fleet_ca),
        fleet.log("mc-proxy")
    );
    let route = route_of(fleet, id_host).unwrap();
    assert_eq!(route["mode"], "l4");
    assert!(route["cert_not_after"].is_null(), "{route}");

    // Stop: 503 from the edge; start: served again.
    mcp_ok(fleet, &["stop", &web_name]);
    let (code, body) = curl(fleet, host, &[]);
    assert_eq!(code, 503, "{body}");
    assert_eq!(route_of(fleet, host).unwrap()["state"], "stopped");
    mcp_ok(fleet, &["start", &web_name]);
    let back = eventually(Duration::from_secs(10), || {
        (curl(fleet, host, &[]).0 == 200).then_some(())
    });
    assert!(back.is_some(), "{:?}", curl(fleet, host, &[]));

    // Remove: the route goes from the master's table and from mc-proxy, and the
    // hostname is refused again.
    for name in [&id_name, &sec_name] {
        mcp_ok(fleet, &["remove", name]);
    }
    assert!(route_of(fleet, id_host).is_none());
    assert!(!proxy_hosts(fleet).contains(&id_host.to_string()));
    let (_, client) = edge_cert(fleet, id_host, &fleet_ca);
    assert!(
        !client.contains("BEGIN CERTIFICATE"),
        "a removed hostname still handshakes: {client}"
    );
    let _ = edge;
}

#[test]
fn public_routes_with_the_exec_driver_survive_faults() {
    let binary = fixture(None);
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup {
        services: ["px-web", "px-id", "px-sec", "px-dup"]
            .map(String::from)
            .into(),
        programs: vec![binary.clone(), PathBuf::from("openssl")],
    };
    let mut fleet = fleet(tmp.path(), Runtime::Exec, 241, "");
    routes_follow_the_service(&fleet, Runtime::Exec, "px", &binary);
    let host = "px-web.metacircular.net";
    let defs = tmp.path();

    // Faults, with requests flowing through the edge all along.
    let load = Load::start(&fleet, host);
    load.advance(5);

    // The master: killed, started again; nothing re-pushed.
    let before = setups(&fleet);
    fleet.signal("master", libc::SIGKILL).unwrap();
    load.advance(10);
    fleet.start_master().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    load.advance(5);
    assert_eq!(
        route_of(&fleet, host).map(|r| r["state"].clone()),
        Some("serving".into())
    );
    assert_eq!(
        setups(&fleet),
        before,
        "a fresh master re-pushed a route that was right"
    );
    assert_eq!(load.counts().1, 0, "master killed: {:?}", load.errors());

    // The worker's agent and the edge agent.
    for node in ["rift", "svc"] {
        fleet.signal(node, libc::SIGKILL).unwrap();
        load.advance(10);
        fleet.start_agent(node).unwrap();
        load.advance(5);
        assert_eq!(load.counts().1, 0, "{node} killed: {:?}", load.errors());
    }

    // A move to orion: the route switches before the old copy goes.
    mcp_ok(
        &fleet,
        &[
            "deploy",
            &web(defs, Runtime::Exec, "px-web", host, &binary, Some("orion")),
        ],
    );
    load.advance(10);
    assert_eq!(load.counts().1, 0, "moved: {:?}", load.errors());
    let (_, body) = curl(&fleet, host, &[]);
    assert!(body.contains("on orion"), "{body}");
    let route = route_of(&fleet, host).unwrap();
    assert!(
        route["backend"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.242:"),
        "{route}"
    );

    // mc-proxy: killed and started again; its routes are back within a second.
    let failed = load.counts().1;
    fleet.signal("mc-proxy", libc::SIGKILL).unwrap();
    let killed = Instant::now();
    fleet.start_proxy("svc").unwrap();
    let back = eventually(Duration::from_secs(5), || {
        (curl(&fleet, host, &[]).0 == 200).then_some(killed.elapsed())
    });
    assert!(
        back.is_some_and(|t| t < Duration::from_secs(1)),
        "routes back after {back:?}"
    );
    drop(load);
    eprintln!("mc-proxy restart: routes back {back:?} after the kill; {failed} failures before it");

    mcp_ok(&fleet, &["remove", "px-web"]);
    assert!(route_of(&fleet, host).is_none());
    fleet.stop();
}

#[test]
fn public_routes_with_docker() {
    if std::process::Command::new("docker")
        .arg("info")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        assert!(!in_ci(), "docker is needed in CI");
        eprintln!("skipped: no docker engine");
        return;
    }
    let binary = fixture(None);
    tls_image(None);
    let services = ["pd-web", "pd-id", "pd-sec", "pd-dup"];
    purge(&services);
    struct Purge(&'static [&'static str]);
    impl Drop for Purge {
        fn drop(&mut self) {
            purge(self.0);
        }
    }
    let _purge = Purge(&["pd-web", "pd-id", "pd-sec", "pd-dup"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = fleet(tmp.path(), Runtime::Docker, 245, "");
    routes_follow_the_service(&fleet, Runtime::Docker, "pd", &binary);
    mcp_ok(&fleet, &["remove", "pd-web"]);
    fleet.stop();
}

/// Public certificates are renewed at two thirds of their lifetime (9 s here) while
/// requests flow, none failing.
#[test]
fn public_certificates_renew_without_failed_requests() {
    let binary = fixture(None);
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup {
        services: vec!["pr-web".to_string()],
        programs: vec![binary.clone()],
    };
    let fleet = fleet(
        tmp.path(),
        Runtime::Exec,
        251,
        "service_cert_ttl = \"9s\"\n",
    );
    let host = "pr-web.metacircular.net";
    mcp_ok(
        &fleet,
        &[
            "deploy",
            &web(tmp.path(), Runtime::Exec, "pr-web", host, &binary, None),
        ],
    );
    let first = route_of(&fleet, host).unwrap()["cert_not_after"].clone();
    assert!(first.is_string(), "{first}");
    let load = Load::start(&fleet, host);
    let mut seen = vec![first];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = route_of(&fleet, host).unwrap()["cert_not_after"].clone();
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
    assert!(
        seen.len() >= 3,
        "renewed {} times: {seen:?}",
        seen.len() - 1
    );
    let (text, _) = edge_cert(&fleet, host, &fleet.spec.dir.join("public-ca.pem"));
    assert!(text.contains(&format!("DNS:{host}")), "{text}");
    load.advance(5);
    assert_eq!(load.counts().1, 0, "renewals: {:?}", load.errors());
}
