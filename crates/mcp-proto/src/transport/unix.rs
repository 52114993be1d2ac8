//! gRPC over a Unix socket, for local administration (mc-proxy's admin API, the
//! edge agent programming it). The socket file is created with mode 0600 (bound in
//! a private directory, restricted, then renamed into place, so it is never
//! reachable with looser permissions); a stale file left by a dead process is
//! replaced, a live server's socket or any other file is not. Each connection
//! records the peer's uid, gid and pid (`SO_PEERCRED`) as a `UnixPeer` in every
//! request's extensions, for handlers that check who calls.
//!
//! ```no_run
//! use mcp_proto::tonic::{service::Routes, Request, Status};
//! use mcp_proto::transport::{unix, ServerTransport, UnixPeer, UnixSocket};
//!
//! // In a handler: only root and the socket's owner get in.
//! fn admit<T>(request: &Request<T>, owner: u32) -> Result<(), Status> {
//!     match UnixPeer::of(request) {
//!         Some(peer) if peer.uid == 0 || peer.uid == owner => Ok(()),
//!         _ => Err(Status::permission_denied("not the socket's owner")),
//!     }
//! }
//!
//! async fn run(routes: Routes, shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
//!     let socket = UnixSocket::bind("/run/mc-proxy/admin.sock".as_ref())?;
//!     ServerTransport::default().serve_unix(routes, socket, shutdown).await?;
//!     Ok(())
//! }
//!
//! async fn dial() -> anyhow::Result<()> {
//!     let channel = unix::connect("/run/mc-proxy/admin.sock".as_ref()).await?;
//!     # let _ = channel;
//!     Ok(())
//! }
//! ```

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};

use super::conns::{Conns, Tracked};
use super::dial::UnixConnector;
use super::{source_chain, stopped, ConnectError};

/// Binding a Unix socket failed.
#[derive(Debug, thiserror::Error)]
pub enum UnixBindError {
    #[error("{path} exists and is not a socket: refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path}: another process is listening on it")]
    InUse { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnixBindError + 'a {
    move |source| UnixBindError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A listening Unix socket, mode 0600. Dropping it removes the socket file, unless
/// another socket has replaced it since.
#[derive(Debug)]
pub struct UnixSocket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    id: (u64, u64),
}

static BIND_SEQ: AtomicU64 = AtomicU64::new(0);

impl UnixSocket {
    /// Binds `path` with mode 0600, replacing a stale socket file. Must be called
    /// within a tokio runtime. The socket is first bound in a private directory
    /// beside `path` (`.mcp-sock-<pid>-<n>/s`), so the directory must be writable
    /// and that longer path must fit the kernel's limit (108 bytes).
    pub fn bind(path: &Path) -> Result<UnixSocket, UnixBindError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(UnixBindError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(UnixBindError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                // Nobody listens: a dead process's socket, replaced below.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(io_err("probe the existing socket", path)(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", path)(e)),
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let private = parent.join(format!(
            ".mcp-sock-{}-{}",
            std::process::id(),
            BIND_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(io_err("create the private directory", &private))?;
        let result = Self::bind_via(&private.join("s"), path);
        let _ = std::fs::remove_dir_all(&private);
        result
    }

    fn bind_via(tmp: &Path, path: &Path) -> Result<UnixSocket, UnixBindError> {
        let listener = std::os::unix::net::UnixListener::bind(tmp).map_err(io_err("bind", tmp))?;
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("restrict to mode 0600", tmp))?;
        std::fs::rename(tmp, path).map_err(io_err("move the socket to", path))?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("set non-blocking", path))?;
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(io_err("register", path))?;
        Ok(UnixSocket {
            listener,
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Who is on the other end of a Unix socket connection (`SO_PEERCRED`, taken when
/// it connected); in every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixPeer {
    pub uid: u32,
    pub gid: u32,
    /// None where the kernel does not tell.
    pub pid: Option<i32>,
}

impl UnixPeer {
    /// The peer of `request`, when it came over a Unix socket of this transport.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<UnixPeer> {
        request.extensions().get::<UnixPeer>().copied()
    }
}

/// An accepted Unix socket connection, registered for shutdown.
pub struct UnixConn {
    stream: UnixStream,
    peer: UnixPeer,
    tracked: Tracked,
}

impl tonic::transport::server::Connected for UnixConn {
    type ConnectInfo = UnixPeer;

    fn connect_info(&self) -> UnixPeer {
        self.peer
    }
}

impl AsyncRead for UnixConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(closed) = this.tracked.poll_read_closed(cx) {
            return closed;
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(closed) = this.tracked.poll_write_closed(cx) {
            return closed;
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepted connections until `stop`; then the socket (and its file) is dropped.
pub(crate) fn incoming(
    socket: UnixSocket,
    conns: Conns,
    mut stop: watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = io::Result<UnixConn>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<UnixConn>>(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tx.closed() => return,
                accepted = socket.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(socket = %socket.path.display(), "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // A handler must be able to rely on the peer's identity: no credentials,
            // no connection.
            let peer = match stream.peer_cred() {
                Ok(cred) => UnixPeer {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                },
                Err(e) => {
                    tracing::warn!(socket = %socket.path.display(), "refused a connection: read its peer credentials: {e}");
                    continue;
                }
            };
            let tracked = conns.track();
            let conn = UnixConn {
                stream,
                peer,
                tracked,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    super::stream_from(rx)
}

fn endpoint() -> Endpoint {
    // The authority is never resolved: the connector dials the path.
    Endpoint::from_static("http://localhost")
}

/// A channel to the gRPC server on the Unix socket `path`, connected on first use.
pub fn lazy(path: &Path) -> Channel {
    endpoint().connect_with_connector_lazy(UnixConnector {
        path: path.to_path_buf(),
    })
}

/// A channel to the gRPC server on the Unix socket `path`, connected now.
pub async fn connect(path: &Path) -> Result<Channel, ConnectError> {
    endpoint()
        .connect_with_connector(UnixConnector {
            path: path.to_path_buf(),
        })
        .await
        .map_err(|e| ConnectError::Connect {
            address: path.display().to_string(),
            reason: source_chain(&e),
        })
}
