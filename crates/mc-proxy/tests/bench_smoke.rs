//! CI smoke test of `bench/proxy-vs-nginx-haproxy.sh` (127.0.0.191-194, fixed
//! ports 8080, 8443, 8444): the script run with `--smoke` against this test's
//! mc-proxy binary must exit 0 and print a table with every row, each cell of
//! mc-proxy, nginx and haproxy a number (the L4 rows' direct cell too), so the
//! benchmark keeps working as mc-proxy changes. Needs nginx, libnginx-mod-stream,
//! haproxy, wrk, nghttp2-client (h2load), curl, openssl and python3 (`.ci/run`
//! installs them) and two CPUs. Runs of the script take turns (a lock on the
//! script file). It kills what it started on exit; on our deadline it gets
//! SIGTERM, then its process group SIGKILL.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mc-proxy");

/// Every row the script prints, in order.
const ROWS: &[&str] = &[
    "L7 HTTP/1.1 keep-alive: requests/s",
    "L7 HTTP/1.1 keep-alive: p50 latency, ms",
    "L7 HTTP/1.1 keep-alive: p99 latency, ms",
    "L7 HTTP/1.1 keep-alive: proxy CPU per request, µs",
    "L7 HTTP/2: requests/s",
    "L7 HTTP/2: p50 latency, ms",
    "L7 HTTP/2: p99 latency, ms",
    "L7 HTTP/2: proxy CPU per request, µs",
    "L7 new TLS connections/s (one request each)",
    "L7 new TLS connections: proxy CPU per connection, µs",
    "L4 large transfer: MB/s",
    "L4 large transfer: proxy CPU per GiB, ms",
    "L4 new connection + request: p50, ms (added over direct)",
    "L4 new connection + request: p99, ms (added over direct)",
    "L4 request on an open connection: p50, ms (added over direct)",
    "L4 request on an open connection: p99, ms (added over direct)",
    "proxy RSS after the run (VmRSS), MiB",
    "proxy peak RSS (VmHWM), MiB",
];

/// The smoke run itself takes about 20 s on an idle 2-CPU machine; the script
/// may first wait (at most 10 min) for another run of itself to finish.
const DEADLINE: Duration = Duration::from_secs(900);

/// bash's own `kill` (no procps needed): `signal("-TERM 123")`.
fn signal(args: &str) {
    let _ = Command::new("bash")
        .args(["-c", &format!("kill {args}")])
        .status();
}

/// A cell's leading number: "123.4", "0.315 (+0.153)".
fn number(cell: &str) -> Option<f64> {
    cell.split_whitespace().next()?.parse().ok()
}

#[test]
fn bench_script_smoke_run_prints_every_row() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("bench/proxy-vs-nginx-haproxy.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .args(["--smoke", "--mc-proxy", BIN])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung run can be ended as a whole.
        .process_group(0)
        .spawn()
        .expect("run bash bench/proxy-vs-nginx-haproxy.sh");
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
    let status = match status {
        Some(status) => status,
        None => {
            // SIGTERM: the script's trap kills what it started, by pid.
            signal(&format!("-TERM {pid}"));
            let grace = Instant::now();
            while child.try_wait().ok().flatten().is_none() && grace.elapsed().as_secs() < 15 {
                std::thread::sleep(Duration::from_millis(100));
            }
            signal(&format!("-KILL -- -{pid}"));
            let _ = child.wait();
            panic!(
                "the smoke run took over {DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(status.success(), "the script failed: {status}\n{context}");
    // "...; took 17 s": the run after any wait for another one. A run of full
    // length takes minutes.
    let took: u64 = stdout
        .split("; took ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '; took N s' in the header\n{context}"));
    assert!(
        took < 60,
        "the smoke run took {took} s, meant to be well under a minute\n{context}"
    );
    assert!(
        stdout.contains(
            "| measurement | mc-proxy | nginx | haproxy | direct | mc-proxy / best peer |"
        ),
        "no table header\n{context}"
    );
    for row in ROWS {
        let prefix = format!("| {row} |");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no row '{row}'\n{context}"));
        let cells: Vec<&str> = line
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .skip(1)
            .collect();
        assert_eq!(cells.len(), 5, "row '{row}' has {cells:?}\n{context}");
        for (name, cell) in ["mc-proxy", "nginx", "haproxy"].iter().zip(&cells) {
            assert!(
                number(cell).is_some(),
                "row '{row}', {name}: '{cell}' is not a number\n{context}"
            );
        }
        if row.starts_with("L4 ") && !row.contains("CPU") {
            assert!(
                number(cells[3]).is_some(),
                "row '{row}', direct: '{}' is not a number\n{context}",
                cells[3]
            );
        }
    }
    assert!(
        !stdout.contains("FAILED") && !stdout.contains("skipped"),
        "a cell failed or was skipped\n{context}"
    );
    assert!(
        stdout.contains("```sh") && stdout.contains("wrk ") && stdout.contains("h2load "),
        "the commands are missing\n{context}"
    );
}
