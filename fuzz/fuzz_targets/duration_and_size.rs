//! Fuzzes the quantity parsers of mcp-types that read operators' text in every
//! config and definition: `parse_duration` and `ByteSize::from_str`. Arbitrary text
//! must give a value or an error, never a panic (an overflow included), and an
//! accepted value must print back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_types::duration::{format_duration, parse_duration};
use mcp_types::ByteSize;

fuzz_target!(|text: &str| {
    match parse_duration(text) {
        Ok(d) => assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text:?}"),
        Err(e) => assert!(!e.is_empty()),
    }
    match text.parse::<ByteSize>() {
        Ok(size) => assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size), "{text:?}"),
        Err(e) => assert!(!e.is_empty()),
    }
});
