//! The edge agent's ACME client end to end, offline, on loopback
//! (127.0.0.235-237): Debian's Pebble as the CA (127.0.0.235, its HTTPS from a
//! test CA given as `ca_cert`), a tiny DNS responder the test runs (127.0.0.236:
//! every name is 127.0.0.237, Pebble's `-dnsserver`), and the real mc-proxy
//! (127.0.0.237) answering the challenges Pebble checks on its `tlsPort` (the
//! proxy's `listen`) and `httpPort` (its `http_listen`). `acme::obtain` gets a
//! certificate by TLS-ALPN-01, then by HTTP-01 with the account it kept (0600);
//! mc-proxy loads each as an l7 route; the challenges are gone afterwards.
//! Without Pebble (`apt-get install pebble`) the test says why and passes,
//! unless `CI` is set. Every process is killed by its guard.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_agent::acme::{obtain, AcmeConfig, Challenge};

const PEBBLE_IP: &str = "127.0.0.235";
const DNS_IP: &str = "127.0.0.236";
const PROXY_IP: &str = "127.0.0.237";

/// Kills and reaps a child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr(ip: &str) -> SocketAddr {
    std::net::TcpListener::bind((ip, 0))
        .expect("free port")
        .local_addr()
        .expect("addr")
}

fn wait_listening(addr: SocketAddr, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pebble's binary, or why there is none.
fn pebble() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("pebble"))
        .find(|p| p.is_file())
        .ok_or_else(|| "pebble not found on PATH (Debian: apt-get install pebble)".to_string())
}

