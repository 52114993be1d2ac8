//! `mcp logs SERVICE [-c COMPONENT] [-f] [--tail N]`.

use std::io::Write;

use futures_util::StreamExt;
use mcp_proto::master::v1::LogsRequest;

use crate::error::CliError;
use crate::{client, Ctx};

pub async fn run(
    ctx: &Ctx,
    service: &str,
    component: Option<String>,
    follow: bool,
    tail: Option<u32>,
) -> Result<(), CliError> {
    mcp_types::name::check_dns_label(service)
        .map_err(|e| CliError::usage(format!("service: {e}")))?;
    let mut master = client::master(ctx).await?;
    let mut stream = master
        .logs(LogsRequest {
            service: service.to_string(),
            component: component.unwrap_or_default(),
            follow,
            tail,
        })
        .await?
        .into_inner();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let written = if chunk.stream == "stderr" {
            stderr.write_all(&chunk.data)
        } else {
            stdout.write_all(&chunk.data)
        };
        if written.is_err() {
            break; // The reader went away (e.g. `| head`).
        }
        let _ = stdout.flush();
    }
    Ok(())
}
