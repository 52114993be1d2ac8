//! CI smoke test of `bench/batch-deploy.sh` (127.0.7.20-24, fixed ports 9443,
//! 9444 and 18701-18704): the script run with `--smoke` (4 services on 4 workers,
//! one run of each command) against this build's binaries (`--bin-dir`, so CI builds
//! no release) must exit 0 and print hyperfine's table with a row, and a number, for
//! `mcp deploy DIR`, the sequential `docker run -d` and the parallel one, and the
//! ratio, so the benchmark keeps working as the deploy path changes. Needs Docker,
//! hyperfine and curl. Runs of the script take turns (a lock on the script file). It cleans up on
//! exit (the fleet by pid, its containers); on our deadline it gets SIGTERM, then
//! its process group SIGKILL.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcp_local_fleet::Binaries;

/// The smoke run takes about 10 s on an idle 2-CPU machine; the script may first
/// wait (at most 10 min) for another run of itself to finish.
const DEADLINE: Duration = Duration::from_secs(900);

/// bash's own `kill` (no procps needed): `signal("-TERM 123")`.
fn signal(args: &str) {
    let _ = Command::new("bash")
        .args(["-c", &format!("kill {args}")])
        .status();
}

/// The mean of a row of hyperfine's markdown table: `| `name` | 1.234 | ...`.
fn mean(stdout: &str, name: &str) -> Option<f64> {
    let prefix = format!("| `{name}` |");
    let line = stdout.lines().find(|l| l.starts_with(&prefix))?;
    line.trim_matches('|')
        .split('|')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn batch_deploy_smoke_run_prints_every_row_and_the_ratio() {
    let bin = Binaries::find().expect("the binaries");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut child = Command::new("bash")
        .arg(root.join("bench/batch-deploy.sh"))
        .arg("--smoke")
        .arg("--bin-dir")
        .arg(&bin.dir)
        .current_dir(&root)
        .env_remove("MCP_MASTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung run can be ended as a whole.
        .process_group(0)
        .spawn()
        .expect("run bash bench/batch-deploy.sh");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if start.elapsed() > DEADLINE {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(status) = status else {
        // SIGTERM: the script's trap stops what it started, by pid.
        signal(&format!("-TERM {pid}"));
        let grace = Instant::now();
        while child.try_wait().ok().flatten().is_none() && grace.elapsed().as_secs() < 30 {
            std::thread::sleep(Duration::from_millis(100));
        }
        signal(&format!("-KILL -- -{pid}"));
        let _ = child.wait();
        panic!(
            "the smoke run took over {DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default()
        );
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(status.success(), "the script failed: {status}\n{context}");
    let took: u64 = stdout
        .split("batch-deploy: took ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'took N s' line\n{context}"));
    assert!(took < 120, "the smoke run took {took} s\n{context}");
    for row in [
        "mcp deploy DIR",
        "docker run -d x4",
        "docker run -d x4 in parallel",
    ] {
        let s = mean(&stdout, row).unwrap_or_else(|| panic!("no row '{row}'\n{context}"));
        assert!(s > 0.0, "row '{row}': mean {s}\n{context}");
    }
    assert!(
        stdout.contains("mcp deploy DIR / docker run -d x4: "),
        "no ratio\n{context}"
    );
}
