//! The mc-proxy binary as an operator runs it: `--config proxy.toml`, refuses a
//! bad config naming the file, serves (an empty route table refuses every name
//! with unrecognized_name) and ends promptly on SIGTERM.

mod common;

use common::{free_port, Child};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn bad_config_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.173:1\"\nadmin_socket = \"a\"\ndata_dir = \"d\"\ncolour = 1\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mc-proxy"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&path.display().to_string()) && err.contains("unknown field `colour`"),
        "{err}"
    );
}

#[test]
fn serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port("127.0.0.173");
    let listen = format!("127.0.0.173:{port}");
    let path = dir.path().join("proxy.toml");
    let text = format!(
        "listen = \"{listen}\"\nadmin_socket = \"{}\"\ndata_dir = \"{}\"\nhandshake_timeout = \"2s\"\n",
        dir.path().join("admin.sock").display(),
        dir.path().display()
    );
    std::fs::write(&path, text).expect("write config");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_mc-proxy"))
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mc-proxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "mc-proxy did not listen on {listen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-servername",
            "nothing.mc-proxy.test",
            "-connect",
            &listen,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("unrecognized name"), "{text}");

    let pid = child.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            assert!(status.success(), "mc-proxy exited with {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mc-proxy still running 5s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
