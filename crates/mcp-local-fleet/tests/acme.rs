//! Public certificates by ACME end to end (SPEC §7, §12 `[acme]`), on the real
//! binaries, offline: the seed fleet on 127.0.0.151-154 whose edge (svc, mc-proxy
//! on 127.0.0.154:8443) has `[acme]` pointing at Debian's Pebble (127.0.0.155,
//! its HTTPS from a test CA given as `ca_cert`, its `tlsPort` mc-proxy's 8443), and
//! a tiny DNS responder the test runs (127.0.0.156, Pebble's `-dnsserver`: every
//! name is the edge).
//!
//! - a public l7 service gets its certificate by TLS-ALPN-01: `mcp route list`
//!   shows its `cert_not_after`; `curl` trusting Pebble's root answers 200 with the
//!   hello body; the certificate is for the hostname only, issued by Pebble's
//!   intermediate;
//! - with Pebble's `certificateValidityPeriod` of 12 s, it is renewed at two
//!   thirds, twice, under a bounded request loop with 0 failed requests;
//! - Pebble stopped: the route shows the `cert_error` in `mcp route list` and an
//!   event in `mcp status`;
//! - Pebble back (a new CA that forgot the account, 5-year certificates): the edge
//!   gets a new certificate, and then asks for none over 10 s of steady state.
//!
//! Without Pebble (`apt-get install pebble`) the test says why and passes, unless
//! `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use support::*;

const FIRST_IP: u8 = 151;
const PEBBLE_IP: &str = "127.0.0.155";
const DNS_IP: &str = "127.0.0.156";
/// Pebble's certificate lifetime while renewals are checked.
const SHORT_LIFE: u64 = 12;
const SERVICE: &str = "pa-web";
const HOST: &str = "pa-web.metacircular.net";
/// What the edge agent logs before each ACME order.
const ASKING: &str = "acme: asking for a certificate";

/// Pebble's binary on PATH, or why it cannot be run.
fn pebble_bin() -> Result<PathBuf, String> {
    match Command::new("pebble").arg("-h").output() {
        Ok(_) => Ok(PathBuf::from("pebble")),
        Err(e) => Err(format!("pebble: {e} (Debian: apt-get install pebble)")),
    }
}

fn free_addr(ip: &str) -> SocketAddr {
    std::net::TcpListener::bind((ip, 0))
        .expect("free port")
        .local_addr()
        .expect("addr")
}

