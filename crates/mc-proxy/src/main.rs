//! The mc-proxy binary: nothing to serve yet.
fn main() {}
