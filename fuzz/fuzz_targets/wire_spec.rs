//! Fuzzes what an agent does with a deploy from the wire: protobuf-decode a
//! `mcp.agent.v1.ServiceSpec`, then `ServiceDef::try_from` it (the same checks as a
//! definition file). Arbitrary bytes must give a definition or an error, never a
//! panic, and an accepted definition must survive the trip back to the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_proto::agent::v1::ServiceSpec;
use mcp_proto::prost::Message;
use mcp_types::ServiceDef;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = ServiceSpec::decode(data) else {
        return;
    };
    if let Ok(def) = ServiceDef::try_from(spec) {
        let again = ServiceDef::try_from(ServiceSpec::from(&def));
        assert_eq!(again.as_ref().ok(), Some(&def), "the wire trip changed it");
    }
});
