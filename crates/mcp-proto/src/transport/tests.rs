//! The transport against a small gRPC service (the `Nodes` service answering who
//! called): Unix sockets with peer credentials and mode 0600, shutdown with open
//! streams (endless ones and others), handshake limits, and certificates swapped
//! while serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use mcp_pki::ca::Ca;
use mcp_pki::tls::{ClientAuth, Identity};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::*;
use crate::master::v1::{self as wire, nodes_client::NodesClient, nodes_server};

/// Register answers with what the transport recorded of the caller; Heartbeats
/// never ends.
struct WhoCalls;

#[tonic::async_trait]
impl nodes_server::Nodes for WhoCalls {
    async fn enroll(
        &self,
        _: Request<wire::EnrollRequest>,
    ) -> Result<Response<wire::EnrollReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn register(
        &self,
        request: Request<wire::RegisterRequest>,
    ) -> Result<Response<wire::RegisterReply>, Status> {
        let who = match UnixPeer::of(&request) {
            Some(p) => format!("uid={} gid={} pid={:?}", p.uid, p.gid, p.pid),
            None => {
                let peer = PeerInfo::of(&request);
                format!(
                    "cert={} is={}",
                    peer.has_cert(),
                    peer.is(&request.get_ref().name)
                )
            }
        };
        Ok(Response::new(wire::RegisterReply {
            master_node: who,
            heartbeat_interval_ms: 0,
        }))
    }

    type HeartbeatsStream = futures_util::stream::Pending<Result<wire::HeartbeatReply, Status>>;

    async fn heartbeats(
        &self,
        _: Request<tonic::Streaming<wire::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatsStream>, Status> {
        Ok(Response::new(futures_util::stream::pending()))
    }

    async fn issue_certificate(
        &self,
        _: Request<wire::IssueCertificateRequest>,
    ) -> Result<Response<wire::IssueCertificateReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn renew_node_certificate(
        &self,
        _: Request<wire::RenewNodeCertificateRequest>,
    ) -> Result<Response<wire::EnrollReply>, Status> {
        Err(Status::unimplemented("test"))
    }
}

fn routes() -> Routes {
    Routes::new(nodes_server::NodesServer::new(WhoCalls))
}

async fn who(channel: Channel, name: &str) -> Result<String, Status> {
    NodesClient::new(channel)
        .register(wire::RegisterRequest {
            name: name.to_string(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().master_node)
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path()).unwrap();
        Pki { _dir: dir, ca }
    }

    fn identity(&self, name: &str) -> Identity {
        let issued = self
            .ca
            .issue(&[name.to_string()], Duration::from_secs(3600))
            .unwrap();
        Identity::from_pem(
            &issued.cert_pem,
            issued.key_pem.expose(),
            &[self.ca.cert_der().clone()],
        )
        .unwrap()
    }

    fn replace(&self, identity: &Identity, name: &str) {
        let issued = self
            .ca
            .issue(&[name.to_string()], Duration::from_secs(3600))
            .unwrap();
        identity
            .replace(
                &issued.cert_pem,
                issued.key_pem.expose(),
                &[self.ca.cert_der().clone()],
            )
            .unwrap();
    }

    fn server(&self, identity: &Identity) -> ServerTransport {
        ServerTransport::with_tls(ServerTls {
            config: mcp_pki::tls::server_config(
                identity,
                ClientAuth::Optional(self.ca.cert_der().clone()),
            )
            .unwrap(),
            require_name: None,
        })
    }

    fn client(&self, identity: Option<&Identity>, server_name: &str) -> ClientTransport {
        ClientTransport {
            connect_timeout: Some(Duration::from_secs(2)),
            request_timeout: Some(Duration::from_secs(5)),
            tls: Some(ClientTls {
                config: mcp_pki::tls::client_config(self.ca.cert_der(), identity).unwrap(),
                server_name: server_name.to_string(),
            }),
        }
    }
}

/// Serves `transport` on a fresh port of 127.0.0.1; returns the address, the
/// shutdown switch and the server's task.
async fn serve_tcp(
    transport: ServerTransport,
) -> (
    String,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move { transport.serve(routes(), listener, rx).await });
    (address, tx, task)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn unix_socket_is_private_and_names_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let socket = UnixSocket::bind(&path).unwrap();
    assert_eq!(mode(&path), 0o600, "the socket is for its owner only");
    let (tx, rx) = watch::channel(false);
    let transport = ServerTransport::default();
    let server = tokio::spawn(async move { transport.serve_unix(routes(), socket, rx).await });

