//! CI smoke test of `bench/deploy-to-serving.sh` (127.0.0.31:9443 and 9444, the
//! service's port on 127.0.0.31 that the agent picks, fixed ports 127.0.0.31:18031
//! and 18032 on every address for the Swarm service): see `support/bench.rs` for
//! what the run must print.

#[path = "support/bench.rs"]
mod bench;

#[test]
fn deploy_to_serving_smoke_run_prints_every_row() {
    let stdout = bench::smoke_run_prints_every_row("deploy-to-serving", &[]);
    assert!(
        stdout.contains("deploy-to-serving: 2 runs each after 0 warm-up"),
        "not the smoke run's two runs:\n{stdout}"
    );
}

/// A fresh machine without hyperfine: the script says so and exits 2 before it
/// starts anything (PATH holds only bash, dirname and docker).
#[test]
fn deploy_to_serving_without_hyperfine_says_so() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = tempfile::tempdir().expect("a temporary directory");
    for tool in ["bash", "dirname", "docker"] {
        let found = std::process::Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("bash");
        let target = String::from_utf8_lossy(&found.stdout).trim().to_string();
        assert!(!target.is_empty(), "{tool} not found");
        std::os::unix::fs::symlink(&target, path.path().join(tool)).expect("symlink");
    }
    let out = std::process::Command::new(path.path().join("bash"))
        .arg(root.join("bench/deploy-to-serving.sh"))
        .arg("--smoke")
        .env("PATH", path.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("deploy-to-serving: 'hyperfine' not found"),
        "stderr:\n{stderr}"
    );
}
