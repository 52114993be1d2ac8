//! The CLI binary without a master: `validate` on every example and on broken input,
//! exit codes, `--json` error shapes, and the reference CLI config.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn mcp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcp"))
        .args(args)
        .env_remove("MCP_MASTER")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap()
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_example_validates() {
    let mut files: Vec<String> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let mut args = vec!["--json", "validate"];
    args.extend(files.iter().map(String::as_str));
    let out = mcp(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), files.len());
}

#[test]
fn invalid_definitions_exit_2_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"ok\"\n[[components]]\nname = \"web\"\nimage = \"x:1\"\n[[components.routes]]\nname = \"http\"\nport = 0\n").unwrap();
    let out = mcp(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:7: components[0].routes[0].port:"),
        "{stderr}"
    );

    let out = mcp(&["--json", "validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 2);
    assert!(v["error"].as_str().unwrap().contains("port"), "{v}");

    let out = mcp(&["validate", "/no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

/// SPEC §3: components' own memory past the service's `[resources] memory` is an
/// invalid definition, named by file and line.
#[test]
fn components_memory_over_the_services_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("limits.toml");
    std::fs::write(
        &bad,
        "name = \"photos\"\n\n[resources]\nmemory = \"64MiB\"\n\n[[components]]\nname = \"api\"\nimage = \"x:1\"\nmemory = \"48MiB\"\n\n[[components]]\nname = \"thumbs\"\nimage = \"y:1\"\nmemory = \"32MiB\"\n",
    )
    .unwrap();
    let out = mcp(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("limits.toml:14: components[1].memory: the components' own memory adds up to 80MiB here, more than the service's [resources] memory 64MiB"),
        "{stderr}"
    );
}

/// A CLI config trusting a freshly made fleet CA.
fn config_with_ca(dir: &std::path::Path) -> std::path::PathBuf {
    mcp_pki::ca::Ca::create(&dir.join("ca")).unwrap();
    let config = dir.join("mcp.toml");
    std::fs::write(&config, "ca_cert = \"ca/ca.pem\"\ntoken_file = \"token\"\n").unwrap();
    config
}

#[test]
fn usage_errors_exit_2_and_unreachable_master_exits_3() {
    assert_eq!(mcp(&["deploy"]).status.code(), Some(2));
    assert_eq!(mcp(&["no-such-command"]).status.code(), Some(2));
    let out = mcp(&["list"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no master configured is a usage error"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_ca(dir.path());
    let config = config.to_str().unwrap();
    let out = mcp(&[
        "--json",
        "--config",
        config,
        "--master",
        "127.0.0.1:1",
        "list",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], 3);
}

#[test]
fn the_reference_cli_config_parses() {
    let config = examples().join("config/mcp.toml");
    // The reference config parses; what fails is reading its example CA file.
    let out = mcp(&[
        "--config",
        config.to_str().unwrap(),
        "--master",
        "127.0.0.1:1",
        "node",
        "list",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("read ca_cert"));
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("mcp.toml");
    std::fs::write(&broken, "mastr = \"x\"\n").unwrap();
    let out = mcp(&["--config", broken.to_str().unwrap(), "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}
