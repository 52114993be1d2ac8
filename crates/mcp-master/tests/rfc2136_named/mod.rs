//! A real BIND for the `rfc2136` tests (this crate's and mcp-local-fleet's, which
//! includes this file): `named -g` with a temp config, keys made by `tsig-keygen`
//! ("mcp", which may update the zone and transfer it, and "reader", which may only
//! transfer it), the zone svc.mcp.metacircular.net as a primary with
//! `update-policy { grant mcp zonesub ANY; }`, and `dig`/`nsupdate` to look and to
//! make records by hand. Only std and tempfile, so both crates can use it.
//!
//! named listens on 127.0.0.1 on a free high port: it binds only addresses an
//! interface carries, and lo carries 127.0.0.1 alone (the rest of 127/8 is routed,
//! not assigned). Dropping `Named` kills it and removes its directory, also when a
//! test fails.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const ZONE: &str = "svc.mcp.metacircular.net";

/// named, killed (and its directory removed) on drop.
pub struct Named {
    child: std::process::Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for named");
}

/// `tsig-keygen NAME` into `dir/NAME.conf`, and a copy at mode 0600 (what the master
/// accepts) in `dir/NAME.key`.
fn keygen(dir: &std::path::Path, name: &str) {
    use std::os::unix::fs::PermissionsExt;
    let key = Command::new("tsig-keygen").arg(name).output().unwrap();
    assert!(
        key.status.success(),
        "tsig-keygen: {}",
        String::from_utf8_lossy(&key.stderr)
    );
    std::fs::write(dir.join(format!("{name}.conf")), &key.stdout).unwrap();
    let private = dir.join(format!("{name}.key"));
    std::fs::write(&private, &key.stdout).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Named {
    /// Err (why) when bind9 or bind9-dnsutils is missing.
    pub fn start() -> Result<Named, String> {
        for bin in ["named", "tsig-keygen", "dig", "nsupdate"] {
            if !installed(bin) {
                return Err(format!(
                    "{bin} is not installed (apt-get install bind9 bind9-dnsutils)"
                ));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(d, "mcp");
        keygen(d, "reader");
        std::fs::write(
            d.join("zone.db"),
            format!(
                "$TTL 60\n\
                 @ IN SOA ns.{ZONE}. hostmaster.metacircular.net. 1 3600 600 86400 60\n\
                 @ IN NS ns.{ZONE}.\n\
                 ns IN A 127.0.0.1\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let p = d.display();
        std::fs::write(
            d.join("named.conf"),
            format!(
                "include \"{p}/mcp.conf\";\n\
                 include \"{p}/reader.conf\";\n\
                 options {{\n\
                   directory \"{p}\";\n\
                   listen-on port {port} {{ 127.0.0.1; }};\n\
                   listen-on-v6 {{ none; }};\n\
                   pid-file \"{p}/named.pid\";\n\
                   session-keyfile \"{p}/session.key\";\n\
                   managed-keys-directory \"{p}\";\n\
                   recursion no;\n\
                   dnssec-validation no;\n\
                   notify no;\n\
                 }};\n\
                 controls {{ }};\n\
                 zone \"{ZONE}\" {{\n\
                   type primary;\n\
                   file \"{p}/zone.db\";\n\
                   update-policy {{ grant mcp zonesub ANY; }};\n\
                   allow-transfer {{ key mcp; key reader; }};\n\
                 }};\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("named.log")).unwrap();
        let child = Command::new("named")
            .args(["-g", "-c"])
            .arg(d.join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start named: {e}"))?;
        let named = Named { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while named.dig(ZONE, "SOA").is_empty() {
            if Instant::now() > deadline {
                panic!("named did not answer within 20 s:\n{}", named.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(named)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    pub fn server(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The key clause of `key` ("mcp" or "reader") at mode 0600.
    pub fn key_file(&self, key: &str) -> PathBuf {
        self.dir.path().join(format!("{key}.key"))
    }

    fn dig_output(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg("@127.0.0.1")
            .args([
                "-p",
                &self.port.to_string(),
                "+norecurse",
                "+time=2",
                "+tries=1",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `dig +short NAME TYPE`, sorted.
    pub fn dig(&self, name: &str, kind: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .dig_output(&["+short", name, kind])
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// The status dig reports for NAME A ("NOERROR", "NXDOMAIN").
    pub fn status(&self, name: &str) -> String {
        let out = self.dig_output(&["+noall", "+comments", name, "A"]);
        out.split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("no answer")
            .to_string()
    }

    /// The whole zone by a signed AXFR (`dig -k`), sorted, without the SOA (its
    /// serial grows with every update) and the TSIG.
    pub fn zone(&self) -> Vec<String> {
        let key = self.dir.path().join("mcp.conf");
        let out = self.dig_output(&[
            "-k",
            key.to_str().unwrap(),
            "+nocmd",
            "+nostats",
            "+nocomments",
            ZONE,
            "AXFR",
        ]);
        let mut lines: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .filter(|l| !l.contains("\tSOA\t") && !l.contains("TSIG"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        lines.sort();
        lines
    }

    /// `nsupdate -k mcp` with `commands` (records made by hand).
    pub fn nsupdate(&self, commands: &str) {
        let mut child = Command::new("nsupdate")
            .arg("-k")
            .arg(self.dir.path().join("mcp.conf"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            write!(
                stdin,
                "server 127.0.0.1 {}\nzone {ZONE}\n{commands}\nsend\n",
                self.port
            )
            .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nsupdate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
