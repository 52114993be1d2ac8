//! CI smoke test of `bench/proxy-vs-nginx-haproxy.sh` (127.0.0.191-194, fixed
//! ports 8080, 8443, 8444): the script run with `--smoke` against this test's
//! mc-proxy binary must exit 0 and print a table with every row, each cell of
//! mc-proxy, nginx and haproxy a number (the L4 rows' direct cell too), so the
//! benchmark keeps working as mc-proxy changes. Needs nginx, libnginx-mod-stream,
//! haproxy, wrk, nghttp2-client (h2load), curl, openssl and python3 (`.ci/run`
//! installs them) and two CPUs. Runs of the script take turns (a lock on the
//! script file). It kills what it started on exit; on our deadline it gets
//! SIGTERM, then its process group SIGKILL.

use std::path::Path;
use std::time::Duration;

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

/// A cell's leading number: "123.4", "0.315 (+0.153)".
fn number(cell: &str) -> Option<f64> {
    cell.split_whitespace().next()?.parse().ok()
}

#[test]
fn bench_script_smoke_run_prints_every_row() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stdout = mcp_local_fleet::run_bench_script(
        &root,
        "bench/proxy-vs-nginx-haproxy.sh",
        &["--smoke".as_ref(), "--mc-proxy".as_ref(), BIN.as_ref()],
        &[],
        DEADLINE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let context = format!("stdout:\n{stdout}");
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
