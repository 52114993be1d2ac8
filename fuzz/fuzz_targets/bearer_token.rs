//! Fuzzes the path every master RPC takes with an operator's credentials:
//! `parse_bearer` on the authorization header, then `TokenKey::verify` with a
//! fixed key. Arbitrary input must be refused with an error, never a panic, and
//! nothing the fuzzer writes can carry a valid signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_pki::token::{parse_bearer, TokenKey};

fuzz_target!(|header: &str| {
    let key = TokenKey::from_bytes(&[0x5a; 32]);
    // The raw input as a token too, so verify sees more than b64token text.
    let _ = key.verify(header, 0);
    if let Ok(token) = parse_bearer(header) {
        assert!(!token.is_empty());
        assert!(header.contains(token));
        let _ = key.verify(token, 0);
        let _ = key.verify(token, u64::MAX);
    }
});
