//! `mcp status [SERVICE]`: the fleet summary, or one service with its drift.

use mcp_proto::master::v1::StatusRequest;
use serde_json::json;

use crate::error::CliError;
use crate::{client, output, Ctx};

pub async fn run(ctx: &Ctx, service: Option<String>) -> Result<(), CliError> {
    let mut master = client::master(ctx).await?;
    let reply = master
        .status(StatusRequest {
            service: service.clone(),
        })
        .await?
        .into_inner();
    if ctx.json {
        let value = match &service {
            Some(_) => json!({
                "services": reply.services.iter().map(output::service_json).collect::<Vec<_>>(),
                "events": reply.events.iter().map(output::event_json).collect::<Vec<_>>(),
                "names": reply.names,
                "unanswered": reply.unanswered,
            }),
            None => json!({
                "nodes": reply.nodes.iter().map(output::node_json).collect::<Vec<_>>(),
                "services": reply.services.iter().map(output::service_json).collect::<Vec<_>>(),
                "events": reply.events.iter().map(output::event_json).collect::<Vec<_>>(),
                "unanswered": reply.unanswered,
            }),
        };
        ctx.print_json(&value);
        return Ok(());
    }
    if ctx.quiet {
        return Ok(());
    }
    if service.is_none() {
        let healthy = reply.nodes.iter().filter(|n| n.state == "healthy").count();
        println!("nodes: {} ({} healthy)", reply.nodes.len(), healthy);
        print!("{}", output::nodes_table(&reply.nodes));
        println!();
    }
    let drifting = reply
        .services
        .iter()
        .filter(|s| s.components.iter().any(|c| c.drift))
        .count();
    println!("services: {} ({} drifting)", reply.services.len(), drifting);
    let rows: Vec<Vec<String>> = reply
        .services
        .iter()
        .flat_map(|s| {
            s.components.iter().map(move |c| {
                vec![
                    s.name.clone(),
                    c.name.clone(),
                    s.node.clone(),
                    c.desired.clone(),
                    c.observed.clone(),
                    if c.drift {
                        "DRIFT".to_string()
                    } else {
                        "ok".to_string()
                    },
                    output::limits_cell(c),
                    c.oom_kills.to_string(),
                    c.routes
                        .iter()
                        .map(|r| format!("{}={}", r.name, r.address))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "SERVICE",
                "COMPONENT",
                "NODE",
                "DESIRED",
                "OBSERVED",
                "DRIFT",
                "LIMITS",
                "OOM",
                "ROUTES"
            ],
            &rows
        )
    );
    for s in &reply.services {
        for c in s.components.iter().filter(|c| !c.limits_warning.is_empty()) {
            println!(
                "warning: {}/{} on {}: {}",
                s.name, c.name, s.node, c.limits_warning
            );
        }
    }
    if let Some(note) = output::unanswered_note(&reply.unanswered) {
        println!();
        println!("{note}");
    }
    if !reply.names.is_empty() {
        println!();
        println!("internal names:");
        for name in &reply.names {
            println!("  {name}");
        }
    }
    if !reply.events.is_empty() {
        println!();
        println!("recent events:");
        for e in reply.events.iter().rev().take(20).rev() {
            println!(
                "  {}  {:<12} {}",
                output::rfc3339(e.at_ms / 1000),
                e.node,
                e.message
            );
        }
    }
    Ok(())
}
