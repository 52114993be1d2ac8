//! Fuzzes the pure config parsers `mcp_master::config::Config::parse` and
//! `mcp_agent::config::Config::parse` (TOML, then validation before any socket is
//! bound): arbitrary text must give a config or an error, never a panic, and an
//! accepted master config keeps its durations within the bounds that deadline
//! arithmetic relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(c) = mcp_master::config::Config::parse("master.toml", text) {
            assert!(c.heartbeat_interval <= mcp_master::config::MAX_HEARTBEAT_INTERVAL);
            assert!(c.missed_heartbeats <= mcp_master::config::MAX_MISSED_HEARTBEATS);
            let deadline = c.heartbeat_interval * c.missed_heartbeats + c.probe_timeout;
            assert!(std::time::Instant::now().checked_add(deadline).is_some());
            for ttl in [c.token_ttl, c.service_cert_ttl, c.node_cert_ttl] {
                assert!(std::time::SystemTime::now().checked_add(ttl).is_some());
            }
        }
    } else {
        let _ = mcp_agent::config::Config::parse("agent.toml", text);
    }
});
