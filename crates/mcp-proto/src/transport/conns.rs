//! The open server connections, so that shutdown can close them when the grace
//! period is over. Each accepted connection gets a switch that its I/O wrapper
//! (`ServerConn`, `UnixConn`) checks whenever it is polled, with the task's waker
//! registered: `close_all` flips every switch and wakes the tasks, whose reads then
//! end as at end of file and whose writes fail, so hyper drops the connection and
//! the socket closes. No descriptor is duplicated: a connection costs one fd, which
//! matters at ten thousand agents per master.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// One connection's switch.
#[derive(Default)]
struct Switch {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Switch {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: HashMap<u64, Arc<Switch>>,
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
    pub(crate) fn track(&self) -> Tracked {
        let mut inner = self.lock();
        let switch = Arc::new(Switch::default());
        if inner.closed {
            switch.close();
        }
        let id = inner.next;
        inner.next += 1;
        inner.open.insert(id, switch.clone());
        Tracked {
            conns: self.clone(),
            id,
            switch,
        }
    }

    /// Closes every open connection, and any registered later; returns how many
    /// were open.
    pub(crate) fn close_all(&self) -> usize {
        let mut inner = self.lock();
        inner.closed = true;
        for switch in inner.open.values() {
            switch.close();
        }
        inner.open.len()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().open.len()
    }
}

/// Keeps a connection registered; its I/O wrapper asks it whether to stop.
pub(crate) struct Tracked {
    conns: Conns,
    id: u64,
    switch: Arc<Switch>,
}

impl Tracked {
    /// True once the server closed this connection; otherwise the task is woken when
    /// it does.
    pub(crate) fn closed(&self, cx: &mut Context<'_>) -> bool {
        if self.switch.closed.load(Ordering::SeqCst) {
            return true;
        }
        self.switch.waker.register(cx.waker());
        self.switch.closed.load(Ordering::SeqCst)
    }

    /// What a read returns once closed: end of file.
    pub(crate) fn poll_read_closed(&self, cx: &mut Context<'_>) -> Option<Poll<io::Result<()>>> {
        self.closed(cx).then_some(Poll::Ready(Ok(())))
    }

    /// What a write returns once closed.
    pub(crate) fn poll_write_closed<T>(&self, cx: &mut Context<'_>) -> Option<Poll<io::Result<T>>> {
        self.closed(cx).then(|| {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the server is shutting down",
            )))
        })
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.conns.lock().open.remove(&self.id);
    }
}
