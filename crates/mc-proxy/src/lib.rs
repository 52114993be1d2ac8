//! mc-proxy, the edge proxy of SPEC §7: a pure ClientHello parser (`sni`), a
//! pure route table (`routes`), its config (`config`), and the L4 passthrough
//! around them (`proxy` accepts and routes, `l4` forwards), `routes.db`
//! (`store`) and the admin API (`admin`, its wire conversions in `wire`). L7
//! termination comes next.

pub mod admin;
pub mod config;
pub mod hostname;
pub mod l4;
pub mod proxy;
pub mod routes;
pub mod sni;
#[cfg(target_os = "linux")]
mod splice;
pub mod store;
pub mod wire;

pub use config::Config;
pub use proxy::{run, Limits, Proxy, Stats};
pub use routes::{Backend, L7Tls, Mode, Route, Table};
