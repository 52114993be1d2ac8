//! `mcp node list` and `mcp node show NODE`.

use mcp_proto::master::v1::ListNodesRequest;

use crate::error::CliError;
use crate::{client, output, Ctx};

pub async fn list(ctx: &Ctx) -> Result<(), CliError> {
    let mut master = client::master(ctx).await?;
    let nodes = master
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    if ctx.json {
        ctx.print_json(&serde_json::Value::Array(
            nodes.iter().map(output::node_json).collect(),
        ));
    } else if !ctx.quiet {
        print!("{}", output::nodes_table(&nodes));
    }
    Ok(())
}

pub async fn show(ctx: &Ctx, name: &str) -> Result<(), CliError> {
    let mut master = client::master(ctx).await?;
    let nodes = master
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    let node = nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| CliError::failed(format!("no node {name:?} is registered")))?;
    if ctx.json {
        ctx.print_json(&output::node_json(node));
    } else if !ctx.quiet {
        let value = output::node_json(node);
        if let Some(map) = value.as_object() {
            for (key, v) in map {
                println!("{key:<22} {v}");
            }
        }
    }
    Ok(())
}
