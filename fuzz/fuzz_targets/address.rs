//! Fuzzes `mcp_proto::transport::uri_for`, which reads every address an operator
//! or a config gives (`--master`, `master`, `bootstrap_nodes`): arbitrary text must
//! give a URI or an error naming the address, never a panic, and an accepted
//! address must read back to itself. tonic's own parse of the URI is exercised
//! but not asserted: uri_for accepts hosts tonic refuses ("%:1", "[::1:5",
//! "é:1"), which then fail at connect instead of at config validation (reported).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_proto::transport::uri_for;

fuzz_target!(|text: &str| {
    match uri_for(text) {
        Ok(uri) => {
            assert!(uri.starts_with("http://"), "{uri}");
            assert_eq!(uri_for(&uri).ok().as_deref(), Some(uri.as_str()));
            let _ = mcp_proto::tonic::transport::Endpoint::from_shared(uri);
        }
        Err(e) => assert!(!e.reason.is_empty()),
    }
});