/// The answer to a DNS query: every A question is `ip`, anything else has no
/// record (NOERROR); None for what is no query.
fn dns_answer(q: &[u8], ip: [u8; 4]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *q.get(end)? != 0 {
        end += 1 + usize::from(q[end]);
    }
    // The root label, then type and class.
    let question = q.get(12..end + 5)?;
    let is_a = q[end + 1..end + 3] == [0, 1];
    let mut r = q[..2].to_vec();
    r.extend_from_slice(&[0x84 | (q[2] & 1), 0, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if is_a {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        r.extend_from_slice(&ip);
    }
    Some(r)
}

/// The DNS responder Pebble asks, in a thread until dropped.
struct Dns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dns {
    fn start(answer: &str) -> Dns {
        let socket = UdpSocket::bind((DNS_IP, 0)).expect("bind the DNS responder");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let ip = answer.parse::<std::net::Ipv4Addr>().unwrap().octets();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            // Bounded: an hour of 100 ms waits at the most.
            for _ in 0..36_000 {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if let Some(r) = dns_answer(&buf[..n], ip) {
                        let _ = socket.send_to(&r, from);
                    }
                }
            }
        });
        Dns {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where Pebble listens and what it trusts, kept across its restarts, and the
/// running Pebble (killed when dropped).
struct Pebble {
    bin: PathBuf,
    dir: PathBuf,
    acme: SocketAddr,
    management: SocketAddr,
    dns: SocketAddr,
    running: std::cell::RefCell<Option<std::process::Child>>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Pebble {
    /// Writes Pebble's HTTPS certificate (from a test CA, `DIR/pebble-ca.pem`).
    fn new(bin: PathBuf, dir: &Path, dns: SocketAddr) -> Pebble {
        std::fs::create_dir_all(dir).unwrap();
        let ca = mcp_pki::ca::Ca::create(&dir.join("ca")).expect("test CA");
        let issued = ca
            .issue(&[PEBBLE_IP.to_string()], Duration::from_secs(3600))
            .expect("pebble's certificate");
        std::fs::write(dir.join("cert.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), issued.key_pem.expose()).unwrap();
        std::fs::write(dir.join("pebble-ca.pem"), ca.cert_pem()).unwrap();
        Pebble {
            bin,
            dir: dir.to_path_buf(),
            acme: free_addr(PEBBLE_IP),
            management: free_addr(PEBBLE_IP),
            dns,
            running: std::cell::RefCell::new(None),
        }
    }

    /// Kills and reaps the running Pebble, if any.
    fn stop(&self) {
        if let Some(mut child) = self.running.borrow_mut().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn directory(&self) -> String {
        format!("https://{}/dir", self.acme)
    }

    fn ca_cert(&self) -> PathBuf {
        self.dir.join("pebble-ca.pem")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// Starts Pebble (its certificates valid `validity` seconds, else its
    /// default), validating TLS-ALPN-01 on the edge's mc-proxy port.
    fn start(&self, validity: Option<u64>) {
        let mut config = serde_json::json!({
            "listenAddress": self.acme.to_string(),
            "managementListenAddress": self.management.to_string(),
            "certificate": self.dir.join("cert.pem"),
            "privateKey": self.dir.join("key.pem"),
            "httpPort": 5002,
            "tlsPort": mcp_local_fleet::PROXY_PORT,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        });
        if let Some(seconds) = validity {
            config["certificateValidityPeriod"] = seconds.into();
        }
        let file = self.dir.join("pebble.json");
        std::fs::write(&file, serde_json::json!({ "pebble": config }).to_string()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pebble.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("-config")
            .arg(&file)
            .arg("-dnsserver")
            .arg(self.dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        *self.running.borrow_mut() = Some(child);
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(self.management).ok()
        });
        assert!(up.is_some(), "pebble did not listen:\n{}", self.log());
    }

    /// The PEM Pebble's management interface serves at `path` (`roots/0`,
    /// `intermediates/0`): the CA of this run of Pebble, written to `DIR/<file>`.
    fn fetch(&self, path: &str, file: &str) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
            .arg(self.ca_cert())
            .arg(format!("https://{}/{path}", self.management))
            .output()
            .expect("run curl");
        let pem = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && pem.contains("BEGIN CERTIFICATE"),
            "pebble's {path}: {pem} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let to = self.dir.join(file);
        std::fs::write(&to, pem).unwrap();
        to
    }
}

/// A public l7 service of the hello server (exec driver, plain HTTP backend).
fn web(dir: &Path, binary: &Path) -> String {
    let text = format!(
        "name = \"{SERVICE}\"\n\n[[components]]\nname = \"web\"\ndriver = \"exec\"\n\
         command = [\"{}\"]\n\n[[components.routes]]\nname = \"http\"\nport = 8080\n\
         backend_tls = false\npublic = true\nhostname = \"{HOST}\"\n",
        binary.display()
    );
    let path = dir.join(format!("{SERVICE}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The route's `cert_not_after` in `mcp route list --json`, when it shows one.
fn not_after(fleet: &Fleet) -> Option<String> {
    route_of(fleet, HOST)?["cert_not_after"]
        .as_str()
        .map(str::to_string)
}

/// The validity of the certificate the edge presents for `HOST` (verified
/// against `root`), with `openssl x509 -text` of it.
fn presented(fleet: &Fleet, root: &Path) -> (SystemTime, SystemTime, String) {
    let (text, client) = edge_cert(fleet, HOST, root);
    assert!(client.contains("Verify return code: 0 (ok)"), "{client}");
    let der = mcp_pki::cert::cert_from_pem(&client).expect("the edge's certificate");
    let (nb, na) = mcp_pki::cert::validity(&der).expect("its validity");
    (nb, na, text)
}

/// The second of the day of an RFC 3339 time `…THH:MM:SSZ`.
fn second_of_day(t: &str) -> i64 {
    let (_, time) = t.split_once('T').expect("an RFC 3339 time");
    time.trim_end_matches('Z')
        .split(':')
        .map(|p| p.parse::<i64>().expect("a number"))
        .fold(0, |acc, p| acc * 60 + p)
}

/// How many ACME orders the edge agent has placed.
fn asked(fleet: &Fleet) -> usize {
    fleet.log("svc").matches(ASKING).count()
}

#[test]
fn acme_certificates_from_pebble_through_the_edge() {
    let pebble_bin = match pebble_bin() {
        Ok(p) => p,
        Err(why) if in_ci() => panic!("CI must run this test: {why}"),
        Err(why) => {
            eprintln!("acme fleet test skipped: {why}");
            return;
        }
    };
    let started = Instant::now();
    let binary = fixture(None);
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup {
        services: vec![SERVICE.to_string()],
        programs: vec![binary.clone()],
    };
    let mut spec = FleetSpec::seed_at(&tmp.path().join("fleet"), "exec", FIRST_IP);
    let edge_ip = spec.edges().next().expect("an edge").ip.clone();
    let dns = Dns::start(&edge_ip);
    let pebble = Pebble::new(pebble_bin, &tmp.path().join("pebble"), dns.addr);
    pebble.start(Some(SHORT_LIFE));
    let root = pebble.fetch("roots/0", "root.pem");
    let intermediate = pebble.fetch("intermediates/0", "intermediate.pem");
    let svc = spec.nodes.iter_mut().find(|n| n.name == "svc").unwrap();
    svc.agent_extra = format!(
        "[acme]\ndirectory = {:?}\nemail = \"ops@metacircular.net\"\nca_cert = {:?}\nchallenge = \"tls-alpn-01\"\n",
        pebble.directory(),
        pebble.ca_cert().display().to_string(),
    );
    let fleet = Fleet::start(spec).unwrap();
    let logs = |fleet: &Fleet| {
        format!(
            "svc:\n{}\nmc-proxy:\n{}\npebble:\n{}",
            fleet.log("svc"),
            fleet.log("mc-proxy"),
            pebble.log()
        )
    };
    eprintln!("fleet and pebble up after {:?}", started.elapsed());

    // The first certificate, by TLS-ALPN-01 through mc-proxy.
    let deployed = Instant::now();
    mcp_ok(&fleet, &["deploy", &web(tmp.path(), &binary)]);
    let first = eventually(Duration::from_secs(60), || not_after(&fleet));
    assert!(first.is_some(), "no certificate:\n{}", logs(&fleet));
    let served = eventually(Duration::from_secs(10), || {
        let (code, body) = curl_ca(&fleet, &root, HOST, &[]);
        (code == 200).then_some(body)
    });
    let body = served.unwrap_or_else(|| {
        panic!(
            "not served: {:?}\n{}",
            curl_ca(&fleet, &root, HOST, &[]),
            logs(&fleet)
        )
    });
    assert!(body.contains(&format!("hello from {SERVICE} on")), "{body}");
    eprintln!(
        "first certificate served {:?} after the deploy",
        deployed.elapsed()
    );
    let (nb, na, text) = presented(&fleet, &root);
    assert!(text.contains(&format!("DNS:{HOST}")), "{text}");
    assert_eq!(text.matches("DNS:").count(), 1, "{text}");
    assert!(!text.contains("svc.mcp"), "an internal name: {text}");
    let issuer = std::fs::read_to_string(&intermediate).unwrap();
    let issuer = openssl_x509(&issuer, &["-subject"]);
    let issuer = issuer.trim().trim_start_matches("subject=").trim();
    assert!(issuer.contains("Pebble Intermediate"), "{issuer}");
    assert!(
        text.contains(&format!("Issuer: {issuer}\n")),
        "not issued by {issuer}: {text}"
    );
    let life = na.duration_since(nb).unwrap_or_default();
    assert!(
        life <= Duration::from_secs(SHORT_LIFE),
        "pebble ignored certificateValidityPeriod = {SHORT_LIFE}: a lifetime of {life:?}"
    );
    eprintln!("pebble's certificate lifetime: {life:?}");

    // Renewed at two thirds of the lifetime, twice, no request failing.
    let load = Load::start_ca(&fleet, HOST, &root);
    load.advance(3);
    let mut seen = vec![(first.unwrap(), Instant::now())];
    let deadline = Instant::now() + Duration::from_secs(4 * SHORT_LIFE);
    while seen.len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(now) = not_after(&fleet) {
            if seen.last().map(|(s, _)| s) != Some(&now) {
                seen.push((now, Instant::now()));
            }
        }
    }
    let times: Vec<_> = seen
        .iter()
        .map(|(s, t)| (s, t.duration_since(deployed)))
        .collect();
    assert!(
        seen.len() >= 3,
        "renewed {} times: {times:?}\n{}",
        seen.len() - 1,
        logs(&fleet)
    );
    // At two thirds of 11 s: each certificate ends 7 to 10 s after the one before
    // (a renewal at half the lifetime would give 5 or 6, one at the 30 s tick 30).
    for pair in seen.windows(2) {
        let step = (second_of_day(&pair[1].0) - second_of_day(&pair[0].0)).rem_euclid(86_400);
        assert!(
            (7..=10).contains(&step),
            "renewed {step} s apart: {times:?}"
        );
    }
    load.advance(5);
    assert_eq!(load.counts().1, 0, "renewals: {:?}", load.errors());
    eprintln!(
        "renewals seen {times:?}; {:?} requests through them",
        load.counts()
    );
    let obtained = fleet
        .log("svc")
        .matches("acme: certificate obtained and served")
        .count();
    assert!(
        obtained >= 3,
        "{obtained} certificates:\n{}",
        fleet.log("svc")
    );
    drop(load);

    // Pebble stopped: the next renewal fails; the route and the events say so.
    pebble.stop();
    let failing = Instant::now();
    let error = eventually(Duration::from_secs(30), || {
        let route = route_of(&fleet, HOST)?;
        let e = route["error"].as_str()?.to_string();
        (!e.is_empty()).then_some(e)
    });
    let error = error.unwrap_or_else(|| panic!("no cert_error:\n{}", logs(&fleet)));
    assert!(error.starts_with("certificate: "), "{error}");
    let status = fleet.mcp_json(&["status"]).unwrap();
    let event = status["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["node"] == "svc"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("certificate of {HOST}: ")))
        })
        .cloned();
    assert!(event.is_some(), "no event: {status}");
    eprintln!(
        "pebble stopped: route error after {:?}: {error}; event {}",
        failing.elapsed(),
        event.unwrap()["message"]
    );

    // Pebble back, a new CA with 5-year certificates that forgot the account:
    // a certificate again, the error gone.
    pebble.start(None);
    let back = Instant::now();
    let root = pebble.fetch("roots/0", "root-2.pem");
    let recovered = eventually(Duration::from_secs(60), || {
        let route = route_of(&fleet, HOST)?;
        let (code, _) = curl_ca(&fleet, &root, HOST, &[]);
        let clear = route["error"].as_str().unwrap_or_default().is_empty();
        (code == 200 && clear).then_some(route)
    });
    assert!(
        recovered.is_some(),
        "not back: {:?} {:?}\n{}",
        route_of(&fleet, HOST),
        curl_ca(&fleet, &root, HOST, &[]),
        logs(&fleet)
    );
    let (nb, na, _) = presented(&fleet, &root);
    let life = na.duration_since(nb).unwrap_or_default();
    assert!(life > Duration::from_secs(86_400), "{life:?}");
    assert!(
        fleet
            .log("svc")
            .contains("unknown to the CA: creating another"),
        "the new Pebble's account: {}",
        fleet.log("svc")
    );
    eprintln!(
        "pebble back: served again after {:?} (lifetime {life:?})",
        back.elapsed()
    );

    // Steady state: nothing more is asked of the CA.
    std::thread::sleep(Duration::from_secs(2));
    let (before, shown) = (asked(&fleet), not_after(&fleet));
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        asked(&fleet),
        before,
        "the edge kept asking:\n{}",
        fleet.log("svc")
    );
    assert_eq!(not_after(&fleet), shown);
    eprintln!(
        "{before} ACME orders in all; none over 10 s of steady state; test took {:?}",
        started.elapsed()
    );
    mcp_ok(&fleet, &["remove", SERVICE]);
}