    let reply = who(unix::connect(&path).await.unwrap(), "x").await.unwrap();
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let gid = std::fs::metadata(dir.path()).unwrap().gid();
    assert_eq!(
        reply,
        format!("uid={uid} gid={gid} pid=Some({})", std::process::id())
    );
    // A lazy channel works as well.
    assert!(who(unix::lazy(&path), "x").await.is_ok());

    // A second server on a live socket is refused; the first keeps serving.
    let err = UnixSocket::bind(&path).unwrap_err();
    assert!(matches!(err, UnixBindError::InUse { .. }), "{err}");
    assert!(who(unix::lazy(&path), "x").await.is_ok());

    tx.send(true).unwrap();
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "the socket file goes with the server");
    assert!(unix::connect(&path).await.is_err());
}

#[tokio::test]
async fn unix_socket_replaces_a_stale_socket_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    // A dead process's socket: the file remains, nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let socket = UnixSocket::bind(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    drop(socket);
    assert!(!path.exists());
    // Leftover private directories would pile up next to the socket.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let err = UnixSocket::bind(&file).unwrap_err();
    assert!(matches!(err, UnixBindError::NotASocket { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    let err = UnixSocket::bind(&dir.path().join("missing/admin.sock")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

/// Opens a Heartbeats stream (which the test service never ends), shuts the
/// server down, and returns how long it took and how the stream ended.
async fn shutdown_with_a_stream_open(
    endless: &'static [&'static str],
) -> (Duration, Result<Option<wire::HeartbeatReply>, Status>) {
    let pki = Pki::new();
    let server_id = pki.identity(mcp_pki::MASTER_NAME);
    let mut transport = pki.server(&server_id);
    transport.grace = Duration::from_millis(300);
    transport.endless = endless;
    let (address, stop, server) = serve_tcp(transport).await;
    let client = pki.client(Some(&pki.identity("orion")), mcp_pki::MASTER_NAME);
    let channel = client.connect(&address).await.unwrap();
    assert_eq!(
        who(channel.clone(), "orion").await.unwrap(),
        "cert=true is=true"
    );
    let (_beats, inbound) = tokio::sync::mpsc::channel::<wire::HeartbeatRequest>(1);
    let mut replies = NodesClient::new(channel)
        .heartbeats(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .unwrap()
        .into_inner();

    let started = Instant::now();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("the server stops despite the open stream")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    let end = tokio::time::timeout(Duration::from_secs(2), replies.message())
        .await
        .expect("the client sees its stream end");
    std::net::TcpListener::bind(&address).expect("the port is free again");
    (took, end)
}

#[tokio::test]
async fn shutdown_ends_endless_streams_at_once() {
    let (took, end) = shutdown_with_a_stream_open(ENDLESS_RPCS).await;
    assert!(took < Duration::from_millis(250), "{took:?}");
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "shutting down");
}

#[tokio::test]
async fn shutdown_closes_other_open_streams_after_the_grace() {
    let (took, end) = shutdown_with_a_stream_open(&[]).await;
    assert!(
        took >= Duration::from_millis(250),
        "the grace was honoured: {took:?}"
    );
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}

#[tokio::test]
async fn shutdown_without_open_rpcs_is_immediate() {
    let pki = Pki::new();
    let (address, stop, server) = serve_tcp(pki.server(&pki.identity(mcp_pki::MASTER_NAME))).await;
    // An idle connection does not hold the server up.
    let channel = pki
        .client(None, mcp_pki::MASTER_NAME)
        .connect(&address)
        .await
        .unwrap();
    assert_eq!(who(channel, "x").await.unwrap(), "cert=false is=false");
    let started = Instant::now();
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    std::net::TcpListener::bind(&address).expect("the port is free again");
}

/// Connects and sends nothing: no ClientHello ever.
async fn silent(address: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(address).await.unwrap()
}

/// Waits for the server to close `stream`; how long it took.
async fn closed_after(mut stream: tokio::net::TcpStream, within: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(within, stream.read(&mut buf))
        .await
        .expect("the server cut the silent client off");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    started.elapsed()
}

#[tokio::test]
async fn silent_clients_are_cut_off_and_do_not_block_others() {
    let pki = Pki::new();
    let server_id = pki.identity(mcp_pki::MASTER_NAME);
    let client = pki.client(None, mcp_pki::MASTER_NAME);

    // Many silent clients within the limit: a real client is served at once.
    let mut transport = pki.server(&server_id);
    transport.limits.handshake_timeout = Duration::from_millis(600);
    let (address, stop, server) = serve_tcp(transport).await;
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(silent(&address).await);
    }
    let started = Instant::now();
    assert!(who(client.connect(&address).await.unwrap(), "x")
        .await
        .is_ok());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served behind 20 silent clients in {:?}",
        started.elapsed()
    );
    for stream in flood {
        closed_after(stream, Duration::from_secs(2)).await;
    }
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();

    // One handshake at a time: a silent client holds the only slot until its
    // timeout, then the next client gets through.
    let mut transport = pki.server(&server_id);
    transport.limits = AcceptLimits {
        max_handshakes: 1,
        handshake_timeout: Duration::from_millis(500),
    };
    let (address, stop, server) = serve_tcp(transport).await;
    let hog = silent(&address).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let served = tokio::spawn({
        let client = client.clone();
        let address = address.clone();
        async move { who(client.connect(&address).await.unwrap(), "x").await }
    });
    let cut = closed_after(hog, Duration::from_secs(2)).await;
    assert!(cut <= Duration::from_millis(600), "{cut:?}");
    served.await.unwrap().unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "waited for the slot: {waited:?}"
    );
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn swapped_certificates_are_presented_from_the_next_handshake() {
    let pki = Pki::new();
    let server_id = pki.identity("first");
    let (address, stop, server) = serve_tcp(pki.server(&server_id)).await;
    let client_id = pki.identity("alpha");

    // Client side: the new certificate names the caller on new connections, while
    // an open connection keeps the one it was made with.
    let client = pki.client(Some(&client_id), "first");
    let old = client.connect(&address).await.unwrap();
    assert_eq!(
        who(old.clone(), "alpha").await.unwrap(),
        "cert=true is=true"
    );
    pki.replace(&client_id, "beta");
    let new = client.connect(&address).await.unwrap();
    assert_eq!(who(new.clone(), "beta").await.unwrap(), "cert=true is=true");
    assert_eq!(who(new, "alpha").await.unwrap(), "cert=true is=false");
    assert_eq!(who(old, "alpha").await.unwrap(), "cert=true is=true");

    // Server side: a client expecting the new name gets in only after the swap.
    let second = pki.client(None, "second");
    assert!(second.connect(&address).await.is_err());
    pki.replace(&server_id, "second");
    assert!(who(second.connect(&address).await.unwrap(), "x")
        .await
        .is_ok());
    assert!(pki.client(None, "first").connect(&address).await.is_err());

    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn conns_close_what_is_open_and_forget_what_is_dropped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let conns = conns::Conns::default();
        let tracked = std::sync::Arc::new(conns.track());
        assert_eq!(conns.len(), 1);
        // A task waiting on the connection is woken by close_all.
        let waiter = {
            let tracked = tracked.clone();
            tokio::spawn(std::future::poll_fn(move |cx| {
                if tracked.closed(cx) {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            }))
        };
        tokio::task::yield_now().await;
        assert_eq!(conns.close_all(), 1);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        // One registered after close_all is closed at once.
        let late = conns.track();
        assert!(std::future::poll_fn(|cx| std::task::Poll::Ready(late.closed(cx))).await);
        drop(late);
        drop(tracked);
        assert_eq!(conns.len(), 0);
    });
}

#[test]
fn endless_rpcs_name_real_methods() {
    let agent = crate::agent::v1::agent_server::SERVICE_NAME;
    let nodes = crate::master::v1::nodes_server::SERVICE_NAME;
    let master = crate::master::v1::master_server::SERVICE_NAME;
    assert_eq!(
        ENDLESS_RPCS,
        [
            format!("/{nodes}/Heartbeats"),
            format!("/{master}/Logs"),
            format!("/{agent}/Logs"),
        ]
    );
}
