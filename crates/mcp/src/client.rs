//! Dialling the master: TLS verified against the fleet CA from the CLI config, and
//! the operator's token (from `token_file`) on every call.

use std::path::PathBuf;
use std::time::Duration;

use mcp_pki::MASTER_NAME;
use mcp_proto::master::v1::master_client::MasterClient;
use mcp_proto::tonic::metadata::{Ascii, MetadataValue};
use mcp_proto::tonic::service::interceptor::InterceptedService;
use mcp_proto::tonic::service::Interceptor;
use mcp_proto::tonic::transport::Channel;
use mcp_proto::tonic::{Request, Status};
use mcp_proto::transport::{ClientTls, ClientTransport};

use crate::error::CliError;
use crate::Ctx;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A master client that carries the operator's token.
pub type Master = MasterClient<InterceptedService<Channel, Auth>>;

/// Where the token lives: the config's `token_file`, else `~/.config/mcp/token`.
pub fn token_file(ctx: &Ctx) -> Result<PathBuf, CliError> {
    match &ctx.config.token_file {
        Some(path) => Ok(ctx.resolve(path)),
        None => crate::config::default_dir()
            .map(|d| d.join("token"))
            .ok_or_else(|| CliError::usage("no token_file in the CLI config and no HOME")),
    }
}

/// The master's `host:port` from `host:port` or `https://host:port` (SPEC §10); the
/// master speaks TLS only, so `http://` is refused.
pub fn master_address(given: &str) -> Result<&str, CliError> {
    let given = given.trim();
    if let Some(rest) = given.strip_prefix("https://") {
        return Ok(rest.trim_end_matches('/'));
    }
    if given.contains("://") {
        return Err(CliError::usage(format!(
            "master address {given:?}: expected host:port or https://host:port"
        )));
    }
    Ok(given)
}

/// A TLS channel to the master, verified against the fleet CA.
pub async fn channel(ctx: &Ctx) -> Result<Channel, CliError> {
    let address = ctx.master.as_deref().ok_or_else(|| {
        CliError::usage(
            "no master address: pass --master, set MCP_MASTER, or set `master` in the CLI config",
        )
    })?;
    let address = master_address(address)?;
    let ca_path = ctx.config.ca_cert.as_ref().map(|p| ctx.resolve(p)).ok_or_else(|| {
        CliError::usage("no ca_cert in the CLI config: point it at the fleet CA (ca.pem in the master's data dir)")
    })?;
    let ca_pem = std::fs::read_to_string(&ca_path)
        .map_err(|e| CliError::usage(format!("read ca_cert {}: {e}", ca_path.display())))?;
    let ca = mcp_pki::cert::certs_from_pem(&ca_pem)
        .map_err(|e| CliError::usage(format!("ca_cert {}: {e}", ca_path.display())))?
        .remove(0);
    let config =
        mcp_pki::tls::client_config(&ca, None).map_err(|e| CliError::usage(e.to_string()))?;
    let transport = ClientTransport {
        connect_timeout: Some(Duration::from_secs(5)),
        request_timeout: None,
        tls: Some(ClientTls {
            config,
            server_name: MASTER_NAME.to_string(),
        }),
    };
    transport.connect(address).await.map_err(|e| match e {
        mcp_proto::transport::ConnectError::Address(e) => CliError::usage(e.to_string()),
        e => CliError::unreachable(format!("the master could not be reached: {e}")),
    })
}

/// A connected master client with the operator's token.
pub async fn master(ctx: &Ctx) -> Result<Master, CliError> {
    let channel = channel(ctx).await?;
    let path = token_file(ctx)?;
    let header = match std::fs::read_to_string(&path) {
        Ok(token) => Some(
            format!("Bearer {}", token.trim())
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| {
                    CliError::usage(format!("{} does not hold a token", path.display()))
                })?,
        ),
        Err(_) => None,
    };
    Ok(MasterClient::with_interceptor(channel, Auth { header })
        .max_decoding_message_size(64 * 1024 * 1024))
}
