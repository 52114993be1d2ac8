//! Each operator of a local fleet (`mcp dev` and the tests) has its own random
//! password and its own argon2 hash: a viewer's password never logs in as admin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};

use support::*;

/// `mcp login --user USER --password-stdin` with `password`: the exit code and stderr.
fn login(fleet: &Fleet, user: &str, password: &str) -> (Option<i32>, String) {
    let mut child = Command::new(fleet.bin.path("mcp"))
        .arg("--config")
        .arg(fleet.spec.dir.join("mcp.toml"))
        .args(["login", "--user", user, "--password-stdin"])
        .env_remove("MCP_MASTER")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), password.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn admin_and_viewer_have_their_own_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(FleetSpec::single(tmp.path(), "pw1", "127.0.0.46", "exec")).unwrap();
    let read = |user: &str| {
        std::fs::read_to_string(mcp_local_fleet::password_file(tmp.path(), user))
            .unwrap()
            .trim()
            .to_string()
    };
    let (admin, viewer) = (read("admin"), read("viewer"));
    assert_eq!(admin.len(), 32);
    assert_ne!(admin, viewer, "the same password for admin and viewer");
    let master = std::fs::read_to_string(tmp.path().join("master/master.toml")).unwrap();
    let hashes: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("password_hash"))
        .collect();
    assert_eq!(hashes.len(), 2, "{master}");
    assert_ne!(
        hashes[0], hashes[1],
        "the same hash (and salt) for both users"
    );

    // The viewer's password does not log in as admin, nor the admin's as viewer.
    let (code, err) = login(&fleet, "admin", &viewer);
    assert_eq!(code, Some(3), "admin with the viewer's password: {err}");
    assert!(err.contains("wrong password"), "{err}");
    let (code, err) = login(&fleet, "viewer", &admin);
    assert_eq!(code, Some(3), "viewer with the admin's password: {err}");
    // Each with its own works.
    assert_eq!(login(&fleet, "viewer", &viewer).0, Some(0));
    assert_eq!(login(&fleet, "admin", &admin).0, Some(0));
    mcp_ok(&fleet, &["list"]);

    // A restart keeps both passwords.
    drop(fleet);
    let fleet = Fleet::start(FleetSpec::single(tmp.path(), "pw1", "127.0.0.46", "exec")).unwrap();
    assert_eq!((read("admin"), read("viewer")), (admin.clone(), viewer));
    assert_eq!(login(&fleet, "admin", &admin).0, Some(0));
}