/// The workspace's mc-proxy: `MCP_BIN_DIR`, else beside this test's target dir.
fn mc_proxy_bin() -> PathBuf {
    let dir = match std::env::var_os("MCP_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable");
            let mut dir = exe.parent().expect("its directory").to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let bin = dir.join("mc-proxy");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build --workspace --bins` first, or set MCP_BIN_DIR",
        bin.display()
    );
    bin
}

/// Answers every A query with `answer`, everything else with no record
/// (NOERROR), on `socket`, until the test's runtime ends.
async fn dns_responder(socket: tokio::net::UdpSocket, answer: [u8; 4]) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let q = &buf[..n];
        if q.len() < 12 {
            continue;
        }
        // The question: labels up to the root, then type and class.
        let mut at = 12;
        while at < q.len() && q[at] != 0 {
            at += 1 + usize::from(q[at]);
        }
        let end = at + 5;
        if end > q.len() {
            continue;
        }
        let qtype = u16::from_be_bytes([q[at + 1], q[at + 2]]);
        let a = qtype == 1;
        let mut r = Vec::with_capacity(end + 16);
        r.extend_from_slice(&q[..2]); // id
        r.extend_from_slice(&[0x84 | (q[2] & 0x01), 0x00]); // QR, AA, RD copied; NOERROR
        r.extend_from_slice(&[0, 1, 0, u8::from(a), 0, 0, 0, 0]);
        r.extend_from_slice(&q[12..end]);
        if a {
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
            r.extend_from_slice(&answer);
        }
        let _ = socket.send_to(&r, from).await;
    }
}

/// A TLS client offering only `acme-tls/1` for `name` to mc-proxy: the
/// handshake's error (a pending challenge's certificate fails verification;
/// none pending, the name is unknown).
async fn acme_tls_error(proxy: SocketAddr, name: &str) -> String {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name.to_string().try_into().expect("name"), tcp)
        .await
    {
        Ok(_) => panic!("a handshake with an empty root store succeeded"),
        Err(e) => e.to_string(),
    }
}

/// Checks a chain and key from `obtain`: the leaf is for `name`, the key is
/// the leaf's, and mc-proxy accepts them as an l7 route.
fn check_issued(chain: &str, key: &str, name: &str, proxy: &Path, socket: &Path, dir: &Path) {
    let certs = mcp_pki::cert::certs_from_pem(chain).expect("chain");
    assert!(certs.len() >= 2, "leaf and issuer expected:\n{chain}");
    assert!(mcp_pki::cert::cert_is_for(&certs[0], name), "{name}");
    let der = mcp_pki::cert::key_from_pem(key).expect("key");
    rustls::sign::CertifiedKey::from_der(certs, der, &rustls::crypto::ring::default_provider())
        .expect("the key is the leaf's");
    let (cert_file, key_file) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_file, chain).expect("write chain");
    std::fs::write(&key_file, key).expect("write key");
    let out = Command::new(proxy)
        .args(["route", "add", "--socket"])
        .arg(socket)
        .args([
            "--hostname",
            name,
            "--backend",
            "127.0.0.1:9",
            "--mode",
            "l7",
        ])
        .args(["--backend-plain", "--cert"])
        .arg(&cert_file)
        .arg("--key")
        .arg(&key_file)
        .stdin(Stdio::null())
        .output()
        .expect("run mc-proxy route add");
    assert!(
        out.status.success(),
        "mc-proxy refused the issued pair: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obtain_from_pebble_by_tls_alpn_01_then_http_01() {
    let pebble = match pebble() {
        Ok(p) => p,
        Err(why) if std::env::var_os("CI").is_some() => panic!("CI must run this test: {why}"),
        Err(why) => {
            eprintln!("acme test skipped: {why}");
            return;
        }
    };
    let proxy_bin = mc_proxy_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // mc-proxy, answering challenges on listen and http_listen.
    let (listen, http) = (free_addr(PROXY_IP), free_addr(PROXY_IP));
    let socket = d.join("proxy/admin.sock");
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "listen = \"{listen}\"\nhttp_listen = \"{http}\"\nadmin_socket = \"{}\"\ndata_dir = \"{}\"\n",
            socket.display(),
            d.join("proxy/data").display()
        ),
    )
    .expect("proxy.toml");
    let proxy_log = d.join("mc-proxy.log");
    let _proxy = Child(
        Command::new(&proxy_bin)
            .arg("--config")
            .arg(d.join("proxy.toml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&proxy_log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start mc-proxy"),
    );
    wait_listening(listen, "mc-proxy", &proxy_log);

    // The DNS that Pebble asks: every name is mc-proxy's address.
    let dns = tokio::net::UdpSocket::bind((DNS_IP, 0))
        .await
        .expect("bind dns");
    let dns_addr = dns.local_addr().expect("dns addr");
    let ip: std::net::Ipv4Addr = PROXY_IP.parse().expect("ip");
    tokio::spawn(dns_responder(dns, ip.octets()));

    // Pebble, its HTTPS from a CA of the test's.
    let ca = mcp_pki::ca::Ca::create(&d.join("pebble-ca")).expect("test CA");
    let issued = ca
        .issue(&[PEBBLE_IP.to_string()], Duration::from_secs(3600))
        .expect("pebble certificate");
    std::fs::write(d.join("pebble-cert.pem"), &issued.cert_pem).expect("write");
    std::fs::write(d.join("pebble-key.pem"), issued.key_pem.expose()).expect("write");
    std::fs::write(d.join("pebble-ca.pem"), ca.cert_pem()).expect("write");
    let (acme, management) = (free_addr(PEBBLE_IP), free_addr(PEBBLE_IP));
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": acme.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": d.join("pebble-cert.pem"),
            "privateKey": d.join("pebble-key.pem"),
            "httpPort": http.port(),
            "tlsPort": listen.port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    std::fs::write(d.join("pebble.json"), config.to_string()).expect("pebble.json");
    let pebble_log = d.join("pebble.log");
    let _pebble = Child(
        Command::new(pebble)
            .arg("-config")
            .arg(d.join("pebble.json"))
            .arg("-dnsserver")
            .arg(dns_addr.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&pebble_log).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble"),
    );
    wait_listening(acme, "pebble", &pebble_log);

    let accounts = d.join("agent");
    let mut cfg = AcmeConfig {
        directory: format!("https://{acme}/dir"),
        email: Some("ops@acme.test".into()),
        ca_cert: Some(d.join("pebble-ca.pem")),
        challenge: Challenge::TlsAlpn01,
    };
    let logs = || {
        format!(
            "pebble:\n{}\nmc-proxy:\n{}",
            std::fs::read_to_string(&pebble_log).unwrap_or_default(),
            std::fs::read_to_string(&proxy_log).unwrap_or_default()
        )
    };

    let name = "tls.acme.test";
    let started = Instant::now();
    let (chain, key) = match obtain(&cfg, &accounts, name, &socket).await {
        Ok(pair) => pair,
        Err(e) => panic!("tls-alpn-01: {e:#}\n{}", logs()),
    };
    eprintln!("tls-alpn-01 certificate in {:?}", started.elapsed());
    // Cleared: an acme-tls/1 client for the name (no route yet) meets the
    // unknown-name alert, not a validation certificate.
    let e = acme_tls_error(listen, name).await;
    assert!(e.contains("UnrecognisedName"), "{e}");
    check_issued(&chain, &key, name, &proxy_bin, &socket, d);
    let stored: Vec<PathBuf> = std::fs::read_dir(&accounts)
        .expect("account dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mode = std::fs::metadata(&stored[0])
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "account file mode {mode:o}");
    let account = std::fs::read(&stored[0]).expect("read account");

    // HTTP-01, with the same account.
    cfg.challenge = Challenge::Http01;
    let name = "http.acme.test";
    let started = Instant::now();
    let (chain, key) = match obtain(&cfg, &accounts, name, &socket).await {
        Ok(pair) => pair,
        Err(e) => panic!("http-01: {e:#}\n{}", logs()),
    };
    eprintln!("http-01 certificate in {:?}", started.elapsed());
    check_issued(&chain, &key, name, &proxy_bin, &socket, d);
    assert_eq!(
        std::fs::read(&stored[0]).expect("read account"),
        account,
        "the account was not reused"
    );
    assert!(
        logs().contains("acme challenge cleared"),
        "mc-proxy never cleared a challenge:\n{}",
        logs()
    );

    // A directory URL the CA does not serve: the error names it.
    let bad = AcmeConfig {
        directory: format!("https://{acme}/no-such-dir"),
        ..cfg.clone()
    };
    let e = obtain(&bad, &accounts, "bad.acme.test", &socket)
        .await
        .expect_err("no directory");
    assert!(format!("{e:#}").contains("no-such-dir"), "{e:#}");
}
