//! `mcp ps`: every component instance fleet-wide.

use mcp_proto::master::v1::ListRequest;

use crate::error::CliError;
use crate::{client, output, Ctx};

pub async fn run(ctx: &Ctx) -> Result<(), CliError> {
    let mut master = client::master(ctx).await?;
    let services = master.list(ListRequest {}).await?.into_inner().services;
    if ctx.json {
        ctx.print_json(&output::ps_json(&services));
    } else if !ctx.quiet {
        print!("{}", output::ps_table(&services));
    }
    Ok(())
}
