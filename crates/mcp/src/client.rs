//! Dialling the master.

use std::time::Duration;

use mcp_proto::master::v1::master_client::MasterClient;
use mcp_proto::tonic::transport::Channel;
use mcp_proto::transport::ClientTransport;

use crate::error::CliError;
use crate::Ctx;

/// A connected master client.
pub async fn master(ctx: &Ctx) -> Result<MasterClient<Channel>, CliError> {
    let address = ctx.master.as_deref().ok_or_else(|| {
        CliError::usage(
            "no master address: pass --master, set MCP_MASTER, or set `master` in the CLI config",
        )
    })?;
    let transport = ClientTransport {
        connect_timeout: Some(Duration::from_secs(5)),
        request_timeout: None,
    };
    let channel = transport.connect(address).await.map_err(|e| match e {
        mcp_proto::transport::ConnectError::Address(e) => CliError::usage(e.to_string()),
        e => CliError::unreachable(format!("the master could not be reached: {e}")),
    })?;
    Ok(MasterClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}
