//! Security end to end, on the real binaries (the negative cases are the point):
//! operators need a valid, unexpired, untampered token and the admin role to change
//! anything; agents need the join token of this fleet's CA and may speak only for
//! their own name; certificates verify with `openssl`; internal certificates renew
//! without a restart and go with their service; no secret reaches a log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mcp_pki::tls::Identity;
use mcp_pki::token::{Claims, Role, TokenKey};
use mcp_proto::master::v1::{nodes_client::NodesClient, RegisterRequest};
use mcp_proto::transport::{ClientTls, ClientTransport};
use support::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn set_token(fleet: &Fleet, token: &str) {
    std::fs::write(fleet.spec.dir.join("token"), token).unwrap();
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        stderr_of(&out)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Starts an agent process with `config` and returns its exit output (it must exit).
fn agent_fails(fleet: &Fleet, config: &Path) -> String {
    let out = Command::new(fleet.bin.path("mcp-agent"))
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "agent {} should have been refused",
        config.display()
    );
    stderr_of(&out)
}

fn agent_config(
    dir: &Path,
    name: &str,
    fleet: &Fleet,
    join_token: Option<&str>,
) -> std::path::PathBuf {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let mut text = format!(
        "name = \"{name}\"\nmaster = \"{}\"\nlisten = \"127.0.0.34:9444\"\ndata_dir = \"{}\"\nsrv_root = \"{}\"\nruntime = \"exec\"\n",
        fleet.spec.master_address(),
        data.join("data").display(),
        data.join("srv").display()
    );
    if let Some(token) = join_token {
        text.push_str(&format!("join_token = \"{token}\"\n"));
    }
    let path = data.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn operators_agents_certificates_and_logs() {
    let binary = fixture(None);
    purge_exec("sec-web", &binary);
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::single(tmp.path(), "sec1", "127.0.0.33", "exec");
    spec.master_extra = "service_cert_ttl = \"6s\"\ntoken_ttl = \"1h\"\n".to_string();
    let fleet = Fleet::start(spec).unwrap();
    let dir = fleet.spec.dir.clone();
    let admin_token = std::fs::read_to_string(dir.join("token")).unwrap();
    assert_eq!(
        std::fs::metadata(dir.join("token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // --- Operators ---
    mcp_ok(&fleet, &["node", "list"]);
    mcp_ok(&fleet, &["logout"]);
    let out = fleet.mcp(&["node", "list"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr_of(&out).contains("no token"), "{}", stderr_of(&out));

    // Tampered: one character of the signature changed.
    let mut tampered = admin_token.trim().to_string();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    set_token(&fleet, &tampered);
    let out = fleet.mcp(&["list"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr_of(&out).contains("signature"), "{}", stderr_of(&out));

    // Expired, but signed with the master's own key.
    let key_hex = std::fs::read_to_string(dir.join("master/token-key")).unwrap();
    let key = TokenKey::from_bytes(&hex_decode(key_hex.trim()));
    let expired = key.sign(&Claims {
        user: "admin".into(),
        role: Role::Admin,
        issued_at: now() - 7200,
        expires_at: now() - 3600,
    });
    set_token(&fleet, expired.expose());
    let out = fleet.mcp(&["list"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr_of(&out).contains("expired"), "{}", stderr_of(&out));

    // Signed by another master.
    let foreign = TokenKey::generate().unwrap().sign(&Claims {
        user: "admin".into(),
        role: Role::Admin,
        issued_at: now(),
        expires_at: now() + 3600,
    });
    set_token(&fleet, foreign.expose());
    assert_eq!(fleet.mcp(&["list"]).status.code(), Some(3));

    // Wrong password.
    let mut login = Command::new(fleet.bin.path("mcp"))
        .arg("--config")
        .arg(dir.join("mcp.toml"))
        .args(["login", "--user", "admin", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut login.stdin.take().unwrap(), b"not-the-password").unwrap();
    let out = login.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains("wrong password"),
        "{}",
        stderr_of(&out)
    );

    // A viewer reads but may not deploy.
    fleet.login("viewer").unwrap();
    mcp_ok(&fleet, &["list"]);
    let def = tmp.path().join("sec-web.toml");
    std::fs::write(
        &def,
        format!(
            "name = \"sec-web\"\n[[components]]\nname = \"web\"\ndriver = \"exec\"\ncommand = [\"{}\"]\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n",
            binary.display()
        ),
    )
    .unwrap();
    let out = fleet.mcp(&["deploy", def.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains("viewer") && stderr_of(&out).contains("admin"),
        "{}",
        stderr_of(&out)
    );
    fleet.login("admin").unwrap();

    // --- Agents ---
    let join = String::from_utf8_lossy(
        &Command::new(fleet.bin.path("mcp-master"))
            .args(["join-token", "--data-dir"])
            .arg(dir.join("master"))
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    let err = agent_fails(&fleet, &agent_config(tmp.path(), "nojoin", &fleet, None));
    assert!(err.contains("no join_token"), "{err}");
    let wrong_secret = format!("{}{}", &join[..join.len() - 64], "0".repeat(64));
    let err = agent_fails(
        &fleet,
        &agent_config(tmp.path(), "wrongsecret", &fleet, Some(&wrong_secret)),
    );
    assert!(err.contains("secret is wrong"), "{err}");
    let other_ca = mcp_pki::ca::Ca::create(&tmp.path().join("other-ca")).unwrap();
    let secret = &join[join.len() - 64..];
    let foreign_token = format!(
        "MCPJOIN-1-{}-{secret}",
        mcp_pki::join::fingerprint_hex(other_ca.cert_der())
    );
    let err = agent_fails(
        &fleet,
        &agent_config(tmp.path(), "foreignca", &fleet, Some(&foreign_token)),
    );
    assert!(err.contains("does not match the join token"), "{err}");
    // The refused agents were never registered.
    let nodes = fleet.mcp_json(&["node", "list"]).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");

    // A node's certificate used under another name; a certificate of another CA.
    let node_dir = dir.join("sec1/data");
    let ca_pem = std::fs::read_to_string(dir.join("master/ca.pem")).unwrap();
    let ca = mcp_pki::cert::certs_from_pem(&ca_pem).unwrap().remove(0);
    let sec1 = Identity::from_pem(
        &std::fs::read_to_string(node_dir.join("node.pem")).unwrap(),
        &std::fs::read_to_string(node_dir.join("node-key.pem")).unwrap(),
        &[],
    )
    .unwrap();
    let foreign_cert = other_ca
        .issue(&["mallory".to_string()], Duration::from_secs(3600))
        .unwrap();
    let foreign_id =
        Identity::from_pem(&foreign_cert.cert_pem, foreign_cert.key_pem.expose(), &[]).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let transport = |id: &Identity, name: &str| ClientTransport {
            connect_timeout: Some(Duration::from_secs(3)),
            request_timeout: Some(Duration::from_secs(5)),
            tls: Some(ClientTls {
                config: mcp_pki::tls::client_config(&ca, Some(id)).unwrap(),
                server_name: name.to_string(),
            }),
        };
        let register = |name: &str| RegisterRequest {
            name: name.to_string(),
            role: "worker".into(),
            address: "127.0.0.35:9444".into(),
            arch: "amd64".into(),
            ..Default::default()
        };
        let channel = transport(&sec1, mcp_pki::MASTER_NAME)
            .connect(&fleet.spec.master_address())
            .await
            .unwrap();
        let status = NodesClient::new(channel)
            .register(register("mallory"))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            mcp_proto::tonic::Code::PermissionDenied,
            "{status:?}"
        );
        assert!(
            status.message().contains("not for node mallory"),
            "{}",
            status.message()
        );
        let refused = transport(&foreign_id, mcp_pki::MASTER_NAME)
            .connect(&fleet.spec.master_address())
            .await;
        let refused = match refused {
            Err(e) => e.to_string(),
            Ok(channel) => NodesClient::new(channel)
                .register(register("mallory"))
                .await
                .unwrap_err()
                .to_string(),
        };
        assert!(!refused.is_empty());
        // The agent admits only the master: a node certificate is turned away.
        let agent = transport(&sec1, "sec1").connect("127.0.0.33:9444").await;
        let probe = match agent {
            Err(e) => Err(e.to_string()),
            Ok(channel) => mcp_proto::agent::v1::agent_client::AgentClient::new(channel)
                .probe(mcp_proto::agent::v1::ProbeRequest { register: false })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        assert!(
            probe.is_err(),
            "an agent must refuse callers other than the master"
        );
    });

    // --- Certificates ---
    let ca_file = dir.join("master/ca.pem");
    let ca_file = ca_file.to_str().unwrap();
    let node_pem = node_dir.join("node.pem");
    assert!(openssl(&["verify", "-CAfile", ca_file, node_pem.to_str().unwrap()]).contains("OK"));
    let san = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        node_pem.to_str().unwrap(),
    ]);
    assert!(san.contains("DNS:sec1"), "{san}");
    assert_eq!(
        std::fs::metadata(dir.join("master/ca-key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(node_dir.join("node-key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    mcp_ok(&fleet, &["deploy", def.to_str().unwrap()]);
    let certs = dir.join("srv/sec1/sec-web/certs");
    let cert = certs.join("cert.pem");
    assert!(openssl(&["verify", "-CAfile", ca_file, cert.to_str().unwrap()]).contains("OK"));
    let san = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        cert.to_str().unwrap(),
    ]);
    assert!(
        san.contains("DNS:sec-web.svc.mcp.metacircular.net"),
        "{san}"
    );
    assert_eq!(
        san.matches("DNS:").count(),
        1,
        "only the internal name: {san}"
    );
    assert_eq!(
        std::fs::metadata(certs.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        ca_pem
    );
    // Renewed at two thirds of its 6 s life, without restarting the service.
    let first = std::fs::read_to_string(&cert).unwrap();
    let pids = processes_of("sec-web", &binary);
    assert_eq!(pids.len(), 1);
    let renewed = eventually(Duration::from_secs(12), || {
        std::fs::read_to_string(&cert).ok().filter(|c| *c != first)
    });
    assert!(
        renewed.is_some(),
        "the internal certificate was not renewed: {}",
        fleet.log("sec1")
    );
    assert_eq!(
        processes_of("sec-web", &binary),
        pids,
        "renewal must not restart the service"
    );
    mcp_ok(&fleet, &["remove", "sec-web"]);
    assert!(!certs.exists(), "certificates must go with the service");

    // --- No secret in any log ---
    let password = std::fs::read_to_string(dir.join("admin-password")).unwrap();
    let token_now = std::fs::read_to_string(dir.join("token")).unwrap();
    let logs: String = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(logs.lines().count() > 10, "the logs should have content");
    for (what, secret) in [
        ("admin password", password.trim()),
        ("admin token", admin_token.trim()),
        ("current token", token_now.trim()),
        ("join secret", secret),
        ("private key", "PRIVATE KEY"),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in a log");
    }
}

#[test]
fn an_uninitialised_master_says_what_to_run() {
    let bin = mcp_local_fleet::Binaries::find().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("master.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"rift\"\nlisten = \"127.0.0.36:9443\"\ndata_dir = \"{}\"\ndomain = \"metacircular.net\"\n",
            tmp.path().join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin.path("mcp-master"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("mcp-master init --data-dir"),
        "{}",
        stderr_of(&out)
    );
}

/// `mcp logout` revokes the token at the master: the old token, kept aside, is refused
/// with exit 3, also after the master restarts; logging out with a token the master
/// already refuses just drops the file; a logout that cannot reach the master keeps
/// the file so that it can be run again.
#[test]
fn logout_revokes_the_token_at_the_master() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = FleetSpec::single(tmp.path(), "rev1", "127.0.6.1", "exec");
    let mut fleet = Fleet::start(spec).unwrap();
    let dir = fleet.spec.dir.clone();
    let token_file = dir.join("token");
    let old = std::fs::read_to_string(&token_file).unwrap();
    mcp_ok(&fleet, &["node", "list"]);

    let out = fleet.mcp(&["--json", "logout"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["revoked"], true, "{reply}");
    assert!(!token_file.exists());
    let revoked_list = std::fs::read_to_string(dir.join("master/revoked-tokens.json")).unwrap();
    assert!(
        !revoked_list.contains(old.trim()),
        "the master keeps ids, not tokens"
    );

    let refused = |fleet: &Fleet| {
        set_token(fleet, &old);
        let out = fleet.mcp(&["list"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains("revoked"), "{}", stderr_of(&out));
    };
    refused(&fleet);
    // A new login is not affected.
    fleet.login("admin").unwrap();
    mcp_ok(&fleet, &["list"]);
    let fresh = std::fs::read_to_string(&token_file).unwrap();

    // The revocation survives a crash of the master.
    fleet.signal("master", libc::SIGKILL).unwrap();
    fleet.start_master().unwrap();
    refused(&fleet);
    set_token(&fleet, &fresh);
    mcp_ok(&fleet, &["list"]);

    // Logging out with the revoked token: the master refuses it, the file goes.
    set_token(&fleet, &old);
    let out = fleet.mcp(&["logout"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no longer accepted"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!token_file.exists());
    let out = fleet.mcp(&["logout"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not logged in"));

    // No master: nothing is revoked, so the token file stays for another try.
    set_token(&fleet, &fresh);
    fleet.signal("master", libc::SIGKILL).unwrap();
    let out = fleet.mcp(&["logout"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("not revoked"),
        "{}",
        stderr_of(&out)
    );
    assert!(token_file.exists());
}

/// A one-thread HTTPS server answering RFC 7662 introspection with a certificate from
/// a CA made here (`DIR/idp-ca.pem`): tokens "good-admin" and "good-viewer" are active;
/// anything else is not. It answers one request per connection and counts them.
fn introspection_server(
    dir: &Path,
) -> (
    String,
    std::path::PathBuf,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use mcp_pki::rustls;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let ca_dir = dir.join("idp");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let ca = mcp_pki::ca::Ca::create(&ca_dir).unwrap();
    let issued = ca
        .issue(&["127.0.6.3".to_string()], Duration::from_secs(3600))
        .unwrap();
    let ca_path = dir.join("idp-ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            mcp_pki::cert::certs_from_pem(&issued.cert_pem).unwrap(),
            mcp_pki::cert::key_from_pem(issued.key_pem.expose()).unwrap(),
        )
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.6.3:0").unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(tcp) = stream else { continue };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            if request.is_empty() {
                continue;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let text = String::from_utf8_lossy(&request);
            let body = if text.contains("token=good-admin") {
                r#"{"active":true,"username":"kyle","role":"admin"}"#
            } else if text.contains("token=good-viewer") {
                r#"{"active":true,"username":"vera","role":"viewer"}"#
            } else {
                r#"{"active":false}"#
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    });
    (format!("https://{address}/introspect"), ca_path, requests)
}

/// The master checks tokens with an identity service over HTTPS (its CA configured),
/// reuses an active answer for introspection_cache_ttl, and refuses a token revoked
/// by `mcp logout` although the identity service still calls it active.
#[test]
fn tokens_checked_by_an_introspection_backend() {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let (url, ca, requests) = introspection_server(tmp.path());
    let mut spec = FleetSpec::single(tmp.path(), "idp1", "127.0.0.37", "exec");
    spec.master_extra = format!(
        "introspection_url = \"{url}\"\nintrospection_ca_cert = \"{}\"\nintrospection_cache_ttl = \"1h\"\n",
        ca.display()
    );
    spec.login = false;
    // The identity service issued this token; the fleet waits for its nodes with it.
    std::fs::write(tmp.path().join("token"), "good-admin").unwrap();
    let fleet = Fleet::start(spec).unwrap();
    mcp_ok(&fleet, &["node", "list"]);
    let before = requests.load(Ordering::SeqCst);
    assert!(before >= 1, "the identity service was asked");
    mcp_ok(&fleet, &["node", "list"]);
    mcp_ok(&fleet, &["list"]);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        before,
        "an active answer is cached"
    );
    set_token(&fleet, "good-viewer");
    mcp_ok(&fleet, &["list"]);
    let out = fleet.mcp(&["stop", "anything"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a viewer may not stop: {}",
        stderr_of(&out)
    );
    set_token(&fleet, "unknown");
    let out = fleet.mcp(&["list"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).to_lowercase().contains("inactive")
            || stderr_of(&out).contains("not active"),
        "{}",
        stderr_of(&out)
    );
    // Logged out: refused, though the identity service still says active.
    set_token(&fleet, "good-viewer");
    mcp_ok(&fleet, &["logout"]);
    set_token(&fleet, "good-viewer");
    let out = fleet.mcp(&["list"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr_of(&out).contains("revoked"), "{}", stderr_of(&out));
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
