//! The one way MCP processes dial and listen for gRPC. Every connection goes through
//! here so that TLS (and mutual TLS for agents) is a property of the transport, set in
//! one place, rather than something each caller remembers.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How a client reaches a peer. TLS settings join this struct; callers do not change.
#[derive(Clone, Debug, Default)]
pub struct ClientTransport {
    /// Bound on establishing a connection.
    pub connect_timeout: Option<Duration>,
    /// Bound on each request, streaming ones excepted.
    pub request_timeout: Option<Duration>,
}

/// An address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("bad address {address:?}: {reason}")]
pub struct AddressError {
    pub address: String,
    pub reason: String,
}

/// `host:port`, or `http://host:port`, as the URI tonic dials.
pub fn uri_for(address: &str) -> Result<String, AddressError> {
    let address = address.trim();
    let bad = |reason: &str| AddressError {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let rest = if let Some(rest) = address.strip_prefix("http://") {
        rest
    } else if address.contains("://") {
        return Err(bad("only host:port or http://host:port is supported"));
    } else {
        address
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest.contains('/') || rest.contains('@') || rest.contains(char::is_whitespace) {
        return Err(bad("expected host:port"));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(bad("missing :port"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("expected host:port with a port in 1-65535"));
    }
    Ok(format!("http://{rest}"))
}

impl ClientTransport {
    /// An endpoint for `address`, not yet connected.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, AddressError> {
        let uri = uri_for(address)?;
        let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| AddressError {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
        endpoint = endpoint
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(timeout) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        Ok(endpoint)
    }

    /// A channel that connects on first use and reconnects as needed.
    pub fn lazy(&self, address: &str) -> Result<Channel, AddressError> {
        Ok(self.endpoint(address)?.connect_lazy())
    }

    /// A channel connected now.
    pub async fn connect(&self, address: &str) -> Result<Channel, ConnectError> {
        let endpoint = self.endpoint(address)?;
        endpoint.connect().await.map_err(|e| ConnectError::Connect {
            address: address.to_string(),
            reason: source_chain(&e),
        })
    }
}

/// Dialling failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// How a server listens. TLS settings join this struct.
#[derive(Clone, Debug, Default)]
pub struct ServerTransport {}

impl ServerTransport {
    /// A server builder with MCP's settings.
    pub fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
    }
}

/// An error and its causes on one line: `a: b: c`.
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::uri_for;

    #[test]
    fn addresses() {
        assert_eq!(
            uri_for("127.0.0.11:9443").ok().as_deref(),
            Some("http://127.0.0.11:9443")
        );
        assert_eq!(uri_for("http://a:1/").ok().as_deref(), Some("http://a:1"));
        for bad in [
            "",
            "a",
            "a:0",
            "a:70000",
            "ftp://a:1",
            "a:1/x",
            ":1",
            "u@a:1",
            "https://a:1",
        ] {
            assert!(uri_for(bad).is_err(), "{bad} should be refused");
        }
    }
}
