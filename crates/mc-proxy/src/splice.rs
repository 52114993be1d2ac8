//! The two system calls of the zero-copy L4 path that std does not wrap:
//! splice(2) between a socket and a pipe, kept in this one small module so the
//! rest of the crate stays free of `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Moves up to `len` bytes from `from` to `to` (one of them a pipe) in the
/// kernel. Never blocks on the pipe; the sockets are non-blocking (tokio's), so
/// `WouldBlock` means "wait for readiness". `Ok(0)` from a socket is its EOF.
pub fn splice(from: &impl AsFd, to: &impl AsFd, len: usize) -> io::Result<usize> {
    let from = from.as_fd();
    let to = to.as_fd();
    // SAFETY: `from` and `to` are borrowed open descriptors that outlive the call;
    // null offsets are what splice(2) requires for pipes and sockets; no memory of
    // ours is read or written by the kernel.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}
