//! Dialling for tonic channels: TCP then TLS verifying the server's name, or a Unix
//! socket path.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mcp_pki::rustls::pki_types::ServerName;
use mcp_pki::rustls::ClientConfig;
use tokio::net::{TcpStream, UnixStream};

type Connecting<T> = Pin<Box<dyn std::future::Future<Output = io::Result<T>> + Send>>;

/// A tonic connector: TCP to the URI's authority, then TLS verifying `server_name`.
#[derive(Clone)]
pub struct Connector {
    pub config: Arc<ClientConfig>,
    pub server_name: String,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        let name = self.server_name.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.to_string())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host:port"))?;
            let tcp = TcpStream::connect(&authority).await?;
            let _ = tcp.set_nodelay(true);
            let server_name = ServerName::try_from(name.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("server name {name:?}: {e}"),
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// A tonic connector to a Unix socket; the URI is ignored.
#[derive(Clone, Debug)]
pub struct UnixConnector {
    pub path: PathBuf,
}

impl tower_service::Service<http::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<UnixStream>;
    type Error = io::Error;
    type Future = Connecting<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move {
            let stream = UnixStream::connect(&path).await.map_err(|e| {
                io::Error::new(e.kind(), format!("connect to {}: {e}", path.display()))
            })?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
