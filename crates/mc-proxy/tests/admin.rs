//! The admin API end to end with the real binary (127.0.0.181-182): `mc-proxy
//! route add` programs a running proxy through its 0600 socket, `openssl
//! s_client` then reaches an `openssl s_server` backend through it, `route list
//! --json` shows the route, a SIGKILLed proxy serves it again from `routes.db`
//! with no admin call, `route remove` makes the name unknown, and the exit codes
//! of bad input (2), an unreachable socket and a refused caller (3). Every
//! process is killed by its guard.

mod common;

use common::cli::{mc_proxy, text, BIN};

use common::{free_port, Child};

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROXY_IP: &str = "127.0.0.181";
const BACKEND_IP: &str = "127.0.0.182";

fn wait_listening(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `openssl s_server` on BACKEND_IP with a self-signed certificate for `cn`.
fn tls_backend(dir: &Path, cn: &str) -> (Child, String) {
    let cert = dir.join("backend-cert.pem");
    let key = dir.join("backend-key.pem");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(status.success(), "openssl req failed");
    let addr = format!("{BACKEND_IP}:{}", free_port(BACKEND_IP));
    let child = Child(
        Command::new("openssl")
            .args(["s_server", "-www", "-accept", &addr, "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server"),
    );
    wait_listening(&addr, "openssl s_server");
    (child, addr)
}

/// A proxy.toml in `dir`: (config path, listen address, admin socket).
fn config(dir: &Path) -> (PathBuf, String, PathBuf) {
    let listen = format!("{PROXY_IP}:{}", free_port(PROXY_IP));
    let socket = dir.join("run").join("admin.sock");
    let path = dir.join("proxy.toml");
    let text = format!(
        "listen = \"{listen}\"\nadmin_socket = \"{}\"\ndata_dir = \"{}\"\nhandshake_timeout = \"2s\"\n",
        socket.display(),
        dir.join("data").display()
    );
    std::fs::write(&path, text).expect("write config");
    (path, listen, socket)
}

fn start_proxy(config: &Path) -> Child {
    Child(
        Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mc-proxy"),
    )
}

/// Starts mc-proxy and waits for its listener and its admin socket.
fn start_serving(config: &Path, listen: &str, socket: &Path) -> Child {
    let proxy = start_proxy(config);
    wait_listening(listen, "mc-proxy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no admin socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy
}

/// `openssl s_client -servername name` through the proxy; its output.
fn s_client(listen: &str, name: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-servername", name, "-connect", listen])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    text(&out)
}

#[test]
fn route_add_serves_survives_sigkill_and_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_backend, backend) = tls_backend(dir.path(), "backend.admin.test");
    let (config, listen, socket) = config(dir.path());
    let mut proxy = start_serving(&config, &listen, &socket);
    let sock = socket.to_str().expect("utf-8 path");
    let mode = std::fs::metadata(&socket)
        .expect("stat socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket mode {mode:o}");

    assert!(s_client(&listen, "app.admin.test").contains("unrecognized name"));
    let out = mc_proxy(&[
        "route",
        "add",
        "--socket",
        sock,
        "--hostname",
        "App.Admin.Test",
        "--backend",
        &backend,
    ]);
    assert!(out.status.success(), "route add: {}", text(&out));
    let seen = s_client(&listen, "app.admin.test");
    assert!(seen.contains("CN = backend.admin.test"), "{seen}");

    let out = mc_proxy(&["route", "list", "--socket", sock, "--json"]);
    assert!(out.status.success(), "route list: {}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        list,
        serde_json::json!([{
            "hostname": "app.admin.test",
            "backend": backend,
            "mode": "l4",
            "backend_tls": true,
            "unavailable": false,
        }])
    );
    let out = mc_proxy(&["route", "list", "--socket", sock]);
    let table = text(&out);
    assert!(
        table.contains("HOSTNAME") && table.contains("app.admin.test"),
        "{table}"
    );

    // A crash: the route comes back from routes.db with no admin call.
    proxy.0.kill().expect("SIGKILL mc-proxy");
    proxy.0.wait().expect("reap");
    let started = Instant::now();
    let _proxy = start_proxy(&config);
    let served = loop {
        if std::net::TcpStream::connect(&listen).is_ok() {
            let seen = s_client(&listen, "app.admin.test");
            if seen.contains("CN = backend.admin.test") {
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the route did not come back after a restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        served < Duration::from_secs(1),
        "served again after {served:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = mc_proxy(&[
            "route",
            "remove",
            "--socket",
            sock,
            "--hostname",
            "app.admin.test",
        ]);
        if out.status.code() != Some(3) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(out.status.success(), "route remove: {}", text(&out));
    assert!(s_client(&listen, "app.admin.test").contains("unrecognized name"));
    let out = mc_proxy(&["route", "list", "--socket", sock, "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let none = dir.path().join("none.sock");
    let none = none.to_str().expect("utf-8 path");
    let add = |hostname: &str, extra: &[&str]| {
        let args = [
            &["route", "add", "--socket", none, "--hostname", hostname][..],
            &["--backend", "127.0.0.182:443"],
            extra,
        ]
        .concat();
        mc_proxy(&args)
    };
    for (out, want, says) in [
        (add("bad name", &[]), 2, "character outside"),
        (add("a.admin.test", &["--mode", "l9"]), 2, "l9"),
        (
            add("a.admin.test", &["--mode", "l7"]),
            2,
            "cert_pem: required",
        ),
        (add("a.admin.test", &["--cert", "x.pem"]), 2, "--key"),
        (add("a.admin.test", &[]), 3, "none.sock"),
        (
            mc_proxy(&["route", "list", "--socket", none]),
            3,
            "none.sock",
        ),
        (
            mc_proxy(&["route", "remove", "--socket", none, "--hostname", "*.x"]),
            2,
            "single label",
        ),
        (mc_proxy(&[]), 2, "--config"),
    ] {
        let t = text(&out);
        assert_eq!(out.status.code(), Some(want), "{t}");
        assert!(t.contains(says), "{t} lacks {says}");
    }
}

/// Run as root only: another uid that reaches the socket (opened up here on
/// purpose) is refused by the server with PermissionDenied, and the CLI exits 3.
#[test]
fn another_uid_is_refused() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    if std::fs::metadata(dir.path()).expect("stat").uid() != 0 {
        eprintln!("skipped: needs root to run the client as another uid");
        return;
    }
    let (config, listen, socket) = config(dir.path());
    let _proxy = start_serving(&config, &listen, &socket);
    // The binary where uid 65534 can run it, and a path it can reach.
    let bin = dir.path().join("mc-proxy");
    std::fs::copy(BIN, &bin).expect("copy binary");
    for (path, mode) in [
        (dir.path(), 0o711),
        (&dir.path().join("run"), 0o711),
        (&socket, 0o666),
        (&bin, 0o755),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["route", "list", "--socket"])
        .arg(&socket)
        .output()
        .expect("run setpriv");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("uid 65534 may not use"), "{t}");
}
