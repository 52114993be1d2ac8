//! `mcp route list`: the edge routes the master derives, with their state.

use mcp_proto::master::v1::ListRoutesRequest;

use crate::error::CliError;
use crate::{client, output, Ctx};

pub async fn list(ctx: &Ctx) -> Result<(), CliError> {
    let mut master = client::master(ctx).await?;
    let routes = master
        .list_routes(ListRoutesRequest {})
        .await?
        .into_inner()
        .routes;
    if ctx.json {
        ctx.print_json(&output::routes_json(&routes));
    } else if !ctx.quiet {
        print!("{}", output::routes_table(&routes));
    }
    Ok(())
}
