//! mc-proxy, the edge proxy of SPEC §7: a pure ClientHello parser (`sni`), a
//! pure route table (`routes`) and its config (`config`).

pub mod config;
pub mod hostname;
pub mod routes;
pub mod sni;

pub use config::Config;
pub use routes::{Backend, Mode, Route, Table};
