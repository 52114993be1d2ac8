//! A test that fails leaves nothing behind: dropping a `Fleet` while unwinding from
//! a panic stops its processes and removes the containers and exec instances its
//! agents ran, so a later `mcp dev` on the same engine adopts nothing of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};

use support::*;

#[test]
fn a_panicking_test_leaves_no_containers_or_processes() {
    let binary = fixture(None);
    purge(&["cl-box"]);
    purge_exec("cl-proc", &binary);
    let tmp = tempfile::tempdir().unwrap();
    let spec = FleetSpec::single(tmp.path(), "cl1", "127.0.0.45", "docker");
    let pids = std::cell::RefCell::new(Vec::new());
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let fleet = Fleet::start(spec).unwrap();
        pids.borrow_mut().extend(
            fleet
                .agents
                .values()
                .chain(fleet.master.as_ref())
                .map(|p| p.pid()),
        );
        let boxed = tmp.path().join("cl-box.toml");
        std::fs::write(
            &boxed,
            "name = \"cl-box\"\n[[components]]\nname = \"web\"\nimage = \"mcp-test/hello:1\"\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n",
        )
        .unwrap();
        let exec = tmp.path().join("cl-proc.toml");
        std::fs::write(
            &exec,
            format!(
                "name = \"cl-proc\"\n[[components]]\nname = \"web\"\ndriver = \"exec\"\ncommand = [\"{}\"]\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n",
                binary.display()
            ),
        )
        .unwrap();
        mcp_ok(
            &fleet,
            &["deploy", boxed.to_str().unwrap(), exec.to_str().unwrap()],
        );
        assert_eq!(containers("cl-box", None).len(), 1);
        assert_eq!(processes_of("cl-proc", &binary).len(), 1);
        panic!("deliberate failure with a container and a process running");
    }));
    assert!(outcome.is_err(), "the closure panics");
    assert!(
        containers("cl-box", None).is_empty(),
        "the failed test left its container"
    );
    // The supervisor is SIGKILLed with its group; give the kernel a moment.
    let gone = eventually(std::time::Duration::from_secs(5), || {
        processes_of("cl-proc", &binary).is_empty().then_some(())
    });
    assert!(gone.is_some(), "the failed test left its exec process");
    let alive: Vec<u32> = pids
        .borrow()
        .iter()
        .copied()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(alive.is_empty(), "master or agent still running: {alive:?}");
}
