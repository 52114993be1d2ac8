//! `mcp logs SERVICE [-c COMPONENT] [-f] [--tail N]`: the bytes as the containers
//! wrote them, or with `--json` one object per line (SPEC §10: `{"service",
//! "component", "node", "stream", "line"}`), streamed as the lines arrive.

use std::collections::HashMap;
use std::io::Write;

use futures_util::StreamExt;
use mcp_proto::master::v1::LogsRequest;
use serde_json::json;

use crate::error::CliError;
use crate::{client, Ctx};

/// Cuts chunks into lines, per (component, stream): a line split across chunks is
/// printed once whole, and what is left at the end without a newline is flushed.
#[derive(Default)]
struct Lines {
    partial: HashMap<(String, String), Vec<u8>>,
}

impl Lines {
    /// The complete lines `data` ends, without their `\n` (and `\r`).
    fn push(&mut self, component: &str, stream: &str, data: &[u8]) -> Vec<String> {
        let buffer = self
            .partial
            .entry((component.to_string(), stream.to_string()))
            .or_default();
        buffer.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(at) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=at).collect();
            lines.push(text(&line[..at]));
        }
        lines
    }

    /// The unfinished last lines, once the stream ended.
    fn finish(self) -> Vec<((String, String), String)> {
        let mut rest: Vec<_> = self
            .partial
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(key, b)| (key, text(&b)))
            .collect();
        rest.sort();
        rest
    }
}

fn text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

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
    let mut lines = Lines::default();
    let mut node = String::new();
    let object = |node: &str, component: &str, stream: &str, line: &str| json!({"service": service, "component": component, "node": node, "stream": stream, "line": line});
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let written = if ctx.json {
            node.clone_from(&chunk.node);
            let mut out = String::new();
            for line in lines.push(&chunk.component, &chunk.stream, &chunk.data) {
                out.push_str(
                    &object(&chunk.node, &chunk.component, &chunk.stream, &line).to_string(),
                );
                out.push('\n');
            }
            stdout.write_all(out.as_bytes())
        } else if chunk.stream == "stderr" {
            stderr.write_all(&chunk.data)
        } else {
            stdout.write_all(&chunk.data)
        };
        if written.is_err() {
            return Ok(()); // The reader went away (e.g. `| head`).
        }
        let _ = stdout.flush();
    }
    if ctx.json {
        for ((component, stream), line) in lines.finish() {
            let _ = writeln!(stdout, "{}", object(&node, &component, &stream, &line));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_come_out_whole() {
        let mut lines = Lines::default();
        assert!(lines.push("web", "stdout", b"hel").is_empty());
        assert_eq!(lines.push("web", "stderr", b"oops\r\n"), ["oops"]);
        assert_eq!(lines.push("web", "stdout", b"lo\nwor"), ["hello"]);
        assert_eq!(lines.push("web", "stdout", b"ld\n\nlast"), ["world", ""]);
        assert_eq!(
            lines.finish(),
            [(
                ("web".to_string(), "stdout".to_string()),
                "last".to_string()
            )]
        );
    }
}
