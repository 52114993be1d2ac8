//! A proxy served inside the test process on a loopback address; dropping
//! the handle's `stop` sender stops it.

use std::net::SocketAddr;
use std::sync::Arc;

use mc_proxy::{Limits, Proxy, Table};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running proxy: its counters, address, stop switch and serving task.
pub struct Running {
    pub proxy: Arc<Proxy>,
    pub addr: SocketAddr,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves `table` on a free port of `ip` with `limits`.
pub async fn start_proxy(ip: &str, limits: Limits, table: Table) -> Running {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let proxy = Proxy::new(limits).expect("proxy");
    proxy.set_routes(table);
    let (stop, rx) = watch::channel(false);
    let p = Arc::clone(&proxy);
    let task = tokio::spawn(async move { p.serve(listener, rx).await });
    Running {
        proxy,
        addr,
        stop,
        task,
    }
}
