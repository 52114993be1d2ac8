//! `mcp stop|start|restart|remove SERVICE`.

use mcp_proto::master::v1::ServiceRequest;
use serde_json::json;

use crate::error::CliError;
use crate::{client, output, Ctx};

pub async fn run(ctx: &Ctx, action: &str, service: &str) -> Result<(), CliError> {
    mcp_types::name::check_dns_label(service)
        .map_err(|e| CliError::usage(format!("service: {e}")))?;
    let mut master = client::master(ctx).await?;
    let request = ServiceRequest {
        service: service.to_string(),
    };
    if action == "remove" {
        let reply = master.remove(request).await?.into_inner();
        if ctx.json {
            ctx.print_json(&json!({"service": reply.service, "node": reply.node, "removed": true}));
        } else if !ctx.quiet {
            println!("removed {} from {}", reply.service, reply.node);
        }
        return Ok(());
    }
    let reply = match action {
        "stop" => master.stop(request).await?,
        "start" => master.start(request).await?,
        _ => master.restart(request).await?,
    }
    .into_inner();
    let status = reply
        .status
        .ok_or_else(|| CliError::failed("the master sent an empty reply"))?;
    if ctx.json {
        ctx.print_json(&output::service_json(&status));
    } else if !ctx.quiet {
        print!("{}", output::ps_table(std::slice::from_ref(&status)));
    }
    if status.components.iter().any(|c| c.drift) {
        return Err(CliError::failed(format!(
            "{service} did not reach its desired state ({})",
            status.desired
        )));
    }
    Ok(())
}
