//! Fuzzes `mc_proxy::sni::parse`, which reads the first bytes of every public
//! connection: arbitrary bytes must give an answer, never a panic; a found name
//! must be a valid lowercase hostname; once a prefix of the input gives a final
//! answer, the whole input gives the same one (no change of mind with more
//! bytes); and parsing only where `sni::wanted` says, as the proxy does, gives
//! the same answer and never misses one at a record boundary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mc_proxy::sni::{parse, wanted, Parsed};

fuzz_target!(|bytes: &[u8]| {
    let whole = parse(bytes);
    if let Parsed::Found(name) = &whole {
        assert_eq!(mc_proxy::hostname::normalize(name).as_deref(), Ok(name.as_str()));
    }
    if let Some(cut) = (0..bytes.len()).find(|&c| parse(&bytes[..c]) != Parsed::NeedMore) {
        assert_eq!(parse(&bytes[..cut]), whole, "prefix of {cut} bytes decided differently");
    }
    // The proxy's reader: parse after the first byte, then at each `wanted` length.
    let seen = (1..=bytes.len())
        .filter(|&len| len == 1 || len >= wanted(&bytes[..len]))
        .map(|len| parse(&bytes[..len]))
        .find(|p| *p != Parsed::NeedMore);
    if let Some(p) = &seen {
        assert_eq!(p, &whole, "the reader decided differently");
    }
    // Input ending on a record boundary is always decided by the reader (one
    // ending mid-record waits for the record, as a real hello never does).
    if bytes.len() == wanted(bytes) && whole != Parsed::NeedMore {
        assert!(seen.is_some(), "the reader missed the answer");
    }
});
