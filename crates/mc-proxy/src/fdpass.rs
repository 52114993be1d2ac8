//! Passing open descriptors between processes over a Unix socket
//! (`SCM_RIGHTS`), which std does not wrap on stable Rust: the handover of the
//! listening sockets to a new mc-proxy. Kept in this one small module so the
//! rest of the crate stays free of `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors sent in one message.
pub const MAX_FDS: usize = 8;

/// Sends `data` (at least one byte) with `fds` attached, in one message.
pub fn send(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if data.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a message of 1 byte or more and at most 8 descriptors",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let payload = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8).max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is `space` bytes, aligned, and holds one
        // header with room for `payload` bytes of descriptors, as CMSG_SPACE
        // promised; CMSG_FIRSTHDR is non-null because msg_controllen >= one header.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload,
            );
        }
    }
    // SAFETY: msg points at live buffers (iov over `data`, control) for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if (n as usize) < data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "handover message sent in part",
        ));
    }
    Ok(())
}

/// Receives one message of at most `max` bytes and the descriptors attached
/// to it (owned by the caller from here on, closed on drop).
pub fn recv(sock: &UnixStream, max: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; max.max(1)];
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live, writable buffers of the sizes it states;
    // MSG_CMSG_CLOEXEC marks the received descriptors close-on-exec.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote, within
    // msg_controllen, with the CMSG_* macros made for it; each SCM_RIGHTS
    // payload is an array of open descriptors now ours, taken once each.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let bytes = ((*cmsg).cmsg_len as usize).saturating_sub(header);
                let count = bytes / std::mem::size_of::<RawFd>();
                let first = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(first.add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more descriptors than expected in the handover message",
        ));
    }
    data.truncate(n as usize);
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_listener_crosses_a_socket_pair_and_still_accepts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (a, b) = UnixStream::pair().expect("pair");
        send(&a, b"listen", &[listener.as_fd()]).expect("send");
        let (data, mut fds) = recv(&b, 64).expect("recv");
        assert_eq!(data, b"listen");
        assert_eq!(fds.len(), 1);
        drop(listener);
        let taken = std::net::TcpListener::from(fds.remove(0));
        assert_eq!(taken.local_addr().expect("addr"), addr);
        let mut c = std::net::TcpStream::connect(addr).expect("connect to the passed socket");
        let (mut s, _) = taken.accept().expect("accept");
        c.write_all(b"x").expect("write");
        let mut got = [0u8; 1];
        s.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"x");
    }

    #[test]
    fn no_descriptors_and_bad_input() {
        let (a, b) = UnixStream::pair().expect("pair");
        send(&a, b"none", &[]).expect("send");
        let (data, fds) = recv(&b, 64).expect("recv");
        assert_eq!((data.as_slice(), fds.len()), (&b"none"[..], 0));
        assert!(send(&a, b"", &[]).is_err());
    }
}
