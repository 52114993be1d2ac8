//! Fuzzes the embedded DNS server's answer (`mcp_master::dns::embedded::answer`),
//! the whole path from a raw query off the socket to the bytes sent back, over a
//! small zone, a zone whose SRV set overflows any UDP size, and the zone not known
//! yet: arbitrary bytes must never panic; an answer is a well-formed DNS response
//! with the query's ID, never sent to a response; over UDP it fits the client's size
//! (512 without EDNS, at most 1232 with it).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use mcp_master::dns::embedded::{answer, Transport, ZoneView};
use mcp_master::reconcile::plan::dns::{DnsRecord, RData, Zone};

const ORIGIN: &str = "svc.mcp.example.net";

fn views() -> &'static [ZoneView; 3] {
    static VIEWS: OnceLock<[ZoneView; 3]> = OnceLock::new();
    VIEWS.get_or_init(|| {
        let record = |name: &str, data: RData| DnsRecord {
            name: format!("{name}.{ORIGIN}"),
            data,
        };
        let srv = |port| RData::Srv {
            port,
            target: format!("hello.{ORIGIN}"),
        };
        let small: Zone = [
            record("hello", RData::Addr("10.0.0.2".parse().unwrap())),
            record("six", RData::Addr("fd00::7".parse().unwrap())),
            record("_http._tcp.hello", srv(41000)),
        ]
        .into();
        let mut big = small.clone();
        for port in 0..300 {
            big.insert(record("_http._tcp.hello", srv(42000 + port)));
        }
        let view = |zone: &Zone| {
            ZoneView::new(
                zone,
                ORIGIN,
                Duration::from_secs(30),
                7,
                Some("127.0.0.1".parse().unwrap()),
            )
            .unwrap()
        };
        [view(&small), view(&big), ZoneView::pending(ORIGIN).unwrap()]
    })
}

fuzz_target!(|bytes: &[u8]| {
    let request = Message::from_vec(bytes).ok();
    let udp_limit = request
        .as_ref()
        .and_then(|m| m.edns.as_ref())
        .map_or(512, |e| usize::from(e.max_payload().clamp(512, 1232)));
    for view in views() {
        for transport in [Transport::Udp, Transport::Tcp] {
            let Some(out) = answer(bytes, view, transport) else {
                assert!(
                    bytes.len() < 12 || bytes[2] & 0x80 != 0,
                    "no answer to a query"
                );
                continue;
            };
            assert!(
                bytes.len() >= 12 && bytes[2] & 0x80 == 0,
                "answered a response"
            );
            let reply = Message::from_vec(&out).expect("the answer parses");
            assert_eq!(reply.message_type, MessageType::Response);
            assert_eq!(&out[..2], &bytes[..2], "the query's ID");
            if transport == Transport::Udp {
                assert!(
                    out.len() <= udp_limit,
                    "{} bytes over UDP, limit {udp_limit}",
                    out.len()
                );
            }
            assert!(out.len() <= usize::from(u16::MAX));
        }
    }
});
