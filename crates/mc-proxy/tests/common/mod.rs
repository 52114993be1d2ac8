//! Helpers shared by mc-proxy's integration tests: a child-process guard, a
//! free port on a loopback address, (`backend`) an HTTP backend with the
//! edge's two CAs, (`inproc`) a proxy inside the test process and (`cli`) the
//! binary's commands.

#[allow(dead_code)]
pub mod backend;
#[allow(dead_code)]
pub mod cli;
#[allow(dead_code)]
pub mod inproc;

/// Kills and reaps a child process when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on `ip` right now.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}
