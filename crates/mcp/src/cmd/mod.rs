//! One module per subcommand.

pub mod agent;
pub mod deploy;
pub mod dev;
pub mod lifecycle;
pub mod list;
pub mod login;
pub mod logs;
pub mod node;
pub mod ps;
pub mod route;
pub mod status;
pub mod validate;
