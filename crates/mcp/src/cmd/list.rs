//! `mcp list`: services, where they run, and their routes.

use mcp_proto::master::v1::ListRequest;

use crate::error::CliError;
use crate::{client, output, Ctx};

pub async fn run(ctx: &Ctx) -> Result<(), CliError> {
    let mut master = client::master(ctx).await?;
    let reply = master.list(ListRequest {}).await?.into_inner();
    if ctx.json {
        let mut value = output::list_json(&reply.services);
        output::mark_stale(&mut value, &reply.unanswered);
        ctx.print_json(&value);
    } else if !ctx.quiet {
        print!("{}", output::list_table(&reply.services));
        if let Some(note) = output::unanswered_note(&reply.unanswered) {
            eprintln!("{note}");
        }
    }
    Ok(())
}
