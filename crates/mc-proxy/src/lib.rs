//! mc-proxy, the edge proxy of SPEC §7: a pure ClientHello parser (`sni`), a
//! pure route table (`routes`), its config (`config`), and the I/O around them:
//! `proxy` accepts, routes and drains, `l4` forwards bytes, `l7` terminates TLS
//! and forwards HTTP; `routes.db` (`store`), the admin API (`admin`, its wire
//! conversions in `wire`), the counters (`metrics`) and the plain-HTTP
//! listeners (`plain`), and the ACME challenges it answers (`challenge`).

pub mod admin;
pub mod challenge;
pub mod config;
#[cfg(target_os = "linux")]
mod fdpass;
pub mod handover;
pub mod hostname;
pub mod l4;
pub mod l7;
pub mod metrics;
pub mod plain;
pub mod proxy;
pub mod routes;
pub mod sni;
#[cfg(target_os = "linux")]
mod splice;
pub mod store;
pub mod wire;

pub use config::Config;
pub use proxy::{run, Limits, Live, Proxy, Stats};
pub use routes::{Backend, L7Tls, Mode, Route, Table};
