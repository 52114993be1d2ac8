//! Replacing a running mc-proxy without refusing a connection, as haproxy's
//! `-x` does: a new mc-proxy started on the same `data_dir` asks the running
//! one, over `<data_dir>/handover.sock` (0600, root and the proxy's uid only),
//! for its listening sockets. The old one stops its admin API (so the new one
//! reads a settled `routes.db` and takes the admin socket), sends the sockets
//! with `SCM_RIGHTS`, and once the new one confirms it is serving, stops
//! accepting and drains. Both accept from one kernel queue meanwhile, so no
//! connection finds the port closed. If the new one never confirms, the old
//! one resumes its admin API and goes on alone.
//!
//! The exchange, one line each: the taker sends `take v1`; the running proxy
//! answers `mc-proxy-handover v1 NAME...` with one descriptor per name
//! (`listen`, `http_listen`, `metrics_listen`); the taker sends `ok` when its
//! admin socket is bound.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// The socket's file name in `data_dir`.
pub const SOCKET: &str = "handover.sock";
const REQUEST: &[u8] = b"take v1\n";
const ANSWER: &str = "mc-proxy-handover v1";
/// Time each side gives the other to answer.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin API is asked to do around a handover.
pub enum AdminCommand {
    /// Stop serving (and release the socket); answer when stopped.
    Pause(oneshot::Sender<()>),
    /// Serve again after a handover that did not complete.
    Resume,
}

/// Listening sockets taken from a running mc-proxy, by name.
pub struct Taken {
    pub listeners: Vec<(String, TcpListener)>,
    stream: UnixStream,
}

impl Taken {
    /// The socket taken for `name`, if the running proxy had one.
    pub fn remove(&mut self, name: &str) -> Option<TcpListener> {
        let i = self.listeners.iter().position(|(n, _)| n == name)?;
        Some(self.listeners.remove(i).1)
    }

    /// Tells the old proxy this one serves: it stops accepting and drains.
    pub fn confirm(mut self) -> io::Result<()> {
        self.stream.write_all(b"ok\n")
    }
}

/// Asks the mc-proxy serving `socket` for its listening sockets; `None` when
/// none runs there.
pub fn take(socket: &Path) -> anyhow::Result<Option<Taken>> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("connect {}", socket.display())),
    };
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream
        .write_all(REQUEST)
        .with_context(|| format!("ask {} for its sockets", socket.display()))?;
    let (data, fds) = crate::fdpass::recv(&stream, 512)
        .with_context(|| format!("receive the sockets from {}", socket.display()))?;
    let text = String::from_utf8_lossy(&data);
    let Some(names) = text.trim_end().strip_prefix(ANSWER) else {
        bail!(
            "{}: not a handover answer: {:?}",
            socket.display(),
            text.chars().take(80).collect::<String>()
        );
    };
    let names: Vec<&str> = names.split_whitespace().collect();
    if names.len() != fds.len() || !names.contains(&"listen") {
        bail!(
            "{}: {} sockets for names {names:?}",
            socket.display(),
            fds.len()
        );
    }
    let mut listeners = Vec::new();
    for (name, fd) in names.into_iter().zip(fds) {
        let l = TcpListener::from(fd);
        l.set_nonblocking(true)?;
        listeners.push((name.to_string(), l));
    }
    Ok(Some(Taken { listeners, stream }))
}

/// The taken socket for `name` if it listens on `want`, else `None`; an error
/// when the running proxy listens elsewhere, since both cannot have the port.
pub fn check(
    taken: &mut Taken,
    name: &str,
    want: Option<SocketAddr>,
) -> anyhow::Result<Option<TcpListener>> {
    let got = taken.remove(name);
    match (got, want) {
        (None, _) => Ok(None),
        (Some(l), Some(want)) => {
            let at = l.local_addr()?;
            if at != want {
                bail!(
                    "the running mc-proxy's {name} is {at}, this config's is {want}: stop it first"
                );
            }
            Ok(Some(l))
        }
        (Some(_), None) => Ok(None),
    }
}

/// Offers `listeners` on `socket` to the next mc-proxy until `shutdown`, or
/// until one takes them: then `handed` turns true (stop accepting, drain).
pub async fn offer(
    socket: PathBuf,
    listeners: Vec<(&'static str, OwnedFd)>,
    admin: mpsc::Sender<AdminCommand>,
    handed: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // A previous proxy's file (it may still run, draining, unreachable now).
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", socket.display())),
    }
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .with_context(|| format!("bind {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let own = own_uid(&socket)?;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "handover accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = crate::proxy::stopped(&mut shutdown) => break,
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == 0 || c.uid() == own => {}
            Ok(c) => {
                warn!(
                    uid = c.uid(),
                    "handover refused: not root nor the proxy's uid"
                );
                continue;
            }
            Err(e) => {
                warn!(error = %e, "handover refused: caller unknown");
                continue;
            }
        }
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        let (done_tx, done_rx) = oneshot::channel();
        if admin.send(AdminCommand::Pause(done_tx)).await.is_err() {
            break; // the admin API has ended: we are stopping anyway
        }
        let _ = done_rx.await;
        let fds: Vec<(&'static str, OwnedFd)> = listeners
            .iter()
            .map(|(n, fd)| fd.try_clone().map(|fd| (*n, fd)))
            .collect::<io::Result<_>>()?;
        let outcome = tokio::task::spawn_blocking(move || hand(stream, fds))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        match outcome {
            Ok(()) => {
                info!("listening sockets handed to a new mc-proxy: draining");
                let _ = handed.send(true);
                break;
            }
            Err(e) => {
                warn!(error = %e, "handover did not complete: serving on");
                let _ = admin.send(AdminCommand::Resume).await;
            }
        }
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// One handover on a blocking stream: read the request, send the sockets,
/// wait for `ok`.
fn hand(mut stream: UnixStream, fds: Vec<(&'static str, OwnedFd)>) -> io::Result<()> {
    let mut request = [0u8; REQUEST.len()];
    stream.read_exact(&mut request)?;
    if request != REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a handover request",
        ));
    }
    let names: Vec<&str> = fds.iter().map(|(n, _)| *n).collect();
    let answer = format!("{ANSWER} {}\n", names.join(" "));
    let borrowed: Vec<_> = fds.iter().map(|(_, fd)| fd.as_fd()).collect();
    crate::fdpass::send(&stream, answer.as_bytes(), &borrowed)?;
    let mut ok = [0u8; 3];
    stream.read_exact(&mut ok)?;
    if &ok != b"ok\n" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the new mc-proxy did not confirm",
        ));
    }
    Ok(())
}

/// This process's uid: the owner of the socket file it just created.
fn own_uid(socket: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::symlink_metadata(socket)
        .with_context(|| format!("stat {}", socket.display()))?
        .uid())
}
