//! End to end, on the real binaries: deploys that must fail do, with the right exit
//! code and message, and leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

#[test]
fn failed_deploys_leave_nothing() {
    fixture(None);
    purge(&["e2e-missing", "e2e-half"]);
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(FleetSpec::single(tmp.path(), "fl1", "127.0.0.24", "docker")).unwrap();

    // An image that exists nowhere: the pull step fails, exit 1, nothing remains.
    let missing = tmp.path().join("e2e-missing.toml");
    std::fs::write(
        &missing,
        "name = \"e2e-missing\"\n[[components]]\nname = \"web\"\nimage = \"mcp-test/does-not-exist:1\"\n[[components.routes]]\nname = \"http\"\nport = 8080\n",
    )
    .unwrap();
    let out = fleet.mcp(&["deploy", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("step pull failed"),
        "names the step: {stderr}"
    );
    assert!(containers("e2e-missing", None).is_empty());
    assert_eq!(db_rows(&fleet, "fl1", "e2e-missing"), 0);

    // The second component's volume leads out of the service's directory through a
    // symlink: the prepare step fails after the first component was created and
    // started, and that one is removed again.
    let srv = tmp.path().join("srv/fl1/e2e-half");
    std::fs::create_dir_all(&srv).unwrap();
    std::os::unix::fs::symlink("/etc", srv.join("evil")).unwrap();
    let half = tmp.path().join("e2e-half.toml");
    std::fs::write(
        &half,
        "name = \"e2e-half\"\n[[components]]\nname = \"ok\"\nimage = \"mcp-test/hello:1\"\n[[components]]\nname = \"bad\"\nimage = \"mcp-test/hello:1\"\nvolumes = [\"/srv/e2e-half/evil/x:/data\"]\n",
    )
    .unwrap();
    let out = fleet.mcp(&["--json", "deploy", half.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["code"], 1);
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("step prepare failed") && message.contains("symlink"),
        "{error}"
    );
    assert!(
        containers("e2e-half", None).is_empty(),
        "half-made containers remain"
    );
    assert_eq!(db_rows(&fleet, "fl1", "e2e-half"), 0);
    assert!(std::fs::read_dir("/etc").is_ok());

    // An invalid definition: exit 2, with file, line and key.
    let invalid = tmp.path().join("bad.toml");
    std::fs::write(
        &invalid,
        "name = \"Bad_Name\"\n[[components]]\nname = \"web\"\nimage = \"x:1\"\n",
    )
    .unwrap();
    let out = fleet.mcp(&["deploy", invalid.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:1: name:"), "{stderr}");

    // Unknown service: exit 1.
    assert_eq!(fleet.mcp(&["stop", "e2e-nothing"]).status.code(), Some(1));

    // A master that is not there: exit 3.
    let out = fleet.mcp(&["--master", "127.0.0.24:1", "list"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
