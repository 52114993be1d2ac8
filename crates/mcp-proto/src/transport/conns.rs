//! The open server connections, so that shutdown can close them when the grace
//! period is over. Each accepted socket is registered as a duplicate of its file
//! descriptor; `shutdown(2)` on the duplicate wakes the connection's task with end
//! of file, wherever it waits. The duplicate is dropped with the connection, or the
//! socket would outlive it.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

/// A duplicate of an accepted socket's descriptor.
#[derive(Debug)]
pub(crate) enum Dup {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Dup {
    pub(crate) fn tcp(stream: &tokio::net::TcpStream) -> io::Result<Dup> {
        Ok(Dup::Tcp(stream.as_fd().try_clone_to_owned()?.into()))
    }

    pub(crate) fn unix(stream: &tokio::net::UnixStream) -> io::Result<Dup> {
        Ok(Dup::Unix(stream.as_fd().try_clone_to_owned()?.into()))
    }

    fn shutdown(&self) {
        let _ = match self {
            Dup::Tcp(s) => s.shutdown(Shutdown::Both),
            Dup::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: HashMap<u64, Dup>,
    /// After `close_all`, connections still arriving are closed at once.
    closed: bool,
}

/// The registry of one server's open connections.
#[derive(Clone, Default)]
pub(crate) struct Conns {
    inner: Arc<Mutex<Inner>>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection until the returned guard is dropped.
    pub(crate) fn track(&self, dup: Dup) -> Tracked {
        let mut inner = self.lock();
        if inner.closed {
            dup.shutdown();
        }
        let id = inner.next;
        inner.next += 1;
        inner.open.insert(id, dup);
        Tracked {
            conns: self.clone(),
            id,
        }
    }

    /// Shuts down every open connection, and any registered later.
    pub(crate) fn close_all(&self) -> usize {
        let mut inner = self.lock();
        inner.closed = true;
        for dup in inner.open.values() {
            dup.shutdown();
        }
        inner.open.len()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().open.len()
    }
}

/// Keeps a connection registered; dropping it releases the duplicate descriptor.
pub(crate) struct Tracked {
    conns: Conns,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.conns.lock().open.remove(&self.id);
    }
}
