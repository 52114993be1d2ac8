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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const EDGE_IP: &str = "127.0.0.244";
const EDGE: &str = "127.0.0.244:8443";

/// Ends what a test started even when it fails: the exec instances of its services.
struct Cleanup {
    services: Vec<String>,
    programs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for service in &self.services {
            for program in &self.programs {
                purge_exec(service, program);
            }
        }
    }
}

/// A public l7 service of the hello binary (exec driver), on `node` when given.
fn web(dir: &Path, service: &str, host: &str, binary: &Path, node: Option<&str>) -> String {
    let node = node
        .map(|n| format!("node = \"{n}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "name = \"{service}\"\n{node}\n[[components]]\nname = \"web\"\ndriver = \"exec\"\ncommand = [\"{}\"]\n\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\npublic = true\nhostname = \"{host}\"\n",
        binary.display()
    );
    let path = dir.join(format!("{service}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A public l4 service serving TLS itself with its internal certificate.
fn tls_l4(dir: &Path, service: &str, host: &str) -> String {
    let command: Vec<String> = TLS_COMMAND.iter().map(|c| format!("{c:?}")).collect();
    let text = format!(
        "name = \"{service}\"\n\n[[components]]\nname = \"id\"\ndriver = \"exec\"\ncommand = [{}]\n\n[[components.routes]]\nname = \"https\"\nport = 8443\nmode = \"l4\"\npublic = true\nhostname = \"{host}\"\n",
        command.join(", ")
    );
    let path = dir.join(format!("{service}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `curl` through the edge: (HTTP status, body); status 0 when the request failed.
fn curl(fleet: &Fleet, host: &str, extra: &[&str]) -> (u16, String) {
    let ca = fleet.spec.dir.join("public-ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "3", "--cacert"])
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("{host}:8443:{EDGE_IP}"))
        .args(extra)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://{host}:8443/"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = tail
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, format!("{body} [{tail}]"))
}

/// The certificate the edge presents for `host`, as `openssl x509 -text` prints it,
/// and `openssl s_client`'s own output.
fn edge_cert(host: &str, ca: &Path) -> (String, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", EDGE, "-servername", host, "-CAfile"])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let client = String::from_utf8_lossy(&out.stdout).to_string();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let _ = x509.stdin.take().unwrap().write_all(client.as_bytes());
    }
    let text = String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).to_string();
    (text, client)
}

/// The route of `host` in `mcp route list --json`.
fn route_of(fleet: &Fleet, host: &str) -> Option<serde_json::Value> {
    fleet
        .mcp_json(&["route", "list"])
        .ok()?
        .as_array()?
        .iter()
        .find(|r| r["hostname"] == host)
        .cloned()
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

/// A bounded loop of requests through the edge in a thread, counting failures
/// (anything but 200) until stopped or `max` requests.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(ca: PathBuf, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f, e) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
        let host = host.to_string();
        let thread = std::thread::spawn(move || {
            for _ in 0..20_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let out = Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "--max-time", "5", "--cacert"])
                    .arg(&ca)
                    .arg("--resolve")
                    .arg(format!("{host}:8443:{EDGE_IP}"))
                    .args(["-w", "%{http_code}"])
                    .arg(format!("https://{host}:8443/"))
                    .output();
                match out {
                    Ok(out) if out.stdout == b"200" => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(out) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut e) = e.lock() {
                            e.push(format!(
                                "{} {}",
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                    }
                    Err(_) => {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Load {
            stop,
            ok,
            failed,
            errors,
            thread: Some(thread),
        }
    }

    /// (ok, failed) so far.
    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }

    /// Waits until at least `n` more requests succeeded.
    fn advance(&self, n: u64) {
        let start = self.counts().0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.counts().0 < start + n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.counts().0 >= start + n,
            "the load stalled: {:?}",
            self.counts()
        );
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn public_routes_serve_through_the_edge_and_follow_the_service() {
    let binary = fixture(None);
    let tmp = tempfile::tempdir().unwrap();
    let defs = tmp.path();
    let spec = FleetSpec::seed_at(&tmp.path().join("fleet"), "exec", 241);
    let _cleanup = Cleanup {
        services: ["pub-web", "pub-id", "pub-dup"].map(String::from).into(),
        programs: vec![
            binary.clone(),
            PathBuf::from("/bin/sh"),
            PathBuf::from("openssl"),
        ],
    };
    let mut fleet = Fleet::start(spec).unwrap();
    let host = "pub-web.metacircular.net";
    let public_ca = fleet.spec.dir.join("public-ca.pem");
    let fleet_ca = fleet.spec.dir.join("master/ca.pem");

    // l7: the deploy ends with the hostname answering and its URL in the table.
    let out = mcp_ok(
        &fleet,
        &["deploy", &web(defs, "pub-web", host, &binary, Some("rift"))],
    );
    assert!(
        out.contains(&format!("https://{host}:8443/")),
        "no public URL at the end of the deploy: {out}"
    );
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, body) = curl(&fleet, host, &[flag]);
        assert_eq!(code, 200, "{flag}: {body}\n{}", fleet.log("mc-proxy"));
        assert!(body.contains("hello from pub-web on rift"), "{body}");
        assert!(body.ends_with(&format!(" {version}]")), "{flag}: {body}");
    }
    let route = route_of(&fleet, host).expect("the route in mcp route list");
    assert_eq!(route["edge"], "svc", "{route}");
    assert_eq!(route["mode"], "l7", "{route}");
    assert_eq!(route["service"], "pub-web", "{route}");
    assert!(route["cert_not_after"].is_string(), "{route}");
    assert!(route["backend"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.241:"));

    // The edge certificate names the public hostname only.
    let (text, client) = edge_cert(host, &public_ca);
    assert!(client.contains("Verify return code: 0 (ok)"), "{client}");
    assert!(text.contains(&format!("DNS:{host}")), "{text}");
    assert!(
        !text.contains("svc.mcp"),
        "an internal name on the edge cert: {text}"
    );
    assert_eq!(text.matches("DNS:").count(), 1, "{text}");

    // Refusals: off-list and duplicate hostnames.
    let off = fleet.mcp(&[
        "deploy",
        &web(defs, "pub-dup", "x.example.org", &binary, None),
    ]);
    assert_eq!(off.status.code(), Some(2), "{off:?}");
    let dup = fleet.mcp(&["deploy", &web(defs, "pub-dup", host, &binary, None)]);
    assert_eq!(dup.status.code(), Some(2), "{dup:?}");
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("pub-web"),
        "the refusal names the holder: {dup:?}"
    );

    // l4: TLS passes through to the service's own internal certificate.
    let id_host = "pub-id.metacircular.net";
    mcp_ok(&fleet, &["deploy", &tls_l4(defs, "pub-id", id_host)]);
    let l4 = eventually(Duration::from_secs(10), || {
        let (text, client) = edge_cert(id_host, &fleet_ca);
        (text.contains("DNS:pub-id.svc.mcp.metacircular.net")
            && client.contains("Verify return code: 0 (ok)"))
        .then_some(text)
    });
    assert!(
        l4.is_some(),
        "the l4 route does not show the internal certificate: {:?}\n{}",
        edge_cert(id_host, &fleet_ca),
        fleet.log("mc-proxy")
    );
    let route = route_of(&fleet, id_host).unwrap();
    assert_eq!(route["mode"], "l4");
    assert!(route["cert_not_after"].is_null(), "{route}");

    // Stop: 503 from the edge; start: served again.
    mcp_ok(&fleet, &["stop", "pub-web"]);
    let (code, body) = curl(&fleet, host, &[]);
    assert_eq!(code, 503, "{body}");
    assert_eq!(route_of(&fleet, host).unwrap()["state"], "stopped");
    mcp_ok(&fleet, &["start", "pub-web"]);
    let back = eventually(Duration::from_secs(10), || {
        (curl(&fleet, host, &[]).0 == 200).then_some(())
    });
    assert!(back.is_some(), "{:?}", curl(&fleet, host, &[]));

    // Remove: the route goes from the master's table and from mc-proxy, and the
    // hostname is refused again.
    mcp_ok(&fleet, &["remove", "pub-id"]);
    assert!(route_of(&fleet, id_host).is_none());
    assert!(!proxy_hosts(&fleet).contains(&id_host.to_string()));
    let (_, client) = edge_cert(id_host, &fleet_ca);
    assert!(
        !client.contains("BEGIN CERTIFICATE"),
        "a removed hostname still handshakes: {client}"
    );

    // Faults, with requests flowing through the edge all along.
    let load = Load::start(public_ca.clone(), host);
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
            &web(defs, "pub-web", host, &binary, Some("orion")),
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
        back.is_some_and(|t| t < Duration::from_secs(2)),
        "routes back after {back:?}"
    );
    drop(load);
    eprintln!("mc-proxy restart: routes back {back:?} after the kill; {failed} failures before it");

    mcp_ok(&fleet, &["remove", "pub-web"]);
    assert!(route_of(&fleet, host).is_none());
    fleet.stop();
}
