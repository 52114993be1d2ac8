//! Fuzzes `JoinToken::parse`: any UTF-8 text (an operator's paste, an
//! agent.toml) must give a token or a named error, never a panic, an accepted
//! token must print back to the same token, and no error may echo the secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_pki::join::JoinToken;

fuzz_target!(|text: &str| {
    match JoinToken::parse(text) {
        Ok(token) => {
            assert_eq!(token.fingerprint_hex().len(), 64);
            assert_eq!(token.secret.expose().len(), 64);
            let again = JoinToken::parse(token.to_text().expose());
            assert_eq!(
                again.as_ref().ok(),
                Some(&token),
                "to_text did not read back"
            );
            // Debug shows the (public) CA fingerprint; the fuzzer found tokens whose
            // secret equals it, so look for the secret in what remains.
            let debug = format!("{token:?}").replace(&token.fingerprint_hex(), "");
            assert!(!debug.contains(token.secret.expose()), "{debug}");
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
        }
    }
});
