//! mc-proxy, the edge proxy of SPEC §7: a pure ClientHello parser (`sni`), a
//! pure route table (`routes`), its config (`config`), and the L4 passthrough
//! around them (`proxy` accepts and routes, `l4` forwards). The admin API,
//! `routes.db` and L7 termination come next.

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
