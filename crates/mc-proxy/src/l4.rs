//! L4 passthrough once a route is chosen: the PROXY protocol v2 header, and the
//! two-way copy between client and backend with half-close (one side's EOF
//! shuts the other side's write; the reverse direction keeps flowing) and an
//! idle timeout. On Linux the bytes move through a pipe with splice(2) and never
//! enter user space; elsewhere, or when asked, a plain read/write loop.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How bytes are copied between client and backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CopyMode {
    /// splice(2) through a pipe on Linux; `Plain` elsewhere.
    #[default]
    Splice,
    /// A read/write loop through a user-space buffer.
    Plain,
}

/// Bytes moved by one forwarded connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub to_backend: u64,
    pub to_client: u64,
}

/// Why a forwarded connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("copy client to backend: {0}")]
    ToBackend(io::Error),
    #[error("copy backend to client: {0}")]
    ToClient(io::Error),
    #[error("idle for {0:?}")]
    Idle(Duration),
}

/// The last time a byte moved either way.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
    /// Returns once no byte has moved for `idle`.
    pub(crate) async fn idle(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Copies both ways until both sides have ended their writes, or one fails, or
/// nothing moves for `idle`. Both sockets are closed on return.
pub async fn forward(
    client: TcpStream,
    backend: TcpStream,
    idle: Duration,
    mode: CopyMode,
) -> Result<Moved, ForwardError> {
    let (client_r, client_w) = client.into_split();
    let (backend_r, backend_w) = backend.into_split();
    let activity = Activity::new();
    let both = async {
        tokio::try_join!(
            async {
                one_way(client_r, backend_w, mode, &activity)
                    .await
                    .map_err(ForwardError::ToBackend)
            },
            async {
                one_way(backend_r, client_w, mode, &activity)
                    .await
                    .map_err(ForwardError::ToClient)
            },
        )
    };
    tokio::select! {
        r = both => r.map(|(to_backend, to_client)| Moved { to_backend, to_client }),
        () = activity.idle(idle) => Err(ForwardError::Idle(idle)),
    }
}

/// One direction: copy until `from`'s EOF, then shut `to`'s write side.
async fn one_way(
    from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: CopyMode,
    activity: &Activity,
) -> io::Result<u64> {
    let moved = match mode {
        #[cfg(target_os = "linux")]
        CopyMode::Splice => match std::io::pipe() {
            Ok(pipe) => splice_copy(&from, &to, pipe, activity).await?,
            // Out of descriptors for the pipe: the plain copy needs none.
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for splice, copying plainly");
                plain_copy(from, &mut to, activity).await?
            }
        },
        _ => plain_copy(from, &mut to, activity).await?,
    };
    to.shutdown().await?;
    Ok(moved)
}

async fn plain_copy(
    mut from: OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    activity: &Activity,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        activity.touch();
        to.write_all(&buf[..n]).await?;
        activity.touch();
        total += n as u64;
    }
}

/// Most bytes one splice moves (a default pipe holds 64 KiB).
#[cfg(target_os = "linux")]
const SPLICE_CHUNK: usize = 64 * 1024;

#[cfg(target_os = "linux")]
async fn splice_copy(
    from: &OwnedReadHalf,
    to: &OwnedWriteHalf,
    (pipe_r, pipe_w): (std::io::PipeReader, std::io::PipeWriter),
    activity: &Activity,
) -> io::Result<u64> {
    use crate::splice::splice;
    use tokio::io::Interest;

    let from: &TcpStream = from.as_ref();
    let to: &TcpStream = to.as_ref();
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let n = match from.try_io(Interest::READABLE, || splice(from, &pipe_w, SPLICE_CHUNK)) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        activity.touch();
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(&pipe_r, to, left)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m.min(left),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            activity.touch();
        }
        total += n as u64;
    }
}

/// Connects to a backend for a client (both modes): TCP_NODELAY, and first of
/// all the PROXY v2 header when `proxy` gives (client, address it reached).
/// No timeout here: each caller bounds its whole dial.
pub async fn connect_backend(
    backend: &crate::routes::Backend,
    proxy: Option<(SocketAddr, SocketAddr)>,
) -> io::Result<TcpStream> {
    use crate::routes::Backend;
    let mut tcp = match backend {
        Backend::Addr(a) => TcpStream::connect(a).await?,
        Backend::Name { host, port } => TcpStream::connect((host.as_str(), *port)).await?,
    };
    tcp.set_nodelay(true)?;
    if let Some((peer, local)) = proxy {
        tcp.write_all(&proxy_v2_header(peer, local)).await?;
    }
    Ok(tcp)
}

/// The PROXY protocol v2 header (PROXY command, TCP) that tells the backend the
/// client's address `src` and the address it reached, `dst`. Mixed families are
/// sent as IPv6 with the IPv4 address mapped.
pub fn proxy_v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let mut out = SIGNATURE.to_vec();
    out.push(0x21); // version 2, PROXY
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_ipv4() {
        let h = proxy_v2_header(
            "192.0.2.1:40000".parse().expect("addr"),
            "198.51.100.2:443".parse().expect("addr"),
        );
        let want: Vec<u8> = [
            &b"\r\n\r\n\0\r\nQUIT\n"[..],
            &[
                0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 2, 0x9c, 0x40, 0x01, 0xbb,
            ],
        ]
        .concat();
        assert_eq!(h, want);
    }

    #[test]
    fn proxy_v2_ipv6_and_mixed() {
        let h = proxy_v2_header(
            "[2001:db8::1]:1".parse().expect("addr"),
            "[2001:db8::2]:2".parse().expect("addr"),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        let m = proxy_v2_header(
            "192.0.2.1:1".parse().expect("addr"),
            "[2001:db8::2]:2".parse().expect("addr"),
        );
        assert_eq!(
            &m[16..32],
            &"::ffff:192.0.2.1"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets()
        );
    }
}
