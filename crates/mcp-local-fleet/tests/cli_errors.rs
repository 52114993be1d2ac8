//! End to end, on the real binaries: every command with `--json` on each failure
//! class of SPEC §10 (usage, invalid definition, unreachable master, refused
//! credentials, operation failed) exits with the class's code and prints the error
//! object `{"error", "code"}` on stdout. Then the operator's side of a frozen node
//! (its agent SIGSTOPped): `mcp ps`/`list`/`status` answer at once from the master's
//! view and mark the node, and a deploy pinned to it is an operation failure naming
//! the node and its state, not "the master could not be reached". Also `logs --json`
//! (one object per line), `--master https://host:port` and the completions.
//! Fleet on 127.0.5.1-2 (exec).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mcp_local_fleet::{eventually, send_signal, Fleet, FleetSpec, NodeSpec};

const SERVICE: &str = "ce-talk";

/// Continues a stopped agent even when the test fails, so the fleet can stop.
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        send_signal(self.0, libc::SIGCONT);
    }
}

/// `mcp` with `args` (config first), password on stdin when given.
fn run(fleet: &Fleet, config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(fleet.bin.path("mcp"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("MCP_MASTER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(stdin.unwrap_or_default().as_bytes());
    }
    child.wait_with_output().unwrap()
}

/// Checks exit code `code` and the SPEC §10 error object; returns its message.
fn expect_error(out: &Output, code: i32, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {stdout} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON object ({e}): {stdout}"));
    assert_eq!(value["code"], code, "{what}: {value}");
    let message = value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {value}"));
    assert!(!message.is_empty(), "{what}: {value}");
    message.to_string()
}

#[test]
fn every_command_exits_by_class_with_a_json_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut spec = FleetSpec::single(dir, "ce1", "127.0.5.1", "exec");
    spec.nodes.push(NodeSpec::worker("ce2", "127.0.5.2"));
    // A long probe timeout: a fleet-wide read must not wait it out on a frozen node.
    spec.heartbeat_interval = "2s".to_string();
    spec.probe_timeout = "5s".to_string();
    let mut fleet = Fleet::start(spec).unwrap();
    let config = dir.join("mcp.toml");
    let mcp = |args: &[&str]| run(&fleet, &config, args, None);

    // A service on ce2 that writes a line to each stream, then sleeps.
    let good = dir.join("talk.toml");
    std::fs::write(
        &good,
        format!(
            "name = \"{SERVICE}\"\nnode = \"ce2\"\n[[components]]\nname = \"web\"\ndriver = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo out-line; echo err-line >&2; echo second; exec sleep 600\"]\n"
        ),
    )
    .unwrap();
    let good = good.to_str().unwrap();
    let out = mcp(&["--json", "deploy", good]);
    assert!(
        out.status.success(),
        "deploy: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"Bad_Name\"\n[[components]]\nname = \"web\"\nimage = \"x:1\"\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();

    // Usage: exit 2, usage errors from clap included.
    for args in [
        &["--json", "frobnicate"][..],
        &["--json", "logout", "extra"],
        &["--json", "logs"],
        &["--json", "deploy"],
        &["--json", "node", "show"],
        &["--json", "completions", "tcsh"],
        &["--json", "stop", "Bad_Name"],
        &["--json", "logs", "Bad_Name"],
        &["--json", "--master", "http://127.0.5.1:9443", "list"],
    ] {
        expect_error(&mcp(args), 2, &args.join(" "));
    }
    let message = expect_error(
        &mcp(&["--json", "deploy", "/nonexistent.toml"]),
        2,
        "deploy /nonexistent.toml",
    );
    assert_eq!(message, "/nonexistent.toml: no such file or directory");

    // An invalid definition: exit 2, naming file, line and key.
    for args in [&["--json", "deploy", bad][..], &["--json", "validate", bad]] {
        let message = expect_error(&mcp(args), 2, &args.join(" "));
        assert!(message.contains("bad.toml:1: name:"), "{message}");
    }

    // The master cannot be reached: exit 3 on every command that asks it.
    let gone = ["--json", "--master", "127.0.5.1:1"];
    let reads: [&[&str]; 11] = [
        &["list"],
        &["ps"],
        &["status"],
        &["status", SERVICE],
        &["node", "list"],
        &["node", "show", "ce1"],
        &["route", "list"],
        &["logs", SERVICE],
        &["stop", SERVICE],
        &["restart", SERVICE],
        &["deploy", good],
    ];
    for args in reads
        .iter()
        .chain([&["start", SERVICE][..], &["remove", SERVICE]].iter())
    {
        let all: Vec<&str> = gone.iter().chain(args.iter()).copied().collect();
        let message = expect_error(&mcp(&all), 3, &all.join(" "));
        assert!(message.contains("could not be reached"), "{message}");
    }
    let out = run(
        &fleet,
        &config,
        &[
            "--json",
            "--master",
            "127.0.5.1:1",
            "login",
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some("x"),
    );
    expect_error(&out, 3, "login to no master");
    // logout to no master: exit 3, and the token is kept (it was not revoked), so
    // the same config still works against the real master.
    let message = expect_error(
        &mcp(&["--json", "--master", "127.0.5.1:1", "logout"]),
        3,
        "logout to no master",
    );
    assert!(message.contains("was not revoked"), "{message}");
    let out = mcp(&["--json", "list"]);
    assert!(out.status.success(), "list after a failed logout: {out:?}");

    // The credentials refused: exit 3. A token that is not one, and a wrong password.
    std::fs::write(dir.join("bogus-token"), "not-a-token").unwrap();
    let bogus = dir.join("bogus.toml");
    std::fs::write(
        &bogus,
        "master = \"127.0.5.1:9443\"\nca_cert = \"master/ca.pem\"\ntoken_file = \"bogus-token\"\n",
    )
    .unwrap();
    for args in reads.iter() {
        let all: Vec<&str> = ["--json"].iter().chain(args.iter()).copied().collect();
        let out = run(&fleet, &bogus, &all, None);
        let message = expect_error(&out, 3, &format!("bogus token: {}", all.join(" ")));
        assert!(!message.contains("could not be reached"), "{message}");
    }
    let out = run(
        &fleet,
        &config,
        &["--json", "login", "--user", "admin", "--password-stdin"],
        Some("wrong password"),
    );
    expect_error(&out, 3, "login with a wrong password");
    // logout with a token the master refuses: nothing to revoke there, so the
    // local copy goes and the answer says it was not revoked (exit 0).
    let out = run(&fleet, &bogus, &["--json", "logout"], None);
    assert!(out.status.success(), "logout of a bogus token: {out:?}");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["logged_out"], true, "{value}");
    assert_eq!(value["revoked"], false, "{value}");
    assert!(!dir.join("bogus-token").exists());

    // The operation failed: exit 1.
    for args in [
        &["--json", "stop", "ce-nothing"][..],
        &["--json", "start", "ce-nothing"],
        &["--json", "restart", "ce-nothing"],
        &["--json", "remove", "ce-nothing"],
        &["--json", "status", "ce-nothing"],
        &["--json", "logs", "ce-nothing"],
        &["--json", "node", "show", "ce-nothing"],
    ] {
        expect_error(&mcp(args), 1, &args.join(" "));
    }
    let nowhere = dir.join("nowhere.toml");
    std::fs::write(
        &nowhere,
        "name = \"ce-nowhere\"\nnode = \"ce-absent\"\n[[components]]\nname = \"web\"\ndriver = \"exec\"\ncommand = [\"/bin/true\"]\n",
    )
    .unwrap();
    let message = expect_error(
        &mcp(&["--json", "deploy", nowhere.to_str().unwrap()]),
        1,
        "deploy pinned to an absent node",
    );
    assert!(message.contains("ce-absent"), "{message}");

    // logs --json: one object per line, each with the SPEC §10 fields.
    let lines = eventually(Duration::from_secs(10), || {
        let out = mcp(&["--json", "logs", SERVICE]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.contains("second")).then_some(text)
    })
    .expect("logs --json shows the service's lines");
    let objects: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for o in &objects {
        for key in ["service", "component", "node", "stream", "line"] {
            assert!(o[key].is_string(), "{key} in {o}");
        }
        assert_eq!(o["service"], SERVICE);
        assert_eq!(o["component"], "web");
        assert_eq!(o["node"], "ce2");
    }
    // (The exec driver keeps one log per instance: its stderr lines come as stdout.)
    let has = |line: &str| objects.iter().any(|o| o["line"] == line);
    assert!(
        has("out-line") && has("err-line") && has("second"),
        "{lines}"
    );

    // logs -f --json streams: the objects arrive while the command keeps running.
    let mut follow = Command::new(fleet.bin.path("mcp"))
        .arg("--config")
        .arg(&config)
        .args(["--json", "logs", "-f", SERVICE])
        .env_remove("MCP_MASTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut streamed = Vec::new();
    while Instant::now() < deadline && !streamed.iter().any(|l: &String| l.contains("second")) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            streamed.push(line);
        }
    }
    let still_running = follow.try_wait().unwrap().is_none();
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = reader.join();
    assert!(still_running, "logs -f ended by itself");
    let last: serde_json::Value =
        serde_json::from_str(streamed.last().map(String::as_str).unwrap_or("null")).unwrap();
    assert_eq!(last["line"], "second", "{streamed:?}");
    assert_eq!(last["node"], "ce2");

    // --master https://host:port is the master's address too.
    let out = mcp(&["--json", "--master", "https://127.0.5.1:9443", "ps"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Completions for each shell.
    for shell in ["bash", "zsh", "fish"] {
        let out = mcp(&["completions", shell]);
        assert!(out.status.success() && out.stdout.len() > 100, "{shell}");
    }

    // A frozen node: its agent stops answering (SIGSTOP) but its TCP port still
    // accepts, so every call to it hangs until a timeout.
    let pid = fleet.agents["ce2"].pid();
    send_signal(pid, libc::SIGSTOP);
    let frozen = Continue(pid);
    // A deploy pinned to the frozen node: the master answered, the node did not.
    // Healthy in the master's eyes (until its heartbeats are missed): the call to its
    // agent times out after the probe timeout.
    let started = Instant::now();
    let message = expect_error(
        &mcp(&["--json", "deploy", good]),
        1,
        "deploy to a frozen node",
    );
    eprintln!(
        "deploy to the frozen node failed in {:?}: {message}",
        started.elapsed()
    );
    assert!(
        message.contains("node ce2 (") && message.contains("did not answer"),
        "{message}"
    );
    assert!(!message.contains("could not be reached"), "{message}");

    for (args, key) in [
        (&["--json", "ps"][..], "service"),
        (&["--json", "list"], "name"),
    ] {
        let started = Instant::now();
        let out = mcp(args);
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            took < Duration::from_secs(3),
            "{} took {took:?}",
            args.join(" ")
        );
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[key] == SERVICE)
            .unwrap_or_else(|| panic!("{rows}"));
        assert_eq!(row["node"], "ce2");
        assert_eq!(row["stale"], true, "{row}");
    }
    let started = Instant::now();
    let status = mcp(&["--json", "status"]);
    assert!(started.elapsed() < Duration::from_secs(3));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["unanswered"], serde_json::json!(["ce2"]), "{status}");
    // The table says so too.
    let out = mcp(&["ps"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ce2 did not answer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Lifecycle commands and logs on the frozen node fail the same way, at once.
    for args in [
        &["--json", "stop", SERVICE][..],
        &["--json", "restart", SERVICE],
        &["--json", "logs", SERVICE],
    ] {
        let started = Instant::now();
        let message = expect_error(&mcp(args), 1, &args.join(" "));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}: {:?}",
            args.join(" "),
            started.elapsed()
        );
        assert!(message.contains("node ce2 ("), "{message}");
    }

    // Continued, it answers again and is no longer marked.
    drop(frozen);
    let fresh = eventually(Duration::from_secs(20), || {
        let rows = fleet.mcp_json(&["ps"]).ok()?;
        let row = rows
            .as_array()?
            .iter()
            .find(|r| r["service"] == SERVICE)?
            .clone();
        (row["stale"] == false).then_some(row)
    });
    assert!(fresh.is_some(), "ce2 is still marked after SIGCONT");
    let out = mcp(&["--json", "remove", SERVICE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fleet.stop();
}
